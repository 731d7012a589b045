"""The order a real `pulumi up` would create the recorded resources in.

A resource waits for every resource its inputs come from (implicit dependencies through Outputs)
and for everything it `depends_on`; depending on a component means waiting for all of its
descendants. The longest such chain is the number of sequential waits an `up` has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pulumi
from pulumi._types import is_input_type

from tests.mocks import Recorded, RecordingMocks


async def _input_resources(value: Any) -> set[pulumi.Resource]:
    if isinstance(value, pulumi.Output):
        return set(await value.resources())
    if is_input_type(type(value)):
        value = vars(value)
    if isinstance(value, dict):
        found: set[pulumi.Resource] = set()
        for item in value.values():
            found |= await _input_resources(item)
        return found
    if isinstance(value, list | tuple):
        found = set()
        for item in value:
            found |= await _input_resources(item)
        return found
    return set()


def _custom_descendants(records: Iterable[Recorded]) -> dict[int, set[int]]:
    """For each resource, the custom resources at or below it."""
    children: dict[int, list[Recorded]] = {}
    for record in records:
        if record.parent is not None:
            children.setdefault(id(record.parent), []).append(record)

    def below(record: Recorded) -> set[int]:
        found = {id(record.resource)} if record.custom else set()
        for child in children.get(id(record.resource), []):
            found |= below(child)
        return found

    return {id(record.resource): below(record) for record in records}


def dependency_graph(mocks: RecordingMocks) -> dict[int, set[int]]:
    """Custom resource -> the custom resources it waits for (by `id()` of the resource object)."""
    records = [record for record in mocks.resources if record.resource is not None]
    expand = _custom_descendants(records)

    async def collect() -> dict[int, set[int]]:
        graph: dict[int, set[int]] = {}
        for record in records:
            if not record.custom:
                continue
            waits: set[int] = set()
            for resource in (*record.depends_on, *await _input_resources(record.props)):
                waits |= expand.get(id(resource), {id(resource)})
            waits.discard(id(record.resource))
            graph[id(record.resource)] = waits
        return graph

    return asyncio.get_event_loop().run_until_complete(collect())


def longest_chain(graph: dict[int, set[int]]) -> int:
    """Resources on the longest dependency path: the sequential waits of a real `pulumi up`."""
    depth: dict[int, int] = {}

    def visit(node: int, path: frozenset[int]) -> int:
        if node in depth:
            return depth[node]
        if node in path:
            raise ValueError("dependency cycle")
        deeper = [visit(dep, path | {node}) for dep in graph.get(node, ()) if dep in graph]
        depth[node] = 1 + max(deeper, default=0)
        return depth[node]

    return max((visit(node, frozenset()) for node in graph), default=0)


def input_sources(mocks: RecordingMocks, record: Recorded, key: str) -> set[str]:
    """Names of the recorded resources the input `key` of `record` is computed from (through Outputs).

    These are the engine's property dependencies. When a resource is deleted before it is replaced (a
    Kubernetes object or Docker container with a fixed name, for example), the engine also replaces each
    resource with an input computed from it that forces a replacement; `depends_on` only orders the two.
    """
    found = asyncio.get_event_loop().run_until_complete(_input_resources(record.props.get(key)))
    names = {id(other.resource): other.name for other in mocks.resources if other.resource is not None}
    return {names[id(resource)] for resource in found if id(resource) in names}
