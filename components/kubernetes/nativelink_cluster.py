"""NativeLink on Kubernetes: one CAS server on the JuiceFS claim, one scheduler, N workers.

* CAS server: a StatefulSet of exactly one pod. It is the only writer of the JuiceFS-backed
  stores (NativeLink keeps a private index per filesystem store), and a StatefulSet stops the old
  pod before starting its replacement, where a Deployment would briefly run two.
* Scheduler: one pod, replaced with Recreate; its queue lives in memory and workers must not be
  split between two schedulers.
* Workers: a Deployment; each pod keeps its fast store and work directory on one block volume at
  layout.WORKER_ROOT (hard links need one filesystem; NativeLink advises against network storage),
  a generic ephemeral volume of kubernetes.blockStorageClass created and deleted with the pod.
The image has no shell, so containers get only the config path as argument. Configs carry no
secrets; each lives in its own ConfigMap and its sha256 is a pod annotation, so a config change
rolls the pods even where the ConfigMap name would not change.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_kubernetes as k8s

from components.nativelink import layout
from components.nativelink.clients import NativeLinkTier
from components.nativelink.render import Endpoints, render_cluster
from components.settings import quantity_value

if TYPE_CHECKING:
    from components.settings import ContainerResources, Settings

CAS = "nativelink-cas"
# The CAS StatefulSet's headless governing service.
CAS_PODS = "nativelink-cas-pods"
SCHEDULER = "nativelink-scheduler"
WORKER_API = "nativelink-worker-api"
# Startup probes: every STARTUP_PERIOD_S, this many failures allowed. The CAS server indexes every file of
# its stores at start, which on a large CAS takes a while.
STARTUP_PERIOD_S = 10
CAS_STARTUP_FAILURES = 180
STARTUP_FAILURES = 30
AWAIT_MARGIN_S = 600
# Above the default 0 of workers; user classes may go up to 1,000,000,000 (the system ones above it).
SERVING_PRIORITY = 1_000_000
WORKER = "nativelink-worker"
CONFIG_KEY = "config.json5"
CHECKSUM_ANNOTATION = "checksum/config"
# On the CAS pod: the JuiceFS client its mount pod runs. A mount pod keeps its image for life and is
# recreated only with the pods using it, so a new client rolls the CAS server.
MOUNT_IMAGE_ANNOTATION = "nativelink-juicefs/mount-image"
COMPONENT_LABEL = "app.kubernetes.io/component"


def service_host(service: str, namespace: str) -> str:
    return f"{service}.{namespace}.svc.cluster.local"


def cluster_endpoints(namespace: str) -> Endpoints:
    """Workers reach the scheduler through the worker-API service, not the client one."""
    return Endpoints(cas_host=service_host(CAS, namespace), scheduler_host=service_host(WORKER_API, namespace))


def config_checksum(config: str) -> str:
    return hashlib.sha256(config.encode()).hexdigest()


def labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "nativelink", COMPONENT_LABEL: component}


def create_namespace(
    name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None
) -> k8s.core.v1.Namespace:
    """The namespace of the NativeLink tier; the JuiceFS claim lives there too, so it comes first."""
    return k8s.core.v1.Namespace(
        name,
        metadata={
            "name": settings.kubernetes.namespace,
            "labels": {"app.kubernetes.io/part-of": "nativelink"},
        },
        opts=opts,
    )


# Helpers return Any: they build plain dicts that pulumi-kubernetes' TypedDicts accept at runtime.
def _minutes(seconds: int) -> str:
    return f"{math.ceil(seconds / 60)}m"


def _await_probes(startup_failures: int, grace_s: int, waves: int = 1) -> pulumi.ResourceOptions:
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


def _resources(resources: ContainerResources) -> Any:
    return {
        "requests": {"cpu": resources.cpu_request, "memory": resources.memory_request},
        "limits": {"cpu": resources.cpu_limit, "memory": resources.memory_limit},
    }


def _container(
    component: str,
    settings: Settings,
    resources: dict[str, Any],
    ports: list[dict[str, Any]],
    volume_mounts: list[dict[str, Any]],
    startup_failures: int,
    drop_capabilities: bool = True,
    env: list[dict[str, Any]] | None = None,
    worker: bool = False,
) -> Any:
    security: dict[str, Any] = {"allow_privilege_escalation": False}
    if drop_capabilities:
        security["capabilities"] = {"drop": ["ALL"]}
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
        "resources": resources,
        "volume_mounts": [
            {"name": "config", "mount_path": layout.CONFIG_PATH.rsplit("/", 1)[0], "read_only": True},
            *volume_mounts,
        ],
        "security_context": security,
        **_probes(startup_failures),
    }


def _worker_root_volume(settings: Settings) -> Any:
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


def _pod_spec(
    settings: Settings,
    container: Any,
    config_map: k8s.core.v1.ConfigMap,
    volumes: list[dict[str, Any]],
    init_containers: list[Any] | None = None,
    priority_class: pulumi.Input[str] | None = None,
) -> Any:
    return {
        **({"init_containers": init_containers} if init_containers else {}),
        **({"priority_class_name": priority_class} if priority_class is not None else {}),
        "containers": [container],
        "volumes": [
            {
                "name": "config",
                "config_map": {
                    "name": config_map.metadata.name,
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


class KubernetesNativeLinkCluster(NativeLinkTier):
    """CAS server, scheduler and workers on Kubernetes (NativeLinkCluster protocol)."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        namespace: k8s.core.v1.Namespace,
        claim_name: pulumi.Input[str],
        block_storage: pulumi.Resource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("nativelink:cluster:KubernetesCluster", name, None, opts)
        kube = settings.kubernetes
        grace = kube.termination_grace_period_s
        ns = kube.namespace
        child = pulumi.ResourceOptions(parent=self)
        ns_name = namespace.metadata.name
        # A worker pod may use its whole CPU limit; a fraction of a CPU does not run an action.
        worker_cpus = max(1, math.floor(quantity_value(kube.worker_resources.cpu_limit)))
        configs = render_cluster(settings, cluster_endpoints(ns), cas_data=layout.CSI_CAS_DATA, worker_cpus=worker_cpus)

        def config_map(component: str, text: str) -> k8s.core.v1.ConfigMap:
            # Auto-named: a changed config is a new ConfigMap, and the old one goes after the rollout.
            return k8s.core.v1.ConfigMap(
                f"{name}-{component}-config",
                metadata={"namespace": ns_name, "labels": labels(component)},
                data={CONFIG_KEY: text},
                opts=child,
            )

        def template_metadata(component: str, text: str, extra: dict[str, str] | None = None) -> Any:
            return {
                "labels": labels(component),
                "annotations": {CHECKSUM_ANNOTATION: config_checksum(text), **(extra or {})},
            }

        def service(resource: str, service_name: str, component: str, port_name: str, port: int) -> None:
            k8s.core.v1.Service(
                f"{name}-{resource}",
                metadata={"name": service_name, "namespace": ns_name, "labels": labels(component)},
                spec={
                    "type": "ClusterIP",
                    "selector": labels(component),
                    "ports": [{"name": port_name, "port": port, "target_port": port, "protocol": "TCP"}],
                },
                opts=child,
            )

        # The single CAS server and scheduler may be evicted (a budget of minAvailable 1 on one replica
        # refuses every eviction, so drains, node-group updates and autoscalers never finish); this class
        # lets them preempt workers to be scheduled again at once. The moved pod is a brief outage.
        serving = k8s.scheduling.v1.PriorityClass(
            f"{name}-serving",
            # Cluster-wide: named after the namespace, so two stacks in one cluster do not share it (and
            # never `system-`, which the API reserves).
            metadata={"name": f"nativelink-serving-{ns}", "labels": labels("cas")},
            value=SERVING_PRIORITY,
            global_default=False,
            preemption_policy="PreemptLowerPriority",
            description="NativeLink CAS server and scheduler: rescheduled ahead of lower priorities after an eviction.",
            # Both are immutable in the API: a change replaces the class.
            opts=pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(replace_on_changes=["value", "preemptionPolicy"], delete_before_replace=True),
            ),
        )

        def disruption_budget(component: str, budget: Any) -> None:
            spec: Any = {"selector": {"match_labels": labels(component)}, **budget}
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-{component}-pdb",
                metadata={"namespace": ns_name, "labels": labels(component)},
                spec=spec,
                opts=child,
            )

        # ---- CAS server
        cas_text = configs.cas_server.to_json()
        cas_config = config_map("cas", cas_text)
        service("cas-service", CAS, "cas", "grpc", layout.CAS_PORT)
        # The StatefulSet's governing service must be headless (it gives the pod its DNS name).
        k8s.core.v1.Service(
            f"{name}-cas-pods",
            metadata={"name": CAS_PODS, "namespace": ns_name, "labels": labels("cas")},
            spec={
                "cluster_ip": "None",
                "selector": labels("cas"),
                "ports": [{"name": "grpc", "port": layout.CAS_PORT, "target_port": layout.CAS_PORT, "protocol": "TCP"}],
            },
            opts=child,
        )
        cas_container = _container(
            "cas",
            settings,
            _resources(kube.cas_resources),
            ports=[{"name": "grpc", "container_port": layout.CAS_PORT}],
            volume_mounts=[
                # HostToContainer: a mount the CSI driver recovers on the node reappears in the pod.
                {
                    "name": "cas-data",
                    "mount_path": layout.CSI_CAS_DATA.filesystem,
                    "mount_propagation": "HostToContainer",
                }
            ],
            # The filesystem stores index every file at start; on a large CAS that takes a while.
            startup_failures=CAS_STARTUP_FAILURES,
        )
        k8s.apps.v1.StatefulSet(
            f"{name}-cas",
            metadata={"name": CAS, "namespace": ns_name, "labels": labels("cas")},
            spec={
                "service_name": CAS_PODS,
                "replicas": 1,
                "selector": {"match_labels": labels("cas")},
                "update_strategy": {"type": "RollingUpdate"},
                "template": {
                    "metadata": template_metadata("cas", cas_text, {MOUNT_IMAGE_ANNOTATION: settings.versions.juicefs}),
                    "spec": _pod_spec(
                        settings,
                        cas_container,
                        cas_config,
                        [{"name": "cas-data", "persistent_volume_claim": {"claim_name": claim_name}}],
                        priority_class=serving.metadata.name,
                    ),
                },
            },
            # pulumi-kubernetes waits 10 minutes for a rollout unless told otherwise; the startup probe
            # gives the store scan up to 30.
            opts=pulumi.ResourceOptions.merge(child, _await_probes(CAS_STARTUP_FAILURES, grace)),
        )
        disruption_budget("cas", {"max_unavailable": 1})

        # ---- scheduler
        scheduler_text = configs.scheduler.to_json()
        scheduler_config = config_map("scheduler", scheduler_text)
        service("scheduler-service", SCHEDULER, "scheduler", "grpc", layout.SCHEDULER_PORT)
        # Its own ClusterIP service, so the NetworkPolicy and clients never mix the two ports up.
        service("worker-api-service", WORKER_API, "scheduler", "worker-api", layout.WORKER_API_PORT)
        scheduler_container = _container(
            "scheduler",
            settings,
            _resources(kube.scheduler_resources),
            ports=[
                {"name": "grpc", "container_port": layout.SCHEDULER_PORT},
                {"name": "worker-api", "container_port": layout.WORKER_API_PORT},
            ],
            volume_mounts=[],
            startup_failures=STARTUP_FAILURES,
        )
        k8s.apps.v1.Deployment(
            f"{name}-scheduler",
            metadata={"name": SCHEDULER, "namespace": ns_name, "labels": labels("scheduler")},
            spec={
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"match_labels": labels("scheduler")},
                "template": {
                    "metadata": template_metadata("scheduler", scheduler_text),
                    "spec": _pod_spec(
                        settings, scheduler_container, scheduler_config, [], priority_class=serving.metadata.name
                    ),
                },
            },
            opts=pulumi.ResourceOptions.merge(child, _await_probes(STARTUP_FAILURES, grace)),
        )
        disruption_budget("scheduler", {"max_unavailable": 1})
        k8s.networking.v1.NetworkPolicy(
            f"{name}-scheduler-ingress",
            metadata={"namespace": ns_name, "labels": labels("scheduler")},
            spec={
                "pod_selector": {"match_labels": labels("scheduler")},
                "policy_types": ["Ingress"],
                "ingress": [
                    # Nothing authenticates the worker API: only worker pods may reach it.
                    {
                        "from_": [{"pod_selector": {"match_labels": labels("worker")}}],
                        "ports": [{"protocol": "TCP", "port": layout.WORKER_API_PORT}],
                    },
                    {"ports": [{"protocol": "TCP", "port": layout.SCHEDULER_PORT}]},
                    # Health: this namespace only (the admin endpoint listens on the pod loopback).
                    {
                        "from_": [{"pod_selector": {}}],
                        "ports": [{"protocol": "TCP", "port": layout.HEALTH_PORT}],
                    },
                ],
            },
            opts=child,
        )

        # ---- workers
        worker_text = configs.worker.to_json()
        worker_config = config_map("worker", worker_text)
        worker_container = _container(
            "worker",
            settings,
            _resources(kube.worker_resources),
            ports=[],
            volume_mounts=[
                {"name": "worker-root", "mount_path": layout.WORKER_ROOT},
                {"name": "nativelink-binary", "mount_path": layout.WORKER_BINARY_DIR, "read_only": True},
            ],
            startup_failures=STARTUP_FAILURES,
            worker=True,
            # Build actions run inside this container and may need ordinary root capabilities.
            drop_capabilities=False,
            env=[{"name": "WORKER_NAME", "value_from": {"field_ref": {"field_path": "metadata.name"}}}],
        )
        worker_spec: Any = {
            "selector": {"match_labels": labels("worker")},
            "strategy": {"type": "RollingUpdate", "rolling_update": {"max_unavailable": 1, "max_surge": 1}},
            "template": {
                "metadata": template_metadata("worker", worker_text),
                "spec": _pod_spec(
                    settings,
                    worker_container,
                    worker_config,
                    [
                        _worker_root_volume(settings),
                        {"name": "nativelink-binary", "empty_dir": {}},
                    ],
                    # Build actions need a toolchain the NativeLink image lacks: this copies the binary
                    # of the same release into the pod, beside the toolchain image.
                    init_containers=[
                        {
                            "name": "nativelink-binary",
                            "image": settings.versions.nativelink_worker_init,
                            "args": [layout.WORKER_BINARY],
                            "volume_mounts": [{"name": "nativelink-binary", "mount_path": layout.WORKER_BINARY_DIR}],
                            "security_context": {"allow_privilege_escalation": False},
                            "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
                        }
                    ],
                ),
            },
        }
        if kube.autoscale_max_workers is None:
            # With an autoscaler the replica count is its to set; `pulumi up` must not reset it.
            worker_spec["replicas"] = settings.workers.count
        workers = k8s.apps.v1.Deployment(
            f"{name}-worker",
            metadata={"name": WORKER, "namespace": ns_name, "labels": labels("worker")},
            spec=worker_spec,
            # A rolling update replaces about two workers per wave (one surged, one unavailable).
            opts=pulumi.ResourceOptions.merge(
                pulumi.ResourceOptions(parent=self, depends_on=[block_storage]),
                _await_probes(STARTUP_FAILURES, grace, waves=math.ceil(settings.workers.count / 2)),
            ),
        )
        disruption_budget("worker", {"max_unavailable": 1})
        if kube.autoscale_max_workers is not None:
            k8s.autoscaling.v2.HorizontalPodAutoscaler(
                f"{name}-worker-hpa",
                metadata={"namespace": ns_name, "labels": labels("worker")},
                spec={
                    "scale_target_ref": {
                        "api_version": "apps/v1",
                        "kind": "Deployment",
                        "name": workers.metadata.name,
                    },
                    "min_replicas": settings.workers.count,
                    "max_replicas": kube.autoscale_max_workers,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {"type": "Utilization", "average_utilization": 70},
                            },
                        }
                    ],
                    # Scaling in kills running actions; wait for load to stay low.
                    "behavior": {"scale_down": {"stabilization_window_seconds": 600}},
                },
                opts=child,
            )

        self.publish_endpoints(
            f"grpc://{service_host(CAS, ns)}:{layout.CAS_PORT}",
            f"grpc://{service_host(SCHEDULER, ns)}:{layout.SCHEDULER_PORT}",
            settings.nativelink,
        )
