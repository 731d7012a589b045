"""Print how the resource graph grows with the worker count, for the dev and prod stacks.

For 3, 100 and 1,000 workers: the time to build the graph under Pulumi mocks (the program's own
cost, without providers), the resources registered, the resources each extra worker adds, and the
longest dependency chain: how many resources a real `pulumi up` must create one after another
(provider resources, which configure rather than create, are not counted).

    python -m benchmarks.resource_graph

A script, not a test: timings on a shared machine are noisy, so compare figures from one run.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pulumi

from tests.graph import dependency_graph, longest_chain
from tests.mocks import RecordingMocks
from tests.stacks import build, stack_settings

WORKER_COUNTS = (3, 100, 1000)


@dataclass(frozen=True)
class Measurement:
    stack: str
    workers: int
    seconds: float
    resources: int
    custom: int
    chain: int


def measure(stack: str, workers: int) -> Measurement:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="nativelink-juicefs", stack=stack, preview=False)
    try:
        settings = stack_settings(stack, workers={"count": workers})
        start = time.perf_counter()
        build(mocks, settings)
        seconds = time.perf_counter() - start
        chain = longest_chain(dependency_graph(mocks))
        custom = sum(1 for record in mocks.resources if record.custom)
        return Measurement(stack, workers, seconds, len(mocks.resources), custom, chain)
    finally:
        pulumi.runtime.reset_options()
        loop.close()
        asyncio.set_event_loop(None)


def main() -> None:
    print(f"{'stack':<6}{'workers':>8}{'build s':>10}{'resources':>11}{'custom':>8}{'per worker':>12}{'chain':>7}")
    for stack in ("dev", "prod"):
        # The first build of a stack pays for importing its providers' modules; keep that out.
        measure(stack, WORKER_COUNTS[0])
        rows = [measure(stack, workers) for workers in WORKER_COUNTS]
        base = rows[0]
        for row in rows:
            per_worker = (
                f"{(row.resources - base.resources) / (row.workers - base.workers):.2f}" if row is not base else "-"
            )
            print(
                f"{row.stack:<6}{row.workers:>8}{row.seconds:>10.3f}{row.resources:>11}{row.custom:>8}"
                f"{per_worker:>12}{row.chain:>7}"
            )


if __name__ == "__main__":
    main()
