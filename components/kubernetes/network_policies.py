"""Who may talk to whom in the NativeLink namespace: NetworkPolicy specs, deny by default.

* CAS server: clients on 50051 (read-only action cache), workers alone on 50071 (writable); no egress.
* Scheduler: clients on 50052, workers alone on 50061; egress to the CAS server's 50051 and DNS.
* Workers: no ingress; egress to the CAS server's 50071, the scheduler's 50061, DNS, and the ranges
  in kubernetes.workerEgressCidrs (never the metadata engine, the node's IMDS or the internet otherwise).
Clients are the pods of kubernetes.clientNamespaces and the addresses in kubernetes.clientCidrs; pods of
this namespace other than the tier's own reach nothing (default deny, both ways).
Kubelet probes come from the node, which NetworkPolicy always admits. With load balancers
(kubernetes.exposure), client traffic keeps the client's address, so clientCidrs admit it; the load
balancers' health checks reach the health port from addresses in the VPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pulumi

from components.kubernetes.pods import labels
from components.nativelink import layout

if TYPE_CHECKING:
    from components.settings import KubernetesSettings

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DNS_NAMESPACE = "kube-system"
DNS_LABELS = {"k8s-app": "kube-dns"}


def _pods(component: str) -> Any:
    return {"pod_selector": {"match_labels": labels(component)}}


def _tcp(port: int) -> Any:
    return {"protocol": "TCP", "port": port}


def client_peers(kube: KubernetesSettings) -> list[Any]:
    """Nobody unless configured (`kubectl port-forward` enters the pod's own network and always works)."""
    peers: list[Any] = []
    if kube.client_namespaces:
        selector = {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": list(kube.client_namespaces)}
        peers.append({"namespace_selector": {"match_expressions": [selector]}})
    peers.extend({"ip_block": {"cidr": cidr}} for cidr in kube.client_cidrs)
    return peers


def _dns() -> Any:
    return {
        "to": [
            {
                "namespace_selector": {"match_labels": {NAMESPACE_NAME_LABEL: DNS_NAMESPACE}},
                "pod_selector": {"match_labels": DNS_LABELS},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, _tcp(53)],
    }


def network_policy_specs(
    kube: KubernetesSettings, health_check_sources: Sequence[pulumi.Input[str]] = ()
) -> dict[str, Any]:
    """Policy name suffix -> NetworkPolicy spec; `health_check_sources` reach the health port of CAS and scheduler."""
    clients = client_peers(kube)
    health_checks = (
        [
            {
                "from_": [{"ip_block": {"cidr": cidr}} for cidr in health_check_sources],
                "ports": [_tcp(layout.HEALTH_PORT)],
            }
        ]
        if health_check_sources
        else []
    )
    worker_egress: list[Any] = [
        {"to": [_pods("cas")], "ports": [_tcp(layout.WORKER_CAS_PORT)]},
        {"to": [_pods("scheduler")], "ports": [_tcp(layout.WORKER_API_PORT)]},
        _dns(),
    ]
    if kube.worker_egress_cidrs:
        worker_egress.append({"to": [{"ip_block": {"cidr": cidr}} for cidr in kube.worker_egress_cidrs]})
    return {
        # Every pod of the namespace, ours and any other, starts with nothing allowed.
        "default-deny": {"pod_selector": {}, "policy_types": ["Ingress", "Egress"]},
        "cas": {
            **_pods("cas"),
            "policy_types": ["Ingress", "Egress"],
            "ingress": [
                {"from_": [*clients, _pods("scheduler")], "ports": [_tcp(layout.CAS_PORT)]},
                {"from_": [_pods("worker")], "ports": [_tcp(layout.WORKER_CAS_PORT)]},
                *health_checks,
            ],
            "egress": [],
        },
        "scheduler": {
            **_pods("scheduler"),
            "policy_types": ["Ingress", "Egress"],
            "ingress": [
                # An empty `from` would admit every source: no rule at all when there are no clients.
                *([{"from_": clients, "ports": [_tcp(layout.SCHEDULER_PORT)]}] if clients else []),
                {"from_": [_pods("worker")], "ports": [_tcp(layout.WORKER_API_PORT)]},
                *health_checks,
            ],
            "egress": [{"to": [_pods("cas")], "ports": [_tcp(layout.CAS_PORT)]}, _dns()],
        },
        "worker": {**_pods("worker"), "policy_types": ["Ingress", "Egress"], "ingress": [], "egress": worker_egress},
    }
