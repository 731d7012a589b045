"""The generated RSA key, protected by the program's `openssl pkcs8` command, used by a real JuiceFS.

The key is made as pulumi-tls makes it (PKCS#1 PEM); the program's command encrypts it with real
openssl, and `juicefs format` (as the CSI mount pod runs it before every mount) takes the result with
JFS_RSA_PASSPHRASE. A volume first formatted with the plain key by an earlier release keeps working
once the protected key and the passphrase arrive.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from components.juicefs.commands import FormatOptions, format_args

from .rsa_keys import plain_pem, protect
from .servers import RedisServer, S3Gateway, describe, new_secret, run_juicefs
from .sync_volume import SOURCE_META_ENV, TIMEOUT, SyncVolume, tree_digest


def format_volume(volume: SyncVolume, key_file: Path, **env: str) -> subprocess.CompletedProcess[str]:
    settings = volume.settings.model_copy(update={"encrypt": True})
    options = FormatOptions.from_settings(settings, "s3", f"{volume.gateway.endpoint}/{volume.bucket}", str(key_file))
    return run_juicefs(format_args(options, volume.meta_url)[1:], {**volume.env, **env}, timeout=TIMEOUT)


@pytest.fixture
def fresh_volume(redis_server: RedisServer, s3_gateway: S3Gateway, tmp_path: Path) -> SyncVolume:
    """An unformatted volume: its own Redis database and bucket name."""
    return SyncVolume(redis_server, s3_gateway, tmp_path)


def test_the_protected_key_needs_its_passphrase(fresh_volume: SyncVolume, tmp_path: Path) -> None:
    passphrase = new_secret()
    pem = plain_pem()
    protected = protect(pem, passphrase)
    assert protected.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert pem.splitlines()[1] not in protected
    key_file = tmp_path / "key.pem"
    key_file.write_text(protected)

    missing = format_volume(fresh_volume, key_file)
    assert missing.returncode != 0 and "passphrase is required" in missing.stderr, describe(missing)
    wrong = format_volume(fresh_volume, key_file, JFS_RSA_PASSPHRASE="not-the-passphrase")
    assert wrong.returncode != 0, describe(wrong)
    formatted = format_volume(fresh_volume, key_file, JFS_RSA_PASSPHRASE=passphrase)
    assert formatted.returncode == 0, describe(formatted)

    # The copy in the metadata is the protected one: without the passphrase no client can use it.
    source = tmp_path / "source"
    source.mkdir()
    (source / "blob").write_bytes(b"cas blob" * 1000)
    refused = fresh_volume.run(["juicefs", "sync", f"{source}/", f"jfs://{SOURCE_META_ENV}/nativelink/"])
    assert refused.returncode != 0 and "passphrase is required" in refused.stderr, describe(refused)
    written = fresh_volume.run(
        ["juicefs", "sync", f"{source}/", f"jfs://{SOURCE_META_ENV}/nativelink/"], JFS_RSA_PASSPHRASE=passphrase
    )
    assert written.returncode == 0, describe(written)


def test_a_volume_formatted_with_the_plain_key_keeps_working_with_the_passphrase(
    fresh_volume: SyncVolume, tmp_path: Path
) -> None:
    pem = plain_pem()
    plain_file, protected_file = tmp_path / "plain.pem", tmp_path / "protected.pem"
    plain_file.write_text(pem)
    first = format_volume(fresh_volume, plain_file)
    assert first.returncode == 0, describe(first)
    source = tmp_path / "source"
    source.mkdir()
    (source / "blob").write_bytes(b"written before the upgrade" * 100)
    assert fresh_volume.run(["juicefs", "sync", f"{source}/", f"jfs://{SOURCE_META_ENV}/nativelink/"]).returncode == 0

    # After the upgrade the mount pod formats with the protected key and has the passphrase.
    passphrase = new_secret()
    protected_file.write_text(protect(pem, passphrase))
    again = format_volume(fresh_volume, protected_file, JFS_RSA_PASSPHRASE=passphrase)
    assert again.returncode == 0, describe(again)
    restored = tmp_path / "read"
    read = fresh_volume.run(
        ["juicefs", "sync", f"jfs://{SOURCE_META_ENV}/nativelink/", f"{restored}/"], JFS_RSA_PASSPHRASE=passphrase
    )
    assert read.returncode == 0, describe(read)
    assert tree_digest(restored) == tree_digest(source)
