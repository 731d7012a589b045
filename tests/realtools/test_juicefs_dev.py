"""The dev stack's JuiceFS mount container, run for real: the program's own commands and script.

Settings come from the real Pulumi.dev.yaml; the format command, mount command, entry script
and healthcheck come from ``components.juicefs.commands`` exactly as the dev stack builds
them, with Redis for metadata and the S3 gateway standing in for MinIO. The script runs as
PID 1 of its own PID namespace (see ``container.py``), so stopping and killing it behave as
``docker stop`` and ``docker kill`` do. Secrets reach juicefs only through the environment.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.juicefs.commands import (
    CREDENTIAL_ENVS,
    FormatOptions,
    SecretEnv,
    format_args,
    minio_bucket_url,
    mount_script,
    redis_meta_url,
)
from components.settings import JuiceFsSettings, size_bytes
from tests.stacks import stack_settings

from .container import (
    ContainerScript,
    MountHost,
    bucket_objects,
    healthcheck,
    juicefs_status,
    mountpoint_command,
    mounts_at,
    processes_mentioning,
    run_program_juicefs,
    sha256_file,
    text_with_marker,
    write_synced,
)
from .servers import RedisServer, S3Gateway, wait_until

pytestmark = pytest.mark.usefixtures("fuse", "pid_namespaces")

# Bounds: the script polls for the mount once a second; juicefs needs well under a second.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class DevVolume:
    """The dev stack's one volume: settings from Pulumi.dev.yaml, Redis metadata, a MinIO-API bucket."""

    def __init__(self, redis: RedisServer, gateway: S3Gateway) -> None:
        self.settings: JuiceFsSettings = stack_settings("dev").juicefs
        self.redis = redis
        self.gateway = gateway
        self.db = redis.allocate_db()
        # The bucket does not exist yet: `juicefs format` creates it, as in the dev stack.
        self.bucket = self.settings.bucket_name
        self.meta_url = redis_meta_url(redis.host, redis.port, self.db)
        self.bucket_url = minio_bucket_url(gateway.host, gateway.port, self.settings.bucket_name)

    @property
    def env(self) -> dict[str, str]:
        access, secret = CREDENTIAL_ENVS["minio"]
        return {
            SecretEnv.META_PASSWORD: self.redis.password,
            access: self.gateway.access_key,
            secret: self.gateway.secret_key,
        }

    def format_command(self) -> list[str]:
        options = FormatOptions.from_settings(self.settings, "minio", self.bucket_url, None)
        return format_args(options, self.meta_url)

    def status(self) -> dict[str, Any]:
        return juicefs_status(self.meta_url, self.redis.password)

    def sessions_at(self, mountpoint: Path) -> list[dict[str, Any]]:
        """Open client sessions of mounts on ``mountpoint`` (a killed mount leaves its session behind)."""
        return [session for session in self.status()["Sessions"] if session["MountPoint"] == str(mountpoint)]

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        return bucket_objects(self.gateway, self.bucket, f"{self.settings.volume_name}/{prefix}")


@pytest.fixture(scope="module")
def dev_volume(redis_server: RedisServer, s3_gateway: S3Gateway) -> DevVolume:
    return DevVolume(redis_server, s3_gateway)


@pytest.fixture
def host(dev_volume: DevVolume, tmp_path: Path) -> Iterator[MountHost]:
    mount_host = MountHost(
        tmp_path, dev_volume.meta_url, dev_volume.format_command(), dev_volume.env, dev_volume.settings.cache_size
    )
    try:
        yield mount_host
    finally:
        mount_host.close()


def assert_stopped_cleanly(volume: DevVolume, host: MountHost) -> None:
    mountpoint = host.mountpoint
    assert mounts_at(mountpoint) == []
    said = mountpoint_command(mountpoint)
    assert said.returncode != 0 and "is not a mountpoint" in said.stdout, (said.returncode, said.stdout, said.stderr)
    assert processes_mentioning(mountpoint) == []
    # Nothing was written to the directory underneath the mount.
    assert list(mountpoint.iterdir()) == []
    # The mount process closed its session before it exited.
    assert volume.sessions_at(mountpoint) == []
    assert healthcheck(host.healthcheck).returncode != 0


def test_mount_script_serves_the_volume_and_stops_cleanly(dev_volume: DevVolume, host: MountHost) -> None:
    settings = dev_volume.settings
    mountpoint, data_dir = host.mountpoint, host.data_dir

    # Not mounted yet: the healthcheck fails, even if the data directory exists on the host.
    assert healthcheck(host.healthcheck).returncode != 0
    data_dir.mkdir()
    assert healthcheck(host.healthcheck).returncode != 0
    data_dir.rmdir()

    container = host.container().start()
    container.wait_healthy(host.healthcheck, START_TIMEOUT)

    assert mounts_at(mountpoint) == [("fuse.juicefs", f"JuiceFS:{settings.volume_name}")]
    # The data directory was made inside JuiceFS (root inode 1), not on the host.
    assert mountpoint.stat().st_ino == 1
    assert data_dir.stat().st_dev == mountpoint.stat().st_dev

    # The mount runs with what the program asked for.
    config = json.loads((mountpoint / ".config").read_text())
    uuid = config["Format"]["UUID"]
    assert config["Format"]["Name"] == settings.volume_name
    assert config["Chunk"]["CacheDir"] == str(host.tmp_path / "cache-1" / uuid)
    assert abs(config["Chunk"]["CacheSize"] - size_bytes(settings.cache_size)) < 2**20
    assert config["Port"]["PrometheusAgent"] == host.metrics_address
    with urllib.request.urlopen(f"http://{host.metrics_address}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert f'vol_name="{settings.volume_name}"' in metrics
    assert "juicefs_uptime" in metrics

    # Files round-trip under the data directory.
    marker = f"DEV-PLAINTEXT-MARKER-{secrets.token_hex(8).upper()}"
    blob, text = os.urandom(5 * 2**20 + 123), text_with_marker(marker)
    blob_sum = write_synced(data_dir / "cas" / "blob.bin", blob)
    text_sum = write_synced(data_dir / "cas" / "text.txt", text)
    assert sha256_file(data_dir / "cas" / "blob.bin") == blob_sum
    assert sha256_file(data_dir / "cas" / "text.txt") == text_sum

    # The volume is formatted as the settings say, and no secret is readable from it.
    status = dev_volume.status()
    setting = status["Setting"]
    assert setting["Name"] == settings.volume_name == "nativelink-cas"
    assert setting["UUID"] == uuid
    assert setting["Storage"] == "minio"
    assert setting["Bucket"] == f"{dev_volume.gateway.endpoint}/{settings.bucket_name}"
    assert setting["BlockSize"] == settings.block_size_kib == 4096
    assert setting["Compression"] == settings.compress == "lz4"
    assert setting["TrashDays"] == settings.trash_days == 1
    # No object-store key is stored in the metadata: the client reads them from its environment.
    assert "AccessKey" not in setting and "SecretKey" not in setting
    assert not setting.get("EncryptKey")
    assert len(dev_volume.sessions_at(mountpoint)) == 1

    # Dev is not encrypted: the objects hold the plaintext (the prod test checks the opposite).
    chunks = dev_volume.objects("chunks/")
    assert chunks, "no chunk objects in the bucket"
    assert any(marker.encode() in body for body in chunks.values())

    # The healthcheck fails while the data directory is missing.
    data_dir.rename(mountpoint / "nativelink.away")
    assert healthcheck(host.healthcheck).returncode != 0
    (mountpoint / "nativelink.away").rename(data_dir)
    assert healthcheck(host.healthcheck).returncode == 0

    # `docker stop`: SIGTERM to PID 1 while it waits on the mount process.
    container.wait_supervising()
    started = time.monotonic()
    code = container.terminate(STOP_TIMEOUT)
    took = time.monotonic() - started
    assert_stopped_cleanly(dev_volume, host)
    assert "The juicefs mount process exit successfully" in container.log_text()
    assert code == 0, container.describe()
    assert took < 5, f"stopping took {took:.1f} s"


def test_restart_keeps_the_volume_and_its_data(dev_volume: DevVolume, host: MountHost) -> None:
    first = host.container().start()
    first.wait_healthy(host.healthcheck, START_TIMEOUT)
    uuid = dev_volume.status()["Setting"]["UUID"]
    data = os.urandom(3 * 2**20)
    checksum = write_synced(host.data_dir / "restart" / "kept.bin", data)
    assert first.terminate(STOP_TIMEOUT) == 0, first.describe()
    assert_stopped_cleanly(dev_volume, host)

    # The second run formats again (harmless) and mounts with an empty cache, so the bytes come
    # back from the bucket.
    second = host.container().start()
    second.wait_healthy(host.healthcheck, START_TIMEOUT)
    assert f'"UUID": "{uuid}"' in second.log_text()  # format printed the existing volume
    assert dev_volume.status()["Setting"]["UUID"] == uuid
    assert sha256_file(host.data_dir / "restart" / "kept.bin") == checksum
    assert second.terminate(STOP_TIMEOUT) == 0, second.describe()
    assert_stopped_cleanly(dev_volume, host)


@pytest.mark.parametrize("victim", ["container", "mount-process"])
def test_script_clears_the_dead_mount_a_killed_mount_leaves(
    victim: str, dev_volume: DevVolume, host: MountHost
) -> None:
    mountpoint = host.mountpoint
    first = host.container().start()
    first.wait_healthy(host.healthcheck, START_TIMEOUT)
    checksum = write_synced(host.data_dir / "killed" / "kept.bin", os.urandom(2**20))

    if victim == "container":
        # `docker kill`: SIGKILL to PID 1; the kernel kills the mount process with it.
        first.kill()
    else:
        # The mount process dies on its own (say, the OOM killer): the script must exit with it
        # rather than stay up looking alive, so the container gets restarted.
        killed = first.kill_all("juicefs")
        assert len(killed) == 2, killed  # juicefs's supervisor and the FUSE server it runs
        # 137 from `wait` on the killed process, or 1 from the start-up loop's `kill -0`.
        assert first.wait_exit(10) in (128 + signal.SIGKILL, 1), first.describe()
    assert processes_mentioning(mountpoint) == []
    assert mounts_at(mountpoint) == [("fuse.juicefs", f"JuiceFS:{dev_volume.settings.volume_name}")]
    with pytest.raises(OSError) as dead:
        list(mountpoint.iterdir())
    assert dead.value.errno == errno.ENOTCONN
    # The kernel may answer from its attribute/entry caches (1 s) before it notices.
    assert wait_until(lambda: healthcheck(host.healthcheck).returncode != 0, 5), "healthy on a dead mount"

    second = host.container().start()
    second.wait_healthy(host.healthcheck, START_TIMEOUT)
    # One live mount: the script's `umount -l` cleared the dead one (juicefs alone would mount on
    # top of it and leave two), so juicefs found nothing broken to clean up itself.
    assert mounts_at(mountpoint) == [("fuse.juicefs", f"JuiceFS:{dev_volume.settings.volume_name}")]
    assert "is broken" not in second.log_text()
    assert sha256_file(host.data_dir / "killed" / "kept.bin") == checksum
    assert second.terminate(STOP_TIMEOUT) == 0, second.describe()
    assert mounts_at(mountpoint) == []
    assert processes_mentioning(mountpoint) == []


def test_stop_during_start_up_unmounts_and_exits(dev_volume: DevVolume, host: MountHost) -> None:
    mountpoint = host.mountpoint
    container = host.container().start()
    # The mount is up but the script is still in its once-a-second wait for it.
    container.wait_for("mount is up", lambda: (mountpoint / ".config").exists(), START_TIMEOUT)
    assert "sleep" in container.supervised_processes()
    code = container.terminate(STOP_TIMEOUT)
    assert code == 0, container.describe()
    assert mounts_at(mountpoint) == []
    assert processes_mentioning(mountpoint) == []
    assert list(mountpoint.iterdir()) == []
    assert dev_volume.sessions_at(mountpoint) == []


def test_stop_during_format_ends_the_container_at_once(dev_volume: DevVolume, tmp_path: Path) -> None:
    """PID 1 ignores TERM it does not trap: without the trap set first, `docker stop` waits out its timeout."""
    mountpoint = tmp_path / "jfs"
    slow_format = ["sleep", "60"]
    script = mount_script(
        slow_format, ["sleep", "60"], str(mountpoint), str(mountpoint / "nativelink"), dev_volume.meta_url
    )
    with ContainerScript(script, dev_volume.env, tmp_path / "container.log", mountpoint) as container:
        container.wait_for("format runs", lambda: container.supervised_processes() == ["timeout"], START_TIMEOUT)
        started = time.monotonic()
        code = container.terminate(STOP_TIMEOUT)
        assert time.monotonic() - started < 3, container.describe()
        assert code == 128 + signal.SIGTERM, container.describe()
        assert container.namespace_processes() == []


def test_new_credentials_reach_a_volume_that_stored_the_old_ones(dev_volume: DevVolume, host: MountHost) -> None:
    """A volume formatted with stored keys (or by an earlier version) keeps using them until told otherwise;
    after a rotation (a destroy and up generates new ones) the mount would fail with 403 forever."""
    stale = {"--access-key": "rotated-away", "--secret-key": secrets.token_hex(16)}
    formatted = run_program_juicefs(
        [*dev_volume.format_command(), *(word for pair in stale.items() for word in pair)], dev_volume.env
    )
    assert formatted.returncode != 0  # the stale keys are refused by the store: they are really stale
    forced = run_program_juicefs(
        [*dev_volume.format_command(), *(word for pair in stale.items() for word in pair)],
        {**dev_volume.env, "JFS_NO_CHECK_OBJECT_STORAGE": "1"},
    )
    assert forced.returncode == 0, forced.stderr
    assert dev_volume.status()["Setting"]["AccessKey"] == "rotated-away"

    container = host.container().start()
    container.wait_healthy(host.healthcheck, START_TIMEOUT)
    assert "AccessKey" not in dev_volume.status()["Setting"]
    assert "rotated-away" not in container.log_text()  # `juicefs config` prints the old key; not to the log
    checksum = write_synced(host.data_dir / "rotated" / "new.bin", os.urandom(2**20))
    assert sha256_file(host.data_dir / "rotated" / "new.bin") == checksum
    assert container.terminate(STOP_TIMEOUT) == 0, container.describe()
