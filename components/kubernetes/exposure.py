"""How Bazel outside the cluster reaches the CAS server and the scheduler: an internal AWS NLB each.

The AWS Load Balancer Controller builds them (`loadBalancerClass: service.k8s.aws/nlb`, so the
cloud provider's legacy controller never does): internal, targets the pods' own addresses, keeps
the clients' source address (so NetworkPolicy and the load balancer's security group both admit
kubernetes.clientCidrs and nothing else), and checks health on the pods' plaintext health port. TLS
passes through to NativeLink, which terminates it. Only the client ports are exposed; the worker
API (50061) and the CAS server's listener for workers (50071) never are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.kubernetes.pods import labels
from components.nativelink import layout
from components.settings import KubernetesSettings

LOAD_BALANCER_CLASS = "service.k8s.aws/nlb"
_PREFIX = "service.beta.kubernetes.io/aws-load-balancer"


def load_balancer_annotations() -> dict[str, str]:
    return {
        f"{_PREFIX}-scheme": "internal",
        f"{_PREFIX}-nlb-target-type": "ip",
        f"{_PREFIX}-target-group-attributes": "preserve_client_ip.enabled=true",
        # One pod behind each: clients in every zone reach it.
        f"{_PREFIX}-attributes": "load_balancing.cross_zone.enabled=true",
        f"{_PREFIX}-healthcheck-protocol": "http",
        f"{_PREFIX}-healthcheck-port": str(layout.HEALTH_PORT),
        f"{_PREFIX}-healthcheck-path": layout.HEALTH_PATH,
    }


def load_balancer_spec(component: str, port: int, kube: KubernetesSettings) -> Any:
    return {
        "type": "LoadBalancer",
        "load_balancer_class": LOAD_BALANCER_CLASS,
        "load_balancer_source_ranges": list(kube.client_cidrs),
        "selector": labels(component),
        "ports": [{"name": "grpc", "port": port, "target_port": port, "protocol": "TCP"}],
    }


@dataclass(frozen=True)
class ExternalHosts:
    """The load balancers' DNS names, once AWS has made them."""

    cas: pulumi.Output[str]
    scheduler: pulumi.Output[str]


def load_balancer_hostname(status: k8s.core.v1.outputs.ServiceStatus | None) -> str:
    """The NLB's DNS name; pulumi-kubernetes waits for a LoadBalancer Service until it has one."""
    ingress = status.load_balancer.ingress if status and status.load_balancer else None
    hostname = ingress[0].hostname if ingress else None
    if not hostname:
        raise RuntimeError("the load balancer has no DNS name: is the AWS Load Balancer Controller installed?")
    return hostname


def load_balancers(
    name: str, kube: KubernetesSettings, namespace: pulumi.Input[str], parent: pulumi.Resource
) -> ExternalHosts:
    """An internal NLB for the CAS server's and the scheduler's client ports."""
    hosts = {}
    for component, port in (("cas", layout.CAS_PORT), ("scheduler", layout.SCHEDULER_PORT)):
        metadata: Any = {
            "name": f"nativelink-{component}-external",
            "namespace": namespace,
            "labels": labels(component),
            "annotations": load_balancer_annotations(),
        }
        service = k8s.core.v1.Service(
            f"{name}-{component}-load-balancer",
            metadata=metadata,
            spec=load_balancer_spec(component, port, kube),
            opts=pulumi.ResourceOptions(parent=parent),
        )
        hosts[component] = service.status.apply(load_balancer_hostname)
    return ExternalHosts(cas=hosts["cas"], scheduler=hosts["scheduler"])
