"""Run the policy pack's policies without the Pulumi CLI, on what the mocks recorded or on hand-built resources.

Props reach a policy the way the engine sends them: through a protobuf Struct (numbers become
floats), then pulumi-policy's own deserializer (secrets unwrapped to plaintext, no marker left) and
its unknown-checking proxy (Mappings and Sequences, not dicts and lists). Hand-built resources go
through the same path, so a policy that only works on plain dicts or ints fails here too.

Known gaps to a real run: stack policies get each resource's outputs from the engine, here its inputs
(the mocks echo inputs as outputs); URNs ignore the parent chain; a dependency on a component is not
expanded to its children; no provider resource is attached to a resource.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from inspect import isawaitable
from typing import Any

from google.protobuf import json_format, struct_pb2
from pulumi_policy import (
    Policy,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import unknown_checking_proxy

from tests.graph import _input_resources
from tests.mocks import Recorded, RecordingMocks

PROJECT = "nativelink-juicefs"
STACK = "test"


@dataclass(frozen=True)
class Violation:
    policy: str
    message: str
    # The resource the violation is about: the one validated, or the one a stack policy named.
    urn: str | None

    @property
    def resource_name(self) -> str | None:
        return self.urn.rsplit("::", 1)[-1] if self.urn else None


def wire(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    """Props as pulumi-policy hands them to a policy."""
    # The engine drops internal `__` keys (SkipInternalKeys) before sending.
    visible = {key: value for key, value in inputs.items() if not key.startswith("__")}
    struct = json_format.ParseDict(visible, struct_pb2.Struct())
    return unknown_checking_proxy(deserialize_properties(json_format.MessageToDict(struct)))


def urn(typ: str, name: str) -> str:
    return f"urn:pulumi:{STACK}::{PROJECT}::{typ}::{name}"


def camel(name: str) -> str:
    """A Python property name as the engine spells it (`versioning_configuration` -> `versioningConfiguration`)."""
    return re.sub(r"_([a-z0-9])", lambda match: match.group(1).upper(), name)


def options(additional_secret_outputs: Iterable[str] = (), parent: str | None = None) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[camel(name) for name in additional_secret_outputs],
        parent=parent,
    )


# ---- hand-built resources


def resource_args(
    typ: str, props: Mapping[str, Any], *, name: str = "subject", additional_secret_outputs: Iterable[str] = ()
) -> ResourceValidationArgs:
    return ResourceValidationArgs(typ, wire(props), urn(typ, name), name, options(additional_secret_outputs), None)


def policy_resource(
    typ: str,
    props: Mapping[str, Any],
    *,
    name: str,
    property_dependencies: Mapping[str, Sequence[PolicyResource]] | None = None,
) -> PolicyResource:
    deps = {key: list(value) for key, value in (property_dependencies or {}).items()}
    dependencies = list({id(dep): dep for value in deps.values() for dep in value}.values())
    return PolicyResource(typ, wire(props), urn(typ, name), name, options(), None, None, dependencies, deps)


# ---- running policies


def run(policy: Policy, args: ResourceValidationArgs | StackValidationArgs) -> list[Violation]:
    """The violations `policy` reports for `args`; UnknownValueError propagates, as it does to the engine."""
    found: list[Violation] = []
    default_urn = args.urn if isinstance(args, ResourceValidationArgs) else None

    def report_violation(message: str, violation_urn: str | None = None) -> None:
        found.append(Violation(policy.name, message, violation_urn or default_urn))

    # A mismatch raises: silently validating nothing would let a test pass for the wrong reason.
    mismatch = TypeError(f"{policy.name} ({type(policy).__name__}) cannot validate a {type(args).__name__}")
    if isinstance(policy, ResourceValidationPolicy):
        if not isinstance(args, ResourceValidationArgs):
            raise mismatch
        result = policy.validate(args, report_violation)
    elif isinstance(policy, StackValidationPolicy):
        if not isinstance(args, StackValidationArgs):
            raise mismatch
        result = policy.validate(args, report_violation)
    else:
        raise mismatch
    if isawaitable(result):
        asyncio.get_event_loop().run_until_complete(result)
    return found


def run_all(
    policies: Iterable[Policy], resources: Sequence[ResourceValidationArgs], stack: StackValidationArgs
) -> list[Violation]:
    """Every policy over every resource (Analyze) and over the whole stack (AnalyzeStack)."""
    found: list[Violation] = []
    for policy in policies:
        if isinstance(policy, ResourceValidationPolicy):
            for args in resources:
                found.extend(run(policy, args))
        else:
            found.extend(run(policy, stack))
    return found


# ---- what the mocks recorded


def recorded_args(record: Recorded, inputs: Mapping[str, Any] | None = None) -> ResourceValidationArgs:
    """A recorded resource as Analyze sees it; `inputs` replaces its recorded (wire) inputs."""
    secret_outputs = (record.opts.additional_secret_outputs if record.opts else None) or []
    return ResourceValidationArgs(
        record.typ,
        wire(record.inputs if inputs is None else inputs),
        urn(record.typ, record.name),
        record.name,
        options(secret_outputs),
        None,
    )


def recorded_stack(mocks: RecordingMocks) -> StackValidationArgs:
    """Every recorded resource as AnalyzeStack sees it, with parents and (property) dependencies."""
    records = list(mocks.resources)
    by_resource: dict[int, PolicyResource] = {}
    resources: list[PolicyResource] = []
    for record in records:
        secret_outputs = (record.opts.additional_secret_outputs if record.opts else None) or []
        resource = PolicyResource(
            record.typ,
            wire(record.inputs),
            urn(record.typ, record.name),
            record.name,
            options(secret_outputs),
            None,
            None,
            [],
            {},
        )
        resources.append(resource)
        if record.resource is not None:
            by_resource[id(record.resource)] = resource

    async def link() -> None:
        for record, resource in zip(records, resources, strict=True):
            if record.parent is not None:
                resource.parent = by_resource.get(id(record.parent))
                resource.opts.parent = resource.parent.urn if resource.parent else None
            dependencies: dict[int, PolicyResource] = {}
            for key, value in record.props.items():
                found = [by_resource[id(dep)] for dep in await _input_resources(value) if id(dep) in by_resource]
                if found:
                    resource.property_dependencies[camel(key)] = found
                    dependencies.update((id(dep), dep) for dep in found)
            for dep in record.depends_on:
                if id(dep) in by_resource:
                    dependencies[id(dep)] = by_resource[id(dep)]
            resource.dependencies = list(dependencies.values())

    asyncio.get_event_loop().run_until_complete(link())
    return StackValidationArgs(resources)


def messages(found: Iterable[Violation]) -> str:
    """The violations, one line each, for an assertion message."""
    return "\n".join(f"{v.policy}: {v.resource_name}: {v.message}" for v in found)


def violations(policies: Iterable[Policy], mocks: RecordingMocks) -> list[Violation]:
    """What `pulumi preview --policy-pack policy` would report for the resources the mocks recorded."""
    return run_all(policies, [recorded_args(record) for record in mocks.resources], recorded_stack(mocks))
