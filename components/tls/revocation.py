"""The stack's certificate revocation list, made from its CA and tls.revokedSerials.

Deterministic, so a preview shows no diff while the list is unchanged: an RSA CA signs with
PKCS#1 v1.5 (no randomness), and the dates are the CA's own validity. NativeLink v1.6.6 reads it as
`client_crl_file` into rustls's WebPkiClientVerifier (src/bin/nativelink.rs), which by default
ignores the CRL's next-update date and denies certificates whose status it cannot determine.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def revocation_list(ca_key_pem: str, ca_cert_pem: str, serials: Sequence[str]) -> str:
    """A PEM CRL signed by the CA, revoking `serials` (decimal), numbered by how many it lists."""
    key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("the stack's CA key must be RSA (deterministic signatures)")
    ca = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    issued = ca.not_valid_before_utc
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(issued)
        .next_update(ca.not_valid_after_utc)
        .add_extension(x509.CRLNumber(len(serials)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
    )
    for serial in sorted({int(serial) for serial in serials}):
        revoked = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(issued).build()
        builder = builder.add_revoked_certificate(revoked)
    crl = builder.sign(key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM).decode("ascii")
