"""Metadata backup and restore, run for real: the program's dump script and the README's restore commands.

An encrypted volume on Redis and the S3 gateway (object-store keys only in the environment, as prod
passes them) gets files; the dump script dumps its metadata and copies the dump into the bucket; the restore
commands fetch it and load it into an empty Redis database, from which the same files read back
through the objects the volume already has. No FUSE: files go in and out with `juicefs sync` and
its `jfs://` scheme, the JuiceFS client itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from components.juicefs.backup import DUMP_PREFIX, DUMP_SUFFIX, dump_script, restore_commands

from .servers import RedisServer, describe
from .sync_volume import RESTORED_META_ENV, SyncVolume, tree_digest


@pytest.mark.parametrize("keep_key", [True, False], ids=["keeps-key", "drops-key"])
def test_a_dump_in_the_bucket_restores_the_encrypted_volume_into_an_empty_engine(
    encrypted_sync_volume: SyncVolume, redis_server: RedisServer, tmp_path: Path, keep_key: bool
) -> None:
    """Prod's volume is encrypted: the dump must carry its (passphrase-protected) key, which JuiceFS
    cannot be given again after a load, or the restored volume can never be read."""
    sync_volume = encrypted_sync_volume
    source = tmp_path / "source"
    for index in range(40):
        blob = source / "cas" / "content" / "d" / f"{index:04d}-blob"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(os.urandom(1024 * (index + 1)))
    (source / "ac" / "content" / "d").mkdir(parents=True)
    (source / "ac" / "content" / "d" / "entry").write_text("action result")
    sync_volume.put_files(source)

    dump_dir = str(sync_volume.admin_dir())
    script = dump_script(sync_volume.s3_prefix_url, keep_key=keep_key, https=False, dump_dir=dump_dir)
    dumped = sync_volume.run_admin(script, META_URL=sync_volume.meta_url)
    assert dumped.returncode == 0, describe(dumped)
    keys = sync_volume.gateway.list_keys(sync_volume.bucket, f"{DUMP_PREFIX}/")
    assert len(keys) == 1 and keys[0].endswith(DUMP_SUFFIX), keys
    assert "metadata dump uploaded" in dumped.stdout

    # The restore, as the README gives it, into a database nobody uses.
    restored_meta = redis_server.meta_url()
    workdir = tmp_path / "restore"
    workdir.mkdir()
    dump_url = sync_volume.s3_prefix_url + keys[0].rsplit("/", 1)[1]
    for command in restore_commands(restored_meta, dump_url, https=False):
        result = sync_volume.run(command, cwd=workdir)
        assert result.returncode == 0, f"{command}\n{describe(result)}"

    restored = tmp_path / "restored"
    result = sync_volume.run(
        ["juicefs", "sync", f"jfs://{RESTORED_META_ENV}/nativelink/", f"{restored}/"], RESTORED_META=restored_meta
    )
    if not keep_key:
        assert result.returncode != 0, describe(result)
        assert "secret was removed" in result.stderr or "parse private key" in result.stderr, describe(result)
        return
    assert result.returncode == 0, describe(result)
    assert tree_digest(restored) == tree_digest(source)
    assert len(tree_digest(source)) == 41


def test_a_restore_refuses_an_engine_that_holds_a_volume(sync_volume: SyncVolume, tmp_path: Path) -> None:
    """Loading over a live volume would corrupt it; `juicefs load` refuses, and so the procedure stops."""
    script = dump_script(sync_volume.s3_prefix_url, keep_key=True, https=False, dump_dir=str(sync_volume.admin_dir()))
    dumped = sync_volume.run_admin(script, META_URL=sync_volume.meta_url)
    assert dumped.returncode == 0, describe(dumped)
    (key,) = sync_volume.gateway.list_keys(sync_volume.bucket, f"{DUMP_PREFIX}/")
    workdir = tmp_path / "restore"
    workdir.mkdir()
    fetch, load = restore_commands(sync_volume.meta_url, sync_volume.s3_prefix_url + key.rsplit("/", 1)[1], https=False)
    assert sync_volume.run(fetch, cwd=workdir).returncode == 0
    refused = sync_volume.run(load, cwd=workdir)
    assert refused.returncode != 0
    assert "is used by volume" in refused.stderr, describe(refused)


def test_without_the_metadata_engine_the_dump_fails_loudly(sync_volume: SyncVolume) -> None:
    script = dump_script(sync_volume.s3_prefix_url, keep_key=True, https=False, dump_dir=str(sync_volume.admin_dir()))
    wrong = sync_volume.meta_url.rsplit("/", 1)[0] + "/15"
    dumped = sync_volume.run_admin(script, META_URL=wrong)
    assert dumped.returncode != 0
    assert "not formatted" in dumped.stderr, describe(dumped)
    assert sync_volume.gateway.list_keys(sync_volume.bucket, f"{DUMP_PREFIX}/") == []
