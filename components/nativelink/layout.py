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
# Health and admin answer here only; never published.
HEALTH_PORT = 50081
HEALTH_PATH = "/status"
ADMIN_PATH = "/admin"

CONFIG_PATH = "/etc/nativelink/config.json5"
# Workers run in a toolchain image; the nativelink binary is copied in beside it at this path.
WORKER_BINARY_DIR = "/opt/nativelink"
WORKER_BINARY = f"{WORKER_BINARY_DIR}/nativelink"

# JuiceFS mount as the CAS server sees it.
CAS_DATA_ROOT = "/data/jfs"
# A worker's private local volume: fast store and work directory on one filesystem.
WORKER_ROOT = "/worker"


@dataclass(frozen=True)
class StorePaths:
    content_path: str
    temp_path: str


CAS_STORE_PATHS = StorePaths(f"{CAS_DATA_ROOT}/cas/content", f"{CAS_DATA_ROOT}/cas/tmp")
AC_STORE_PATHS = StorePaths(f"{CAS_DATA_ROOT}/ac/content", f"{CAS_DATA_ROOT}/ac/tmp")
WORKER_FAST_STORE_PATHS = StorePaths(f"{WORKER_ROOT}/cas/content", f"{WORKER_ROOT}/cas/tmp")
WORKER_WORK_DIRECTORY = f"{WORKER_ROOT}/work"

# Filesystems (mount roots) each process has, for the layout rules.
CAS_FILESYSTEMS = (CAS_DATA_ROOT,)
SCHEDULER_FILESYSTEMS: tuple[str, ...] = ()
WORKER_FILESYSTEMS = (WORKER_ROOT,)
