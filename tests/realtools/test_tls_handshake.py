"""The certificates the prod stack issues, in real TLS handshakes.

The stack is built under the mocks, whose tls provider makes real keys and certificates from the
program's inputs (tests/tls_provider.py); the files come from the Kubernetes Secrets the pods mount
and from the `clientCertificates` output Bazel uses. A grpcio server holds the server certificate
and demands a client certificate, as NativeLink's client and worker listeners do, and clients dial
the names the workers, the scheduler and Bazel use. NativeLink's own TLS stack (rustls) cannot run
here; for the revocation list OpenSSL stands in, with CRL checking on.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import grpc
import pytest

from components.kubernetes.nativelink_cluster import CAS, CAS_WORKERS, SCHEDULER, WORKER_API, service_host
from tests.mocks import RecordingMocks, reveal
from tests.stacks import build, dev_settings, fresh_stack, prod_stack_settings, resolve_exports
from tests.tls_provider import computed

from .servers import LOOPBACK

SECRET = "kubernetes:core/v1:Secret"
SERVICE = "nativelink.test.Ping"
CLIENTS = ["ci", "alice"]
NAMESPACE = "nativelink"


def tls_material(mocks: RecordingMocks, exports: dict[str, tuple[bool, Any]]) -> dict[str, Any]:
    files = {
        role: reveal(mocks.one(SECRET, f"nativelink-{role}-tls").inputs["stringData"])
        for role in ("cas", "scheduler", "worker")
    }
    return {"files": files, "clients": exports["clientCertificates"][1], "cas_endpoint": exports["casEndpoint"][1]}


@pytest.fixture
def issued(mocks: RecordingMocks) -> dict[str, Any]:
    """The prod stack's TLS material, as its pods and Bazel get it (two clients: ci and alice)."""
    exports = build(mocks, prod_stack_settings(tls={"clients": CLIENTS}))
    return tls_material(mocks, resolve_exports(exports))


def _raw(data: bytes) -> bytes:
    return data


@contextmanager
def grpc_server(files: dict[str, str]) -> Iterator[int]:
    """An echo service behind the role's server identity, demanding a certificate of the stack's CA."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    echo: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Ping": echo}),))
    credentials = grpc.ssl_server_credentials(
        [(files["server.key"].encode(), files["server.crt"].encode())],
        root_certificates=files["ca.crt"].encode(),
        require_client_auth=True,
    )
    port = server.add_secure_port(f"{LOOPBACK}:0", credentials)
    server.start()
    try:
        yield port
    finally:
        server.stop(0)


def call(port: int, name: str, ca: str, certificate: str | None = None, key: str | None = None) -> grpc.StatusCode:
    """One call as a client dialling `name`; OK, or why it failed."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.encode(),
        private_key=key.encode() if key else None,
        certificate_chain=certificate.encode() if certificate else None,
    )
    options = [("grpc.ssl_target_name_override", name), ("grpc.default_authority", name)]
    with grpc.secure_channel(f"{LOOPBACK}:{port}", credentials, options=options) as channel:
        try:
            ping = channel.unary_unary(f"/{SERVICE}/Ping", request_serializer=_raw, response_deserializer=_raw)
            ping(b"ping", timeout=5)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def openssl_verdict(tmp_path: Path, files: dict[str, str], certificate: str, key: str) -> str:
    """A TLS 1.3 handshake with an OpenSSL server that checks the client against the CA and its CRL: "ok" or why not."""
    tmp_path.mkdir(exist_ok=True)
    for name in ("server.crt", "server.key", "ca.crt", "crl.pem"):
        (tmp_path / name).write_text(files[name])
    (tmp_path / "client.crt").write_text(certificate)
    (tmp_path / "client.key").write_text(key)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    server_context.load_verify_locations(tmp_path / "ca.crt")
    server_context.load_verify_locations(tmp_path / "crl.pem")
    server_context.verify_mode = ssl.CERT_REQUIRED
    server_context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    client_context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    client_context.load_cert_chain(tmp_path / "client.crt", tmp_path / "client.key")
    verdict: list[str] = []
    with socket.create_server((LOOPBACK, 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            connection, _ = listener.accept()
            try:
                with server_context.wrap_socket(connection, server_side=True) as tls:
                    tls.sendall(b"ok")
                    verdict.append("ok")
            except ssl.SSLError as error:
                verdict.append(str(error))

        thread = threading.Thread(target=serve)
        thread.start()
        name = service_host(CAS, NAMESPACE)
        # TLS 1.3: the server judges the client's certificate after the client's handshake is done.
        with (
            socket.create_connection((LOOPBACK, port)) as raw,
            client_context.wrap_socket(raw, server_hostname=name) as tls,
            suppress(ssl.SSLError, ConnectionError),
        ):
            tls.recv(2)
        thread.join(10)
    return verdict[0]


def identity(material: dict[str, Any], who: str) -> tuple[str, str]:
    """(certificate, key) of a Bazel client, the scheduler or a worker."""
    if who in ("scheduler", "worker"):
        files = material["files"][who]
        return files["client.crt"], files["client.key"]
    return material["clients"][who]["certificate"], material["clients"][who]["privateKey"]


@pytest.mark.parametrize("role", ["cas", "scheduler"])
def test_every_client_reaches_every_name_it_dials(issued: dict[str, Any], role: str) -> None:
    files = issued["files"][role]
    load_balancer = issued["cas_endpoint"].removeprefix("grpcs://").rsplit(":", 1)[0]
    names = [service_host(service, NAMESPACE) for service in (CAS, CAS_WORKERS, SCHEDULER, WORKER_API)]
    with grpc_server(files) as port:
        for who in ("ci", "alice", "scheduler", "worker"):
            for name in [*names, load_balancer]:
                assert call(port, name, files["ca.crt"], *identity(issued, who)) == grpc.StatusCode.OK, (who, name)


def test_a_wrong_name_a_missing_or_foreign_certificate_is_refused(issued: dict[str, Any]) -> None:
    files = issued["files"]["cas"]
    ca = files["ca.crt"]
    right = service_host(CAS, NAMESPACE)
    # A certificate of another CA, made the way the stack makes its own.
    key = computed("tls:index/privateKey:PrivateKey", "foreign-key", {"algorithm": "ECDSA", "ecdsaCurve": "P256"})
    foreign = computed(
        "tls:index/selfSignedCert:SelfSignedCert",
        "foreign",
        {
            "privateKeyPem": key["privateKeyPem"],
            "subject": {"commonName": "ci"},
            "validityPeriodHours": 24,
            "allowedUses": ["digital_signature", "client_auth"],
        },
    )
    with grpc_server(files) as port:
        assert call(port, right, ca, *identity(issued, "ci")) == grpc.StatusCode.OK
        assert (
            call(port, "nativelink-cas.elsewhere.svc.cluster.local", ca, *identity(issued, "ci"))
            == grpc.StatusCode.UNAVAILABLE
        )
        assert call(port, right, ca) == grpc.StatusCode.UNAVAILABLE
        assert call(port, right, ca, foreign["certPem"], key["privateKeyPem"]) == grpc.StatusCode.UNAVAILABLE


def test_a_revoked_client_is_refused_and_no_one_else(issued: dict[str, Any], tmp_path: Path) -> None:
    serial = issued["clients"]["ci"]["serial"]
    # The same stack, ci's serial added to tls.revokedSerials (certificates are kept, as in state).
    mocks, exports = fresh_stack(prod_stack_settings(tls={"clients": CLIENTS, "revokedSerials": [serial]}))
    revoked = tls_material(mocks, resolve_exports(exports))
    assert revoked["clients"]["ci"]["serial"] == serial
    files = revoked["files"]["cas"]
    assert files["crl.pem"] != issued["files"]["cas"]["crl.pem"]
    assert openssl_verdict(tmp_path / "before", issued["files"]["cas"], *identity(issued, "ci")) == "ok"
    assert "certificate revoked" in openssl_verdict(tmp_path / "after", files, *identity(revoked, "ci"))
    assert openssl_verdict(tmp_path / "after", files, *identity(revoked, "alice")) == "ok"


def test_dev_with_tls_serves_bazel_on_loopback(mocks: RecordingMocks) -> None:
    """What `tls.enabled` in dev gives the CAS container and Bazel: 127.0.0.1 and the container names work."""
    exports = resolve_exports(build(mocks, dev_settings(tls={"enabled": True, "clients": ["me"]})))
    uploads = reveal(mocks.one("docker:index/container:Container", "nativelink-cas").inputs["uploads"])
    files = {upload["file"].rsplit("/", 1)[1]: upload["content"] for upload in uploads}
    me = exports["clientCertificates"][1]["me"]
    client = (files["ca.crt"], me["certificate"], me["privateKey"])
    with grpc_server(files) as port:
        # Bazel dials grpcs://127.0.0.1 (bazelFlags): checked against the certificate's IP address.
        assert call(port, LOOPBACK, *client) == grpc.StatusCode.OK
        for name in ("localhost", "nativelink-cas", "nativelink-scheduler"):
            assert call(port, name, *client) == grpc.StatusCode.OK
        assert call(port, "nativelink-minio", *client) == grpc.StatusCode.UNAVAILABLE
