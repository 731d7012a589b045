"""pulumi-tls played for real under the mocks: keys, requests and certificates made from the registered inputs.

The provider cannot run here, so this does what terraform-provider-tls does with the same inputs
(internal/provider/common_cert.go `createCertificate`, resource_self_signed_cert.go,
resource_locally_signed_cert.go): RSA or ECDSA keys in PKCS#1/SEC1 and PKCS#8 PEM, basic
constraints on every certificate, allowed_uses split into key usages and extended key usages, a
subject key id on CA certificates (SHA-1 of the public key), the issuer's as authority key id
(Go's x509 does that), a random 128-bit serial that is the resource's id, and validity from now.
Keys, and certificates whose inputs have not changed, are made once per resource name and reused,
as a stack keeps them in its state between updates.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import secrets
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes, PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
SELF_SIGNED_CERT = "tls:index/selfSignedCert:SelfSignedCert"
CERT_REQUEST = "tls:index/certRequest:CertRequest"
LOCALLY_SIGNED_CERT = "tls:index/locallySignedCert:LocallySignedCert"
TYPES = frozenset({PRIVATE_KEY, SELF_SIGNED_CERT, CERT_REQUEST, LOCALLY_SIGNED_CERT})

_KEY_USAGES = {
    "digital_signature": "digital_signature",
    "content_commitment": "content_commitment",
    "key_encipherment": "key_encipherment",
    "data_encipherment": "data_encipherment",
    "key_agreement": "key_agreement",
    "cert_signing": "key_cert_sign",
    "crl_signing": "crl_sign",
}
_EXTENDED_KEY_USAGES = {
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
}
_SUBJECT_FIELDS = {"common_name": NameOID.COMMON_NAME, "organization": NameOID.ORGANIZATION_NAME}


@functools.cache
def _generate(name: str, algorithm: str, size: str) -> PrivateKeyTypes:
    if algorithm == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=int(size or 2048))
    if algorithm == "ECDSA":
        curves = {"P224": ec.SECP224R1(), "P256": ec.SECP256R1(), "P384": ec.SECP384R1()}
        return ec.generate_private_key(curves[size or "P224"])
    raise ValueError(f"{name}: algorithm {algorithm} is not played here")


def _pem(key: PrivateKeyTypes, fmt: serialization.PrivateFormat) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def _load_key(pem: str) -> CertificateIssuerPrivateKeyTypes:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return key


def _subject(inputs: dict[str, Any]) -> x509.Name:
    subject = inputs.get("subject") or {}
    return x509.Name(
        [x509.NameAttribute(_SUBJECT_FIELDS[_snake(key)], value) for key, value in subject.items() if value]
    )


def _snake(key: str) -> str:
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in key)


def _certificate(
    inputs: dict[str, Any],
    subject: x509.Name,
    public_key: Any,
    sans: list[x509.GeneralName],
    issuer: x509.Certificate | None,
    issuer_key: CertificateIssuerPrivateKeyTypes,
) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    end = now + datetime.timedelta(hours=int(inputs["validityPeriodHours"]))
    serial = secrets.randbits(128) or 1
    is_ca = bool(inputs.get("isCaCertificate"))
    uses = list(inputs.get("allowedUses") or [])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    usage_flags = {flag: False for flag in ("encipher_only", "decipher_only", *_KEY_USAGES.values())}
    usage_flags.update({_KEY_USAGES[use]: True for use in uses if use in _KEY_USAGES})
    if any(usage_flags.values()):
        builder = builder.add_extension(x509.KeyUsage(**usage_flags), critical=True)
    extended = [_EXTENDED_KEY_USAGES[use] for use in uses if use in _EXTENDED_KEY_USAGES]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    if is_ca:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    if issuer is not None:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    certificate = builder.sign(issuer_key, hashes.SHA256())
    return {
        "id": str(serial),
        "certPem": certificate.public_bytes(serialization.Encoding.PEM).decode(),
        "validityStartTime": now.isoformat().replace("+00:00", "Z"),
        "validityEndTime": end.isoformat().replace("+00:00", "Z"),
        "readyForRenewal": False,
    }


_STATE: dict[tuple[str, str, str], dict[str, Any]] = {}


def _same_certificate_key(inputs: dict[str, Any]) -> str:
    """What identifies a certificate's inputs, whatever randomness their PEMs carry (ECDSA signatures)."""
    request = inputs.get("certRequestPem")
    parts: list[Any] = [inputs.get(key) for key in ("validityPeriodHours", "allowedUses", "isCaCertificate")]
    parts.append(inputs.get("caCertPem"))
    parts.append(_public_bytes(inputs["privateKeyPem"]) if "privateKeyPem" in inputs else None)
    if request:
        csr = x509.load_pem_x509_csr(request.encode())
        parts += [
            csr.public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            .hex()
        ]
        parts += [csr.subject.rfc4514_string(), [str(ext.value) for ext in csr.extensions]]
    parts += [inputs.get("subject"), inputs.get("dnsNames"), inputs.get("ipAddresses")]
    return repr(parts)


def _public_bytes(pem: str) -> str:
    public = _load_key(pem).public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo).hex()


def computed(typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """The outputs terraform-provider-tls computes for a resource of `typ` with these inputs.

    A certificate whose inputs are the same as last time is the same certificate (no diff, no new serial).
    """
    if typ in (SELF_SIGNED_CERT, LOCALLY_SIGNED_CERT, CERT_REQUEST):
        state = (typ, name, _same_certificate_key(inputs))
        if state not in _STATE:
            _STATE[state] = _computed(typ, name, inputs)
        return _STATE[state]
    return _computed(typ, name, inputs)


def _computed(typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if typ == PRIVATE_KEY:
        algorithm = inputs.get("algorithm", "RSA")
        # Numbers reach the mocks as floats.
        size = str(int(inputs.get("rsaBits", 2048))) if algorithm == "RSA" else str(inputs.get("ecdsaCurve", ""))
        key = _generate(name, algorithm, size)
        traditional = serialization.PrivateFormat.TraditionalOpenSSL
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            "privateKeyPem": _pem(key, traditional),
            "privateKeyPemPkcs8": _pem(key, serialization.PrivateFormat.PKCS8),
            "publicKeyPem": public.decode(),
        }
    if typ == CERT_REQUEST:
        key = _load_key(inputs["privateKeyPem"])
        sans = _sans(inputs)
        builder = x509.CertificateSigningRequestBuilder().subject_name(_subject(inputs))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return {"certRequestPem": builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()}
    if typ == SELF_SIGNED_CERT:
        key = _load_key(inputs["privateKeyPem"])
        return _certificate(inputs, _subject(inputs), key.public_key(), _sans(inputs), None, key)
    if typ == LOCALLY_SIGNED_CERT:
        request = x509.load_pem_x509_csr(inputs["certRequestPem"].encode())
        ca = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
        try:
            sans = list(request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            sans = []
        return _certificate(
            inputs, request.subject, request.public_key(), sans, ca, _load_key(inputs["caPrivateKeyPem"])
        )
    raise ValueError(f"not a pulumi-tls resource: {typ}")


def _sans(inputs: dict[str, Any]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in inputs.get("dnsNames") or []]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in inputs.get("ipAddresses") or []]
    return names
