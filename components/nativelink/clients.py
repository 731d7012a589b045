"""How Bazel reaches a NativeLink cluster: the flags both stacks export as `bazelFlags`."""

from __future__ import annotations

import pulumi


def bazel_flags(cas_endpoint: str, scheduler_endpoint: str, instance_name: str) -> str:
    """Remote-execution flags for a cluster whose CAS server and scheduler answer at these gRPC endpoints."""
    flags = [
        f"--remote_executor={scheduler_endpoint}",
        # The scheduler serves no CAS; blobs go straight to the CAS server.
        f"--remote_cache={cas_endpoint}",
    ]
    if instance_name:
        flags.append(f"--remote_instance_name={instance_name}")
    return " ".join(flags)


def client_outputs(cas_endpoint: str, scheduler_endpoint: str, instance_name: str) -> dict[str, pulumi.Output[str]]:
    """The NativeLinkCluster outputs, under the attribute names both cluster components register."""
    return {
        "cas_endpoint": pulumi.Output.from_input(cas_endpoint),
        "scheduler_endpoint": pulumi.Output.from_input(scheduler_endpoint),
        "bazel_flags": pulumi.Output.from_input(bazel_flags(cas_endpoint, scheduler_endpoint, instance_name)),
    }
