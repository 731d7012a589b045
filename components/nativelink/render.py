"""Render the three NativeLink configs (CAS server, scheduler, worker) from stack settings.

Pure functions: the Docker and Kubernetes tiers upload exactly what these return, and the tests
and real-tool checks read the same output.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.nativelink import layout
from components.nativelink.rules import check_cluster
from components.nativelink.schema import (
    AcStoreConfig,
    AdminConfig,
    ByteStreamConfig,
    CapabilitiesConfig,
    CapabilitiesRemoteExecutionConfig,
    CasConfig,
    CasStoreConfig,
    ClientTlsConfig,
    CompletenessCheckingSpec,
    EndpointConfig,
    EvictionPolicy,
    ExecutionConfig,
    FastSlowSpec,
    FilesystemSpec,
    GlobalConfig,
    GrpcEndpoint,
    GrpcSpec,
    HealthConfig,
    HttpListener,
    ListenerConfig,
    LocalWorkerConfig,
    NamedScheduler,
    NamedStore,
    PropertyType,
    RefSpec,
    ServerConfig,
    ServicesConfig,
    SimpleSpec,
    StoreSpec,
    TlsConfig,
    UploadActionResultConfig,
    VerifySpec,
    WorkerApiConfig,
    WorkerConfig,
    WorkerProperty,
)
from components.settings import Settings, size_bytes

CAS_STORE = "CAS_MAIN_STORE"
AC_STORE = "AC_MAIN_STORE"
# The JuiceFS-backed filesystem stores, named at top level: NativeLink registers health checks only for
# top-level stores (v1.6.6 src/bin/nativelink.rs:213-219, default_store_factory.rs:143-145; wrappers
# register none), so only named here does a dead mount turn `/status` into a 503.
CAS_FILES_STORE = "CAS_FILES"
AC_FILES_STORE = "AC_FILES"
REMOTE_CAS_STORE = "GRPC_CAS_STORE"
REMOTE_AC_STORE = "GRPC_AC_STORE"
WORKER_FAST_SLOW_STORE = "WORKER_FAST_SLOW_STORE"
SCHEDULER = "MAIN_SCHEDULER"
# The worker's name comes from its environment, so one config serves every replica.
WORKER_NAME = "${WORKER_NAME}"
# Workers hold many hard-linked inputs open at once.
WORKER_MAX_OPEN_FILES = 524_288


@dataclass(frozen=True)
class Endpoints:
    """Host names the processes use to reach each other on the private network."""

    cas_host: str
    scheduler_host: str
    # Where workers reach the CAS server's listener for workers; the CAS server's host unless said otherwise.
    worker_cas_host: str | None = None


@dataclass(frozen=True)
class ClusterConfigs:
    cas_server: CasConfig
    scheduler: CasConfig
    worker: CasConfig
    # Where the CAS server's stores live, for the layout rules.
    cas_data: layout.CasData


def _listener(
    name: str, port: int, services: ServicesConfig, host: str = "0.0.0.0", tls: TlsConfig | None = None
) -> ServerConfig:
    return ServerConfig(
        name=name,
        listener=ListenerConfig(http=HttpListener(socket_address=f"{host}:{port}", tls=tls)),
        services=services,
    )


def _server_tls(settings: Settings, *, clients_authenticate: bool) -> TlsConfig | None:
    """A gRPC listener's TLS: the server identity, and the CA and CRL when clients must show a certificate."""
    if not settings.tls.enabled:
        return None
    mutual = {"client_ca_file": layout.TLS_CA, "client_crl_file": layout.TLS_CRL} if clients_authenticate else {}
    return TlsConfig(cert_file=layout.TLS_SERVER_CERT, key_file=layout.TLS_SERVER_KEY, **mutual)


def _client_tls(settings: Settings) -> ClientTlsConfig | None:
    """How the scheduler and workers connect: they verify the server and show their own certificate."""
    if not settings.tls.enabled:
        return None
    return ClientTlsConfig(ca_file=layout.TLS_CA, cert_file=layout.TLS_CLIENT_CERT, key_file=layout.TLS_CLIENT_KEY)


def grpc_scheme(settings: Settings) -> str:
    return "grpcs" if settings.tls.enabled else "grpc"


def _health_listener() -> ServerConfig:
    return _listener("health", layout.HEALTH_PORT, ServicesConfig(health=HealthConfig(path=layout.HEALTH_PATH)))


def _filesystem(paths: layout.StorePaths, max_bytes: int) -> FilesystemSpec:
    return FilesystemSpec(
        content_path=paths.content_path,
        temp_path=paths.temp_path,
        eviction_policy=EvictionPolicy(max_bytes=max_bytes),
    )


def _remote_stores(settings: Settings, host: str, port: int) -> list[NamedStore]:
    endpoint = GrpcEndpoint(address=f"{grpc_scheme(settings)}://{host}:{port}", tls_config=_client_tls(settings))
    instance = settings.nativelink.instance_name
    return [
        NamedStore(
            name=name,
            grpc=GrpcSpec(instance_name=instance, endpoints=[endpoint], store_type=kind),
        )
        for name, kind in ((REMOTE_CAS_STORE, "cas"), (REMOTE_AC_STORE, "ac"))
    ]


def _ref(name: str) -> StoreSpec:
    return StoreSpec(ref_store=RefSpec(name=name))


def render_cas_server(settings: Settings, cas_data: layout.CasData) -> CasConfig:
    instance = settings.nativelink.instance_name
    cas_files = _filesystem(cas_data.cas, size_bytes(settings.nativelink.cas_max_bytes))
    ac_files = _filesystem(cas_data.ac, size_bytes(settings.nativelink.ac_max_bytes))
    return CasConfig(
        stores=[
            NamedStore(name=CAS_FILES_STORE, filesystem=cas_files),
            NamedStore(name=AC_FILES_STORE, filesystem=ac_files),
            NamedStore(
                name=CAS_STORE,
                verify=VerifySpec(backend=_ref(CAS_FILES_STORE), verify_size=True, verify_hash=True),
            ),
            # An AC entry whose outputs were evicted from the CAS reads as a miss, not a broken hit.
            NamedStore(
                name=AC_STORE,
                completeness_checking=CompletenessCheckingSpec(backend=_ref(AC_FILES_STORE), cas_store=_ref(CAS_STORE)),
            ),
        ],
        servers=[
            _cas_listener(
                "public",
                layout.CAS_PORT,
                instance,
                ac_read_only=_clients_read_only(settings),
                tls=_server_tls(settings, clients_authenticate=settings.tls.client_auth),
            ),
            # Workers always authenticate: they write the action cache.
            _cas_listener(
                "workers",
                layout.WORKER_CAS_PORT,
                instance,
                ac_read_only=False,
                tls=_server_tls(settings, clients_authenticate=True),
            ),
            _health_listener(),
        ],
    )


def _clients_read_only(settings: Settings) -> bool:
    return not settings.nativelink.clients_upload_results


def _cas_listener(name: str, port: int, instance: str, *, ac_read_only: bool, tls: TlsConfig | None) -> ServerConfig:
    return _listener(
        name,
        port,
        tls=tls,
        services=ServicesConfig(
            cas=[CasStoreConfig(instance_name=instance, cas_store=CAS_STORE)],
            # A read-only AC answers updates with PERMISSION_DENIED (v1.6.6 ac_server.rs:131-136).
            ac=[AcStoreConfig(instance_name=instance, ac_store=AC_STORE, read_only=ac_read_only)],
            capabilities=[CapabilitiesConfig(instance_name=instance)],
            bytestream=[ByteStreamConfig(instance_name=instance, cas_store=CAS_STORE)],
        ),
    )


def _supported_properties(settings: Settings) -> dict[str, PropertyType]:
    supported: dict[str, PropertyType] = {"cpu_count": "minimum"}
    for key in settings.workers.platform_properties:
        supported[key] = "priority" if key in {"OSFamily", "container-image"} else "exact"
    return dict(sorted(supported.items()))


def render_scheduler(settings: Settings, endpoints: Endpoints) -> CasConfig:
    instance = settings.nativelink.instance_name
    return CasConfig(
        # The scheduler only reads the cache, as a client does.
        stores=_remote_stores(settings, endpoints.cas_host, layout.CAS_PORT),
        schedulers=[
            NamedScheduler(
                name=SCHEDULER, simple=SimpleSpec(supported_platform_properties=_supported_properties(settings))
            )
        ],
        servers=[
            _listener(
                "public",
                layout.SCHEDULER_PORT,
                ServicesConfig(
                    ac=[
                        AcStoreConfig(
                            instance_name=instance, ac_store=REMOTE_AC_STORE, read_only=_clients_read_only(settings)
                        )
                    ],
                    execution=[
                        ExecutionConfig(instance_name=instance, cas_store=REMOTE_CAS_STORE, scheduler=SCHEDULER)
                    ],
                    capabilities=[
                        CapabilitiesConfig(
                            instance_name=instance,
                            remote_execution=CapabilitiesRemoteExecutionConfig(scheduler=SCHEDULER),
                        )
                    ],
                ),
                tls=_server_tls(settings, clients_authenticate=settings.tls.client_auth),
            ),
            # Alone on its own port, as upstream asks: workers are not clients.
            _listener(
                "worker_api",
                layout.WORKER_API_PORT,
                ServicesConfig(worker_api=WorkerApiConfig(scheduler=SCHEDULER)),
                tls=_server_tls(settings, clients_authenticate=True),
            ),
            _health_listener(),
            _listener(
                "admin", layout.ADMIN_PORT, ServicesConfig(admin=AdminConfig(path=layout.ADMIN_PATH)), "127.0.0.1"
            ),
        ],
    )


def render_worker(settings: Settings, endpoints: Endpoints, cpus: int) -> CasConfig:
    """The worker config for a container limited to `cpus` CPUs.

    It advertises `cpus`, not `nproc` (which counts the host's CPUs whatever the limit), and takes at
    most that many actions at once unless told otherwise: NativeLink's 0 means no limit at all
    (v1.6.6 nativelink-scheduler/src/worker.rs:335-337).
    """
    workers = settings.workers
    properties = {"cpu_count": WorkerProperty(values=[str(cpus)])}
    properties.update({key: WorkerProperty(values=list(values)) for key, values in workers.platform_properties.items()})
    return CasConfig(
        stores=[
            # Workers write action results: they use the CAS server's listener for workers.
            *_remote_stores(settings, endpoints.worker_cas_host or endpoints.cas_host, layout.WORKER_CAS_PORT),
            NamedStore(
                name=WORKER_FAST_SLOW_STORE,
                fast_slow=FastSlowSpec(
                    fast=StoreSpec(
                        filesystem=_filesystem(layout.WORKER_FAST_STORE_PATHS, size_bytes(workers.fast_store_size))
                    ),
                    slow=_ref(REMOTE_CAS_STORE),
                    # Inputs are cached locally; outputs go straight to the CAS server.
                    fast_direction="get",
                ),
            ),
        ],
        workers=[
            WorkerConfig(
                local=LocalWorkerConfig(
                    name=WORKER_NAME,
                    worker_api_endpoint=EndpointConfig(
                        uri=f"{grpc_scheme(settings)}://{endpoints.scheduler_host}:{layout.WORKER_API_PORT}",
                        tls_config=_client_tls(settings),
                    ),
                    cas_fast_slow_store=WORKER_FAST_SLOW_STORE,
                    upload_action_result=UploadActionResultConfig(ac_store=REMOTE_AC_STORE),
                    work_directory=layout.WORKER_WORK_DIRECTORY,
                    platform_properties=dict(sorted(properties.items())),
                    max_action_timeout_s=workers.max_action_timeout_s,
                    max_inflight_tasks=workers.max_inflight_tasks or cpus,
                )
            )
        ],
        servers=[_health_listener()],
        global_=GlobalConfig(max_open_files=WORKER_MAX_OPEN_FILES),
    )


def render_cluster(
    settings: Settings, endpoints: Endpoints, *, cas_data: layout.CasData, worker_cpus: int
) -> ClusterConfigs:
    """All three configs, checked against the deployment's layout rules before anything uses them."""
    configs = ClusterConfigs(
        cas_server=render_cas_server(settings, cas_data),
        scheduler=render_scheduler(settings, endpoints),
        worker=render_worker(settings, endpoints, worker_cpus),
        cas_data=cas_data,
    )
    problems = check_cluster(configs)
    if problems:
        raise ValueError("rendered NativeLink configs break the layout rules:\n" + "\n".join(problems))
    return configs
