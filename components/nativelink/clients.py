"""How Bazel reaches a NativeLink cluster: the flags both stacks export as `bazelFlags`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi

if TYPE_CHECKING:
    from components.settings import NativeLinkSettings


def bazel_flags(cas_endpoint: str, scheduler_endpoint: str, nativelink: NativeLinkSettings) -> str:
    """Remote-execution flags for a cluster whose CAS server and scheduler answer at these gRPC endpoints."""
    flags = [
        f"--remote_executor={scheduler_endpoint}",
        # The scheduler serves no CAS; blobs go straight to the CAS server.
        f"--remote_cache={cas_endpoint}",
    ]
    if nativelink.instance_name:
        flags.append(f"--remote_instance_name={nativelink.instance_name}")
    if not nativelink.clients_upload_results:
        # The clients' action cache is read-only: uploads would only fail (NativeLink still advertises
        # update_enabled, capabilities_server.rs:171-173), each with a warning.
        flags.append("--remote_upload_local_results=false")
    return " ".join(flags)


class NativeLinkTier(pulumi.ComponentResource):
    """A NativeLink cluster component, on any platform: it ends by publishing how Bazel reaches it."""

    cas_endpoint: pulumi.Output[str]
    scheduler_endpoint: pulumi.Output[str]
    bazel_flags: pulumi.Output[str]

    def publish_endpoints(self, cas_endpoint: str, scheduler_endpoint: str, nativelink: NativeLinkSettings) -> None:
        """Set the NativeLinkCluster outputs and register them (the component's last step)."""
        self.cas_endpoint = pulumi.Output.from_input(cas_endpoint)
        self.scheduler_endpoint = pulumi.Output.from_input(scheduler_endpoint)
        self.bazel_flags = pulumi.Output.from_input(bazel_flags(cas_endpoint, scheduler_endpoint, nativelink))
        self.register_outputs(
            {
                "cas_endpoint": self.cas_endpoint,
                "scheduler_endpoint": self.scheduler_endpoint,
                "bazel_flags": self.bazel_flags,
            }
        )
