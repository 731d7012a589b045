"""The part of NativeLink v1.6.6's config (`nativelink-config` crate) this deployment writes.

Field names, nesting and list-versus-map shapes follow the crate's structs; `extra="forbid"`
mirrors its `deny_unknown_fields`, so a key NativeLink would reject fails here first. The renderer
builds these models and nothing else, so every rendered config passes through this one definition.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Struct(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---- stores (nativelink-config/src/stores.rs) ----


class EvictionPolicy(_Struct):
    max_bytes: int = Field(ge=0)


class FilesystemSpec(_Struct):
    content_path: str
    temp_path: str
    eviction_policy: EvictionPolicy | None = None


class GrpcEndpoint(_Struct):
    address: str


class GrpcSpec(_Struct):
    instance_name: str
    endpoints: list[GrpcEndpoint] = Field(min_length=1)
    store_type: Literal["cas", "ac"]


class RefSpec(_Struct):
    name: str


class StoreSpec(_Struct):
    """One-of: exactly one field is set, as in the crate's `StoreSpec` enum."""

    filesystem: FilesystemSpec | None = None
    grpc: GrpcSpec | None = None
    ref_store: RefSpec | None = None
    fast_slow: FastSlowSpec | None = None
    verify: VerifySpec | None = None
    completeness_checking: CompletenessCheckingSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StoreSpec:
        chosen = [name for name in StoreSpec.model_fields if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError(f"a store spec sets exactly one kind, not {chosen}")
        return self


class FastSlowSpec(_Struct):
    fast: StoreSpec
    slow: StoreSpec
    fast_direction: Literal["both", "update", "get", "read_only"] = "both"


class VerifySpec(_Struct):
    backend: StoreSpec
    verify_size: bool
    verify_hash: bool


class CompletenessCheckingSpec(_Struct):
    backend: StoreSpec
    cas_store: StoreSpec


class NamedStore(StoreSpec):
    name: str


# ---- schedulers (nativelink-config/src/schedulers.rs) ----

PropertyType = Literal["minimum", "exact", "priority", "ignore"]


class SimpleSpec(_Struct):
    supported_platform_properties: dict[str, PropertyType]


class NamedScheduler(_Struct):
    name: str
    simple: SimpleSpec


# ---- workers (LocalWorkerConfig) ----


class EndpointConfig(_Struct):
    uri: str


class UploadActionResultConfig(_Struct):
    ac_store: str


class WorkerProperty(_Struct):
    """One-of: a fixed list of values, or a command whose output lines are the values."""

    values: list[str] | None = None
    query_cmd: str | None = None


class LocalWorkerConfig(_Struct):
    name: str
    worker_api_endpoint: EndpointConfig
    cas_fast_slow_store: str
    upload_action_result: UploadActionResultConfig
    work_directory: str
    platform_properties: dict[str, WorkerProperty]
    max_action_timeout_s: int = Field(ge=1)
    max_inflight_tasks: int = Field(ge=0)


class WorkerConfig(_Struct):
    local: LocalWorkerConfig


# ---- servers (nativelink-config/src/cas_server.rs) ----


class HttpListener(_Struct):
    socket_address: str


class ListenerConfig(_Struct):
    http: HttpListener


class CasStoreConfig(_Struct):
    instance_name: str
    cas_store: str


class AcStoreConfig(_Struct):
    instance_name: str
    ac_store: str
    read_only: bool = False


class CapabilitiesRemoteExecutionConfig(_Struct):
    scheduler: str


class CapabilitiesConfig(_Struct):
    instance_name: str
    remote_execution: CapabilitiesRemoteExecutionConfig | None = None


class ExecutionConfig(_Struct):
    instance_name: str
    cas_store: str
    scheduler: str


class ByteStreamConfig(_Struct):
    instance_name: str
    cas_store: str


class WorkerApiConfig(_Struct):
    scheduler: str


class PathConfig(_Struct):
    path: str


class ServicesConfig(_Struct):
    cas: list[CasStoreConfig] | None = None
    ac: list[AcStoreConfig] | None = None
    capabilities: list[CapabilitiesConfig] | None = None
    execution: list[ExecutionConfig] | None = None
    bytestream: list[ByteStreamConfig] | None = None
    worker_api: WorkerApiConfig | None = None
    admin: PathConfig | None = None
    health: PathConfig | None = None


class ServerConfig(_Struct):
    name: str
    listener: ListenerConfig
    services: ServicesConfig


class GlobalConfig(_Struct):
    max_open_files: int = Field(ge=1)


class CasConfig(_Struct):
    """A whole config file: what one `nativelink <config>` process reads."""

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
