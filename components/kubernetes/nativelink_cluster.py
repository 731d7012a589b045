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
rolls the pods even where the ConfigMap name would not change. Pod templates are in pods.py, the
NetworkPolicies in network_policies.py.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_kubernetes as k8s

from components.kubernetes import pods
from components.kubernetes.exposure import ExternalHosts, load_balancers
from components.kubernetes.network_policies import network_policy_specs
from components.kubernetes.pods import labels
from components.nativelink import layout
from components.nativelink.clients import NativeLinkTier, bazel_flags
from components.nativelink.render import ClusterConfigs, Endpoints, grpc_scheme, render_cluster
from components.settings import quantity_value
from components.tls.pki import ClusterPki, Role, ServerNames

if TYPE_CHECKING:
    from components.settings import ProdSettings

CAS = "nativelink-cas"
# The CAS StatefulSet's headless governing service.
CAS_PODS = "nativelink-cas-pods"
# The CAS server's listener for workers, apart from the clients' service.
CAS_WORKERS = "nativelink-cas-workers"
SCHEDULER = "nativelink-scheduler"
WORKER_API = "nativelink-worker-api"
WORKER = "nativelink-worker"
# Above the default 0 of workers; user classes may go up to 1,000,000,000 (the system ones above it).
SERVING_PRIORITY = 1_000_000
# On the CAS pod: the JuiceFS client its mount pod runs. A mount pod keeps its image for life and is
# recreated only with the pods using it, so a new client rolls the CAS server.
MOUNT_IMAGE_ANNOTATION = "nativelink-juicefs/mount-image"
# On the CAS pod: the identity its mount pod reaches S3 with (the IRSA role, or a digest of the key id).
# A mount pod keeps the credentials it started with, so a new identity rolls the CAS server, before the
# old one is removed (Pulumi deletes what it replaces last).
S3_IDENTITY_ANNOTATION = "nativelink-juicefs/s3-identity"
# On every pod with TLS files: a digest of its certificates and the CRL. NativeLink reads them only at
# start, so a renewed certificate or a new revocation rolls the pods.
TLS_DIGEST_ANNOTATION = "nativelink-juicefs/tls-digest"
# Pod Security Admission: workers run build actions as root, which `restricted` forbids; the rest would pass it.
POD_SECURITY_LABELS = {
    "pod-security.kubernetes.io/enforce": "baseline",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}


def service_host(service: str, namespace: str) -> str:
    return f"{service}.{namespace}.svc.cluster.local"


def service_names(service: str, namespace: str) -> list[str]:
    """Every name a pod may dial a service by, the short ones included."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", service_host(service, namespace)]


def server_names(namespace: str, external: ExternalHosts | None, external_domain: str | None) -> ServerNames:
    """The server certificate's names: the in-cluster services, the load balancers and their records."""
    names: list[pulumi.Input[str]] = [
        name for service in (CAS, CAS_WORKERS, SCHEDULER, WORKER_API) for name in service_names(service, namespace)
    ]
    if external is not None:
        names += [external.cas, external.scheduler]
    if external_domain is not None:
        names += [f"cas.{external_domain}", f"scheduler.{external_domain}"]
    return ServerNames(names)


def _public(name: str) -> bool:
    return not name.endswith(".key")


def public_digest(files: Mapping[str, str]) -> str:
    """sha256 of the public TLS files (certificates, CRL): changes whenever one is renewed or revoked."""
    return hashlib.sha256("".join(pem for name, pem in sorted(files.items()) if _public(name)).encode()).hexdigest()


def tls_digest(files: dict[str, pulumi.Output[str]]) -> pulumi.Output[str]:
    # From the public files only: a digest of a secret would be secret, and hide the pod spec in previews.
    return pulumi.Output.all(**{name: pem for name, pem in files.items() if _public(name)}).apply(public_digest)


def cluster_endpoints(namespace: str) -> Endpoints:
    """Workers reach the scheduler and the CAS server through services of their own, not the clients'."""
    return Endpoints(
        cas_host=service_host(CAS, namespace),
        scheduler_host=service_host(WORKER_API, namespace),
        worker_cas_host=service_host(CAS_WORKERS, namespace),
    )


def create_namespace(
    name: str, settings: ProdSettings, opts: pulumi.ResourceOptions | None = None
) -> k8s.core.v1.Namespace:
    """The namespace of the NativeLink tier; the JuiceFS claim lives there too, so it comes first."""
    return k8s.core.v1.Namespace(
        name,
        metadata={
            "name": settings.kubernetes.namespace,
            "labels": {"app.kubernetes.io/part-of": "nativelink", **POD_SECURITY_LABELS},
        },
        opts=opts,
    )


class KubernetesNativeLinkCluster(NativeLinkTier):
    """CAS server, scheduler and workers on Kubernetes (NativeLinkCluster protocol)."""

    # Awaited by pulumi-kubernetes until its rollout is done (the new pod, and its mount pod, ready).
    cas_server: k8s.apps.v1.StatefulSet

    def __init__(
        self,
        name: str,
        settings: ProdSettings,
        namespace: k8s.core.v1.Namespace,
        claim_name: pulumi.Input[str],
        block_storage: pulumi.Resource,
        s3_identity: pulumi.Input[str],
        vpc_cidr: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("nativelink:cluster:KubernetesCluster", name, None, opts)
        self._name = name
        self._settings = settings
        self._namespace = namespace.metadata.name
        ns = settings.kubernetes.namespace
        # A worker pod may use its whole CPU limit; a fraction of a CPU does not run an action.
        worker_cpus = max(1, math.floor(quantity_value(settings.kubernetes.worker_resources.cpu_limit)))
        configs = render_cluster(settings, cluster_endpoints(ns), cas_data=layout.CSI_CAS_DATA, worker_cpus=worker_cpus)

        kube = settings.kubernetes
        self.external = (
            load_balancers(name, kube, self._namespace, self) if kube.exposure == "internal-load-balancer" else None
        )
        external = self.external
        self._health_check_sources = [vpc_cidr] if vpc_cidr is not None else []
        names = server_names(ns, external, kube.external_domain)
        self.pki = ClusterPki(f"{name}-tls", settings.tls, names, opts=self._child()) if settings.tls.enabled else None

        serving = self._serving_priority_class()
        self.cas_server = self._cas_server(configs, claim_name, serving, s3_identity)
        self._scheduler(configs, serving)
        self._workers(configs, block_storage)
        self._network_policies()
        cas_host, scheduler_host = self._client_hosts(external)
        scheme = grpc_scheme(settings)
        # Pods of kubernetes.clientNamespaces dial the services: the load balancers admit clientCidrs only.
        self.in_cluster_bazel_flags = bazel_flags(
            f"{scheme}://{service_host(CAS, ns)}:{layout.CAS_PORT}",
            f"{scheme}://{service_host(SCHEDULER, ns)}:{layout.SCHEDULER_PORT}",
            settings.nativelink,
            settings.tls,
        )
        self.publish_endpoints(
            pulumi.Output.concat(f"{scheme}://", cas_host, f":{layout.CAS_PORT}"),
            pulumi.Output.concat(f"{scheme}://", scheduler_host, f":{layout.SCHEDULER_PORT}"),
            settings.nativelink,
            settings.tls,
            load_balanced=external is not None,
        )

    def _client_hosts(self, external: ExternalHosts | None) -> tuple[pulumi.Input[str], pulumi.Input[str]]:
        """What Bazel dials: the records under externalDomain, else the load balancers, else the services."""
        kube = self._settings.kubernetes
        if kube.external_domain is not None:
            return f"cas.{kube.external_domain}", f"scheduler.{kube.external_domain}"
        if external is not None:
            return external.cas, external.scheduler
        return service_host(CAS, kube.namespace), service_host(SCHEDULER, kube.namespace)

    # ---- shared pieces

    def _child(self, extra: pulumi.ResourceOptions | None = None) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions.merge(pulumi.ResourceOptions(parent=self), extra)

    def _config_map(self, component: str, text: str) -> k8s.core.v1.ConfigMap:
        # Auto-named: a changed config is a new ConfigMap, and the old one goes after the rollout.
        return k8s.core.v1.ConfigMap(
            f"{self._name}-{component}-config",
            metadata={"namespace": self._namespace, "labels": labels(component)},
            data={pods.CONFIG_KEY: text},
            opts=self._child(),
        )

    def _service(self, resource: str, service_name: str, component: str, port_name: str, port: int) -> None:
        k8s.core.v1.Service(
            f"{self._name}-{resource}",
            metadata={"name": service_name, "namespace": self._namespace, "labels": labels(component)},
            spec={
                "type": "ClusterIP",
                "selector": labels(component),
                "ports": [{"name": port_name, "port": port, "target_port": port, "protocol": "TCP"}],
            },
            opts=self._child(),
        )

    def _tls(self, role: Role) -> tuple[list[Any], list[Any], dict[str, pulumi.Input[str]]]:
        """The role's TLS files as a Secret volume: (volumes, volume mounts, pod annotations); empty without TLS."""
        if self.pki is None:
            return [], [], {}
        files = self.pki.files(role)
        secret = k8s.core.v1.Secret(
            f"{self._name}-{role}-tls",
            metadata={"name": f"nativelink-{role}-tls", "namespace": self._namespace, "labels": labels(role)},
            string_data=files,
            opts=self._child(),
        )
        volume = {"name": "tls", "secret": {"secret_name": secret.metadata.name}}
        mount = {"name": "tls", "mount_path": layout.TLS_DIR, "read_only": True}
        return [volume], [mount], {TLS_DIGEST_ANNOTATION: tls_digest(files)}

    def _disruption_budget(self, component: str) -> None:
        # maxUnavailable, never minAvailable 1: on one replica that refuses every eviction, so drains,
        # node-group updates and autoscalers would never finish.
        k8s.policy.v1.PodDisruptionBudget(
            f"{self._name}-{component}-pdb",
            metadata={"namespace": self._namespace, "labels": labels(component)},
            spec={"selector": {"match_labels": labels(component)}, "max_unavailable": 1},
            opts=self._child(),
        )

    def _serving_priority_class(self) -> k8s.scheduling.v1.PriorityClass:
        """Lets the evicted CAS server and scheduler preempt workers to be scheduled again at once."""
        return k8s.scheduling.v1.PriorityClass(
            f"{self._name}-serving",
            # Cluster-wide: named after the namespace, so two stacks in one cluster do not share it (and
            # never `system-`, which the API reserves).
            metadata={"name": f"nativelink-serving-{self._settings.kubernetes.namespace}", "labels": labels("cas")},
            value=SERVING_PRIORITY,
            global_default=False,
            preemption_policy="PreemptLowerPriority",
            description="NativeLink CAS server and scheduler: rescheduled ahead of lower priorities after an eviction.",
            # Both are immutable in the API: a change replaces the class.
            opts=self._child(
                pulumi.ResourceOptions(replace_on_changes=["value", "preemptionPolicy"], delete_before_replace=True)
            ),
        )

    # ---- roles

    def _cas_server(
        self,
        configs: ClusterConfigs,
        claim_name: pulumi.Input[str],
        serving: k8s.scheduling.v1.PriorityClass,
        s3_identity: pulumi.Input[str],
    ) -> k8s.apps.v1.StatefulSet:
        settings = self._settings
        text = configs.cas_server.to_json()
        config = self._config_map("cas", text)
        self._service("cas-service", CAS, "cas", "grpc", layout.CAS_PORT)
        self._service("cas-workers-service", CAS_WORKERS, "cas", "grpc-workers", layout.WORKER_CAS_PORT)
        # The StatefulSet's governing service must be headless (it gives the pod its DNS name).
        k8s.core.v1.Service(
            f"{self._name}-cas-pods",
            metadata={"name": CAS_PODS, "namespace": self._namespace, "labels": labels("cas")},
            spec={
                "cluster_ip": "None",
                "selector": labels("cas"),
                "ports": [{"name": "grpc", "port": layout.CAS_PORT, "target_port": layout.CAS_PORT, "protocol": "TCP"}],
            },
            opts=self._child(),
        )
        tmp_volume, tmp_mount = pods.scratch_volume()
        tls_volumes, tls_mounts, tls_annotations = self._tls("cas")
        main = pods.container(
            "cas",
            settings,
            settings.kubernetes.cas_resources,
            ports=[
                {"name": "grpc", "container_port": layout.CAS_PORT},
                {"name": "grpc-workers", "container_port": layout.WORKER_CAS_PORT},
            ],
            volume_mounts=[
                # HostToContainer: a mount the CSI driver recovers on the node reappears in the pod.
                {
                    "name": "cas-data",
                    "mount_path": layout.CSI_CAS_DATA.filesystem,
                    "mount_propagation": "HostToContainer",
                },
                tmp_mount,
                *tls_mounts,
            ],
            # The filesystem stores index every file at start; on a large CAS that takes a while.
            startup_failures=pods.CAS_STARTUP_FAILURES,
            security=pods.nativelink_security(),
        )
        cas_server = k8s.apps.v1.StatefulSet(
            f"{self._name}-cas",
            metadata={"name": CAS, "namespace": self._namespace, "labels": labels("cas")},
            spec={
                "service_name": CAS_PODS,
                "replicas": 1,
                "selector": {"match_labels": labels("cas")},
                "update_strategy": {"type": "RollingUpdate"},
                "template": {
                    "metadata": pods.template_metadata(
                        "cas",
                        text,
                        {
                            MOUNT_IMAGE_ANNOTATION: settings.versions.juicefs,
                            S3_IDENTITY_ANNOTATION: s3_identity,
                            **tls_annotations,
                        },
                    ),
                    "spec": pods.pod_spec(
                        settings,
                        main,
                        config.metadata.name,
                        [
                            {"name": "cas-data", "persistent_volume_claim": {"claim_name": claim_name}},
                            tmp_volume,
                            *tls_volumes,
                        ],
                        init_containers=[pods.store_owner_init(settings)],
                        priority_class=serving.metadata.name,
                    ),
                },
            },
            # pulumi-kubernetes waits 10 minutes for a rollout unless told otherwise; the startup probe
            # gives the store scan up to 30.
            opts=self._child(
                pods.await_probes(pods.CAS_STARTUP_FAILURES, settings.kubernetes.termination_grace_period_s)
            ),
        )
        self._disruption_budget("cas")
        return cas_server

    def _scheduler(self, configs: ClusterConfigs, serving: k8s.scheduling.v1.PriorityClass) -> None:
        settings = self._settings
        text = configs.scheduler.to_json()
        config = self._config_map("scheduler", text)
        self._service("scheduler-service", SCHEDULER, "scheduler", "grpc", layout.SCHEDULER_PORT)
        # Its own ClusterIP service, so the NetworkPolicy and clients never mix the two ports up.
        self._service("worker-api-service", WORKER_API, "scheduler", "worker-api", layout.WORKER_API_PORT)
        tmp_volume, tmp_mount = pods.scratch_volume()
        tls_volumes, tls_mounts, tls_annotations = self._tls("scheduler")
        main = pods.container(
            "scheduler",
            settings,
            settings.kubernetes.scheduler_resources,
            ports=[
                {"name": "grpc", "container_port": layout.SCHEDULER_PORT},
                {"name": "worker-api", "container_port": layout.WORKER_API_PORT},
            ],
            volume_mounts=[tmp_mount, *tls_mounts],
            startup_failures=pods.STARTUP_FAILURES,
            security=pods.nativelink_security(),
        )
        k8s.apps.v1.Deployment(
            f"{self._name}-scheduler",
            metadata={"name": SCHEDULER, "namespace": self._namespace, "labels": labels("scheduler")},
            spec={
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"match_labels": labels("scheduler")},
                "template": {
                    "metadata": pods.template_metadata("scheduler", text, tls_annotations),
                    "spec": pods.pod_spec(
                        settings,
                        main,
                        config.metadata.name,
                        [tmp_volume, *tls_volumes],
                        priority_class=serving.metadata.name,
                    ),
                },
            },
            opts=self._child(pods.await_probes(pods.STARTUP_FAILURES, settings.kubernetes.termination_grace_period_s)),
        )
        self._disruption_budget("scheduler")

    def _workers(self, configs: ClusterConfigs, block_storage: pulumi.Resource) -> None:
        settings = self._settings
        kube = settings.kubernetes
        text = configs.worker.to_json()
        config = self._config_map("worker", text)
        tls_volumes, tls_mounts, tls_annotations = self._tls("worker")
        main = pods.container(
            "worker",
            settings,
            kube.worker_resources,
            ports=[],
            volume_mounts=[
                {"name": "worker-root", "mount_path": layout.WORKER_ROOT},
                {"name": "nativelink-binary", "mount_path": layout.WORKER_BINARY_DIR, "read_only": True},
                *tls_mounts,
            ],
            startup_failures=pods.STARTUP_FAILURES,
            security=pods.worker_security(),
            worker=True,
            env=[{"name": "WORKER_NAME", "value_from": {"field_ref": {"field_path": "metadata.name"}}}],
        )
        # Build actions need a toolchain the NativeLink image lacks: this copies the binary of the same
        # release into the pod, beside the toolchain image.
        binary_init = {
            "name": "nativelink-binary",
            "image": settings.versions.nativelink_worker_init,
            "args": [layout.WORKER_BINARY],
            "volume_mounts": [{"name": "nativelink-binary", "mount_path": layout.WORKER_BINARY_DIR}],
            "security_context": {"allow_privilege_escalation": False, "capabilities": {"drop": ["ALL"]}},
            "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
        }
        volumes = [pods.worker_root_volume(settings), {"name": "nativelink-binary", "empty_dir": {}}, *tls_volumes]
        spec: Any = {
            "selector": {"match_labels": labels("worker")},
            "strategy": {"type": "RollingUpdate", "rolling_update": {"max_unavailable": 1, "max_surge": 1}},
            "template": {
                "metadata": pods.template_metadata("worker", text, tls_annotations),
                "spec": pods.pod_spec(settings, main, config.metadata.name, volumes, init_containers=[binary_init]),
            },
        }
        if kube.autoscale_max_workers is None:
            # With an autoscaler the replica count is its to set; `pulumi up` must not reset it.
            spec["replicas"] = settings.workers.count
        workers = k8s.apps.v1.Deployment(
            f"{self._name}-worker",
            metadata={"name": WORKER, "namespace": self._namespace, "labels": labels("worker")},
            spec=spec,
            # A rolling update replaces about two workers per wave (one surged, one unavailable).
            opts=self._child(
                pulumi.ResourceOptions.merge(
                    pulumi.ResourceOptions(depends_on=[block_storage]),
                    pods.await_probes(
                        pods.STARTUP_FAILURES,
                        kube.termination_grace_period_s,
                        waves=math.ceil(settings.workers.count / 2),
                    ),
                )
            ),
        )
        self._disruption_budget("worker")
        if kube.autoscale_max_workers is not None:
            self._worker_autoscaler(workers)

    def _worker_autoscaler(self, workers: k8s.apps.v1.Deployment) -> None:
        spec: Any = {
            "scale_target_ref": {"api_version": "apps/v1", "kind": "Deployment", "name": workers.metadata.name},
            "min_replicas": self._settings.workers.count,
            "max_replicas": self._settings.kubernetes.autoscale_max_workers,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "average_utilization": 70}},
                }
            ],
            # Scaling in kills running actions; wait for load to stay low.
            "behavior": {"scale_down": {"stabilization_window_seconds": 600}},
        }
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{self._name}-worker-hpa",
            metadata={"namespace": self._namespace, "labels": labels("worker")},
            spec=spec,
            opts=self._child(),
        )

    def _network_policies(self) -> None:
        for suffix, spec in network_policy_specs(self._settings.kubernetes, self._health_check_sources).items():
            k8s.networking.v1.NetworkPolicy(
                f"{self._name}-{suffix}-network",
                metadata={"namespace": self._namespace, "labels": {"app.kubernetes.io/name": "nativelink"}},
                spec=spec,
                opts=self._child(),
            )
