"""Pod templates of the NativeLink tier on Kubernetes: containers, probes, volumes, security contexts.

Pure functions returning plain dicts (pulumi-kubernetes' TypedDicts accept them at runtime, hence
`Any`); the cluster component wires them into workloads.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any

import pulumi

from components.nativelink import layout

if TYPE_CHECKING:
    from components.settings import ContainerResources, ProdSettings

CONFIG_KEY = "config.json5"
CHECKSUM_ANNOTATION = "checksum/config"
COMPONENT_LABEL = "app.kubernetes.io/component"
# Startup probes: every STARTUP_PERIOD_S, this many failures allowed. The CAS server indexes every file of
# its stores at start, which on a large CAS takes a while.
STARTUP_PERIOD_S = 10
CAS_STARTUP_FAILURES = 180
STARTUP_FAILURES = 30
AWAIT_MARGIN_S = 600
# Every container of ours that need not be root runs as this user: CAS server, scheduler, JuiceFS admin runs
# (the NativeLink image names no user, so it would be root).
UNPRIVILEGED_UID = 65532
# What a worker keeps of root's powers: owning and cleaning up whatever an action leaves behind
# (read-only output directories included). Raw sockets, mknod, setuid and the rest go.
WORKER_CAPABILITIES = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]


def labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "nativelink", COMPONENT_LABEL: component}


def config_checksum(config: str) -> str:
    return hashlib.sha256(config.encode()).hexdigest()


def template_metadata(component: str, config: str, extra: dict[str, pulumi.Input[str]] | None = None) -> Any:
    """Pod labels, and the config's checksum: a changed config rolls the pods."""
    return {"labels": labels(component), "annotations": {CHECKSUM_ANNOTATION: config_checksum(config), **(extra or {})}}


def _minutes(seconds: int) -> str:
    return f"{math.ceil(seconds / 60)}m"


def await_probes(startup_failures: int, grace_s: int, waves: int = 1) -> pulumi.ResourceOptions:
    """How long `pulumi up` waits for a workload (pulumi-kubernetes' default is 10 minutes).

    Each rollout wave may wait for old pods to stop (the termination grace period), then for the new
    ones' startup probes, plus a margin for scheduling, image pulls and the JuiceFS mount.
    """
    start = STARTUP_PERIOD_S * startup_failures + AWAIT_MARGIN_S
    return pulumi.ResourceOptions(
        custom_timeouts=pulumi.CustomTimeouts(
            create=_minutes(waves * start),
            update=_minutes(waves * (grace_s + start)),
            delete=_minutes(grace_s + AWAIT_MARGIN_S),
        )
    )


def _probes(startup_failures: int) -> Any:
    """HTTP GET /status on the health listener; startup allows a long first scan of the stores."""
    check = {"http_get": {"path": layout.HEALTH_PATH, "port": layout.HEALTH_PORT}, "timeout_seconds": 5}
    return {
        "startup_probe": {**check, "period_seconds": STARTUP_PERIOD_S, "failure_threshold": startup_failures},
        "readiness_probe": {**check, "period_seconds": 10, "failure_threshold": 3},
        "liveness_probe": {**check, "period_seconds": 20, "failure_threshold": 6},
    }


def resources(amounts: ContainerResources) -> Any:
    return {
        "requests": {"cpu": amounts.cpu_request, "memory": amounts.memory_request},
        "limits": {"cpu": amounts.cpu_limit, "memory": amounts.memory_limit},
    }


def nativelink_security() -> Any:
    """CAS server and scheduler: not root, no capabilities, nothing written outside their volumes."""
    return {
        "allow_privilege_escalation": False,
        "capabilities": {"drop": ["ALL"]},
        "run_as_non_root": True,
        "run_as_user": UNPRIVILEGED_UID,
        "run_as_group": UNPRIVILEGED_UID,
        "read_only_root_filesystem": True,
    }


def worker_security() -> Any:
    """Build actions run in the worker's container as root (toolchain images expect it), with less of root."""
    return {
        "allow_privilege_escalation": False,
        "capabilities": {"drop": ["ALL"], "add": WORKER_CAPABILITIES},
    }


def container(
    component: str,
    settings: ProdSettings,
    amounts: ContainerResources,
    *,
    ports: list[dict[str, Any]],
    volume_mounts: list[dict[str, Any]],
    startup_failures: int,
    security: Any,
    env: list[dict[str, Any]] | None = None,
    worker: bool = False,
) -> Any:
    # The NativeLink image has no shell: its entrypoint is the binary, which takes the config path only.
    # A worker runs the same binary, copied in by an init container, inside the toolchain image.
    program: dict[str, Any] = (
        {"image": settings.versions.worker, "command": [layout.WORKER_BINARY]}
        if worker
        else {"image": settings.versions.nativelink}
    )
    return {
        "name": component,
        **program,
        "args": [layout.CONFIG_PATH],
        "env": [{"name": "RUST_LOG", "value": settings.nativelink.log_level}, *(env or [])],
        "ports": [*ports, {"name": "health", "container_port": layout.HEALTH_PORT}],
        "resources": resources(amounts),
        "volume_mounts": [
            {"name": "config", "mount_path": layout.CONFIG_PATH.rsplit("/", 1)[0], "read_only": True},
            *volume_mounts,
        ],
        "security_context": security,
        **_probes(startup_failures),
    }


def scratch_volume() -> tuple[Any, Any]:
    """(volume, mount) of a small /tmp for a container whose root filesystem is read-only."""
    return (
        {"name": "tmp", "empty_dir": {"size_limit": "1Gi"}},
        {"name": "tmp", "mount_path": "/tmp"},
    )


def worker_root_volume(settings: ProdSettings) -> Any:
    """A block volume per worker pod, deleted with it: the node's disk (often 20 GiB) need not hold it."""
    kube = settings.kubernetes
    claim_spec = {
        "access_modes": ["ReadWriteOnce"],
        "storage_class_name": kube.block_storage_class,
        "resources": {"requests": {"storage": kube.worker_ephemeral_storage}},
    }
    return {
        "name": "worker-root",
        "ephemeral": {"volume_claim_template": {"metadata": {"labels": labels("worker")}, "spec": claim_spec}},
    }


def store_owner_init(settings: ProdSettings) -> Any:
    """Hands the CAS server's store directories to UNPRIVILEGED_UID before it starts.

    Earlier releases ran the CAS server as root, so an existing volume's directories are root's; the
    server needs to create, rename and unlink in them (files only need to stay readable, which they
    are: 0644/0555). Directories only, to depth 3 (`<root>/{cas,ac}/{content,tmp,content.exec}/{d,s}`,
    NativeLink v1.6.6 filesystem_store.rs:1150-1175): a few stats, whatever the size of the CAS.
    """
    owner = f"{UNPRIVILEGED_UID}:{UNPRIVILEGED_UID}"
    root = layout.CSI_CAS_DATA.root
    return {
        "name": "store-owner",
        "image": settings.versions.busybox,
        "command": ["find", root, "-maxdepth", "3", "-type", "d", "-exec", "chown", owner, "{}", "+"],
        "volume_mounts": [{"name": "cas-data", "mount_path": layout.CSI_CAS_DATA.filesystem}],
        "security_context": {
            "allow_privilege_escalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
            "run_as_user": 0,
            "read_only_root_filesystem": True,
        },
        "resources": {"limits": {"cpu": "200m", "memory": "64Mi"}},
    }


def pod_spec(
    settings: ProdSettings,
    main: Any,
    config_map_name: pulumi.Input[str],
    volumes: list[dict[str, Any]],
    init_containers: list[Any] | None = None,
    priority_class: pulumi.Input[str] | None = None,
) -> Any:
    return {
        **({"init_containers": init_containers} if init_containers else {}),
        **({"priority_class_name": priority_class} if priority_class is not None else {}),
        "containers": [main],
        "volumes": [
            {
                "name": "config",
                "config_map": {
                    "name": config_map_name,
                    "items": [{"key": CONFIG_KEY, "path": layout.CONFIG_PATH.rsplit("/", 1)[1]}],
                },
            },
            *volumes,
        ],
        "termination_grace_period_seconds": settings.kubernetes.termination_grace_period_s,
        # NativeLink never talks to the Kubernetes API.
        "automount_service_account_token": False,
        "security_context": {"seccomp_profile": {"type": "RuntimeDefault"}},
    }
