"""The stack's own certificate authority and the certificates NativeLink's processes and clients use.

pulumi-tls keeps every key in the stack's state as a secret; no certificate leaves it except as a
secret output. Server and client certificates are ECDSA P-256, valid tls.certificateValidityDays.
They are issued anew once per renewal period (validity less 30 days), by the first `pulumi up` in
it: pulumi-tls's own early renewal does not fire under Pulumi (pulumi/pulumi-tls#39), so the period
is a replacement trigger. The new files roll the pods. The CA is RSA so that the revocation list it
signs is the same bytes on every run.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import pulumi_tls as tls

from components.nativelink import layout
from components.settings import TlsSettings
from components.tls.revocation import revocation_list

CA_VALIDITY_HOURS = 10 * 365 * 24
RENEWAL_DAYS = 30
# Renewal periods count from here; any fixed day would do.
RENEWAL_EPOCH = datetime.date(2026, 1, 1)
SERVER_USES = ["digital_signature", "server_auth"]
CLIENT_USES = ["digital_signature", "client_auth"]
ORGANIZATION = "nativelink-juicefs"
Role = Literal["cas", "scheduler", "worker"]


@dataclass(frozen=True)
class Identity:
    """A certificate and its private key (PKCS#8 PEM, which NativeLink and Bazel both read)."""

    certificate_pem: pulumi.Output[str]
    private_key_pem: pulumi.Output[str]
    # Decimal, as tls.revokedSerials takes it.
    serial: pulumi.Output[str]


@dataclass(frozen=True)
class ServerNames:
    """Every name a client may dial the CAS server or the scheduler by."""

    dns_names: Sequence[pulumi.Input[str]]
    ip_addresses: Sequence[str] = ()


class ClusterPki(pulumi.ComponentResource):
    """The CA, one server identity (CAS server and scheduler), the scheduler's and workers' client identities,
    a client certificate per tls.clients entry, and the revocation list."""

    ca_certificate_pem: pulumi.Output[str]
    crl_pem: pulumi.Output[str]
    server: Identity
    scheduler_client: Identity
    worker_client: Identity
    clients: dict[str, Identity]

    def __init__(
        self, name: str, settings: TlsSettings, names: ServerNames, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("nativelink:tls:ClusterPki", name, None, opts)
        self._name = name
        self._validity_hours = settings.certificate_validity_days * 24
        self._renewal = renewal_period(settings.certificate_validity_days, datetime.datetime.now(datetime.UTC).date())
        child = pulumi.ResourceOptions(parent=self)
        self._ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="RSA", rsa_bits=3072, opts=child)
        ca = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=self._ca_key.private_key_pem,
            subject={"common_name": f"NativeLink {pulumi.get_stack()} CA", "organization": ORGANIZATION},
            is_ca_certificate=True,
            validity_period_hours=CA_VALIDITY_HOURS,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
            opts=child,
        )
        self.ca_certificate_pem = ca.cert_pem
        self.server = self._issue("server", "nativelink", SERVER_USES, names)
        self.scheduler_client = self._issue("scheduler-client", "nativelink-scheduler", CLIENT_USES)
        self.worker_client = self._issue("worker-client", "nativelink-worker", CLIENT_USES)
        self.clients = {client: self._issue(f"client-{client}", client, CLIENT_USES) for client in settings.clients}
        revoked = list(settings.revoked_serials)
        # Signed with the CA key, yet public: not a secret, so previews show its changes.
        self.crl_pem = pulumi.Output.unsecret(
            pulumi.Output.all(self._ca_key.private_key_pem, ca.cert_pem).apply(
                lambda pems: revocation_list(pems[0], pems[1], revoked)
            )
        )
        self.register_outputs({"caCertificate": self.ca_certificate_pem, "crl": self.crl_pem})

    def _issue(self, suffix: str, common_name: str, uses: list[str], names: ServerNames | None = None) -> Identity:
        child = pulumi.ResourceOptions(parent=self)
        key = tls.PrivateKey(f"{self._name}-{suffix}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        request = tls.CertRequest(
            f"{self._name}-{suffix}-request",
            private_key_pem=key.private_key_pem,
            subject={"common_name": common_name, "organization": ORGANIZATION},
            dns_names=list(names.dns_names) if names else None,
            ip_addresses=list(names.ip_addresses) if names and names.ip_addresses else None,
            opts=child,
        )
        certificate = tls.LocallySignedCert(
            f"{self._name}-{suffix}",
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=self._ca_key.private_key_pem,
            ca_cert_pem=self.ca_certificate_pem,
            validity_period_hours=self._validity_hours,
            allowed_uses=uses,
            opts=pulumi.ResourceOptions(parent=self, replacement_trigger=self._renewal),
        )
        # pulumi-tls gives a certificate the id of its serial number (terraform-provider-tls common_cert.go:254).
        return Identity(certificate.cert_pem, pulumi.Output.secret(key.private_key_pem_pkcs8), certificate.id)

    def files(self, role: Role) -> dict[str, pulumi.Output[str]]:
        """The TLS files (name in layout.TLS_DIR -> PEM) of `role`: cas, scheduler or worker."""
        ca = {_name(layout.TLS_CA): self.ca_certificate_pem}
        # Only listeners read the CRL: workers, which serve no gRPC, stay up through a revocation.
        common = {**ca, _name(layout.TLS_CRL): self.crl_pem}
        server = {
            _name(layout.TLS_SERVER_CERT): self.server.certificate_pem,
            _name(layout.TLS_SERVER_KEY): self.server.private_key_pem,
        }
        client = self.scheduler_client if role == "scheduler" else self.worker_client
        as_client = {
            _name(layout.TLS_CLIENT_CERT): client.certificate_pem,
            _name(layout.TLS_CLIENT_KEY): client.private_key_pem,
        }
        roles = {
            "cas": {**common, **server},
            "scheduler": {**common, **server, **as_client},
            "worker": {**ca, **as_client},
        }
        return roles[role]


def renewal_period(validity_days: int, today: datetime.date) -> int:
    """Which renewal period `today` is in: it changes every validity less 30 days, leaving 30 days to renew."""
    return (today - RENEWAL_EPOCH).days // (validity_days - RENEWAL_DAYS)


def _name(path: str) -> str:
    return path.rsplit("/", 1)[1]


def tls_outputs(pki: ClusterPki | None) -> dict[str, pulumi.Output[Any]]:
    """Stack outputs for Bazel: the CA certificate, and each client's certificate, key and serial (secret)."""
    if pki is None:
        return {}
    clients = {
        name: {
            "certificate": identity.certificate_pem,
            "privateKey": identity.private_key_pem,
            "serial": identity.serial,
        }
        for name, identity in pki.clients.items()
    }
    return {"caCertificate": pki.ca_certificate_pem, "clientCertificates": pulumi.Output.secret(clients)}
