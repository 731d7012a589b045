"""The part of NativeLink v1.6.6's config (`nativelink-config` crate) this deployment writes.

Field names, nesting and list-versus-map shapes follow the crate's structs. Required fields here
are required there; a field serde fills in when absent (`#[serde(default)]`) has the crate's default
here, and an `Option` field defaults to None (omitted from the output). `extra="forbid"` mirrors
`deny_unknown_fields`, so a key NativeLink would reject fails here first; the few places where the
crate does not reject stray keys say so. Fields the renderer never writes are left out on purpose,
so they are refused too. The renderer builds these models and nothing else, so every rendered
config passes through this one definition.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Struct(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _exactly_one(model: BaseModel, kinds: type[BaseModel], what: str) -> None:
    """An externally tagged Rust enum: the one key present names the variant."""
    chosen = [name for name in kinds.model_fields if getattr(model, name) is not None]
    if len(chosen) != 1:
        raise ValueError(f"{what} sets exactly one kind, not {chosen}")


# ---- stores (nativelink-config/src/stores.rs) ----


class EvictionPolicy(_Struct):
    """nativelink-config/src/stores.rs `EvictionPolicy`."""

    # NativeLink also reads a size string ("10gb"); we always write the byte count. 0 = no size limit.
    max_bytes: int = Field(0, ge=0)


class FilesystemSpec(_Struct):
    """nativelink-config/src/stores.rs `FilesystemSpec`."""

    content_path: str
    temp_path: str
    eviction_policy: EvictionPolicy | None = None


class ClientTlsConfig(_Struct):
    """nativelink-config/src/stores.rs `ClientTlsConfig` (no `deny_unknown_fields` there; refused here).

    v1.6.6 nativelink-util/src/tls_utils.rs `load_client_config`: `ca_file` is required unless native
    roots are used, and a certificate needs its key.
    """

    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None

    @model_validator(mode="after")
    def _identity_pairs(self) -> ClientTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate and its key go together")
        return self


def _tls_scheme(address: str, tls: ClientTlsConfig | None) -> None:
    # tls_utils.rs `endpoint_from`: TLS settings need grpcs:// (or https://), and grpcs:// needs them.
    secure = address.startswith(("grpcs://", "https://"))
    if secure != (tls is not None):
        raise ValueError(f"{address}: grpcs:// and a tls_config go together")


class GrpcEndpoint(_Struct):
    """nativelink-config/src/stores.rs `GrpcEndpoint`."""

    address: str
    tls_config: ClientTlsConfig | None = None

    @model_validator(mode="after")
    def _scheme_matches(self) -> GrpcEndpoint:
        _tls_scheme(self.address, self.tls_config)
        return self


class GrpcSpec(_Struct):
    """nativelink-config/src/stores.rs `GrpcSpec`."""

    instance_name: str = ""
    # serde accepts an empty list; the store then has nothing to connect to, so we refuse it.
    endpoints: list[GrpcEndpoint] = Field(min_length=1)
    store_type: Literal["cas", "ac"]


class RefSpec(_Struct):
    """nativelink-config/src/stores.rs `RefSpec`."""

    name: str


class StoreSpec(_Struct):
    """nativelink-config/src/stores.rs `StoreSpec`: an externally tagged enum, so exactly one kind key is set."""

    filesystem: FilesystemSpec | None = None
    grpc: GrpcSpec | None = None
    ref_store: RefSpec | None = None
    fast_slow: FastSlowSpec | None = None
    verify: VerifySpec | None = None
    completeness_checking: CompletenessCheckingSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StoreSpec:
        _exactly_one(self, StoreSpec, "a store spec")
        return self


StoreDirection = Literal["both", "update", "get", "read_only"]


class FastSlowSpec(_Struct):
    """nativelink-config/src/stores.rs `FastSlowSpec`."""

    fast: StoreSpec
    slow: StoreSpec
    fast_direction: StoreDirection = "both"


class VerifySpec(_Struct):
    """nativelink-config/src/stores.rs `VerifySpec`."""

    backend: StoreSpec
    # Both default to false in NativeLink, which silently turns verification off: always write them.
    verify_size: bool = False
    verify_hash: bool = False


class CompletenessCheckingSpec(_Struct):
    """nativelink-config/src/stores.rs `CompletenessCheckingSpec`."""

    backend: StoreSpec
    cas_store: StoreSpec


class NamedStore(StoreSpec):
    """nativelink-config/src/cas_server.rs `NamedConfig<StoreSpec>`: `name` beside the flattened spec.

    NamedConfig has no `deny_unknown_fields` (serde cannot combine it with `flatten`), so NativeLink
    ignores stray keys here; we refuse them anyway.
    """

    name: str


# ---- schedulers (nativelink-config/src/schedulers.rs) ----

PropertyType = Literal["minimum", "exact", "priority", "ignore"]


class SimpleSpec(_Struct):
    """nativelink-config/src/schedulers.rs `SimpleSpec`."""

    # Properties not listed are matched dynamically in v1.6.6 (exact match if the worker declares them).
    supported_platform_properties: dict[str, PropertyType] | None = None


class NamedScheduler(_Struct):
    """nativelink-config/src/cas_server.rs `NamedConfig<SchedulerSpec>` (schedulers.rs `SchedulerSpec::Simple`).

    NamedConfig has no `deny_unknown_fields`, so NativeLink ignores stray keys here; we refuse them.
    """

    name: str
    simple: SimpleSpec


# ---- workers (nativelink-config/src/cas_server.rs) ----


class EndpointConfig(_Struct):
    """nativelink-config/src/cas_server.rs `EndpointConfig`."""

    uri: str
    tls_config: ClientTlsConfig | None = None

    @model_validator(mode="after")
    def _scheme_matches(self) -> EndpointConfig:
        _tls_scheme(self.uri, self.tls_config)
        return self


class UploadActionResultConfig(_Struct):
    """nativelink-config/src/cas_server.rs `UploadActionResultConfig`."""

    # Unset means the worker uploads no action results at all.
    ac_store: str | None = None


class WorkerProperty(_Struct):
    """nativelink-config/src/cas_server.rs `WorkerProperty`: an externally tagged enum.

    Exactly one of `{values: [...]}` (env-expanded) or `{query_cmd: "..."}` (run, not via a shell).
    """

    values: list[str] | None = None
    query_cmd: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> WorkerProperty:
        _exactly_one(self, WorkerProperty, "a worker property")
        return self


class LocalWorkerConfig(_Struct):
    """nativelink-config/src/cas_server.rs `LocalWorkerConfig`."""

    # Empty means the worker's index in the list. Env-expanded.
    name: str = ""
    worker_api_endpoint: EndpointConfig
    cas_fast_slow_store: str
    upload_action_result: UploadActionResultConfig = Field(default_factory=UploadActionResultConfig)
    work_directory: str
    platform_properties: dict[str, WorkerProperty]
    # 0 means NativeLink's default (1200 s).
    max_action_timeout_s: int = Field(0, ge=0)
    # 0 means no limit.
    max_inflight_tasks: int = Field(0, ge=0)


class WorkerConfig(_Struct):
    """nativelink-config/src/cas_server.rs `WorkerConfig::Local`."""

    local: LocalWorkerConfig


# ---- servers (nativelink-config/src/cas_server.rs) ----


class TlsConfig(_Struct):
    """nativelink-config/src/cas_server.rs `TlsConfig`: a listener's certificate, and mutual TLS when `client_ca_file`.

    v1.6.6 src/bin/nativelink.rs reads one PEM key (PKCS#8, SEC1 or PKCS#1) and, with a client CA,
    verifies clients against it and the CRLs in `client_crl_file`.
    """

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    client_crl_file: str | None = None

    @model_validator(mode="after")
    def _crl_needs_ca(self) -> TlsConfig:
        if self.client_crl_file is not None and self.client_ca_file is None:
            raise ValueError("client_crl_file without client_ca_file is never read")
        return self


class HttpListener(_Struct):
    """nativelink-config/src/cas_server.rs `HttpListener`."""

    socket_address: str
    tls: TlsConfig | None = None


class ListenerConfig(_Struct):
    """nativelink-config/src/cas_server.rs `ListenerConfig::Http`."""

    http: HttpListener


class _WithInstanceName(_Struct):
    """nativelink-config/src/cas_server.rs `WithInstanceName<T>`: `instance_name` beside the flattened service struct.

    The service structs carry `deny_unknown_fields`, but it has no effect through `flatten` and
    WithInstanceName has none, so NativeLink ignores stray keys in these entries; we refuse them.
    """

    instance_name: str = ""


class CasStoreConfig(_WithInstanceName):
    """nativelink-config/src/cas_server.rs `WithInstanceName<CasStoreConfig>`."""

    cas_store: str


class AcStoreConfig(_WithInstanceName):
    """nativelink-config/src/cas_server.rs `WithInstanceName<AcStoreConfig>`."""

    ac_store: str
    read_only: bool = False


class CapabilitiesRemoteExecutionConfig(_Struct):
    """nativelink-config/src/cas_server.rs `CapabilitiesRemoteExecutionConfig`."""

    scheduler: str


class CapabilitiesConfig(_WithInstanceName):
    """nativelink-config/src/cas_server.rs `WithInstanceName<CapabilitiesConfig>`."""

    remote_execution: CapabilitiesRemoteExecutionConfig | None = None


class ExecutionConfig(_WithInstanceName):
    """nativelink-config/src/cas_server.rs `WithInstanceName<ExecutionConfig>`."""

    cas_store: str
    scheduler: str


class ByteStreamConfig(_WithInstanceName):
    """nativelink-config/src/cas_server.rs `WithInstanceName<ByteStreamConfig>`, not the old `cas_stores` map."""

    cas_store: str


class WorkerApiConfig(_Struct):
    """nativelink-config/src/cas_server.rs `WorkerApiConfig`."""

    scheduler: str


class AdminConfig(_Struct):
    """nativelink-config/src/cas_server.rs `AdminConfig`."""

    # Empty means NativeLink's default, "/admin".
    path: str = ""


class HealthConfig(_Struct):
    """nativelink-config/src/cas_server.rs `HealthConfig` (its optional `timeout_seconds` is not written)."""

    # Empty means NativeLink's default, "/status".
    path: str = ""


class ServicesConfig(_Struct):
    """nativelink-config/src/cas_server.rs `ServicesConfig`: each REAPI service is a list of per-instance entries."""

    cas: list[CasStoreConfig] | None = None
    ac: list[AcStoreConfig] | None = None
    capabilities: list[CapabilitiesConfig] | None = None
    execution: list[ExecutionConfig] | None = None
    bytestream: list[ByteStreamConfig] | None = None
    worker_api: WorkerApiConfig | None = None
    admin: AdminConfig | None = None
    health: HealthConfig | None = None


class ServerConfig(_Struct):
    """nativelink-config/src/cas_server.rs `ServerConfig`."""

    # Empty means the server's index in the list.
    name: str = ""
    listener: ListenerConfig
    services: ServicesConfig | None = None


class GlobalConfig(_Struct):
    """nativelink-config/src/cas_server.rs `GlobalConfig` (its optional digest fields are not written)."""

    # No serde default: required whenever `global` is present.
    max_open_files: int = Field(ge=1)


class CasConfig(_Struct):
    """nativelink-config/src/cas_server.rs `CasConfig`: a whole file, what one `nativelink <config>` reads."""

    stores: list[NamedStore]
    schedulers: list[NamedScheduler] | None = None
    workers: list[WorkerConfig] | None = None
    servers: list[ServerConfig]
    global_: GlobalConfig | None = Field(None, alias="global")

    def to_json(self) -> str:
        """Deterministic JSON (valid JSON5): the same model always gives the same bytes."""
        return self.model_dump_json(indent=2, exclude_none=True, by_alias=True) + "\n"


StoreSpec.model_rebuild()
FastSlowSpec.model_rebuild()
VerifySpec.model_rebuild()
CompletenessCheckingSpec.model_rebuild()
NamedStore.model_rebuild()
