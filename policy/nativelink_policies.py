"""The nativelink-juicefs policies: what every dev and prod stack must satisfy before `pulumi up` may go on.

Self-contained on purpose: this module imports only pulumi-policy and the standard library, never the
program's `components` package. The pack is a separate plugin with its own interpreter; importing
`components` would pull the whole program (pydantic, pulumi-aws, pulumi-kubernetes) into the pack's
environment, and `-e ..` in requirements.txt resolves against pip's working directory, not this file.
The two facts it shares with the program, the image-reference grammar (`components.settings`) and the
worker API port (`components.nativelink.layout`), are copied here and tests/test_policy.py fails when
either copy drifts.

What a policy sees (pulumi-policy 1.21 with the engine of pulumi 3.272): resource inputs with wire
(camelCase) names, numbers as floats, secrets already unwrapped to plaintext with no marker left, and
unknown preview values behind a proxy that raises `UnknownValueError` when read. A policy that reads
an unknown value is reported by the engine as "can't run during preview" (advisory) and runs again,
with known values, during `pulumi up`. Violation messages name properties and env names, never values.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from pulumi_policy import (
    Policy,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

PACK_NAME = "nativelink-juicefs"

# ---- facts shared with the program (tests/test_policy.py checks them against the originals)

# components.nativelink.layout.WORKER_API_PORT and WORKER_CAS_PORT: workers reach the scheduler and the
# CAS server's writable action cache there; neither authenticates its callers.
WORKER_PORTS = {50061: "the worker API port 50061", 50071: "the CAS server's worker port 50071"}
# components.settings.FLOATING_TAGS and the pattern of components.settings._IMAGE_RE.
FLOATING_TAGS = frozenset({"latest", "main", "master", "nightly", "ce-nightly", "edge", "stable", "dev"})
IMAGE_REF_PATTERN = (
    r"^(?P<name>[a-z0-9]+(?:[._/-][a-z0-9]+)*(?:\.[a-z0-9-]+(?::[0-9]+)?/[a-z0-9._/-]+)?)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_IMAGE_RE = re.compile(IMAGE_REF_PATTERN)
# What docker's RemoteImage.imageId holds: a content-addressed image ID, pinned by definition.
_IMAGE_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

# ---- resource types

BUCKET_TYPES = frozenset({"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"})
# The deprecated *V2 side resources configure the same bucket settings; accept either spelling.
SSE_TYPES = frozenset(
    {
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
    }
)
VERSIONING_TYPES = frozenset(
    {"aws:s3/bucketVersioning:BucketVersioning", "aws:s3/bucketVersioningV2:BucketVersioningV2"}
)
PUBLIC_ACCESS_BLOCK_TYPES = frozenset({"aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"})
REPLICATION_GROUP = "aws:elasticache/replicationGroup:ReplicationGroup"
RDS_INSTANCE = "aws:rds/instance:Instance"
MEMORYDB_CLUSTER = "aws:memorydb/cluster:Cluster"
DOCKER_CONTAINER = "docker:index/container:Container"
DOCKER_REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
K8S_SERVICE = "kubernetes:core/v1:Service"
K8S_INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
K8S_CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
# Where each workload keeps its pod spec.
POD_SPEC_PATHS: Mapping[str, tuple[str, ...]] = {
    "kubernetes:core/v1:Pod": ("spec",),
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:core/v1:ReplicationController": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
KMS_ALGORITHMS = frozenset({"aws:kms", "aws:kms:dsse"})
PUBLIC_ACCESS_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
EXPOSED_SERVICE_TYPES = frozenset({"LoadBalancer", "NodePort"})
# NativeLink's gRPC listeners (components/nativelink/layout.py): clients' and workers'.
GRPC_PORTS = frozenset({50051, 50052, 50061, 50071})
LB_ANNOTATION = "service.beta.kubernetes.io/aws-load-balancer"
# The explicit opt-in for a load balancer on the internet.
INTERNET_FACING_OPT_IN = "nativelink-juicefs/internet-facing"

# ---- what looks like a secret

# Names of envs and ConfigMap keys that hold credentials: *PASSWORD, *PASSWD, *PASSPHRASE, *_PASS,
# *TOKEN, *_KEY (also *.key, *-key, APIKEY, camelCase accessKey), *_AUTH, and anything with SECRET.
_SECRET_NAME = re.compile(
    r"(?i:secret|password$|passwd$|passphrase$|token$|apikey$|(?:^|[^a-z0-9])(?:pass|key|auth)$)"
    r"|[a-z0-9](?:Pass|Key|Auth)$"
)
# Values that carry a credential whatever they are called: a URL with a password, a private key.
_CREDENTIAL_VALUE = re.compile(
    r"[a-z][a-z0-9+.-]*://[^\s/:@]*:[^\s/@]+@|-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----",
    re.IGNORECASE,
)
# `NAME=value`, `NAME: value`, `"NAME": "value"` lines inside a ConfigMap file (env files, YAML, JSON).
_ASSIGNMENT = re.compile(r"""^\s*["']?([A-Za-z0-9_.-]+)["']?\s*[:=]\s*(.*?)\s*,?\s*$""", re.MULTILINE)
# Right-hand sides that hold no value: empty, null, a nested object, a placeholder.
_NO_VALUE = re.compile(r"""^(|""|''|null|~|true|false|[{\[].*|\$\{.*|<.*>)$""", re.IGNORECASE)


def looks_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def carries_credential(value: str) -> bool:
    return bool(_CREDENTIAL_VALUE.search(value))


# ---- reading props without tripping over the engine's proxies


class _Unknown:
    """Stands for a value the engine does not know yet (preview)."""


UNKNOWN = _Unknown()


def _has(mapping: Any, key: str) -> bool:
    # `key in proxy` reads the value and raises when it is unknown; iterating the keys does not.
    return isinstance(mapping, Mapping) and any(k == key for k in mapping)


def _get(mapping: Any, *path: str) -> Any:
    """The value at `path`, None when any step is missing; raises UnknownValueError on an unknown."""
    value = mapping
    for key in path:
        if not _has(value, key):
            return None
        value = value[key]
    return value


def _peek(mapping: Any, *path: str) -> Any:
    """Like `_get`, but an unknown value comes back as UNKNOWN instead of raising."""
    try:
        return _get(mapping, *path)
    except UnknownValueError:
        return UNKNOWN


def _items(value: Any) -> list[Any]:
    """The elements of a list value (proxied lists are Sequences, not lists); [] for anything else."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [value[index] for index in range(len(value))]
    return []


def _peek_items(value: Any) -> Iterator[Any]:
    """The known elements of a list value; unknown ones are skipped."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        for index in range(len(value)):
            try:
                yield value[index]
            except UnknownValueError:
                continue


def _port_number(value: Any) -> int | None:
    # Numbers arrive as floats through the engine's protobuf Struct; named ports stay strings.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


# ---- image references


def image_pin_problem(ref: str) -> str | None:
    """Why `ref` is not pinned to one image, or None. Same verdicts as components.settings._pinned_image."""
    match = _IMAGE_RE.match(ref)
    if match is None:
        return f"{ref!r} is not an image reference like 'registry/name:tag' or 'name@sha256:<digest>'"
    tag, digest = match.group("tag"), match.group("digest")
    if digest is None and tag is None:
        return f"{ref!r} has no tag or digest; pin a release tag or a sha256 digest"
    if digest is None and tag is not None and tag.lower() in FLOATING_TAGS:
        return f"{ref!r} uses the floating tag {tag!r}; pin a release tag or a sha256 digest"
    return None


# ---- pods


def pod_containers(resource_type: str, props: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every container of a workload's pod spec: containers, init containers, ephemeral containers."""
    path = POD_SPEC_PATHS.get(resource_type)
    if path is None:
        return
    spec = _get(props, *path)
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for container in _items(_get(spec, key)):
            if isinstance(container, Mapping):
                yield container


def _container_label(container: Mapping[str, Any]) -> str:
    name = _peek(container, "name")
    return f"container {name!r}" if isinstance(name, str) else "a container"


# ---- S3: one stack policy per side resource every bucket needs


def _bucket_names(bucket: PolicyResource) -> set[str]:
    names = (_peek(bucket.props, "id"), _peek(bucket.props, "bucket"))
    return {name for name in names if isinstance(name, str) and name}


def _configures(side: PolicyResource, bucket: PolicyResource) -> bool:
    """Whether `side` targets `bucket`: by the dependency of its `bucket` property, else by name.

    During a preview a new bucket's name is unknown, but the engine still says which resource the
    `bucket` property came from.
    """
    if any(dep.urn == bucket.urn for dep in side.property_dependencies.get("bucket", [])):
        return True
    target = _peek(side.props, "bucket")
    return isinstance(target, str) and target in _bucket_names(bucket)


def _sse_problem(props: Mapping[str, Any]) -> str | None:
    rules = _items(_get(props, "rules"))
    if not rules:
        return "has no rules"
    algorithms = [_get(rule, "applyServerSideEncryptionByDefault", "sseAlgorithm") for rule in rules]
    bad = [algorithm for algorithm in algorithms if algorithm not in KMS_ALGORITHMS]
    if bad:
        return f"uses sseAlgorithm {bad[0]!r}; use 'aws:kms' with the stack's KMS key"
    return None


def _versioning_problem(props: Mapping[str, Any]) -> str | None:
    status = _get(props, "versioningConfiguration", "status")
    return None if status == "Enabled" else f"has versioningConfiguration.status {status!r}; set it to 'Enabled'"


def _public_access_problem(props: Mapping[str, Any]) -> str | None:
    off = [flag for flag in PUBLIC_ACCESS_FLAGS if _get(props, flag) is not True]
    return f"leaves {', '.join(off)} unset or false; set all four to true" if off else None


def _every_bucket_has(
    side_types: frozenset[str], what: str, problem: Callable[[Mapping[str, Any]], str | None]
) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        sides = [r for r in args.resources if r.resource_type in side_types]
        for bucket in (r for r in args.resources if r.resource_type in BUCKET_TYPES):
            mine = [side for side in sides if _configures(side, bucket)]
            if not mine:
                report_violation(f"S3 bucket {bucket.name!r} has no {what}", bucket.urn)
            for side in mine:
                found = problem(side.props)
                if found is not None:
                    report_violation(f"{what} {side.name!r} of S3 bucket {bucket.name!r} {found}", side.urn)

    return validate


s3_buckets_encrypted_with_kms = StackValidationPolicy(
    name="s3-buckets-encrypted-with-kms",
    description="Every S3 bucket has a BucketServerSideEncryptionConfiguration whose rules all use aws:kms.",
    validate=_every_bucket_has(SSE_TYPES, "BucketServerSideEncryptionConfiguration", _sse_problem),
)

s3_buckets_versioned = StackValidationPolicy(
    name="s3-buckets-versioned",
    description="Every S3 bucket has a BucketVersioning with status Enabled (JuiceFS blocks survive a bad write).",
    validate=_every_bucket_has(VERSIONING_TYPES, "BucketVersioning", _versioning_problem),
)

s3_buckets_block_public_access = StackValidationPolicy(
    name="s3-buckets-block-public-access",
    description="Every S3 bucket has a BucketPublicAccessBlock with all four block/ignore/restrict flags true.",
    validate=_every_bucket_has(PUBLIC_ACCESS_BLOCK_TYPES, "BucketPublicAccessBlock", _public_access_problem),
)

# ---- metadata engines


def _validate_elasticache(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != REPLICATION_GROUP:
        return
    if _get(args.props, "atRestEncryptionEnabled") is not True:
        report_violation("atRestEncryptionEnabled is not true; JuiceFS metadata must be encrypted at rest", None)
    if _get(args.props, "transitEncryptionEnabled") is not True:
        report_violation("transitEncryptionEnabled is not true; clients must reach Redis over TLS", None)
    elif _get(args.props, "transitEncryptionMode") == "preferred":
        # `preferred` still accepts plaintext connections.
        report_violation("transitEncryptionMode is 'preferred'; use 'required' (or leave it unset)", None)


elasticache_encrypted = ResourceValidationPolicy(
    name="elasticache-encrypted",
    description="ElastiCache replication groups encrypt at rest and in transit (TLS required).",
    validate=_validate_elasticache,
)


def _validate_memorydb(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != MEMORYDB_CLUSTER:
        return
    # MemoryDB's own default for tlsEnabled is true.
    if _get(args.props, "tlsEnabled") is False:
        report_violation("tlsEnabled is false; clients must reach MemoryDB over TLS", None)
    if _get(args.props, "aclName") == "open-access":
        report_violation("aclName is 'open-access': anyone who reaches the port gets the metadata, no password", None)
    if not _get(args.props, "kmsKeyArn"):
        report_violation("kmsKeyArn is not set; encrypt JuiceFS metadata at rest with a customer-managed key", None)


memorydb_encrypted_with_acl = ResourceValidationPolicy(
    name="memorydb-encrypted-with-acl",
    description="MemoryDB clusters use TLS, a customer-managed KMS key and an ACL other than open-access.",
    validate=_validate_memorydb,
)


def _validate_rds(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != RDS_INSTANCE:
        return
    if _get(args.props, "storageEncrypted") is not True:
        report_violation("storageEncrypted is not true; JuiceFS metadata must be encrypted at rest", None)
    if _get(args.props, "deletionProtection") is not True:
        report_violation("deletionProtection is not true; losing the metadata loses every CAS object", None)
    if _get(args.props, "publiclyAccessible") is True:
        report_violation("publiclyAccessible is true; the database must be reachable from the VPC only", None)


rds_encrypted_protected_private = ResourceValidationPolicy(
    name="rds-encrypted-protected-private",
    description="RDS instances are storage-encrypted, deletion-protected and not publicly accessible.",
    validate=_validate_rds,
)

# ---- network exposure


def _validate_docker_loopback(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != DOCKER_CONTAINER:
        return
    if _get(args.props, "networkMode") == "host":
        report_violation("networkMode is 'host': every port the container listens on is on every host address", None)
    for port in _items(_get(args.props, "ports")):
        # Docker's own default for a missing ip is 0.0.0.0: every interface.
        ip = _get(port, "ip") or "0.0.0.0"
        try:
            loopback = ipaddress.ip_address(ip).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            internal, external = _get(port, "internal"), _get(port, "external")
            report_violation(
                f"port {_port_number(internal)} is published on {ip} (host port {_port_number(external)}); "
                "publish on 127.0.0.1 only: nothing in the cluster authenticates its clients",
                None,
            )


docker_ports_on_loopback = ResourceValidationPolicy(
    name="docker-ports-on-loopback",
    description="Docker containers publish ports on a loopback address only (a missing ip means 0.0.0.0).",
    validate=_validate_docker_loopback,
)


def _service_exposes_worker_api(props: Mapping[str, Any]) -> list[str]:
    spec = _get(props, "spec")
    service_type = _get(spec, "type")
    external_ips = _items(_get(spec, "externalIPs"))
    if service_type not in EXPOSED_SERVICE_TYPES and not external_ips:
        return []
    how = f"type {service_type}" if service_type in EXPOSED_SERVICE_TYPES else "externalIPs"
    found = []
    for port in _items(_get(spec, "ports")):
        for number in (_port_number(_get(port, "port")), _port_number(_get(port, "targetPort"))):
            if number in WORKER_PORTS:
                found.append(f"Service of {how} exposes {WORKER_PORTS[number]}")
    return found


def _ingress_backends(props: Mapping[str, Any]) -> Iterator[Any]:
    spec = _get(props, "spec")
    yield _get(spec, "defaultBackend")
    for rule in _items(_get(spec, "rules")):
        for path in _items(_get(rule, "http", "paths")):
            yield _get(path, "backend")


def _validate_worker_api(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == DOCKER_CONTAINER:
        for port in _items(_get(args.props, "ports")):
            for number in {_port_number(_get(port, "internal")), _port_number(_get(port, "external"))}:
                if number in WORKER_PORTS:
                    report_violation(
                        f"{WORKER_PORTS[number]} is published; workers reach it on the private network", None
                    )
    elif args.resource_type == K8S_SERVICE:
        for message in _service_exposes_worker_api(args.props):
            report_violation(message, None)
    elif args.resource_type == K8S_INGRESS:
        for backend in _ingress_backends(args.props):
            number = _port_number(_get(backend, "service", "port", "number"))
            if number in WORKER_PORTS:
                report_violation(f"an Ingress backend routes to {WORKER_PORTS[number]}", None)


worker_ports_not_exposed = ResourceValidationPolicy(
    name="worker-ports-not-exposed",
    description=(
        f"The ports only workers use ({', '.join(str(port) for port in WORKER_PORTS)}) are never published: not in "
        "Docker ports, not on a LoadBalancer/NodePort/externalIPs Service, not behind an Ingress."
    ),
    validate=_validate_worker_api,
)


def _load_balancer_problems(props: Mapping[str, Any]) -> list[str]:
    spec = _get(props, "spec")
    if _get(spec, "type") != "LoadBalancer":
        return []
    annotations = _get(props, "metadata", "annotations") or {}
    internal = (
        _get(annotations, f"{LB_ANNOTATION}-scheme") == "internal"
        or _get(annotations, f"{LB_ANNOTATION}-internal") == "true"
    )
    problems = []
    if not internal and _get(annotations, INTERNET_FACING_OPT_IN) != "true":
        problems.append(
            f"a LoadBalancer Service that is not internal ({LB_ANNOTATION}-scheme: internal); annotate "
            f"{INTERNET_FACING_OPT_IN}: 'true' to put it on the internet on purpose"
        )
    if not _items(_get(spec, "loadBalancerSourceRanges")):
        problems.append("a LoadBalancer Service without loadBalancerSourceRanges admits every address that reaches it")
    return problems


def _plaintext_listeners(text: Any) -> list[str]:
    """The gRPC listeners of a NativeLink config (JSON) that speak plaintext."""
    if not isinstance(text, str):
        return []
    try:
        config = json.loads(text)
    except ValueError:
        return []
    servers = config.get("servers") if isinstance(config, dict) else None
    found = []
    for server in servers if isinstance(servers, list) else []:
        http = _get(server, "listener", "http") or {}
        address = str(_get(http, "socket_address") or "")
        port_text = address.rpartition(":")[2]
        port = int(port_text) if port_text.isdigit() else None
        if port in GRPC_PORTS and not _get(http, "tls"):
            found.append(f"NativeLink listener {_get(server, 'name') or address} ({address}) has no tls")
    return found


def _validate_endpoints(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == K8S_SERVICE:
        for message in _load_balancer_problems(args.props):
            report_violation(message, None)
    elif args.resource_type == K8S_CONFIG_MAP:
        for text in (_get(args.props, "data") or {}).values():
            for message in _plaintext_listeners(text):
                report_violation(message, None)


endpoints_private_and_encrypted = ResourceValidationPolicy(
    name="endpoints-private-and-encrypted",
    description=(
        "On Kubernetes (prod) every NativeLink gRPC listener speaks TLS, and a LoadBalancer Service is internal "
        f"(or annotated {INTERNET_FACING_OPT_IN}: 'true') and limited to loadBalancerSourceRanges."
    ),
    validate=_validate_endpoints,
)

# ---- secrets


def docker_secret_envs(envs: Any) -> list[str]:
    """Names of the `NAME=value` entries that hold a credential (by name or by value)."""
    names = []
    for entry in _peek_items(envs):
        if not isinstance(entry, str):
            continue
        name, _, value = entry.partition("=")
        if value and (looks_secret_name(name) or carries_credential(value)):
            names.append(name)
    return names


def _k8s_env_problems(container: Mapping[str, Any]) -> Iterator[str]:
    for entry in _items(_get(container, "env")):
        name = _peek(entry, "name")
        if not isinstance(name, str):
            continue
        # An unknown literal (computed from another output) counts as a value: it is still in the manifest.
        value = _peek(entry, "value")
        literal = value is not None and value != ""
        if looks_secret_name(name):
            if literal:
                yield f"{_container_label(container)} sets env {name} to a literal value; use valueFrom.secretKeyRef"
            elif _has(entry, "valueFrom") and _get(entry, "valueFrom", "secretKeyRef") is None:
                yield f"{_container_label(container)} takes env {name} from outside a Secret; use secretKeyRef"
        elif isinstance(value, str) and carries_credential(value):
            yield f"{_container_label(container)} has a credential in the literal value of env {name}"


def _config_map_problems(data: Any) -> Iterator[str]:
    if not isinstance(data, Mapping):
        return
    for key in data:
        if looks_secret_name(key):
            yield f"ConfigMap key {key!r} looks like a secret; put it in a Secret"
            continue
        value = _peek(data, key)
        if not isinstance(value, str):
            continue
        if carries_credential(value):
            yield f"ConfigMap key {key!r} holds a credential (a URL with a password or a private key)"
            continue
        for match in _ASSIGNMENT.finditer(value):
            name, rhs = match.group(1), match.group(2)
            if looks_secret_name(name) and not _NO_VALUE.match(rhs):
                yield f"ConfigMap key {key!r} sets {name} to a literal value; put it in a Secret"


def _validate_secrets(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == DOCKER_CONTAINER:
        # The engine unwraps secrets before a policy sees them, so a secret env and a literal look the
        # same here. What does reach the policy is the resource option `additionalSecretOutputs`: a
        # container carrying credentials in its envs must declare `envs` there, which also keeps the
        # value encrypted in the state's outputs. (Tests check under mocks that such envs are secret
        # inputs too.)
        if "envs" in args.opts.additional_secret_outputs:
            return
        names = docker_secret_envs(_peek(args.props, "envs"))
        if names:
            report_violation(
                f"envs {', '.join(names)} carry credentials but the container does not declare "
                "additional_secret_outputs=['envs']; pass them as secrets and declare it",
                None,
            )
    elif args.resource_type in POD_SPEC_PATHS:
        for container in pod_containers(args.resource_type, args.props):
            for message in _k8s_env_problems(container):
                report_violation(message, None)
    elif args.resource_type == K8S_CONFIG_MAP:
        for message in _config_map_problems(_get(args.props, "data")):
            report_violation(message, None)


no_plaintext_secrets = ResourceValidationPolicy(
    name="no-plaintext-secrets",
    description=(
        "No credential in plain text: Docker envs holding one need additional_secret_outputs=['envs'], "
        "Kubernetes envs with secret-looking names come from secretKeyRef, ConfigMaps hold none."
    ),
    validate=_validate_secrets,
)

# ---- images


def _validate_images(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == DOCKER_REMOTE_IMAGE:
        name = _get(args.props, "name")
        problem = image_pin_problem(name) if isinstance(name, str) else "RemoteImage has no name"
        if problem is not None:
            report_violation(problem, None)
    elif args.resource_type == DOCKER_CONTAINER:
        # Usually a RemoteImage's imageId: unknown in a preview, and that RemoteImage is checked itself.
        image = _peek(args.props, "image")
        if isinstance(image, str) and not _IMAGE_ID_RE.match(image):
            problem = image_pin_problem(image)
            if problem is not None:
                report_violation(problem, None)
    elif args.resource_type in POD_SPEC_PATHS:
        for container in pod_containers(args.resource_type, args.props):
            image = _get(container, "image")
            problem = image_pin_problem(image) if isinstance(image, str) else "has no image"
            if problem is not None:
                report_violation(f"{_container_label(container)}: {problem}", None)


images_pinned = ResourceValidationPolicy(
    name="images-pinned",
    description="Every image (Docker RemoteImage and Container, Kubernetes pod containers) is pinned by tag or digest.",
    validate=_validate_images,
)

# Every policy of the pack; policy/__main__.py enforces them all as mandatory.
POLICIES: list[Policy] = [
    s3_buckets_encrypted_with_kms,
    s3_buckets_versioned,
    s3_buckets_block_public_access,
    memorydb_encrypted_with_acl,
    elasticache_encrypted,
    rds_encrypted_protected_private,
    docker_ports_on_loopback,
    worker_ports_not_exposed,
    endpoints_private_and_encrypted,
    no_plaintext_secrets,
    images_pinned,
]
