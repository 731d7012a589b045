"""Kubernetes NetworkPolicy semantics, to ask the recorded policies whether a connection is allowed.

Follows the API's rules (networking.k8s.io/v1): a pod selected by a policy of a direction is isolated
in that direction; a connection needs the source's egress and the destination's ingress; within a rule,
a missing or empty `from`/`to` matches every peer and missing or empty `ports` every port; a peer with
only podSelector means the policy's namespace; namespaceSelector alone means every pod of the matched
namespaces; ipBlock matches addresses outside the cluster's pods.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: Mapping[str, str]
    ip: str = "10.1.0.10"
    namespace_labels: Mapping[str, str] = field(default_factory=dict)

    def namespace_labels_with_name(self) -> dict[str, str]:
        return {**self.namespace_labels, "kubernetes.io/metadata.name": self.namespace}


@dataclass(frozen=True)
class Address:
    """Something outside the cluster's pods (a VPC host, IMDS, the internet)."""

    ip: str


Peer = Pod | Address


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        present = expression["key"] in labels
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], other: Peer, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        if not isinstance(other, Address):
            return False
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        inside = address in ipaddress.ip_network(block["cidr"])
        return inside and not any(address in ipaddress.ip_network(cidr) for cidr in block.get("except") or [])
    if not isinstance(other, Pod):
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], other.namespace_labels_with_name()):
            return False
    elif other.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], other.labels)


def _port_matches(ports: Sequence[Mapping[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    return any(int(p["port"]) == port and p.get("protocol", "TCP") == protocol for p in ports)


@dataclass(frozen=True)
class Policies:
    """The NetworkPolicies of one namespace, as recorded (wire names)."""

    namespace: str
    specs: Sequence[Mapping[str, Any]]

    def _side_allows(self, pod: Pod, direction: str, other: Peer, port: int, protocol: str) -> bool:
        peers_key = "from" if direction == "Ingress" else "to"
        selecting = [
            spec
            for spec in self.specs
            if pod.namespace == self.namespace
            and selects(spec["podSelector"], pod.labels)
            and direction in spec.get("policyTypes", ["Ingress"])
        ]
        if not selecting:
            return True
        for spec in selecting:
            for rule in spec.get(direction.lower()) or []:
                peers = rule.get(peers_key)
                if (not peers or any(_peer_matches(peer, other, self.namespace) for peer in peers)) and (
                    _port_matches(rule.get("ports"), port, protocol)
                ):
                    return True
        return False

    def allows(self, source: Peer, destination: Peer, port: int, protocol: str = "TCP") -> bool:
        if isinstance(source, Pod) and not self._side_allows(source, "Egress", destination, port, protocol):
            return False
        return not isinstance(destination, Pod) or self._side_allows(destination, "Ingress", source, port, protocol)
