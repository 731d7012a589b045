"""Layout rules a NativeLink deployment must keep, checked on the configs themselves.

NativeLink validates structure when it starts, but not these: a filesystem store's `temp_path`
must share a filesystem with its `content_path` (uploads are renamed into place), a worker's
`work_directory` must share one with its fast store (inputs are hard-linked), and no two processes
may own the same `content_path` (each keeps its own index and evicts by it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from components.nativelink import layout
from components.nativelink.schema import CasConfig, FilesystemSpec, ServicesConfig, StoreSpec

if TYPE_CHECKING:
    from components.nativelink.render import ClusterConfigs


def process_filesystems(cas_data: layout.CasData) -> dict[str, tuple[str, ...]]:
    return {
        "cas_server": (cas_data.filesystem,),
        "scheduler": layout.SCHEDULER_FILESYSTEMS,
        "worker": layout.WORKER_FILESYSTEMS,
    }


# Services each process must serve for the deployment to work.
REQUIRED_SERVICES: Mapping[str, frozenset[str]] = {
    "cas_server": frozenset({"cas", "ac", "bytestream", "capabilities", "health"}),
    "scheduler": frozenset({"execution", "capabilities", "ac", "worker_api", "health"}),
    "worker": frozenset({"health"}),
}


def _nested_stores(spec: StoreSpec) -> Iterator[StoreSpec]:
    yield spec
    for child in (
        spec.fast_slow.fast if spec.fast_slow else None,
        spec.fast_slow.slow if spec.fast_slow else None,
        spec.verify.backend if spec.verify else None,
        spec.completeness_checking.backend if spec.completeness_checking else None,
        spec.completeness_checking.cas_store if spec.completeness_checking else None,
    ):
        if child is not None:
            yield from _nested_stores(child)


def filesystem_stores(config: CasConfig) -> list[FilesystemSpec]:
    return [
        nested.filesystem
        for store in config.stores
        for nested in _nested_stores(store)
        if nested.filesystem is not None
    ]


def filesystem_of(path: str, filesystems: tuple[str, ...]) -> str | None:
    """The mount root `path` lives on, or None if it is on the container's own disk."""
    roots = [root for root in filesystems if path == root or path.startswith(root + "/")]
    return max(roots, key=len) if roots else None


def _served(services: ServicesConfig) -> set[str]:
    return {name for name in type(services).model_fields if getattr(services, name) is not None}


def _check_references(process: str, config: CasConfig) -> list[str]:
    stores = {store.name for store in config.stores}
    schedulers = {scheduler.name for scheduler in config.schedulers or []}
    problems: list[str] = []
    names = [store.name for store in config.stores]
    for duplicate in sorted({name for name in names if names.count(name) > 1}):
        problems.append(f"{process}: store name {duplicate!r} is defined twice")

    def need_store(name: str, where: str) -> None:
        if name not in stores:
            problems.append(f"{process}: {where} refers to store {name!r}, which is not defined")

    def need_scheduler(name: str, where: str) -> None:
        if name not in schedulers:
            problems.append(f"{process}: {where} refers to scheduler {name!r}, which is not defined")

    for store in config.stores:
        for nested in _nested_stores(store):
            if nested.ref_store is not None:
                need_store(nested.ref_store.name, f"store {store.name!r}")
    for server in config.servers:
        services = server.services or ServicesConfig()
        for cas in services.cas or []:
            need_store(cas.cas_store, f"server {server.name!r} cas")
        for ac in services.ac or []:
            need_store(ac.ac_store, f"server {server.name!r} ac")
        for stream in services.bytestream or []:
            need_store(stream.cas_store, f"server {server.name!r} bytestream")
        for execution in services.execution or []:
            need_store(execution.cas_store, f"server {server.name!r} execution")
            need_scheduler(execution.scheduler, f"server {server.name!r} execution")
        for capability in services.capabilities or []:
            if capability.remote_execution is not None:
                need_scheduler(capability.remote_execution.scheduler, f"server {server.name!r} capabilities")
        if services.worker_api is not None:
            need_scheduler(services.worker_api.scheduler, f"server {server.name!r} worker_api")
            if _served(services) != {"worker_api"}:
                problems.append(f"{process}: server {server.name!r} serves worker_api beside other services")
    for worker in config.workers or []:
        local = worker.local
        need_store(local.cas_fast_slow_store, "worker cas_fast_slow_store")
        if local.upload_action_result.ac_store is None:
            problems.append(f"{process}: worker upload_action_result has no ac_store; results would never reach the AC")
        else:
            need_store(local.upload_action_result.ac_store, "worker upload_action_result")
    return problems


def _check_filesystems(process: str, config: CasConfig, filesystems: tuple[str, ...]) -> list[str]:
    problems: list[str] = []
    content_paths: list[str] = []
    for spec in filesystem_stores(config):
        content_paths.append(spec.content_path)
        content_fs = filesystem_of(spec.content_path, filesystems)
        if content_fs is None:
            problems.append(f"{process}: content_path {spec.content_path} is on no volume; it would be lost on restart")
        if filesystem_of(spec.temp_path, filesystems) != content_fs:
            problems.append(
                f"{process}: temp_path {spec.temp_path} and content_path {spec.content_path} are on "
                "different filesystems; uploads are renamed from one to the other"
            )
    for duplicate in sorted({path for path in content_paths if content_paths.count(path) > 1}):
        problems.append(f"{process}: content_path {duplicate} is used by two stores")

    stores = {store.name: store for store in config.stores}
    for worker in config.workers or []:
        local = worker.local
        fast_slow = stores.get(local.cas_fast_slow_store)
        fast = fast_slow.fast_slow.fast if fast_slow is not None and fast_slow.fast_slow else None
        if fast is None or fast.filesystem is None:
            problems.append(f"{process}: cas_fast_slow_store must be a fast_slow store with a filesystem fast store")
            continue
        work_fs = filesystem_of(local.work_directory, filesystems)
        if work_fs is None or work_fs != filesystem_of(fast.filesystem.content_path, filesystems):
            problems.append(
                f"{process}: work_directory {local.work_directory} is not on the filesystem of the fast store "
                f"{fast.filesystem.content_path}; inputs are hard-linked from it"
            )
    return problems


def _check_services(process: str, config: CasConfig) -> list[str]:
    served: set[str] = set()
    for server in config.servers:
        served |= _served(server.services or ServicesConfig())
    missing = REQUIRED_SERVICES.get(process, frozenset()) - served
    return [f"{process}: no listener serves {sorted(missing)}"] if missing else []


def check_configs(configs: Mapping[str, CasConfig], filesystems: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Every broken rule, as one sentence each; empty when the layout is sound."""
    problems: list[str] = []
    owners: dict[str, str] = {}
    for process, config in configs.items():
        problems += _check_references(process, config)
        problems += _check_filesystems(process, config, filesystems.get(process, ()))
        problems += _check_services(process, config)
        for spec in filesystem_stores(config):
            for path in (spec.content_path, spec.temp_path):
                other = owners.setdefault(path, process)
                if other != process:
                    problems.append(f"{process} and {other} both use {path}; a store directory has one owner")
    return problems


def check_cluster(configs: ClusterConfigs) -> list[str]:
    return check_configs(
        {"cas_server": configs.cas_server, "scheduler": configs.scheduler, "worker": configs.worker},
        process_filesystems(configs.cas_data),
    )
