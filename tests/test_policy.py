"""The policy pack, without the Pulumi CLI: its wiring, the dev stack under mocks, and each policy on
hand-built good and bad resources. PolicyPack itself is never constructed here (it starts a gRPC server
and blocks); tests/policy_harness.py feeds the policies the way the engine does.

The prod stack's pass is in tests/test_policy_prod.py.
"""

from __future__ import annotations

import runpy
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nativelink_policies as pack
import pulumi
import pulumi_aws as aws
import pulumi_docker as docker
import pulumi_kubernetes as k8s
import pulumi_policy
import pytest
import yaml
from pulumi_policy import PolicyResource, StackValidationArgs
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from components.nativelink import layout
from components.nativelink.render import Endpoints, render_cluster
from components.settings import _IMAGE_RE, FLOATING_TAGS, _pinned_image
from tests.mocks import RecordingMocks, is_secret, reveal
from tests.policy_harness import (
    Violation,
    messages,
    policy_resource,
    recorded_args,
    resource_args,
    run,
    violations,
)
from tests.stacks import build, run_program, stack_settings

ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = ROOT / "policy"
BY_NAME = {policy.name: policy for policy in pack.POLICIES}
DIGEST = "sha256:" + "ab" * 32
RG = pack.REPLICATION_GROUP
RDS = pack.RDS_INSTANCE
MEMORYDB = pack.MEMORYDB_CLUSTER
DOCKER = pack.DOCKER_CONTAINER
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
CRONJOB = "kubernetes:batch/v1:CronJob"
SERVICE = pack.K8S_SERVICE
INGRESS = pack.K8S_INGRESS
CONFIG_MAP = pack.K8S_CONFIG_MAP
REMOTE_IMAGE = pack.DOCKER_REMOTE_IMAGE


# ---- the pack's files and entry point


def test_entry_point_builds_the_pack_with_every_policy_mandatory(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[dict[str, Any]] = []

    def fake_pack(name: str, **kwargs: Any) -> None:
        built.append({"name": name, **kwargs})

    # The real PolicyPack would start the analyzer's gRPC server and never return.
    monkeypatch.setattr(pulumi_policy, "PolicyPack", fake_pack)
    runpy.run_path(str(POLICY_DIR / "__main__.py"), run_name="__main__")
    assert built == [
        {
            "name": "nativelink-juicefs",
            "enforcement_level": pulumi_policy.EnforcementLevel.MANDATORY,
            "policies": pack.POLICIES,
        }
    ]


def test_pack_project_file_is_a_python_pack_with_a_description() -> None:
    project = yaml.safe_load((POLICY_DIR / "PulumiPolicy.yaml").read_text())
    assert project["runtime"] == "python"
    assert project["description"].strip()


def test_pack_requirements_match_the_project_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    lines = (POLICY_DIR / "requirements.txt").read_text().splitlines()
    requirements = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert sorted(requirements) == ["pulumi-policy==1.21.0", "pulumi==3.272.0"]
    for requirement in requirements:
        assert requirement in pins, f"{requirement} is not the pin in pyproject.toml"


def test_policies_have_unique_names_and_descriptions() -> None:
    assert len(BY_NAME) == len(pack.POLICIES) == 11
    for policy in pack.POLICIES:
        assert policy.description.strip(), policy.name
        # Enforcement comes from the pack (MANDATORY for all), not from each policy.
        assert policy.enforcement_level is None, policy.name


# ---- facts the pack copies from the program: the copies must not drift


def test_image_rules_are_the_programs() -> None:
    assert _IMAGE_RE.pattern == pack.IMAGE_REF_PATTERN
    assert pack.FLOATING_TAGS == FLOATING_TAGS


def test_worker_ports_are_the_programs() -> None:
    assert set(pack.WORKER_PORTS) == {layout.WORKER_API_PORT, layout.WORKER_CAS_PORT}


@pytest.mark.parametrize(
    "ref",
    [
        "redis:7.4.2-alpine",
        "ghcr.io/tracemachina/nativelink:v1.6.6",
        f"busybox@{DIGEST}",
        f"gcc:14.2.0@{DIGEST}",
        "localhost:5000/team/app:1.0",
        "redis",
        "redis:latest",
        "juicedata/mount:ce-nightly",
        "ghcr.io/x/y:MAIN",
        "Redis:7",
        "redis@sha256:short",
        "",
    ],
)
def test_image_verdicts_match_the_settings(ref: str) -> None:
    try:
        _pinned_image(ref)
        settings_ok = True
    except ValueError:
        settings_ok = False
    assert (pack.image_pin_problem(ref) is None) is settings_ok


# ---- the dev stack under mocks


@pytest.fixture
def dev(mocks: RecordingMocks) -> RecordingMocks:
    build(mocks, stack_settings("dev"))
    return mocks


@pytest.mark.parametrize(
    "overrides", [{}, {"docker": {"ports": {"minioConsole": 9101}}}], ids=["as-configured", "minio-console"]
)
def test_dev_stack_passes_every_policy(mocks: RecordingMocks, overrides: dict[str, Any]) -> None:
    build(mocks, stack_settings("dev", **overrides))
    found = violations(pack.POLICIES, mocks)
    assert not found, messages(found)


def test_policies_see_dev_secrets_in_plaintext_as_under_the_engine(dev: RecordingMocks) -> None:
    record = dev.one(DOCKER, "nativelink-juicefs-mount")
    assert is_secret(record.inputs["envs"])
    props = recorded_args(record).props
    assert [entry.split("=", 1)[0] for entry in props["envs"]] == [
        "META_PASSWORD",
        "MINIO_ACCESS_KEY",
        "MINIO_SECRET_KEY",
    ]
    assert "META_PASSWORD=generated-nativelink-redis-password-password" in list(props["envs"])


def test_dev_envs_with_credentials_are_secret_inputs_and_declared(dev: RecordingMocks) -> None:
    """What the policy cannot see (secretness of inputs) checked where it can be: under the mocks."""
    carrying = {}
    for record in dev.of_type(DOCKER):
        envs: Any = record.inputs.get("envs")
        names = pack.docker_secret_envs(reveal(envs))
        if not names:
            continue
        carrying[record.name] = names
        entries = envs["value"] if is_secret(envs) else envs
        assert is_secret(envs) or all(is_secret(entry) for entry in entries), record.name
        assert record.opts is not None
        assert record.opts.additional_secret_outputs == ["envs"], record.name
    assert carrying == {
        "nativelink-redis-server": ["REDISCLI_AUTH"],
        "nativelink-minio-server": ["MINIO_ROOT_PASSWORD"],
        "nativelink-juicefs-mount": ["META_PASSWORD", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"],
    }


def test_dev_container_without_the_declaration_is_flagged_without_its_values(dev: RecordingMocks) -> None:
    record = dev.one(DOCKER, "nativelink-juicefs-mount")
    assert record.opts is not None
    record.opts.additional_secret_outputs = None
    (violation,) = run(BY_NAME["no-plaintext-secrets"], recorded_args(record))
    assert "META_PASSWORD, MINIO_ACCESS_KEY, MINIO_SECRET_KEY" in violation.message
    assert "generated-" not in violation.message
    assert violation.resource_name == "nativelink-juicefs-mount"


def test_dev_scheduler_published_beyond_loopback_is_flagged(dev: RecordingMocks) -> None:
    record = dev.one(DOCKER, "nativelink-scheduler")
    inputs = reveal(record.inputs)
    for ip in (None, "0.0.0.0", "::"):
        port = {"internal": layout.SCHEDULER_PORT, "external": 50052}
        inputs["ports"] = [port if ip is None else {**port, "ip": ip}]
        (violation,) = run(BY_NAME["docker-ports-on-loopback"], recorded_args(record, inputs))
        assert f"published on {ip or '0.0.0.0'}" in violation.message


def test_dev_scheduler_publishing_the_worker_api_is_flagged(dev: RecordingMocks) -> None:
    record = dev.one(DOCKER, "nativelink-scheduler")
    inputs = reveal(record.inputs)
    inputs["ports"].append({"internal": layout.WORKER_API_PORT, "external": layout.WORKER_API_PORT, "ip": "127.0.0.1"})
    (violation,) = run(BY_NAME["worker-ports-not-exposed"], recorded_args(record, inputs))
    assert "50061" in violation.message


def test_dev_floating_image_is_flagged(dev: RecordingMocks) -> None:
    record = dev.one(REMOTE_IMAGE, "nativelink-redis-image")
    (violation,) = run(BY_NAME["images-pinned"], recorded_args(record, {**record.inputs, "name": "redis:latest"}))
    assert "floating tag 'latest'" in violation.message


# ---- each policy on hand-built resources


@dataclass(frozen=True)
class Case:
    policy: str
    typ: str
    props: dict[str, Any]
    # None: no violation expected; else a fragment of the expected violation message.
    expect: str | None
    secret_outputs: tuple[str, ...] = ()
    id: str = field(default="", compare=False)


def pod(containers: list[dict[str, Any]], init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers}
    if init:
        spec["initContainers"] = init
    return {"spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"spec": spec}}}


def container(**extra: Any) -> dict[str, Any]:
    return {"name": "main", "image": "ghcr.io/tracemachina/nativelink:v1.6.6", **extra}


def service(service_type: str, port: int, target: int | str | None = None, **spec: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"port": port}
    if target is not None:
        entry["targetPort"] = target
    return {"spec": {"type": service_type, "ports": [entry], **spec}}


def ingress_rule(port: int) -> dict[str, Any]:
    backend = {"service": {"name": "nativelink", "port": {"number": port}}}
    return {"spec": {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}]}}


def cas_config(stack: str, cas_data: layout.CasData) -> str:
    """The CAS server's rendered config of the stack (dev: plaintext; prod: TLS)."""
    endpoints = Endpoints(cas_host="cas", scheduler_host="scheduler")
    return render_cluster(stack_settings(stack), endpoints, cas_data=cas_data, worker_cpus=2).cas_server.to_json()


CAS_CONFIG = cas_config("dev", layout.DOCKER_CAS_DATA)
TLS_CAS_CONFIG = cas_config("prod", layout.CSI_CAS_DATA)
INTERNAL = {"service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"}


def load_balancer(annotations: dict[str, str], ranges: list[str] | None = None) -> dict[str, Any]:
    props = service("LoadBalancer", 50051, 50051, loadBalancerSourceRanges=ranges or ["10.20.30.0/24"])
    return {**props, "metadata": {"annotations": annotations}}


ENCRYPTED = {"atRestEncryptionEnabled": True, "transitEncryptionEnabled": True}
SAFE_DB = {"storageEncrypted": True, "deletionProtection": True, "publiclyAccessible": False}
SAFE_MEMORYDB = {"aclName": "juicefs-acl", "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/k", "tlsEnabled": True}

CASES = [
    # elasticache-encrypted
    Case("elasticache-encrypted", RG, ENCRYPTED, None, id="both-on"),
    Case("elasticache-encrypted", RG, {**ENCRYPTED, "transitEncryptionMode": "required"}, None, id="required"),
    Case("elasticache-encrypted", RG, {"transitEncryptionEnabled": True}, "atRestEncryptionEnabled", id="no-at-rest"),
    Case("elasticache-encrypted", RG, {**ENCRYPTED, "transitEncryptionEnabled": False}, "transitEncryptionEnabled"),
    Case("elasticache-encrypted", RG, {**ENCRYPTED, "transitEncryptionMode": "preferred"}, "'preferred'"),
    # endpoints-private-and-encrypted
    Case("endpoints-private-and-encrypted", SERVICE, load_balancer(INTERNAL), None, id="internal-lb"),
    Case("endpoints-private-and-encrypted", SERVICE, service("ClusterIP", 50051), None, id="cluster-ip"),
    Case(
        "endpoints-private-and-encrypted",
        SERVICE,
        load_balancer({"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}),
        None,
        id="legacy-internal",
    ),
    Case("endpoints-private-and-encrypted", SERVICE, load_balancer({}), "is not internal", id="internet-facing"),
    Case(
        "endpoints-private-and-encrypted",
        SERVICE,
        load_balancer({"nativelink-juicefs/internet-facing": "true"}),
        None,
        id="opted-in",
    ),
    Case(
        "endpoints-private-and-encrypted",
        SERVICE,
        {**service("LoadBalancer", 50051), "metadata": {"annotations": INTERNAL}},
        "without loadBalancerSourceRanges",
        id="no-ranges",
    ),
    Case("endpoints-private-and-encrypted", CONFIG_MAP, {"data": {"c": TLS_CAS_CONFIG}}, None, id="tls-config"),
    Case(
        "endpoints-private-and-encrypted", CONFIG_MAP, {"data": {"c": CAS_CONFIG}}, "public (0.0.0.0:50051) has no tls"
    ),
    Case("endpoints-private-and-encrypted", CONFIG_MAP, {"data": {"c": "not json"}}, None, id="other-data"),
    # memorydb-encrypted-with-acl
    Case("memorydb-encrypted-with-acl", MEMORYDB, SAFE_MEMORYDB, None, id="safe"),
    Case("memorydb-encrypted-with-acl", MEMORYDB, {**SAFE_MEMORYDB, "tlsEnabled": None}, None, id="tls-default"),
    Case("memorydb-encrypted-with-acl", MEMORYDB, {**SAFE_MEMORYDB, "tlsEnabled": False}, "tlsEnabled"),
    Case("memorydb-encrypted-with-acl", MEMORYDB, {**SAFE_MEMORYDB, "aclName": "open-access"}, "open-access"),
    Case("memorydb-encrypted-with-acl", MEMORYDB, {**SAFE_MEMORYDB, "kmsKeyArn": None}, "kmsKeyArn"),
    # rds-encrypted-protected-private
    Case("rds-encrypted-protected-private", RDS, SAFE_DB, None, id="safe"),
    Case("rds-encrypted-protected-private", RDS, {"storageEncrypted": True, "deletionProtection": True}, None),
    Case("rds-encrypted-protected-private", RDS, {**SAFE_DB, "storageEncrypted": False}, "storageEncrypted"),
    Case("rds-encrypted-protected-private", RDS, {**SAFE_DB, "deletionProtection": False}, "deletionProtection"),
    Case("rds-encrypted-protected-private", RDS, {**SAFE_DB, "publiclyAccessible": True}, "publiclyAccessible"),
    # docker-ports-on-loopback
    Case("docker-ports-on-loopback", DOCKER, {"ports": [{"internal": 80, "external": 8080, "ip": "127.0.0.1"}]}, None),
    Case("docker-ports-on-loopback", DOCKER, {"ports": [{"internal": 80, "external": 8080, "ip": "::1"}]}, None),
    Case("docker-ports-on-loopback", DOCKER, {"networkMode": "none"}, None, id="no-ports"),
    Case("docker-ports-on-loopback", DOCKER, {"ports": [{"internal": 80, "external": 8080}]}, "on 0.0.0.0", id="no-ip"),
    Case("docker-ports-on-loopback", DOCKER, {"ports": [{"internal": 80, "ip": "0.0.0.0"}]}, "on 0.0.0.0"),
    Case("docker-ports-on-loopback", DOCKER, {"ports": [{"internal": 80, "ip": "::"}]}, "on ::"),
    Case("docker-ports-on-loopback", DOCKER, {"ports": [{"internal": 80, "ip": "192.168.1.5"}]}, "on 192.168.1.5"),
    Case("docker-ports-on-loopback", DOCKER, {"networkMode": "host"}, "networkMode is 'host'"),
    # worker-ports-not-exposed
    Case("worker-ports-not-exposed", DOCKER, {"ports": [{"internal": 50051, "ip": "127.0.0.1"}]}, None),
    Case(
        "worker-ports-not-exposed",
        DOCKER,
        {"ports": [{"internal": 50061, "external": 50061, "ip": "127.0.0.1"}]},
        "50061",
        id="docker-loopback",
    ),
    Case("worker-ports-not-exposed", DOCKER, {"ports": [{"internal": 9000, "external": 50061}]}, "50061"),
    Case("worker-ports-not-exposed", SERVICE, service("ClusterIP", 50061, 50061), None, id="cluster-ip"),
    Case("worker-ports-not-exposed", SERVICE, service("LoadBalancer", 50051, 50051), None, id="lb-client-api"),
    Case("worker-ports-not-exposed", SERVICE, service("LoadBalancer", 50061), "type LoadBalancer", id="lb"),
    Case("worker-ports-not-exposed", SERVICE, service("NodePort", 80, 50061), "type NodePort", id="node-port"),
    Case(
        "worker-ports-not-exposed",
        SERVICE,
        service("ClusterIP", 50061, externalIPs=["203.0.113.7"]),
        "externalIPs",
        id="external-ips",
    ),
    Case("worker-ports-not-exposed", INGRESS, ingress_rule(50051), None, id="ingress-client-api"),
    Case("worker-ports-not-exposed", INGRESS, ingress_rule(50061), "Ingress backend", id="ingress-rule"),
    Case("worker-ports-not-exposed", SERVICE, service("LoadBalancer", 50071), "worker port 50071", id="lb-worker-cas"),
    Case("worker-ports-not-exposed", DOCKER, {"ports": [{"internal": 50071, "ip": "127.0.0.1"}]}, "50071", id="cas-w"),
    Case(
        "worker-ports-not-exposed",
        INGRESS,
        {"spec": {"defaultBackend": {"service": {"name": "s", "port": {"number": 50061}}}}},
        "Ingress backend",
        id="ingress-default",
    ),
    # no-plaintext-secrets: Docker
    Case("no-plaintext-secrets", DOCKER, {"envs": ["RUST_LOG=info", "WORKER_NAME=w"]}, None, id="plain-envs"),
    Case("no-plaintext-secrets", DOCKER, {"envs": ["META_PASSWORD=hunter2"]}, None, ("envs",), id="declared"),
    Case("no-plaintext-secrets", DOCKER, {"envs": ["META_PASSWORD="]}, None, id="empty-value"),
    Case("no-plaintext-secrets", DOCKER, {"envs": ["META_PASSWORD=hunter2"]}, "envs META_PASSWORD carry"),
    Case("no-plaintext-secrets", DOCKER, {"envs": ["JFS_SECRET_FILE=/x", "A=b"]}, "JFS_SECRET_FILE"),
    Case(
        "no-plaintext-secrets", DOCKER, {"envs": ["GITHUB_TOKEN=t", "AWS_ACCESS_KEY=k"]}, "GITHUB_TOKEN, AWS_ACCESS_KEY"
    ),
    Case("no-plaintext-secrets", DOCKER, {"envs": ["MC_HOST_s=http://u:p@minio:9000"]}, "MC_HOST_s", id="url"),
    # no-plaintext-secrets: Kubernetes pod containers
    Case(
        "no-plaintext-secrets",
        DEPLOYMENT,
        pod([container(env=[{"name": "META_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])]),
        None,
        id="secret-key-ref",
    ),
    Case(
        "no-plaintext-secrets",
        DEPLOYMENT,
        pod([container(env=[{"name": "RUST_LOG", "value": "info"}, {"name": "POD", "valueFrom": {"fieldRef": {}}}])]),
        None,
        id="plain-k8s-envs",
    ),
    Case(
        "no-plaintext-secrets",
        DEPLOYMENT,
        pod([container(env=[{"name": "META_PASSWORD", "value": "hunter2"}])]),
        "env META_PASSWORD to a literal value",
    ),
    Case(
        "no-plaintext-secrets",
        DEPLOYMENT,
        pod([container()], init=[container(name="init", env=[{"name": "api-key", "value": "k"}])]),
        "container 'init' sets env api-key",
        id="init-container",
    ),
    Case(
        "no-plaintext-secrets",
        DEPLOYMENT,
        pod([container(env=[{"name": "S3_SECRET", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}])]),
        "env S3_SECRET from outside a Secret",
    ),
    Case(
        "no-plaintext-secrets",
        DEPLOYMENT,
        pod([container(env=[{"name": "META_URL", "value": "redis://:hunter2@redis:6379/1"}])]),
        "credential in the literal value of env META_URL",
    ),
    Case(
        "no-plaintext-secrets",
        CRONJOB,
        {
            "spec": {
                "jobTemplate": {
                    "spec": {"template": {"spec": {"containers": [container(env=[{"name": "TOKEN", "value": "t"}])]}}}
                }
            }
        },
        "env TOKEN",
        id="cronjob",
    ),
    # no-plaintext-secrets: ConfigMaps
    Case(
        "no-plaintext-secrets", CONFIG_MAP, {"data": {"cas.json5": CAS_CONFIG, "level": "info"}}, None, id="nativelink"
    ),
    Case("no-plaintext-secrets", CONFIG_MAP, {"data": {"app.yaml": 'password: ""\nauth: {\n'}}, None, id="no-values"),
    Case("no-plaintext-secrets", CONFIG_MAP, {"data": {"redis-password": "x"}}, "key 'redis-password'"),
    Case("no-plaintext-secrets", CONFIG_MAP, {"data": {"meta.env": "A=1\nMETA_PASSWORD=x\n"}}, "sets META_PASSWORD"),
    Case("no-plaintext-secrets", CONFIG_MAP, {"data": {"c.json": '{\n  "secret_key": "abc",\n}'}}, "sets secret_key"),
    Case("no-plaintext-secrets", CONFIG_MAP, {"data": {"meta": "rediss://u:pw@h:6379/1"}}, "holds a credential"),
    Case(
        "no-plaintext-secrets",
        CONFIG_MAP,
        {"data": {"rsa": "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n"}},
        "holds a credential",
        id="pem",
    ),
    # images-pinned
    Case("images-pinned", REMOTE_IMAGE, {"name": "redis:7.4.2-alpine"}, None, id="tag"),
    Case("images-pinned", REMOTE_IMAGE, {"name": f"redis@{DIGEST}"}, None, id="digest"),
    Case("images-pinned", REMOTE_IMAGE, {"name": "redis"}, "no tag or digest"),
    Case("images-pinned", REMOTE_IMAGE, {"name": "redis:latest"}, "floating tag 'latest'"),
    Case("images-pinned", REMOTE_IMAGE, {"name": "juicedata/mount:ce-nightly"}, "floating tag 'ce-nightly'"),
    Case("images-pinned", DOCKER, {"image": DIGEST}, None, id="image-id"),
    Case("images-pinned", DOCKER, {"image": "nginx:1.27.0"}, None, id="container-tag"),
    Case("images-pinned", DOCKER, {"image": "nginx:latest"}, "floating tag"),
    Case("images-pinned", DEPLOYMENT, pod([container()]), None, id="pod-pinned"),
    Case("images-pinned", DEPLOYMENT, pod([container(image="gcc:main")]), "container 'main': 'gcc:main' uses"),
    Case(
        "images-pinned", DEPLOYMENT, pod([container()], init=[container(name="i", image="busybox")]), "'i': 'busybox'"
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id or f"{case.policy}:{case.expect}")
def test_policy_on_a_hand_built_resource(case: Case) -> None:
    args = resource_args(case.typ, case.props, additional_secret_outputs=case.secret_outputs)
    found = run(BY_NAME[case.policy], args)
    if case.expect is None:
        assert not found, messages(found)
    else:
        assert found, f"no violation; expected {case.expect!r}"
        assert any(case.expect in violation.message for violation in found), messages(found)
        assert {violation.urn for violation in found} == {args.urn}


def test_secret_violations_never_quote_the_value() -> None:
    for props in (
        {"envs": ["META_PASSWORD=hunter2"]},
        {"envs": ["MC_HOST_s=http://u:hunter2@minio:9000"]},
    ):
        (violation,) = run(BY_NAME["no-plaintext-secrets"], resource_args(DOCKER, props))
        assert "hunter2" not in violation.message
    deployment = pod([container(env=[{"name": "URL", "value": "redis://:hunter2@r:6379"}])])
    (violation,) = run(BY_NAME["no-plaintext-secrets"], resource_args(DEPLOYMENT, deployment))
    assert "hunter2" not in violation.message


def test_every_policy_has_a_failing_and_a_passing_case() -> None:
    for name in BY_NAME:
        if name.startswith("s3-"):
            continue  # stack policies: below
        expectations = {case.expect is None for case in CASES if case.policy == name}
        assert expectations == {True, False}, name


# ---- previews: unknown values


def test_unknown_container_image_is_left_to_its_remote_image() -> None:
    assert run(BY_NAME["images-pinned"], resource_args(DOCKER, {"image": UNKNOWN_STRING_VALUE})) == []


def test_unknown_envs_of_a_declared_container_are_not_read() -> None:
    args = resource_args(DOCKER, {"envs": [UNKNOWN_STRING_VALUE]}, additional_secret_outputs=["envs"])
    assert run(BY_NAME["no-plaintext-secrets"], args) == []


def test_unknown_literal_for_a_secret_name_is_still_a_literal() -> None:
    deployment = pod([container(env=[{"name": "META_PASSWORD", "value": UNKNOWN_STRING_VALUE}])])
    (violation,) = run(BY_NAME["no-plaintext-secrets"], resource_args(DEPLOYMENT, deployment))
    assert "META_PASSWORD to a literal value" in violation.message


def test_unknown_security_setting_is_left_to_the_engine() -> None:
    # The engine turns this into an advisory "can't run during preview"; `pulumi up` sees the value.
    args = resource_args(RG, {"atRestEncryptionEnabled": UNKNOWN_STRING_VALUE, "transitEncryptionEnabled": True})
    with pytest.raises(UnknownValueError):
        run(BY_NAME["elasticache-encrypted"], args)


# ---- S3 stack policies


BUCKET = "aws:s3/bucket:Bucket"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
PUBLIC_ACCESS = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
KMS_RULES = {"rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": "k"}}]}
VERSIONED = {"versioningConfiguration": {"status": "Enabled"}}
ALL_BLOCKED = dict.fromkeys(("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"), True)
GOOD_SIDES: dict[str, dict[str, Any] | None] = {SSE: KMS_RULES, VERSIONING: VERSIONED, PUBLIC_ACCESS: ALL_BLOCKED}
S3_POLICY = {
    SSE: "s3-buckets-encrypted-with-kms",
    VERSIONING: "s3-buckets-versioned",
    PUBLIC_ACCESS: "s3-buckets-block-public-access",
}


def s3_stack(
    sides: dict[str, dict[str, Any] | None], *, by: str = "dependency", bucket: str = "cas"
) -> StackValidationArgs:
    """A bucket with one side resource per entry (None: left out), tied to it by `by`."""
    target = policy_resource(BUCKET, {"bucket": f"{bucket}-1234", "id": f"{bucket}-1234"}, name=bucket)
    resources: list[PolicyResource] = [target]
    for typ, props in sides.items():
        if props is None:
            continue
        name = f"{bucket}-{typ.rsplit(':', 1)[-1]}"
        if by == "dependency":
            # As in a preview of a new bucket: the name is unknown, its origin is not.
            side_props = {**props, "bucket": UNKNOWN_STRING_VALUE}
            resources.append(policy_resource(typ, side_props, name=name, property_dependencies={"bucket": [target]}))
        else:
            resources.append(policy_resource(typ, {**props, "bucket": by}, name=name))
    return StackValidationArgs(resources)


def s3_violations(args: StackValidationArgs) -> list[Violation]:
    return [v for policy in pack.POLICIES if policy.name.startswith("s3-") for v in run(policy, args)]


@pytest.mark.parametrize("by", ["dependency", "cas-1234"])
def test_bucket_with_its_three_side_resources_passes(by: str) -> None:
    assert s3_violations(s3_stack(GOOD_SIDES, by=by)) == []


def test_bucket_v2_is_checked_too() -> None:
    bare = StackValidationArgs([policy_resource("aws:s3/bucketV2:BucketV2", {"bucket": "b"}, name="b")])
    assert {v.policy for v in s3_violations(bare)} == set(S3_POLICY.values())


@pytest.mark.parametrize("missing", [SSE, VERSIONING, PUBLIC_ACCESS])
def test_bucket_without_a_side_resource_is_flagged(missing: str) -> None:
    found = s3_violations(s3_stack({**GOOD_SIDES, missing: None}))
    assert [(v.policy, v.resource_name) for v in found] == [(S3_POLICY[missing], "cas")]
    assert f"has no {missing.rsplit(':', 1)[-1]}" in found[0].message


@pytest.mark.parametrize(
    ("typ", "props", "expect"),
    [
        (SSE, {"rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]}, "'AES256'"),
        (SSE, {"rules": []}, "has no rules"),
        (VERSIONING, {"versioningConfiguration": {"status": "Suspended"}}, "'Suspended'"),
        (PUBLIC_ACCESS, {**ALL_BLOCKED, "restrictPublicBuckets": False}, "restrictPublicBuckets"),
        (PUBLIC_ACCESS, {"blockPublicAcls": True}, "blockPublicPolicy, ignorePublicAcls, restrictPublicBuckets"),
    ],
)
def test_misconfigured_side_resource_is_flagged(typ: str, props: dict[str, Any], expect: str) -> None:
    found = s3_violations(s3_stack({**GOOD_SIDES, typ: props}))
    assert [v.policy for v in found] == [S3_POLICY[typ]]
    assert expect in found[0].message
    assert found[0].resource_name == f"cas-{typ.rsplit(':', 1)[-1]}"


def test_side_resources_of_another_bucket_do_not_count() -> None:
    other = s3_stack(GOOD_SIDES, by="other-bucket")
    assert {v.policy for v in s3_violations(other)} == set(S3_POLICY.values())


# ---- the wire names the policies read are the SDKs' own


def sdk_pod(app: str, container: k8s.core.v1.ContainerArgs) -> dict[str, Any]:
    """The selector and pod template of a one-container workload spec, as SDK Args."""
    return {
        "selector": k8s.meta.v1.LabelSelectorArgs(match_labels={"app": app}),
        "template": k8s.core.v1.PodTemplateSpecArgs(spec=k8s.core.v1.PodSpecArgs(containers=[container])),
    }


def record_program(mocks: RecordingMocks, program: Callable[[Callable[..., pulumi.ResourceOptions]], None]) -> None:
    """Run `program` under the mocks; it passes `opts(...)` to each resource so its options are recorded."""

    def opts(**options: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(transformations=[mocks.transformation], **options)

    run_program(lambda: program(opts))


def test_policies_pass_on_good_resources_built_with_the_sdks(mocks: RecordingMocks) -> None:
    """Real SDK classes, not hand-written props: the wire names the policies read are the SDKs' own."""

    def program(opts: Callable[..., pulumi.ResourceOptions]) -> None:
        bucket = aws.s3.Bucket("good-bucket", opts=opts())
        by_default = aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
            sse_algorithm="aws:kms", kms_master_key_id="key"
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            "good-sse",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=by_default
                )
            ],
            opts=opts(),
        )
        aws.s3.BucketVersioning(
            "good-versioning",
            bucket=bucket.bucket,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=opts(),
        )
        aws.s3.BucketPublicAccessBlock(
            "good-pab",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=opts(),
        )
        aws.elasticache.ReplicationGroup(
            "good-rg", description="d", at_rest_encryption_enabled=True, transit_encryption_enabled=True, opts=opts()
        )
        aws.memorydb.Cluster(
            "good-memorydb", acl_name="juicefs", node_type="db.r7g.large", kms_key_arn="arn:k", opts=opts()
        )
        aws.rds.Instance(
            "good-db", instance_class="db.t4g.micro", storage_encrypted=True, deletion_protection=True, opts=opts()
        )
        secret_ref = k8s.core.v1.SecretKeySelectorArgs(name="s", key="k")
        env = k8s.core.v1.EnvVarArgs(
            name="META_PASSWORD", value_from=k8s.core.v1.EnvVarSourceArgs(secret_key_ref=secret_ref)
        )
        cas = k8s.core.v1.ContainerArgs(name="cas", image="nativelink:v1.6.6", env=[env])
        k8s.apps.v1.StatefulSet("good-sts", spec=k8s.apps.v1.StatefulSetSpecArgs(**sdk_pod("cas", cas)), opts=opts())
        k8s.core.v1.Service(
            "good-svc",
            metadata=k8s.meta.v1.ObjectMetaArgs(annotations=INTERNAL),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="LoadBalancer",
                load_balancer_source_ranges=["10.20.30.0/24"],
                ports=[k8s.core.v1.ServicePortArgs(port=50051, target_port=50051)],
            ),
            opts=opts(),
        )
        k8s.core.v1.ConfigMap("good-cm", data={"cas.json5": TLS_CAS_CONFIG}, opts=opts())
        docker.Container(
            "good-container",
            image=DIGEST,
            envs=[pulumi.Output.secret("META_PASSWORD=x")],
            ports=[docker.ContainerPortArgs(internal=50051, external=50051, ip="127.0.0.1")],
            opts=opts(additional_secret_outputs=["envs"]),
        )

    record_program(mocks, program)
    assert len(mocks.resources) == 11
    found = violations(pack.POLICIES, mocks)
    assert not found, messages(found)


def test_policies_flag_bad_resources_built_with_the_sdks(mocks: RecordingMocks) -> None:
    def program(opts: Callable[..., pulumi.ResourceOptions]) -> None:
        aws.s3.Bucket("bad-bucket", opts=opts())
        aws.elasticache.ReplicationGroup("bad-rg", description="d", transit_encryption_enabled=False, opts=opts())
        aws.memorydb.Cluster("bad-memorydb", acl_name="open-access", node_type="db.r7g.large", opts=opts())
        aws.rds.Instance("bad-db", instance_class="db.t4g.micro", publicly_accessible=True, opts=opts())
        token = k8s.core.v1.EnvVarArgs(name="TOKEN", value="t")
        worker = k8s.core.v1.ContainerArgs(name="w", image="nativelink:latest", env=[token])
        k8s.apps.v1.Deployment("bad-deploy", spec=k8s.apps.v1.DeploymentSpecArgs(**sdk_pod("w", worker)), opts=opts())
        k8s.core.v1.Service(
            "bad-svc",
            spec=k8s.core.v1.ServiceSpecArgs(type="NodePort", ports=[k8s.core.v1.ServicePortArgs(port=50061)]),
            opts=opts(),
        )
        backend = k8s.networking.v1.IngressServiceBackendArgs(
            name="w", port=k8s.networking.v1.ServiceBackendPortArgs(number=50061)
        )
        k8s.networking.v1.Ingress(
            "bad-ingress",
            spec=k8s.networking.v1.IngressSpecArgs(
                default_backend=k8s.networking.v1.IngressBackendArgs(service=backend)
            ),
            opts=opts(),
        )
        k8s.core.v1.Service(
            "bad-lb",
            spec=k8s.core.v1.ServiceSpecArgs(type="LoadBalancer", ports=[k8s.core.v1.ServicePortArgs(port=50052)]),
            opts=opts(),
        )
        k8s.core.v1.ConfigMap("bad-cm", data={"secret": "x", "cas.json5": CAS_CONFIG}, opts=opts())
        docker.RemoteImage("bad-image", name="redis", opts=opts())
        docker.Container(
            "bad-container",
            image="redis:latest",
            envs=["META_PASSWORD=x"],
            ports=[docker.ContainerPortArgs(internal=50061)],
            opts=opts(),
        )

    record_program(mocks, program)
    flagged = {(v.policy, v.resource_name) for v in violations(pack.POLICIES, mocks)}
    assert flagged == {
        ("s3-buckets-encrypted-with-kms", "bad-bucket"),
        ("s3-buckets-versioned", "bad-bucket"),
        ("s3-buckets-block-public-access", "bad-bucket"),
        ("elasticache-encrypted", "bad-rg"),
        ("memorydb-encrypted-with-acl", "bad-memorydb"),
        ("rds-encrypted-protected-private", "bad-db"),
        ("images-pinned", "bad-deploy"),
        ("no-plaintext-secrets", "bad-deploy"),
        ("worker-ports-not-exposed", "bad-svc"),
        ("worker-ports-not-exposed", "bad-ingress"),
        ("no-plaintext-secrets", "bad-cm"),
        ("endpoints-private-and-encrypted", "bad-cm"),
        ("endpoints-private-and-encrypted", "bad-lb"),
        ("images-pinned", "bad-image"),
        ("images-pinned", "bad-container"),
        ("no-plaintext-secrets", "bad-container"),
        ("docker-ports-on-loopback", "bad-container"),
        ("worker-ports-not-exposed", "bad-container"),
    }
