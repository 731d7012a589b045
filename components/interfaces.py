"""What each platform's implementation of a component promises the rest of the program.

The Docker (dev) and AWS/Kubernetes (prod) implementations satisfy the same protocols (mypy checks
it where they are used), so the JuiceFS volume and the NativeLink tier are wired the same way on both.
The JuiceFS volume itself has no shared protocol beyond its `volume_name`: what the CAS server needs
from it is platform-specific (a host directory and the mount container on Docker, a claim on
Kubernetes), and each NativeLink tier takes its own platform's volume.
"""

from __future__ import annotations

from typing import Protocol

import pulumi

from components.juicefs.commands import StorageType


class MetadataEngine(Protocol):
    """Where JuiceFS keeps its metadata."""

    # Secret; carries no password (the client reads META_PASSWORD).
    meta_url: pulumi.Output[str]
    meta_password: pulumi.Output[str]


class ObjectStore(Protocol):
    """Where JuiceFS keeps its data blocks."""

    storage: StorageType
    bucket_url: pulumi.Output[str]
    # None where the platform grants access through an identity instead of keys.
    access_key: pulumi.Output[str] | None
    secret_key: pulumi.Output[str] | None


class NativeLinkCluster(Protocol):
    """CAS server, scheduler and workers, and how Bazel reaches them."""

    cas_endpoint: pulumi.Output[str]
    scheduler_endpoint: pulumi.Output[str]
    bazel_flags: pulumi.Output[str]
