"""Switching JuiceFS from an IAM user's key to the pod's identity (IRSA), run for real.

Earlier releases let the CSI driver store the IAM user's key in the volume; stored keys win over the
environment, so once the key is deleted every client fails. The prod job's script removes stored keys;
afterwards the client takes the credentials it runs with. Redis, the S3 gateway and `juicefs` are real;
the deleted key is a key the gateway does not know.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from components.juicefs.commands import SecretEnv, forget_stored_keys_script

from .servers import RedisServer, S3Gateway, describe, run_juicefs
from .sync_volume import SOURCE_META_ENV, TIMEOUT, SyncVolume


def run_script(sync_volume: SyncVolume, meta_url: str) -> subprocess.CompletedProcess[str]:
    return sync_volume.run_admin(forget_stored_keys_script(), META_URL=meta_url)


def put(sync_volume: SyncVolume, source: Path) -> subprocess.CompletedProcess[str]:
    return sync_volume.run(["juicefs", "sync", f"{source}/", f"jfs://{SOURCE_META_ENV}/nativelink/"])


def check(sync_volume: SyncVolume) -> subprocess.CompletedProcess[str]:
    """`juicefs fsck` lists the volume's objects: with a refused key it fails at once (writes would retry)."""
    return run_juicefs(["fsck", sync_volume.meta_url], sync_volume.env, timeout=TIMEOUT)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    directory = tmp_path / "source"
    directory.mkdir()
    (directory / "blob").write_bytes(b"x" * 4096)
    return directory


def test_a_deleted_stored_key_breaks_the_volume_until_the_job_removes_it(sync_volume: SyncVolume, source: Path) -> None:
    stored = run_juicefs(
        [
            "config",
            sync_volume.meta_url,
            "--access-key",
            "AKIADELETEDUSERKEY0",
            "--secret-key",
            "deleted-secret",
            "--force",
        ],
        sync_volume.env,
        timeout=TIMEOUT,
    )
    assert stored.returncode == 0, describe(stored)
    # The right credentials are in the environment, but the stored (deleted) key wins.
    refused = check(sync_volume)
    assert refused.returncode != 0
    assert "InvalidAccessKeyId" in refused.stderr, describe(refused)

    removed = run_script(sync_volume, sync_volume.meta_url)
    assert removed.returncode == 0, describe(removed)
    assert removed.stdout.strip() == "stored object-store keys removed"
    assert "AKIADELETEDUSERKEY0" not in removed.stdout + removed.stderr
    checked = check(sync_volume)
    assert checked.returncode == 0, describe(checked)
    result = put(sync_volume, source)
    assert result.returncode == 0, describe(result)

    again = run_script(sync_volume, sync_volume.meta_url)
    assert (again.returncode, again.stdout.strip()) == (0, "no stored object-store keys")


def test_an_unformatted_volume_has_nothing_to_remove(sync_volume: SyncVolume, redis_server: RedisServer) -> None:
    result = run_script(sync_volume, redis_server.meta_url())
    assert (result.returncode, result.stdout.strip()) == (0, "volume not formatted yet: no stored keys")


def test_an_unreachable_metadata_engine_fails_the_job(sync_volume: SyncVolume, s3_gateway: S3Gateway) -> None:
    # A port nobody listens on: the job must fail, not report that nothing was stored.
    result = run_script(sync_volume, f"redis://127.0.0.1:{s3_gateway.port + 1}/1?timeout=2s")
    assert result.returncode == 1, describe(result)


def test_the_job_needs_no_passphrase_on_an_encrypted_volume(encrypted_sync_volume: SyncVolume) -> None:
    """The admin Secret holds no RSA passphrase: emptying the keys must not test the storage (which would
    decrypt the volume's key) but leave that to the next mount."""
    volume = encrypted_sync_volume
    stored = run_juicefs(
        ["config", volume.meta_url, "--access-key", "AKIADELETEDUSERKEY0", "--secret-key", "deleted-secret", "--force"],
        volume.env,
        timeout=TIMEOUT,
    )
    assert stored.returncode == 0, describe(stored)
    # run_admin leaves the passphrase out, as the admin Secret does.
    assert SecretEnv.RSA_PASSPHRASE in volume.env
    removed = run_script(volume, volume.meta_url)
    assert removed.returncode == 0, describe(removed)
    assert removed.stdout.strip() == "stored object-store keys removed"
    checked = check(volume)
    assert checked.returncode == 0, describe(checked)
