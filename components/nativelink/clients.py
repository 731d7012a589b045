"""How Bazel reaches a NativeLink cluster: the flags both stacks export as `bazelFlags`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi

if TYPE_CHECKING:
    from components.settings import NativeLinkSettings, TlsSettings

# Where bazelFlags expects the TLS files, relative to the workspace (README: "Bazel over TLS").
BAZEL_CA_FILE = "nativelink-ca.crt"
BAZEL_CLIENT_CERT_FILE = "nativelink-client.crt"
BAZEL_CLIENT_KEY_FILE = "nativelink-client.key"


# Through a load balancer: HTTP/2 pings keep long Execute streams under the NLB's 350 s idle timeout.
KEEPALIVE_FLAG = "--grpc_keepalive_time=30s"


def bazel_flags(
    cas_endpoint: str,
    scheduler_endpoint: str,
    nativelink: NativeLinkSettings,
    tls: TlsSettings,
    *,
    load_balanced: bool = False,
) -> str:
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
    if tls.enabled:
        flags.append(f"--tls_certificate={BAZEL_CA_FILE}")
    if tls.enabled and tls.client_auth:
        # Bazel reads the client key as PKCS#8 only.
        flags += [f"--tls_client_certificate={BAZEL_CLIENT_CERT_FILE}", f"--tls_client_key={BAZEL_CLIENT_KEY_FILE}"]
    if load_balanced:
        flags.append(KEEPALIVE_FLAG)
    return " ".join(flags)


class NativeLinkTier(pulumi.ComponentResource):
    """A NativeLink cluster component, on any platform: it ends by publishing how Bazel reaches it."""

    cas_endpoint: pulumi.Output[str]
    scheduler_endpoint: pulumi.Output[str]
    bazel_flags: pulumi.Output[str]

    def publish_endpoints(
        self,
        cas_endpoint: pulumi.Input[str],
        scheduler_endpoint: pulumi.Input[str],
        nativelink: NativeLinkSettings,
        tls: TlsSettings,
        *,
        load_balanced: bool = False,
    ) -> None:
        """Set the NativeLinkCluster outputs and register them (the component's last step)."""
        self.cas_endpoint = pulumi.Output.from_input(cas_endpoint)
        self.scheduler_endpoint = pulumi.Output.from_input(scheduler_endpoint)
        self.bazel_flags = pulumi.Output.all(self.cas_endpoint, self.scheduler_endpoint).apply(
            lambda endpoints: bazel_flags(endpoints[0], endpoints[1], nativelink, tls, load_balanced=load_balanced)
        )
        self.register_outputs(
            {
                "cas_endpoint": self.cas_endpoint,
                "scheduler_endpoint": self.scheduler_endpoint,
                "bazel_flags": self.bazel_flags,
            }
        )
