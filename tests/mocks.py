"""Pulumi mocks that record every registered resource with its inputs and options."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pulumi

from tests import tls_provider

# The VPC the mocked aws.ec2.get_vpc returns.
VPC_CIDR = "10.0.0.0/16"

SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


def image_id(ref: str) -> str:
    """The RemoteImage.imageId a real docker provider returns: a content-addressed ID, `sha256:<64 hex>`."""
    return f"sha256:{hashlib.sha256(ref.encode()).hexdigest()}"


@dataclass
class Recorded:
    """One registered resource: its type, name, inputs (wire names) and the options it was given."""

    typ: str
    name: str
    inputs: dict[str, Any]
    custom: bool
    resource: pulumi.Resource | None = None
    opts: pulumi.ResourceOptions | None = None
    parent: pulumi.Resource | None = None
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    # The inputs as the program passed them (Outputs included), for tracing implicit dependencies.
    props: dict[str, Any] = field(default_factory=dict)
    # What the mocked provider returned (inputs plus what it computes).
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def protect(self) -> bool:
        return bool(self.opts is not None and self.opts.protect)

    @property
    def retain_on_delete(self) -> bool:
        return bool(self.opts is not None and self.opts.retain_on_delete)


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(pulumi.runtime.rpc._special_sig_key) == SECRET_SIG


def reveal(value: Any) -> Any:
    """The plaintext inside Pulumi's secret sentinel, recursively."""
    if is_secret(value):
        return reveal(value["value"])
    if isinstance(value, dict):
        return {key: reveal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [reveal(item) for item in value]
    return value


def plaintext_strings(value: Any) -> Iterator[str]:
    """Every string in `value` that is not inside a secret sentinel."""
    if is_secret(value):
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from plaintext_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from plaintext_strings(item)


class RecordingMocks(pulumi.runtime.Mocks):
    """Echoes inputs back as outputs and keeps a record of every resource."""

    def __init__(self) -> None:
        self.resources: list[Recorded] = []
        self._by_key: dict[tuple[str, str], Recorded] = {}
        # (token, args) of every invoke, in order.
        self.calls: list[tuple[str, dict[str, Any]]] = []
        # What an invoke returns, by token, where a test sets it.
        self.call_results: dict[str, dict[str, Any]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        record = self._by_key.get((args.typ, args.name))
        if record is None:
            record = Recorded(args.typ, args.name, dict(args.inputs), bool(args.custom))
            self._by_key[(args.typ, args.name)] = record
            self.resources.append(record)
        else:
            record.inputs = dict(args.inputs)
        outputs = dict(args.inputs)
        outputs.update(self._computed(args))
        record.outputs = outputs
        # A certificate's id is its serial number, as the tls provider sets it.
        resource_id = str(outputs.pop("id")) if args.typ in tls_provider.TYPES and "id" in outputs else None
        return resource_id or f"{args.name}-id", outputs

    def _computed(self, args: pulumi.runtime.MockResourceArgs) -> dict[str, Any]:
        """Outputs a real provider would compute."""
        if args.typ == "random:index/randomPassword:RandomPassword":
            return {"result": f"generated-{args.name}-password"}
        if args.typ == "command:local:Command" and args.inputs.get("create", "").startswith("openssl pkcs8"):
            # What the key-protecting command prints: the key, encrypted (see tests/realtools for the real run).
            return {
                "stdout": "-----BEGIN ENCRYPTED PRIVATE KEY-----generated-protected-----END ENCRYPTED PRIVATE KEY-----"
            }
        if args.typ in tls_provider.TYPES:
            return tls_provider.computed(args.typ, args.name, reveal(dict(args.inputs)))
        if args.typ == "docker:index/remoteImage:RemoteImage":
            return {"imageId": image_id(args.inputs["name"])}
        if args.typ == "aws:elasticache/replicationGroup:ReplicationGroup":
            return {
                "arn": f"arn:aws:mock:::{args.name}",
                "primaryEndpointAddress": f"master.{args.name}.cache.amazonaws.com",
            }
        if args.typ == "aws:memorydb/cluster:Cluster":
            return {
                "arn": f"arn:aws:mock:::{args.name}",
                "name": f"{args.name}-name",
                "clusterEndpoints": [{"address": f"clustercfg.{args.name}.memorydb.amazonaws.com", "port": 6379}],
            }
        if args.typ == "aws:memorydb/acl:Acl":
            # The provider names the ACL when the program does not.
            return {"arn": f"arn:aws:mock:::{args.name}", "name": f"{args.name}-name"}
        if args.typ == "aws:rds/instance:Instance":
            address = f"{args.name}.rds.amazonaws.com"
            return {
                "arn": f"arn:aws:mock:::{args.name}",
                "identifier": f"{args.name}-db",
                "address": address,
                "port": 5432,
                "endpoint": f"{address}:5432",
            }
        if args.typ == "aws:iam/accessKey:AccessKey":
            return {"secret": f"generated-{args.name}-secret-key"}
        if args.typ.startswith("aws:"):
            return {"arn": f"arn:aws:mock:::{args.name}"}
        if args.typ == "kubernetes:core/v1:Service" and (args.inputs.get("spec") or {}).get("type") == "LoadBalancer":
            # The AWS Load Balancer Controller gives the Service its NLB's name.
            hostname = f"{args.name}-0123456789.elb.eu-west-1.amazonaws.com"
            return {**self._k8s_autoname(args), "status": {"loadBalancer": {"ingress": [{"hostname": hostname}]}}}
        if args.typ.startswith("kubernetes:"):
            return self._k8s_autoname(args)
        return {}

    @staticmethod
    def _k8s_autoname(args: pulumi.runtime.MockResourceArgs) -> dict[str, Any]:
        """Kubernetes names an object without metadata.name after the resource, as the provider does."""
        metadata = args.inputs.get("metadata")
        if not isinstance(metadata, dict) or metadata.get("name"):
            return {}
        return {"metadata": {**metadata, "name": f"{args.name}-mock"}}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]]]:
        self.calls.append((args.token, dict(args.args)))
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": "123456789012", "arn": "arn:aws:iam::123456789012:user/ci", "userId": "ci"}, []
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com"}, []
        if args.token == "aws:ec2/getVpc:getVpc":
            return {"id": args.args["id"], "cidrBlock": VPC_CIDR}, []
        return self.call_results.get(args.token, {}), []

    # ---- recording options through a legacy transformation (new-style transforms do not run under mocks)

    def transformation(self, args: pulumi.ResourceTransformationArgs) -> None:
        key = (args.type_, args.name)
        record = self._by_key.get(key)
        if record is None:
            record = Recorded(args.type_, args.name, {}, not isinstance(args.resource, pulumi.ComponentResource))
            self._by_key[key] = record
            self.resources.append(record)
        record.resource = args.resource
        record.opts = args.opts
        record.props = dict(args.props)
        record.parent = args.opts.parent
        record.depends_on = [dep for dep in (args.opts.depends_on or []) if isinstance(dep, pulumi.Resource)]  # type: ignore[union-attr]

    # ---- queries used by the tests

    def of_type(self, typ: str) -> list[Recorded]:
        return [record for record in self.resources if record.typ == typ]

    def one(self, typ: str, name: str) -> Recorded:
        matches = [record for record in self.resources if record.typ == typ and record.name == name]
        if len(matches) != 1:
            known = sorted(f"{r.typ}::{r.name}" for r in self.resources)
            raise AssertionError(
                f"expected one {typ} named {name}, found {len(matches)}; have {json.dumps(known, indent=1)}"
            )
        return matches[0]

    def named(self, name: str) -> Recorded:
        matches = [record for record in self.resources if record.name == name]
        if len(matches) != 1:
            raise AssertionError(f"expected one resource named {name}, found {len(matches)}")
        return matches[0]
