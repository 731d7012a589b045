"""Where each NativeLink process keeps its data, and the ports it listens on.

The CAS server is the single writer of the JuiceFS-backed stores. Each worker keeps a private
fast store on its own local volume, beside its work directory, so inputs can be hard-linked and
outputs renamed into the store without crossing filesystems.
"""

from __future__ import annotations

from dataclasses import dataclass

CAS_PORT = 50051
SCHEDULER_PORT = 50052
WORKER_API_PORT = 50061
# The CAS server's listener for workers, the only one whose action cache takes writes (unless
# nativelink.clientsUploadResults): results come from workers, so no client can poison the cache.
WORKER_CAS_PORT = 50071
# Health answers here only; never published.
HEALTH_PORT = 50081
HEALTH_PATH = "/status"
# The scheduler's admin (drain) endpoint listens on the loopback of its own container or pod only: build
# actions share a network with the scheduler. Reach it with `kubectl port-forward`, or from a container
# sharing the scheduler's network namespace (`docker run --network container:<scheduler>`).
ADMIN_PORT = 50082
ADMIN_PATH = "/admin"

CONFIG_PATH = "/etc/nativelink/config.json5"
# TLS material of each process (tls.enabled): the stack's CA and its revocation list everywhere, the
# server identity in the CAS server and scheduler, a client identity in the scheduler and workers.
TLS_DIR = "/etc/nativelink/tls"
TLS_CA = f"{TLS_DIR}/ca.crt"
TLS_CRL = f"{TLS_DIR}/crl.pem"
TLS_SERVER_CERT = f"{TLS_DIR}/server.crt"
TLS_SERVER_KEY = f"{TLS_DIR}/server.key"
TLS_CLIENT_CERT = f"{TLS_DIR}/client.crt"
TLS_CLIENT_KEY = f"{TLS_DIR}/client.key"
# Workers run in a toolchain image; the nativelink binary is copied in beside it at this path.
WORKER_BINARY_DIR = "/opt/nativelink"
WORKER_BINARY = f"{WORKER_BINARY_DIR}/nativelink"

# A worker's private local volume: fast store and work directory on one filesystem.
WORKER_ROOT = "/worker"


@dataclass(frozen=True)
class StorePaths:
    content_path: str
    temp_path: str


@dataclass(frozen=True)
class CasData:
    """Where the CAS server's container sees the JuiceFS filesystem, and where its stores live in it."""

    filesystem: str
    root: str

    @property
    def cas(self) -> StorePaths:
        return StorePaths(f"{self.root}/cas/content", f"{self.root}/cas/tmp")

    @property
    def ac(self) -> StorePaths:
        return StorePaths(f"{self.root}/ac/content", f"{self.root}/ac/tmp")


# Kubernetes: the CSI volume (JuiceFS's directory for the claim) mounted where the stores live.
CSI_CAS_DATA = CasData(filesystem="/data/jfs", root="/data/jfs")
# Docker: the shared host directory is bound here, and JuiceFS is mounted at its `jfs` subdirectory, so
# a new mount (after a restart of the mount container) reaches the running CAS server by propagation.
DOCKER_SHARED_DIR = "/data/host"
DOCKER_CAS_DATA = CasData(filesystem=f"{DOCKER_SHARED_DIR}/jfs", root=f"{DOCKER_SHARED_DIR}/jfs/nativelink")

WORKER_FAST_STORE_PATHS = StorePaths(f"{WORKER_ROOT}/cas/content", f"{WORKER_ROOT}/cas/tmp")
WORKER_WORK_DIRECTORY = f"{WORKER_ROOT}/work"

# Filesystems (mount roots) each process has, for the layout rules; the CAS server's come from its CasData.
SCHEDULER_FILESYSTEMS: tuple[str, ...] = ()
WORKER_FILESYSTEMS = (WORKER_ROOT,)
