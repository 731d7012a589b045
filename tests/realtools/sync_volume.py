"""A JuiceFS volume on Redis and the S3 gateway, reached without FUSE through `juicefs sync` (`jfs://`).

Object-store keys live only in the environment, as prod passes them to its pods.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from components.juicefs.backup import DUMP_PREFIX
from components.juicefs.commands import CREDENTIAL_ENVS, FormatOptions, SecretEnv, format_args
from components.kubernetes.pods import UNPRIVILEGED_UID
from tests.stacks import stack_settings

from .rsa_keys import plain_pem, protect
from .servers import RedisServer, S3Gateway, describe, juicefs_binary, juicefs_env, new_secret, run_juicefs

TIMEOUT = 120.0
# jfs:// URLs name an environment variable that holds the metadata URL.
SOURCE_META_ENV = "SOURCE_META"
RESTORED_META_ENV = "RESTORED_META"


class SyncVolume:
    def __init__(self, redis: RedisServer, gateway: S3Gateway, tmp: Path) -> None:
        self.redis, self.gateway, self.tmp = redis, gateway, tmp
        self._cleanup: list[Path] = []
        self.meta_url = redis.meta_url()
        self.bucket = f"backup-{secrets.token_hex(4)}"
        self.settings = stack_settings("prod").juicefs
        access, secret = CREDENTIAL_ENVS["s3"]
        self.env = {
            **redis.env(),
            access: gateway.access_key,
            secret: gateway.secret_key,
            "AWS_REGION": "us-east-1",
            SOURCE_META_ENV: self.meta_url,
        }

    @property
    def s3_prefix_url(self) -> str:
        """The dump prefix as `juicefs sync` addresses a path-style endpoint (plain HTTP here)."""
        return f"s3://{self.gateway.host}:{self.gateway.port}/{self.bucket}/{DUMP_PREFIX}/"

    def run(self, args: list[str], cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        command = [str(juicefs_binary()), *args[1:]] if args[0] == "juicefs" else args
        return subprocess.run(
            command,
            env=juicefs_env({**self.env, **env}),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    def run_admin(self, script: str, **env: str) -> subprocess.CompletedProcess[str]:
        """`sh -c script` as prod's admin pods run it: the unprivileged user (when the tests run as root),
        no home, no RSA passphrase (their Secret holds none)."""
        command = ["sh", "-c", script]
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            assert setpriv is not None, "setpriv (util-linux) is needed to run as the admin pods' user"
            user = str(UNPRIVILEGED_UID)
            command = [setpriv, f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
        admin_env = {key: value for key, value in self.env.items() if key != SecretEnv.RSA_PASSPHRASE}
        admin_env.update(PATH=f"{juicefs_binary().parent}:/usr/bin:/bin", HOME="/nonexistent", **env)
        return subprocess.run(
            command, env=juicefs_env(admin_env), capture_output=True, text=True, timeout=TIMEOUT, check=False
        )

    def admin_dir(self) -> Path:
        """A directory the admin user can write (pytest's own are private to root), removed by close()."""
        directory = Path(tempfile.mkdtemp(prefix="jfs-admin-"))
        self._cleanup.append(directory)
        directory.chmod(0o755)
        if os.geteuid() == 0:
            os.chown(directory, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
        return directory

    def close(self) -> None:
        for directory in self._cleanup:
            shutil.rmtree(directory, ignore_errors=True)

    def put_files(self, source: Path) -> None:
        result = self.run(["juicefs", "sync", f"{source}/", f"jfs://{SOURCE_META_ENV}/nativelink/"])
        assert result.returncode == 0, describe(result)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def format_sync_volume(redis: RedisServer, gateway: S3Gateway, tmp: Path, *, encrypted: bool = False) -> SyncVolume:
    """A formatted volume; encrypted as prod formats it (a passphrase-protected key, the passphrase in
    every client's environment)."""
    volume = SyncVolume(redis, gateway, tmp)
    bucket_url = f"{gateway.endpoint}/{volume.bucket}"
    key_file = None
    if encrypted:
        passphrase = new_secret()
        key_file = tmp / "juicefs-key.pem"
        key_file.write_text(protect(plain_pem(), passphrase))
        volume.env[SecretEnv.RSA_PASSPHRASE] = passphrase
    settings = volume.settings.model_copy(update={"encrypt": encrypted})
    options = FormatOptions.from_settings(settings, "s3", bucket_url, str(key_file) if key_file else None)
    formatted = run_juicefs(format_args(options, volume.meta_url)[1:], volume.env, timeout=TIMEOUT)
    assert formatted.returncode == 0, describe(formatted)
    return volume
