"""How Bazel reaches a NativeLink cluster: the flags both stacks export as `bazelFlags`."""

from __future__ import annotations


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
