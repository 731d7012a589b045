"""TLS in both stacks under mocks: what each process reads is what its pod or container is given.

The certificates are real (tests/tls_provider.py plays pulumi-tls); tests/realtools/test_tls_handshake.py
shakes hands with them.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import json5
import pytest
from cryptography import x509

from components.kubernetes.nativelink_cluster import TLS_DIGEST_ANNOTATION, public_digest
from components.nativelink import layout
from components.settings import ConfigError, ProdSettings, parse_settings
from components.tls.pki import renewal_period
from components.tls.revocation import revocation_list
from tests.mocks import VPC_CIDR, RecordingMocks, is_secret, reveal
from tests.stacks import build, dev_settings, fresh_stack, prod_stack_settings, resolve_exports, stack_config
from tests.tls_provider import computed

SECRET = "kubernetes:core/v1:Secret"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
SERVICE = "kubernetes:core/v1:Service"
CONTAINER = "docker:index/container:Container"
WORKLOADS = {
    "cas": ("kubernetes:apps/v1:StatefulSet", "nativelink-cas"),
    "scheduler": ("kubernetes:apps/v1:Deployment", "nativelink-scheduler"),
    "worker": ("kubernetes:apps/v1:Deployment", "nativelink-worker"),
}
TLS_FIELDS = ("cert_file", "key_file", "client_ca_file", "client_crl_file", "ca_file")
GRPC_PORTS = {layout.CAS_PORT, layout.SCHEDULER_PORT, layout.WORKER_API_PORT, layout.WORKER_CAS_PORT}
PUBLIC_PORTS = {layout.CAS_PORT, layout.SCHEDULER_PORT}


def tls_paths(value: Any) -> set[str]:
    """Every TLS file a NativeLink config names."""
    if isinstance(value, dict):
        found = {item for key, item in value.items() if key in TLS_FIELDS and isinstance(item, str)}
        return found.union(*(tls_paths(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(tls_paths(item) for item in value))
    return set()


def rendered(mocks: RecordingMocks, role: str) -> dict[str, Any]:
    config_map = mocks.one(CONFIG_MAP, f"nativelink-{role}-config")
    config: dict[str, Any] = json5.loads(config_map.inputs["data"]["config.json5"])
    return config


def listeners(config: dict[str, Any]) -> dict[int, dict[str, Any] | None]:
    """Listener port -> its `tls` block (None when plaintext)."""
    return {
        int(server["listener"]["http"]["socket_address"].rsplit(":", 1)[1]): server["listener"]["http"].get("tls")
        for server in config["servers"]
    }


def pod(mocks: RecordingMocks, role: str) -> dict[str, Any]:
    typ, name = WORKLOADS[role]
    template: dict[str, Any] = mocks.one(typ, name).inputs["spec"]["template"]
    return template


def secret_files(mocks: RecordingMocks, role: str) -> dict[str, str]:
    files: dict[str, str] = reveal(mocks.one(SECRET, f"nativelink-{role}-tls").inputs["stringData"])
    return files


@pytest.mark.parametrize("role", ["cas", "scheduler", "worker"])
def test_each_process_reads_only_files_its_pod_mounts(mocks: RecordingMocks, role: str) -> None:
    build(mocks, prod_stack_settings())
    paths = tls_paths(rendered(mocks, role))
    files = secret_files(mocks, role)
    assert paths, "TLS is on in prod"
    assert {path.rsplit("/", 1)[0] for path in paths} == {layout.TLS_DIR}
    assert {path.rsplit("/", 1)[1] for path in paths} <= set(files)
    # Private keys stay secret in the state.
    secret = mocks.one(SECRET, f"nativelink-{role}-tls").inputs["stringData"]
    assert is_secret(secret) or all(is_secret(value) for name, value in secret.items() if name.endswith(".key"))
    template = pod(mocks, role)
    (container,) = template["spec"]["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "tls"]
    assert mount == {"name": "tls", "mountPath": layout.TLS_DIR, "readOnly": True}
    (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == "tls"]
    assert volume["secret"]["secretName"] == f"nativelink-{role}-tls"
    # NativeLink reads them only at start: a renewed certificate or a new CRL rolls the pod.
    public = [pem for name, pem in sorted(files.items()) if not name.endswith(".key")]
    import hashlib

    assert (
        template["metadata"]["annotations"][TLS_DIGEST_ANNOTATION]
        == hashlib.sha256("".join(public).encode()).hexdigest()
    )


def test_every_grpc_listener_speaks_tls_and_workers_always_authenticate(mocks: RecordingMocks) -> None:
    build(mocks, prod_stack_settings())
    cas, scheduler, worker = (rendered(mocks, role) for role in ("cas", "scheduler", "worker"))
    for config in (cas, scheduler):
        for port, tls in listeners(config).items():
            if port not in GRPC_PORTS:
                assert tls is None, f"{port}: probes and the admin port stay plaintext"
                continue
            assert tls is not None, port
            assert (tls["cert_file"], tls["key_file"]) == (layout.TLS_SERVER_CERT, layout.TLS_SERVER_KEY)
            # tls.clientAuth is on in Pulumi.prod.yaml; the worker ports demand a certificate regardless.
            assert (tls["client_ca_file"], tls["client_crl_file"]) == (layout.TLS_CA, layout.TLS_CRL), port
    # Clients of the tier dial grpcs:// with the CA and their own identity.
    stores = {
        store["name"]: store["grpc"]["endpoints"][0]
        for store in scheduler["stores"] + worker["stores"]
        if "grpc" in store
    }
    for endpoint in stores.values():
        assert endpoint["address"].startswith("grpcs://")
        assert endpoint["tls_config"] == {
            "ca_file": layout.TLS_CA,
            "cert_file": layout.TLS_CLIENT_CERT,
            "key_file": layout.TLS_CLIENT_KEY,
        }
    worker_api = worker["workers"][0]["local"]["worker_api_endpoint"]
    assert worker_api["uri"] == f"grpcs://nativelink-worker-api.nativelink.svc.cluster.local:{layout.WORKER_API_PORT}"
    assert worker_api["tls_config"]["cert_file"] == layout.TLS_CLIENT_CERT


def test_without_client_auth_only_the_client_ports_stop_asking(mocks: RecordingMocks) -> None:
    settings = prod_stack_settings(tls={"clientAuth": False}, allowInsecure=["unauthenticated-clients"])
    exports = resolve_exports(build(mocks, settings))
    for role in ("cas", "scheduler"):
        for port, tls in listeners(rendered(mocks, role)).items():
            if port in PUBLIC_PORTS:
                assert tls is not None and "client_ca_file" not in tls, port
            elif port in GRPC_PORTS:
                assert tls is not None and tls["client_ca_file"] == layout.TLS_CA, port
    flags = exports["bazelFlags"][1]
    assert "--tls_certificate=nativelink-ca.crt" in flags and "--tls_client_certificate" not in flags


def test_the_server_certificate_names_every_way_in(mocks: RecordingMocks) -> None:
    build(mocks, prod_stack_settings(kubernetes={"externalDomain": "builds.example.internal"}))
    certificate = x509.load_pem_x509_certificate(secret_files(mocks, "cas")["server.crt"].encode())
    names = set(
        certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
    )
    for service in ("nativelink-cas", "nativelink-cas-workers", "nativelink-scheduler", "nativelink-worker-api"):
        assert {service, f"{service}.nativelink.svc.cluster.local"} <= names
    assert {"cas.builds.example.internal", "scheduler.builds.example.internal"} <= names
    assert {name for name in names if name.endswith(".elb.eu-west-1.amazonaws.com")} == {
        "nativelink-cas-load-balancer-0123456789.elb.eu-west-1.amazonaws.com",
        "nativelink-scheduler-load-balancer-0123456789.elb.eu-west-1.amazonaws.com",
    }


def test_load_balancers_are_internal_and_admit_only_client_ranges(mocks: RecordingMocks) -> None:
    settings = prod_stack_settings()
    build(mocks, settings)
    balancers = {
        r.inputs["metadata"]["name"]: r.inputs
        for r in mocks.of_type(SERVICE)
        if r.inputs["spec"].get("type") == "LoadBalancer"
    }
    assert set(balancers) == {"nativelink-cas-external", "nativelink-scheduler-external"}
    for name, service in balancers.items():
        annotations = service["metadata"]["annotations"]
        assert annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"
        assert annotations["service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"] == "ip"
        # The pods see the client's address, so NetworkPolicy's clientCidrs apply behind the NLB too.
        assert (
            "preserve_client_ip.enabled=true"
            in annotations["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"]
        )
        assert annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-port"] == str(layout.HEALTH_PORT)
        # One pod behind each: without cross-zone balancing, clients in other zones would get nothing.
        assert annotations["service.beta.kubernetes.io/aws-load-balancer-attributes"] == (
            "load_balancing.cross_zone.enabled=true"
        )
        spec = service["spec"]
        assert spec["loadBalancerClass"] == "service.k8s.aws/nlb"
        assert spec["loadBalancerSourceRanges"] == settings.kubernetes.client_cidrs
        assert [port["port"] for port in spec["ports"]] == [layout.CAS_PORT if "cas" in name else layout.SCHEDULER_PORT]
    # Their health checks come from the VPC: admitted to the health port, and nothing else.
    for role in ("cas", "scheduler"):
        policy = mocks.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", f"nativelink-{role}-network").inputs
        from_vpc = [rule for rule in policy["spec"]["ingress"] if {"ipBlock": {"cidr": VPC_CIDR}} in rule["from"]]
        assert from_vpc == [
            {"from": [{"ipBlock": {"cidr": VPC_CIDR}}], "ports": [{"protocol": "TCP", "port": layout.HEALTH_PORT}]}
        ]


def test_cluster_exposure_keeps_in_cluster_names(mocks: RecordingMocks) -> None:
    exports = resolve_exports(build(mocks, prod_stack_settings(kubernetes={"exposure": "cluster"})))
    assert not [r for r in mocks.of_type(SERVICE) if r.inputs["spec"].get("type") == "LoadBalancer"]
    # Nor any lookup only the load balancers need.
    assert "aws:ec2/getVpc:getVpc" not in [token for token, _ in mocks.calls]
    assert exports["casEndpoint"] == (False, "grpcs://nativelink-cas.nativelink.svc.cluster.local:50051")
    policy = mocks.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "nativelink-cas-network").inputs
    assert all(rule["ports"][0]["port"] != layout.HEALTH_PORT for rule in policy["spec"]["ingress"])


def test_private_zone_records_name_the_load_balancers(mocks: RecordingMocks) -> None:
    settings = prod_stack_settings(
        aws={"privateZoneId": "Z0123456789ABCDEFGHIJ"}, kubernetes={"externalDomain": "builds.example.internal"}
    )
    exports = resolve_exports(build(mocks, settings))
    records = {r.inputs["name"]: r.inputs for r in mocks.of_type("aws:route53/record:Record")}
    assert set(records) == {"cas.builds.example.internal", "scheduler.builds.example.internal"}
    assert records["cas.builds.example.internal"]["records"] == [
        "nativelink-cas-load-balancer-0123456789.elb.eu-west-1.amazonaws.com"
    ]
    assert records["cas.builds.example.internal"]["type"] == "CNAME"
    assert exports["schedulerEndpoint"] == (False, "grpcs://scheduler.builds.example.internal:50052")


def test_revocation_list_is_stable_signed_and_moves_the_digest() -> None:
    key = computed("tls:index/privateKey:PrivateKey", "crl-test-ca-key", {"algorithm": "RSA", "rsaBits": 3072})
    ca = computed(
        "tls:index/selfSignedCert:SelfSignedCert",
        "crl-test-ca",
        {
            "privateKeyPem": key["privateKeyPem"],
            "subject": {"commonName": "test CA"},
            "isCaCertificate": True,
            "validityPeriodHours": 87600,
            "allowedUses": ["cert_signing", "crl_signing"],
        },
    )
    empty = revocation_list(key["privateKeyPem"], ca["certPem"], [])
    # The same inputs give the same bytes: no diff on every preview.
    assert revocation_list(key["privateKeyPem"], ca["certPem"], []) == empty
    revoked = revocation_list(key["privateKeyPem"], ca["certPem"], ["4711", "42"])
    crl = x509.load_pem_x509_crl(revoked.encode())
    issuer = x509.load_pem_x509_certificate(ca["certPem"].encode())
    assert crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    assert sorted(entry.serial_number for entry in crl) == [42, 4711]
    # rustls-webpki matches a CRL to its issuer by the raw bytes of the name.
    assert crl.issuer.public_bytes() == issuer.subject.public_bytes()
    files = {"ca.crt": ca["certPem"], "crl.pem": empty, "client.key": "k"}
    assert public_digest(files) != public_digest({**files, "crl.pem": revoked})
    assert public_digest(files) == public_digest({**files, "client.key": "another"})


def test_dev_keeps_plaintext_unless_asked(mocks: RecordingMocks) -> None:
    exports = resolve_exports(build(mocks, dev_settings()))
    assert exports["casEndpoint"] == (False, "grpc://127.0.0.1:50051")
    assert "caCertificate" not in exports
    uploads = mocks.one(CONTAINER, "nativelink-cas").inputs["uploads"]
    assert [upload["file"] for upload in uploads] == [layout.CONFIG_PATH]


def test_dev_with_tls_runs_what_prod_runs(mocks: RecordingMocks) -> None:
    exports = resolve_exports(build(mocks, dev_settings(tls={"enabled": True, "clients": ["me"]})))
    assert exports["casEndpoint"] == (False, "grpcs://127.0.0.1:50051")
    assert "--tls_client_key=nativelink-client.key" in exports["bazelFlags"][1]
    expected = {
        "nativelink-cas": {"ca.crt", "crl.pem", "server.crt", "server.key"},
        "nativelink-scheduler": {"ca.crt", "crl.pem", "server.crt", "server.key", "client.crt", "client.key"},
        "nativelink-worker-0": {"ca.crt", "client.crt", "client.key"},
    }
    for name, files in expected.items():
        container = mocks.one(CONTAINER, name)
        uploads = reveal(container.inputs["uploads"])
        tls = {u["file"].rsplit("/", 1)[1]: u for u in uploads if u["file"].startswith(layout.TLS_DIR + "/")}
        assert set(tls) == files, name
        assert {u["permissions"] for n, u in tls.items() if n.endswith(".key")} == {"0600"}
        assert container.opts is not None and "uploads" in (container.opts.additional_secret_outputs or [])
    server = x509.load_pem_x509_certificate(tls["ca.crt"]["content"].encode())  # the CA, any container
    assert server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cas_uploads = {u["file"]: u["content"] for u in reveal(mocks.one(CONTAINER, "nativelink-cas").inputs["uploads"])}
    certificate = x509.load_pem_x509_certificate(cas_uploads[layout.TLS_SERVER_CERT].encode())
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"nativelink-cas", "nativelink-scheduler", "localhost"} <= set(sans.get_values_for_type(x509.DNSName))
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    config = json.loads(cas_uploads[layout.CONFIG_PATH])
    assert listeners(config)[layout.CAS_PORT] is not None


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        ({"tls": {"clients": []}}, "tls.clients", "no Bazel client could connect"),
        ({"tls": {"clients": ["ci", "ci"]}}, "tls.clients", "more than once"),
        ({"tls": {"revokedSerials": ["42", "42"]}}, "tls.revokedSerials", "more than once"),
        ({"tls": {"enabled": False}}, "tls.enabled", "plaintext-endpoints"),
        ({"tls": {"clientAuth": False}}, "tls.clientAuth", "unauthenticated-clients"),
        ({"kubernetes": {"clientCidrs": []}}, "kubernetes.clientCidrs", "would admit no one"),
        ({"aws": {"privateZoneId": "Z0123456789ABCDEFGHIJ"}}, "aws.privateZoneId", "kubernetes.externalDomain"),
        (
            {"tls": {"enabled": False}, "allowInsecure": ["plaintext-endpoints"]},
            "kubernetes.exposure",
            "needs tls.enabled",
        ),
    ],
)
def test_bad_tls_settings_are_refused_by_name(overrides: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        prod_stack_settings(**overrides)
    assert f"nativelink-juicefs:{key}" in str(raised.value) and fragment in str(raised.value)


def test_prod_file_turns_tls_and_load_balancers_on() -> None:
    raw = stack_config("prod")
    assert "enabled" not in raw["tls"], "on by default in prod"
    settings = prod_stack_settings()
    assert isinstance(settings, ProdSettings)
    assert settings.tls.enabled and settings.tls.client_auth and settings.tls.clients == ["ci"]
    assert settings.kubernetes.exposure == "internal-load-balancer"


def test_the_schema_holds_nativelink_to_its_tls_rules() -> None:
    """v1.6.6 tls_utils.rs endpoint_from: grpcs:// needs a tls_config and a tls_config needs grpcs://;
    cas_server.rs TlsConfig: deny_unknown_fields."""
    from pydantic import ValidationError

    from components.nativelink.schema import ClientTlsConfig, EndpointConfig, GrpcEndpoint, TlsConfig

    tls = ClientTlsConfig(ca_file=layout.TLS_CA)
    assert GrpcEndpoint(address="grpcs://cas:50051", tls_config=tls)
    for address, config in (("grpcs://cas:50051", None), ("grpc://cas:50051", tls)):
        with pytest.raises(ValidationError, match="go together"):
            GrpcEndpoint(address=address, tls_config=config)
        with pytest.raises(ValidationError, match="go together"):
            EndpointConfig(uri=address, tls_config=config)
    with pytest.raises(ValidationError, match="certificate and its key"):
        ClientTlsConfig(ca_file=layout.TLS_CA, cert_file=layout.TLS_CLIENT_CERT)
    with pytest.raises(ValidationError, match="Extra inputs"):
        TlsConfig.model_validate({"cert_file": "c", "key_file": "k", "ca_file": "a"})


def test_a_revocation_rolls_the_listeners_and_not_the_workers(mocks: RecordingMocks) -> None:
    build(mocks, prod_stack_settings())
    before = {role: pod(mocks, role)["metadata"]["annotations"][TLS_DIGEST_ANNOTATION] for role in WORKLOADS}
    crl_before = secret_files(mocks, "cas")["crl.pem"]
    # The same stack again (its certificates kept, as in state), one serial revoked.
    again, _ = fresh_stack(prod_stack_settings(tls={"revokedSerials": ["4711"]}))
    after = {role: pod(again, role)["metadata"]["annotations"][TLS_DIGEST_ANNOTATION] for role in WORKLOADS}
    assert secret_files(again, "cas")["crl.pem"] != crl_before
    assert after["cas"] != before["cas"] and after["scheduler"] != before["scheduler"]
    # Workers read no CRL: in-flight actions survive a revocation.
    assert after["worker"] == before["worker"]
    assert "crl.pem" not in secret_files(again, "worker")


def test_certificates_are_issued_anew_each_renewal_period(mocks: RecordingMocks) -> None:
    # Every validity less 30 days: a certificate is replaced with 30 days or more to run.
    periods = {renewal_period(365, datetime.date(2026, 1, 1) + datetime.timedelta(days=n)) for n in range(0, 335)}
    assert periods == {0}
    assert renewal_period(365, datetime.date(2026, 1, 1) + datetime.timedelta(days=335)) == 1
    build(mocks, prod_stack_settings())
    today = datetime.datetime.now(datetime.UTC).date()
    for record in mocks.of_type("tls:index/locallySignedCert:LocallySignedCert"):
        assert record.opts is not None and record.opts.replacement_trigger == renewal_period(365, today), record.name
        assert record.inputs["validityPeriodHours"] == 365 * 24


def test_the_shipped_prod_file_makes_the_operator_choose_client_ranges() -> None:
    with pytest.raises(ConfigError, match=r"kubernetes.clientCidrs = \[\]: empty while kubernetes.exposure"):
        parse_settings(stack_config("prod"))
