"""Stack settings: the typed, validated form of the `nativelink-juicefs:*` stack config.

Everything a component needs that is not a secret comes from here. Validation runs before any
resource is registered, and every error names the config key, the bad value and what is allowed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from components.nativelink.layout import WORKER_API_PORT

PROJECT = "nativelink-juicefs"
# Files named in settings (the RDS CA bundle) are relative to the project root.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# NativeLink reads sizes into u64.
MAX_SIZE_BYTES = 2**64 - 1
# Docker's own networks: a stack network of that name would be Docker's, not the stack's.
DOCKER_BUILTIN_NETWORKS = frozenset({"bridge", "host", "none"})

# Tags that move: a preview could not say what would run.
FLOATING_TAGS = frozenset({"latest", "main", "master", "nightly", "ce-nightly", "edge", "stable", "dev"})
MIN_NATIVELINK = (1, 6, 6)

_IMAGE_RE = re.compile(
    r"^(?P<name>[a-z0-9]+(?:[._/-][a-z0-9]+)*(?:\.[a-z0-9-]+(?::[0-9]+)?/[a-z0-9._/-]+)?)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_SIZE_RE = re.compile(r"^([1-9][0-9]*)(kb|mb|gb|tb)$")
_SIZE_FACTORS = {"kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}
_K8S_QUANTITY_RE = re.compile(r"^([0-9]+(\.[0-9]+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")


class ConfigError(ValueError):
    """Bad stack config, reported before any resource is touched."""


class SettingError(ValueError):
    """A rule across several settings, reported against the one key to change."""

    def __init__(self, key: str, value: Any, message: str) -> None:
        super().__init__(message)
        self.key, self.value, self.message = key, value, message


def _pinned_image(ref: str) -> str:
    match = _IMAGE_RE.match(ref)
    if match is None:
        raise ValueError(f"{ref!r} is not an image reference like 'registry/name:tag' or 'name@sha256:<digest>'")
    tag, digest = match.group("tag"), match.group("digest")
    if digest is None and tag is None:
        raise ValueError(f"{ref!r} has no tag or digest; pin it, e.g. '{ref}:<version>' or '{ref}@sha256:<digest>'")
    if digest is None and tag is not None and tag.lower() in FLOATING_TAGS:
        raise ValueError(f"{ref!r} uses the floating tag {tag!r}; pin a release tag or a sha256 digest")
    if digest is None and tag is not None and not any(char.isdigit() for char in tag):
        raise ValueError(f"{ref!r} has a tag without a version number ({tag!r}), which moves; pin a release tag")
    return ref


def _image_tag(ref: str) -> str | None:
    match = _IMAGE_RE.match(ref)
    return match.group("tag") if match else None


def _data_size(value: str) -> str:
    if _SIZE_RE.match(value) is None:
        raise ValueError(f"{value!r} is not a size; use a whole number with kb, mb, gb or tb, e.g. '10gb'")
    if size_bytes(value) > MAX_SIZE_BYTES:
        raise ValueError(f"{value!r} is more than NativeLink can count (2^64-1 bytes); use a smaller size")
    return value


_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
# "-an" is for account-regional namespace buckets only.
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3", "-an")


def bucket_name_problem(name: str) -> str | None:
    """What S3's bucket naming rules refuse in `name`, or None (the rules MinIO follows too)."""
    if _BUCKET_RE.match(name) is None:
        return (
            "not a bucket name: 3 to 63 lower-case letters, digits, dots and hyphens, first and last a letter or digit"
        )
    if ".." in name or ".-" in name or "-." in name:
        return "not a bucket name: no dot next to another dot or a hyphen"
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return "not a bucket name: it may not look like an IP address"
    if name.startswith(_BUCKET_PREFIXES) or name.endswith(_BUCKET_SUFFIXES):
        return f"not a bucket name: S3 reserves the prefixes {_BUCKET_PREFIXES} and suffixes {_BUCKET_SUFFIXES}"
    return None


def _bucket_name(name: str) -> str:
    problem = bucket_name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return name


def ca_bundle_problem(relative_path: str) -> str | None:
    """Why the file at `relative_path` (from the project root) is not a PEM bundle of CA certificates, or None."""
    path = (PROJECT_ROOT / relative_path).resolve()
    if not path.is_relative_to(PROJECT_ROOT):
        return "outside the repository; name a file committed in it"
    if not path.is_file():
        return (
            "no such file in the repository. Download the RDS global bundle "
            "(https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem), check it against AWS's "
            "published certificates, and commit it there"
        )
    try:
        pem = path.read_text(encoding="ascii")
    except UnicodeDecodeError:
        return "not a PEM bundle of CA certificates (not ASCII)"
    if "-----BEGIN CERTIFICATE-----" not in pem or "PRIVATE KEY" in pem:
        return "not a PEM bundle of CA certificates"
    return None


def _k8s_quantity(value: str) -> str:
    if _K8S_QUANTITY_RE.match(value) is None or quantity_value(value) <= 0:
        raise ValueError(f"{value!r} is not a positive Kubernetes quantity, e.g. '500m', '2', '4Gi'")
    return value


_QUANTITY_FACTORS = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
}


def quantity_value(quantity: str) -> float:
    """The amount a validated K8sQuantity stands for (cores or bytes), for comparing two of them."""
    match = _K8S_QUANTITY_RE.match(quantity)
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    return float(match.group(1)) * _QUANTITY_FACTORS[match.group(3) or ""]


def size_bytes(size: str) -> int:
    """Bytes in a validated DataSize (decimal units, as NativeLink reads them)."""
    match = _SIZE_RE.match(size)
    if match is None:
        raise ValueError(f"not a size: {size!r}")
    return int(match.group(1)) * _SIZE_FACTORS[match.group(2)]


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError:
        raise ValueError(
            f"{value!r} is not a network in CIDR notation with no host bits set, e.g. '10.0.0.0/16'"
        ) from None


def repeated_items(items: list[str]) -> list[str]:
    """Items listed more than once, sorted."""
    return sorted({item for item in items if items.count(item) > 1})


def refuse_repeats(model: BaseModel, block: str, *fields: str, hint: str = "list each once") -> None:
    """Refuse, naming the key, a list field of `model` (config block `block`) that holds an item twice."""
    for field in fields:
        items: list[str] = getattr(model, field)
        repeated = repeated_items(items)
        if repeated:
            raise SettingError(
                f"{block}.{to_camel(field)}", items, f"lists {', '.join(repeated)} more than once; {hint}"
            )


ImageRef = Annotated[str, AfterValidator(_pinned_image)]
Cidr = Annotated[str, AfterValidator(_cidr)]
DataSize = Annotated[str, AfterValidator(_data_size)]
BucketName = Annotated[str, AfterValidator(_bucket_name)]
K8sQuantity = Annotated[str, AfterValidator(_k8s_quantity)]
Port = Annotated[int, Field(ge=1, le=65535)]
DnsLabel = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
DnsSubdomain = Annotated[str, Field(max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
AbsolutePath = Annotated[str, Field(pattern=r"^(/[A-Za-z0-9._-]+)+$")]
ChartVersion = Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class Versions(_Model):
    """Every image and chart the stacks run, pinned. Promotion copies this block from dev to prod."""

    # CAS server and scheduler; its image holds only the `nativelink` binary.
    nativelink: ImageRef
    # Copies the same `nativelink` binary into the worker's toolchain image.
    nativelink_worker_init: ImageRef
    # The toolchain that build actions run in (compilers, shell, coreutils).
    worker: ImageRef
    juicefs: ImageRef
    redis: ImageRef
    minio: ImageRef
    busybox: ImageRef
    juicefs_csi_chart: ChartVersion

    @model_validator(mode="after")
    def _nativelink_consistent(self) -> Versions:
        tag = _image_tag(self.nativelink)
        release = re.fullmatch(r"v?([0-9]+)\.([0-9]+)\.([0-9]+)", tag or "")
        if release and tuple(int(part) for part in release.groups()) < MIN_NATIVELINK:
            raise SettingError(
                "versions.nativelink",
                self.nativelink,
                "older than v1.6.6, the config format this program renders; use v1.6.6 or later",
            )
        init_tag = _image_tag(self.nativelink_worker_init)
        if tag and init_tag and init_tag != tag:
            raise SettingError(
                "versions.nativelinkWorkerInit",
                self.nativelink_worker_init,
                f"carries NativeLink {init_tag} but versions.nativelink is {tag}; workers must run the same "
                "release as the scheduler",
            )
        return self


class WorkerSettings(_Model):
    count: int = Field(3, ge=1, le=1000)
    # Private local fast store beside the work directory (hardlinks need one filesystem).
    fast_store_size: DataSize = "10gb"
    # 0: one action per CPU the worker is given (NativeLink's own 0 would mean no limit at all).
    max_inflight_tasks: int = Field(0, ge=0)
    max_action_timeout_s: int = Field(1200, ge=1, le=86_400)
    platform_properties: dict[str, list[str]] = Field(
        default_factory=lambda: {"OSFamily": ["linux"], "container-image": [""]}
    )


class NativeLinkSettings(_Model):
    instance_name: str = Field("", pattern=r"^[A-Za-z0-9_./-]*$")
    # Clients may write action results to the action cache (else only workers do, on their own listener).
    clients_upload_results: bool = False
    cas_max_bytes: DataSize = "50gb"
    ac_max_bytes: DataSize = "1gb"
    log_level: Literal["error", "warn", "info", "debug", "trace"] = "info"


class JuiceFsSettings(_Model):
    # What `juicefs format` accepts (1.4.2 refuses upper case).
    volume_name: str = Field("nativelink-cas", pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
    bucket_name: BucketName = "nativelink-cas"
    block_size_kib: int = Field(4096, ge=64, le=16384)
    compress: Literal["none", "lz4", "zstd"] = "lz4"
    trash_days: int = Field(1, ge=0, le=3650)
    cache_size: DataSize = "10gb"
    encrypt: bool = False
    encrypt_algo: Literal["aes256gcm-rsa", "chacha20-rsa"] = "aes256gcm-rsa"
    # Prod: when the metadata is dumped into the bucket (cron, UTC), and for how long dumps are kept.
    metadata_dump_schedule: str = Field("30 3 * * *", pattern=r"^\S+( \S+){4}$")
    metadata_dump_retention_days: int = Field(14, ge=1, le=3650)
    # Dumps carry the volume's RSA key, which a restore of an encrypted volume needs. Only where that
    # key is passphrase-protected: otherwise whoever reads the bucket could decrypt it.
    metadata_dump_keeps_key: bool = False


class DockerPorts(_Model):
    cas: Port = 50051
    scheduler: Port = 50052
    minio_console: Port | None = None


class DockerSettings(_Model):
    # Host directory shared by the mount container and the CAS server; JuiceFS is mounted on its `jfs`
    # subdirectory. Must sit on a shared mount (systemd hosts: any).
    host_mount_dir: AbsolutePath = "/var/lib/nativelink-juicefs"
    network_name: DnsLabel = "nativelink"
    ports: DockerPorts = DockerPorts()
    # Each worker's limits: it advertises `workerCpus` as its cpu_count and runs that many actions at once.
    worker_cpus: int = Field(2, ge=1, le=256)
    worker_memory: DataSize = "4gb"
    wipe_volumes_on_destroy: bool = False

    @model_validator(mode="after")
    def _host_dir_is_the_stacks(self) -> DockerSettings:
        # The stack takes the directory over: mode 0555, JuiceFS mounted in it. /mnt or /srv would lose
        # everything else they hold to that.
        if self.host_mount_dir.count("/") < 2:
            raise SettingError(
                "docker.hostMountDir",
                self.host_mount_dir,
                "is a top-level directory, which the stack would take over (made read-only, JuiceFS mounted "
                "in it); give the stack a directory of its own, e.g. /var/lib/nativelink-juicefs",
            )
        return self

    @model_validator(mode="after")
    def _network_is_the_stacks(self) -> DockerSettings:
        if self.network_name in DOCKER_BUILTIN_NETWORKS:
            raise SettingError(
                "docker.networkName",
                self.network_name,
                f"is one of Docker's own networks ({', '.join(sorted(DOCKER_BUILTIN_NETWORKS))}); pick another name",
            )
        return self

    @model_validator(mode="after")
    def _ports_distinct(self) -> DockerSettings:
        published = {
            "docker.ports.cas": self.ports.cas,
            "docker.ports.scheduler": self.ports.scheduler,
            "docker.ports.minioConsole": self.ports.minio_console,
        }
        seen: dict[int, str] = {}
        for key, port in published.items():
            if port is None:
                continue
            if port == WORKER_API_PORT:
                raise SettingError(key, port, "the worker API port, which is never published; pick another")
            if port in seen:
                raise SettingError(key, port, f"already used by {seen[port]}; give each port its own number")
            seen[port] = key
        return self


class ElastiCacheSettings(_Model):
    node_type: str = Field("cache.r7g.large", pattern=r"^cache\.[a-z0-9]+\.[a-z0-9]+$")
    engine_version: str = Field("7.1", pattern=r"^[0-9]+\.[0-9]+$")
    replicas: int = Field(1, ge=1, le=5)
    snapshot_retention_days: int = Field(7, ge=1, le=35)

    @model_validator(mode="after")
    def _tls_capable(self) -> ElastiCacheSettings:
        if int(self.engine_version.split(".")[0]) < 6:
            raise SettingError(
                "aws.elasticache.engineVersion",
                self.engine_version,
                "older than 6; use 6.2 or later (in-transit encryption with AUTH)",
            )
        return self


class MemoryDbSettings(_Model):
    node_type: str = Field("db.r7g.large", pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$")
    engine: Literal["redis", "valkey"] = "redis"
    engine_version: str = Field("7.1", pattern=r"^[0-9]+\.[0-9]+$")
    replicas: int = Field(1, ge=1, le=5)
    snapshot_retention_days: int = Field(7, ge=1, le=35)

    @model_validator(mode="after")
    def _engine_has_version(self) -> MemoryDbSettings:
        version = tuple(int(part) for part in self.engine_version.split("."))
        if self.engine == "valkey" and version < (7, 2):
            raise SettingError(
                "aws.memorydb.engineVersion",
                self.engine_version,
                "MemoryDB runs Valkey from 7.2; set 7.2 or later for engine 'valkey'",
            )
        if self.engine == "redis" and version < (6, 2):
            raise SettingError("aws.memorydb.engineVersion", self.engine_version, "MemoryDB runs Redis 6.2 or later")
        return self


class RdsSettings(_Model):
    instance_class: str = Field("db.r7g.large", pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$")
    # Major only: RDS applies minor upgrades itself (the instance has auto_minor_version_upgrade).
    engine_version: str = Field("16", pattern=r"^[0-9]+(\.[0-9]+)?$")
    allocated_storage_gb: int = Field(50, ge=20, le=65536)
    max_allocated_storage_gb: int = Field(500, ge=20, le=65536)
    backup_retention_days: int = Field(7, ge=1, le=35)
    database_name: str = Field("juicefs", pattern=r"^[a-z][a-z0-9_]{0,62}$")
    # The JuiceFS user owns the database (Postgres 15+ needs that for `juicefs format`).
    username: str = Field("juicefs", pattern=r"^[a-z][a-z0-9_]{0,15}$")
    # The RDS CA bundle, committed to the repository (relative to the project root).
    ca_bundle_file: str = Field("certs/rds-global-bundle.pem", pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")

    @model_validator(mode="after")
    def _major_version_only(self) -> RdsSettings:
        if "." in self.engine_version:
            raise SettingError(
                "aws.rds.engineVersion",
                self.engine_version,
                "pins a minor version, but RDS upgrades minor versions itself in its maintenance window; the "
                "next `pulumi up` would then try a downgrade, which RDS refuses. Give the major version only, "
                f"e.g. '{self.engine_version.split('.')[0]}'",
            )
        return self

    @model_validator(mode="after")
    def _storage_grows(self) -> RdsSettings:
        if self.max_allocated_storage_gb < self.allocated_storage_gb:
            raise SettingError(
                "aws.rds.maxAllocatedStorageGb",
                self.max_allocated_storage_gb,
                f"below aws.rds.allocatedStorageGb ({self.allocated_storage_gb}); raise it or lower the allocation",
            )
        return self


AwsRegion = Annotated[str, Field(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$")]


class AwsSettings(_Model):
    region: AwsRegion
    replica_region: AwsRegion
    vpc_id: str = Field(pattern=r"^vpc-[0-9a-f]{8,17}$")
    subnet_ids: list[Annotated[str, Field(pattern=r"^subnet-[0-9a-f]{8,17}$")]] = Field(min_length=2)
    node_security_group_id: str = Field(pattern=r"^sg-[0-9a-f]{8,17}$")
    # Where alarms go; unset, the stack creates an SNS topic (output alarmTopicArn) to subscribe to.
    alarm_topic_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}$")
    # A private Route 53 zone for kubernetes.externalDomain's records.
    private_zone_id: str | None = Field(None, pattern=r"^Z[A-Z0-9]{1,32}$")
    # The EKS cluster of the NativeLink tier: set, `pulumi up` checks that its VPC CNI enforces NetworkPolicy.
    eks_cluster_name: str | None = Field(None, pattern=r"^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$")
    # No default: the engine holds the filesystem, and a stack must never move to another one unasked.
    metadata_engine: Literal["memorydb", "redis", "postgres"]
    memorydb: MemoryDbSettings = MemoryDbSettings()
    elasticache: ElastiCacheSettings = ElastiCacheSettings()
    rds: RdsSettings = RdsSettings()
    # IRSA: with both set, JuiceFS reaches S3 through a role; otherwise through a dedicated IAM user.
    oidc_provider_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/.+$")
    oidc_provider_url: str | None = Field(None, pattern=r"^[a-z0-9.-]+(/[A-Za-z0-9._-]+)*$")
    noncurrent_version_expiration_days: int = Field(30, ge=1, le=3650)
    # Defaults to "<juicefs.bucketName>-<replicaRegion>"; bucket names are global.
    replica_bucket_name: BucketName | None = None
    # Guardrails: turning either off needs a named allowInsecure override.
    metadata_tls: bool = True
    block_public_access: bool = True
    kms_deletion_window_days: int = Field(30, ge=7, le=30)

    @model_validator(mode="after")
    def _subnets_distinct(self) -> AwsSettings:
        refuse_repeats(self, "aws", "subnet_ids", hint="give distinct subnets (in at least two zones)")
        return self

    @model_validator(mode="after")
    def _memorydb_over_tls(self) -> AwsSettings:
        if self.metadata_engine == "memorydb" and not self.metadata_tls:
            raise SettingError(
                "aws.metadataTls",
                False,
                "refused with aws.metadataEngine 'memorydb': without TLS MemoryDB admits only its open-access "
                "ACL, with no password at all; set it to true",
            )
        return self

    @model_validator(mode="after")
    def _regions_differ(self) -> AwsSettings:
        if self.replica_region == self.region:
            raise SettingError(
                "aws.replicaRegion", self.replica_region, "equals aws.region; replication needs a second region"
            )
        if (self.oidc_provider_arn is None) != (self.oidc_provider_url is None):
            raise SettingError(
                "aws.oidcProviderUrl",
                self.oidc_provider_url,
                "aws.oidcProviderArn and aws.oidcProviderUrl go together; set both or neither",
            )
        return self


class ContainerResources(_Model):
    cpu_request: K8sQuantity
    memory_request: K8sQuantity
    cpu_limit: K8sQuantity
    memory_limit: K8sQuantity

    def request_above_limit(self) -> str | None:
        """`cpu` or `memory` if its request exceeds its limit (Kubernetes refuses such a container)."""
        for kind in ("cpu", "memory"):
            if quantity_value(getattr(self, f"{kind}_request")) > quantity_value(getattr(self, f"{kind}_limit")):
                return kind
        return None


# Each role with its own defaults field by field, so one value can be set without the other three.
class CasResources(ContainerResources):
    cpu_request: K8sQuantity = "2"
    memory_request: K8sQuantity = "4Gi"
    cpu_limit: K8sQuantity = "4"
    memory_limit: K8sQuantity = "8Gi"


class SchedulerResources(ContainerResources):
    cpu_request: K8sQuantity = "500m"
    memory_request: K8sQuantity = "1Gi"
    cpu_limit: K8sQuantity = "2"
    memory_limit: K8sQuantity = "2Gi"


class WorkerResources(ContainerResources):
    cpu_request: K8sQuantity = "2"
    memory_request: K8sQuantity = "4Gi"
    cpu_limit: K8sQuantity = "4"
    memory_limit: K8sQuantity = "8Gi"


class KubernetesSettings(_Model):
    namespace: DnsLabel = "nativelink"
    csi_namespace: DnsLabel = "kube-system"
    storage_class_name: DnsLabel = "juicefs-nativelink"
    cas_volume_size: K8sQuantity = "500Gi"
    worker_ephemeral_storage: K8sQuantity = "50Gi"
    # An existing StorageClass of node-attached block volumes (the EBS CSI driver's), binding
    # WaitForFirstConsumer: each worker's disk and each JuiceFS mount pod's cache get a volume of it.
    block_storage_class: DnsSubdomain = "gp3"
    # The metadata dump job's scratch volume (of block_storage_class): room for one compressed dump.
    metadata_dump_volume_size: K8sQuantity = "20Gi"
    cas_resources: CasResources = CasResources()
    scheduler_resources: SchedulerResources = SchedulerResources()
    worker_resources: WorkerResources = WorkerResources()
    termination_grace_period_s: int = Field(600, ge=30, le=7200)
    autoscale_max_workers: int | None = Field(None, ge=1, le=1000)
    # Who may reach the client ports (CAS 50051, scheduler 50052) besides pods of the tier's namespace.
    client_namespaces: list[DnsLabel] = Field(default_factory=list)
    client_cidrs: list[Cidr] = Field(default_factory=list)
    # What workers (build actions) may reach besides the CAS server, the scheduler and DNS.
    worker_egress_cidrs: list[Cidr] = Field(default_factory=list)
    # How Bazel outside the cluster reaches the CAS server and the scheduler: an internal AWS network
    # load balancer each, admitting kubernetes.clientCidrs; or "cluster": in-cluster names only.
    exposure: Literal["internal-load-balancer", "cluster"] = "internal-load-balancer"
    # Names for the two load balancers, cas.<externalDomain> and scheduler.<externalDomain> (in the
    # server certificate; records in aws.privateZoneId when set).
    external_domain: DnsSubdomain | None = None

    @model_validator(mode="after")
    def _lists_distinct(self) -> KubernetesSettings:
        refuse_repeats(self, "kubernetes", "client_namespaces", "client_cidrs", "worker_egress_cidrs")
        return self

    @model_validator(mode="after")
    def _requests_within_limits(self) -> KubernetesSettings:
        # The API server would refuse the workload, but only once `pulumi up` is creating it.
        for field in ("cas_resources", "scheduler_resources", "worker_resources"):
            resources: ContainerResources = getattr(self, field)
            kind = resources.request_above_limit()
            if kind is not None:
                key = f"kubernetes.{to_camel(field)}"
                raise SettingError(
                    f"{key}.{kind}Request",
                    getattr(resources, f"{kind}_request"),
                    f"above {key}.{kind}Limit ({getattr(resources, f'{kind}_limit')}); Kubernetes refuses a "
                    "request above its limit: raise the limit or lower the request",
                )
        return self


InsecureOverride = Literal[
    "unencrypted-juicefs", "plaintext-metadata", "public-bucket", "plaintext-endpoints", "unauthenticated-clients"
]
# Serial numbers as the stack prints them (output clientCertificates.<name>.serial): decimal.
CertificateSerial = Annotated[str, Field(pattern=r"^[1-9][0-9]{0,49}$")]


class TlsSettings(_Model):
    """TLS on every NativeLink listener and connection, from a certificate authority the stack owns."""

    enabled: bool = False
    # Mutual TLS on the client listeners (CAS 50051, scheduler 50052): clients show a certificate of the CA.
    client_auth: bool = True
    # Client certificates the stack issues, one per person or CI job (output clientCertificates).
    clients: list[DnsLabel] = Field(default_factory=list)
    # Client certificates no listener accepts any more, by serial number (the certificate revocation list).
    revoked_serials: list[CertificateSerial] = Field(default_factory=list)
    # Server and client certificates; `pulumi up` in their last 30 days issues new ones.
    certificate_validity_days: int = Field(365, ge=60, le=825)

    @model_validator(mode="after")
    def _lists_distinct(self) -> TlsSettings:
        refuse_repeats(self, "tls", "clients", "revoked_serials")
        return self


class ProdTlsSettings(TlsSettings):
    """Prod: on unless allowInsecure says otherwise."""

    enabled: bool = True


class _StackSettings(_Model):
    """What both platforms share."""

    versions: Versions
    workers: WorkerSettings = WorkerSettings()
    nativelink: NativeLinkSettings = NativeLinkSettings()
    juicefs: JuiceFsSettings = JuiceFsSettings()
    # Named, explicit opt-outs of prod guardrails; each is listed in the README.
    allow_insecure: list[InsecureOverride] = Field(default_factory=list)
    # Off in dev (plaintext on loopback); on, dev runs the same TLS as prod.
    tls: TlsSettings = TlsSettings()

    @model_validator(mode="after")
    def _tls_has_clients(self) -> _StackSettings:
        if self.tls.enabled and self.tls.client_auth and not self.tls.clients:
            raise SettingError(
                "tls.clients",
                [],
                "empty while tls.clientAuth is on: no Bazel client could connect. Name one certificate per "
                "person or CI job, e.g. [ci]",
            )
        return self


class DevSettings(_StackSettings):
    """platform: docker, the dev stack on the local Docker engine."""

    platform: Literal["docker"]
    docker: DockerSettings = DockerSettings()

    @model_validator(mode="after")
    def _no_encryption(self) -> DevSettings:
        if self.juicefs.encrypt:
            raise SettingError(
                "juicefs.encrypt",
                True,
                "not supported on platform 'docker'; set it to false for dev (encryption at rest is a prod setting)",
            )
        return self


class ProdSettings(_StackSettings):
    """platform: aws, the prod stack on AWS and an existing Kubernetes cluster."""

    platform: Literal["aws"]
    aws: AwsSettings
    kubernetes: KubernetesSettings = KubernetesSettings()
    tls: ProdTlsSettings = ProdTlsSettings()

    def replica_bucket_name(self) -> str:
        """The replica bucket: aws.replicaBucketName, else "<juicefs.bucketName>-<aws.replicaRegion>"."""
        if self.aws.replica_bucket_name is not None:
            return self.aws.replica_bucket_name
        return f"{self.juicefs.bucket_name}-{self.aws.replica_region}"

    @model_validator(mode="after")
    def _aws_names_and_files(self) -> ProdSettings:
        """What would otherwise fail only once resources exist: the replica bucket, the CA bundle file."""
        replica = self.replica_bucket_name()
        key = "aws.replicaBucketName"
        if replica == self.juicefs.bucket_name:
            raise SettingError(key, replica, "equals juicefs.bucketName; the replica needs a bucket of its own")
        problem = bucket_name_problem(replica)
        if problem is not None and self.aws.replica_bucket_name is None:
            # Earlier releases cut the default to 63 characters: a stack made then keeps that bucket.
            earlier = replica[:63].rstrip("-.")
            raise SettingError(
                key,
                replica,
                f"(the default, {problem}); set it, to {earlier!r} for a stack whose replica bucket already exists",
            )
        if problem is not None:
            raise SettingError(key, replica, problem)
        if self.aws.metadata_engine == "postgres" and self.aws.metadata_tls:
            problem = ca_bundle_problem(self.aws.rds.ca_bundle_file)
            if problem is not None:
                raise SettingError("aws.rds.caBundleFile", self.aws.rds.ca_bundle_file, problem)
        return self

    @model_validator(mode="after")
    def _guardrails(self) -> ProdSettings:
        guardrails: list[tuple[bool, InsecureOverride, str, str]] = [
            (self.juicefs.encrypt, "unencrypted-juicefs", "juicefs.encrypt", "accept plaintext objects"),
            (
                self.aws.metadata_tls,
                "plaintext-metadata",
                "aws.metadataTls",
                "send metadata and its password unencrypted",
            ),
            (
                self.aws.block_public_access,
                "public-bucket",
                "aws.blockPublicAccess",
                "let bucket policies or ACLs make objects public",
            ),
            (self.tls.enabled, "plaintext-endpoints", "tls.enabled", "serve builds and the cache in plaintext"),
            (
                self.tls.client_auth,
                "unauthenticated-clients",
                "tls.clientAuth",
                "let anyone who reaches the endpoints use the cache and run actions",
            ),
        ]
        for enabled, override, key, consequence in guardrails:
            if not enabled and override not in self.allow_insecure:
                raise SettingError(
                    key,
                    False,
                    f"refused on platform 'aws'; set it to true, or add {override!r} to allowInsecure to {consequence}",
                )
        return self

    @model_validator(mode="after")
    def _cluster_fits(self) -> ProdSettings:
        # NetworkPolicies admit only listed clients; left unset, an upgrade would silently cut every
        # Bazel client off. An explicit empty list means port-forward only.
        if not {"client_namespaces", "client_cidrs"} & self.kubernetes.model_fields_set:
            raise SettingError(
                "kubernetes.clientNamespaces",
                None,
                "missing, and kubernetes.clientCidrs too: NetworkPolicies admit only the clients listed "
                "there to the CAS server and the scheduler. List the namespaces of your Bazel pods and/or "
                "the address ranges of your build machines, or set both to [] for kubectl port-forward only",
            )
        # A worker's fast store and work directory share one volume of this size. The store's
        # executable copies (`<content_path>.exec`) are not counted against its size, so it can take
        # twice fastStoreSize on disk, and a full volume fails every action.
        needed = 2 * size_bytes(self.workers.fast_store_size)
        if quantity_value(self.kubernetes.worker_ephemeral_storage) < needed:
            raise SettingError(
                "kubernetes.workerEphemeralStorage",
                self.kubernetes.worker_ephemeral_storage,
                f"below twice workers.fastStoreSize ({self.workers.fast_store_size}): the store can take that "
                "much (its executable copies are not counted) and a full volume fails every action; raise it "
                "or lower workers.fastStoreSize",
            )
        self._exposure_fits()
        maximum = self.kubernetes.autoscale_max_workers
        if maximum is not None and maximum < self.workers.count:
            raise SettingError(
                "kubernetes.autoscaleMaxWorkers",
                maximum,
                f"below workers.count ({self.workers.count}), the autoscaler's minimum; raise it or lower "
                "workers.count",
            )
        return self

    def _exposure_fits(self) -> None:
        kube = self.kubernetes
        load_balanced = kube.exposure == "internal-load-balancer"
        if self.aws.private_zone_id is not None and (kube.external_domain is None or not load_balanced):
            raise SettingError(
                "aws.privateZoneId",
                self.aws.private_zone_id,
                "names the load balancers under kubernetes.externalDomain: set that and kubernetes.exposure "
                "'internal-load-balancer', or remove aws.privateZoneId",
            )
        if not load_balanced:
            return
        if not kube.client_cidrs:
            raise SettingError(
                "kubernetes.clientCidrs",
                [],
                "empty while kubernetes.exposure is 'internal-load-balancer': the load balancers would admit "
                "no one. List your build machines' ranges, or set kubernetes.exposure to 'cluster' for "
                "in-cluster clients only",
            )
        if not self.tls.enabled:
            raise SettingError(
                "kubernetes.exposure",
                kube.exposure,
                "needs tls.enabled: builds and the cache would cross the network in plaintext; set "
                "kubernetes.exposure to 'cluster'",
            )


# One model per platform, chosen by `platform`: each stack's components get exactly their settings.
Settings = Annotated[DevSettings | ProdSettings, Field(discriminator="platform")]
_SETTINGS: TypeAdapter[DevSettings | ProdSettings] = TypeAdapter(Settings)
PLATFORMS: dict[str, type[DevSettings | ProdSettings]] = {"docker": DevSettings, "aws": ProdSettings}


# The top-level keys of the project namespace, as set in Pulumi.<stack>.yaml.
TOP_LEVEL_KEYS = tuple(
    dict.fromkeys(
        (field.alias or name) for model in (DevSettings, ProdSettings) for name, field in model.model_fields.items()
    )
)


def describe_error(error: Mapping[str, Any], base: tuple[str, ...] = ()) -> str:
    """One line for one pydantic error: the full config key, the bad value, what is allowed.

    `base` is the config path of the model that was validated, when it is not the whole Settings.
    """
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, SettingError):
        return f"{PROJECT}:{cause.key} = {cause.value!r}: {cause.message}"
    location = ".".join(str(part) for part in (*base, *error["loc"]))
    message = str(error["msg"]).removeprefix("Value error, ")
    if not location:
        return message
    key = f"{PROJECT}:{location}"
    if error["type"] == "missing":
        return f"{key}: missing; set it with `pulumi config set --path '{location}' <value>`"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown setting; remove it or check its spelling against the README's config reference"
    value = error.get("input")
    return f"{key} = {value!r}: {message}"


def _reads(model: type[BaseModel], key: str) -> bool:
    return any((field.alias or name) == key for name, field in model.model_fields.items())


def _describe_settings_error(error: Mapping[str, Any], platform: Any) -> str:
    """describe_error for the platform union: its errors' paths start with the platform's tag."""
    choices = " or ".join(repr(name) for name in PLATFORMS)
    if error["type"] == "union_tag_not_found":
        return f"{PROJECT}:platform: missing; set it to {choices} (`pulumi config set platform <docker|aws>`)"
    if error["type"] == "union_tag_invalid":
        return f"{PROJECT}:platform = {platform!r}: not a platform; set it to {choices}"
    location = tuple(error["loc"][1:])
    if error["type"] == "missing" and location == ("aws", "metadataEngine"):
        return (
            f"{PROJECT}:aws.metadataEngine: missing; set it to 'memorydb' for a new stack (Multi-AZ transaction "
            "log: a failover keeps every acknowledged write), or to the engine the stack already runs: 'redis' "
            "(ElastiCache, what earlier releases chose when it was unset) or 'postgres'. Changing it later "
            "starts an empty filesystem (README, Prod: metadata engines)"
        )
    if error["type"] == "missing" and location == ("aws",):
        return (
            f"{PROJECT}:aws: missing; required when platform is 'aws': set aws.region, aws.replicaRegion, "
            "aws.vpcId, aws.subnetIds and aws.nodeSecurityGroupId (`pulumi config set --path aws.region us-east-1`)"
        )
    owners = [name for name, model in PLATFORMS.items() if location and _reads(model, str(location[0]))]
    if error["type"] == "extra_forbidden" and len(location) == 1 and owners:
        return (
            f"{PROJECT}:{location[0]}: read only on platform {owners[0]!r}, and this stack's platform is "
            f"{platform!r}; remove it with `pulumi config rm {PROJECT}:{location[0]}`"
        )
    return describe_error({**error, "loc": location})


def parse_settings(raw: Mapping[str, Any]) -> Settings:
    """Validate raw config values (top-level key -> value) into the platform's settings, or raise ConfigError."""
    try:
        return _SETTINGS.validate_python(dict(raw))
    except ValidationError as exc:
        platform = raw.get("platform")
        problems = "\n".join(f"  - {_describe_settings_error(error, platform)}" for error in exc.errors())
        raise ConfigError(f"invalid stack config ({exc.error_count()} problem(s)):\n{problems}") from None


def load_settings(get_object: Callable[[str], Any], all_keys: Mapping[str, str]) -> Settings:
    """Read the project's config keys through `get_object` and validate them.

    `all_keys` is the full config map the engine passed in; a key of this project that the program
    does not read is refused, so a typo cannot silently fall back to a default.
    """
    prefix = f"{PROJECT}:"
    unknown = sorted(key for key in all_keys if key.startswith(prefix) and key[len(prefix) :] not in TOP_LEVEL_KEYS)
    if unknown:
        model = PLATFORMS.get(str(get_object("platform")))
        read = [key for key in TOP_LEVEL_KEYS if model is None or _reads(model, key)]
        raise ConfigError(
            "invalid stack config: unknown key(s) "
            + ", ".join(unknown)
            + f"; the program reads {', '.join(prefix + key for key in read)}"
        )
    raw = {key: value for key in TOP_LEVEL_KEYS if (value := get_object(key)) is not None}
    return parse_settings(raw)
