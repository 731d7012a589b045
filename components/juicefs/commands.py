"""JuiceFS command lines and URLs, as pure functions.

Secrets never appear in argv or URLs: the client reads them from the environment variables named
in `SecretEnv`, so they stay out of process lists, logs and container specs' command fields.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlencode

from components.settings import JuiceFsSettings, size_bytes


class SecretEnv:
    """Environment variables through which the `juicefs` client takes its secrets."""

    META_PASSWORD = "META_PASSWORD"
    RSA_PASSPHRASE = "JFS_RSA_PASSPHRASE"


StorageType = Literal["minio", "s3"]

# Object-store credentials the client reads at every start when the volume stores none: the fallbacks of
# juicefs v1.4 pkg/object/minio.go:77-82 and of the AWS default chain (pkg/object/s3.go:611-616).
# Read at start, they follow a rotation; stored keys would be read from the metadata instead, and
# neither `format` nor `mount` ever replaces them from the environment (cmd/format.go:540-551 reads
# ACCESS_KEY/SECRET_KEY only when it creates the volume).
CREDENTIAL_ENVS: dict[StorageType, tuple[str, str]] = {
    "minio": ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"),
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
}


@dataclass(frozen=True)
class FormatOptions:
    """What `juicefs format` is told: the volume and where its objects go."""

    volume_name: str
    storage: StorageType
    bucket_url: str
    block_size_kib: int
    compress: str
    trash_days: int
    encrypt_rsa_key_path: str | None = None
    encrypt_algo: str = "aes256gcm-rsa"

    @classmethod
    def from_settings(
        cls, settings: JuiceFsSettings, storage: StorageType, bucket_url: str, rsa_key_path: str | None
    ) -> FormatOptions:
        return cls(
            volume_name=settings.volume_name,
            storage=storage,
            bucket_url=bucket_url,
            block_size_kib=settings.block_size_kib,
            compress=settings.compress,
            trash_days=settings.trash_days,
            encrypt_rsa_key_path=rsa_key_path if settings.encrypt else None,
            encrypt_algo=settings.encrypt_algo,
        )


def redis_meta_url(
    host: str,
    port: int,
    db: int,
    *,
    tls: bool = False,
    ca_file: str | None = None,
    user: str = "",
    max_retry_backoff: str | None = None,
) -> str:
    """A Redis metadata URL without the password (the client reads META_PASSWORD).

    `max_retry_backoff` caps the client's wait between retries (pkg/meta/redis.go, default 10s).
    """
    scheme = "rediss" if tls else "redis"
    auth = f"{quote(user, safe='')}@" if user else ""
    params = {"tls-ca-cert-file": ca_file} if tls and ca_file else {}
    if max_retry_backoff:
        params["max-retry-backoff"] = max_retry_backoff
    query = f"?{urlencode(params)}" if params else ""
    return f"{scheme}://{auth}{host}:{port}/{db}{query}"


def postgres_meta_url(
    host: str, port: int, database: str, user: str, *, sslmode: str = "verify-full", sslrootcert: str | None = None
) -> str:
    """A Postgres metadata URL without the password (the client reads META_PASSWORD)."""
    params = {"sslmode": sslmode}
    if sslrootcert:
        params["sslrootcert"] = sslrootcert
    return f"postgres://{quote(user, safe='')}@{host}:{port}/{quote(database, safe='')}?{urlencode(params)}"


def minio_bucket_url(host: str, port: int, bucket: str) -> str:
    """MinIO takes path-style bucket URLs only."""
    return f"http://{host}:{port}/{bucket}"


def s3_bucket_url(bucket: str, region: str) -> str:
    return f"https://{bucket}.s3.{region}.amazonaws.com"


def format_args(options: FormatOptions, meta_url: str) -> list[str]:
    """`juicefs format`: safe to run on every start, it changes only mutable settings."""
    args = [
        "juicefs",
        "format",
        "--storage",
        options.storage,
        "--bucket",
        options.bucket_url,
        "--block-size",
        str(options.block_size_kib),
        "--compress",
        options.compress,
        "--trash-days",
        str(options.trash_days),
    ]
    if options.encrypt_rsa_key_path is not None:
        args += ["--encrypt-rsa-key", options.encrypt_rsa_key_path, "--encrypt-algo", options.encrypt_algo]
    return [*args, meta_url, options.volume_name]


@dataclass(frozen=True)
class MountOptions:
    mountpoint: str
    cache_dir: str
    cache_size: str
    metrics_address: str = "0.0.0.0:9567"
    backup_meta: str = "1h"


def mount_args(options: MountOptions, meta_url: str) -> list[str]:
    """`juicefs mount` in the foreground; the caller decides how it is supervised."""
    return [
        "juicefs",
        "mount",
        "--cache-dir",
        options.cache_dir,
        "--cache-size",
        str(size_bytes(options.cache_size) // 2**20),
        "--backup-meta",
        options.backup_meta,
        "--metrics",
        options.metrics_address,
        "--no-usage-report",
        meta_url,
        options.mountpoint,
    ]


def mount_ready_marker(mountpoint: str) -> str:
    """A file that exists only inside a live JuiceFS mount."""
    return f"{mountpoint}/.config"


def status_args(meta_url: str) -> list[str]:
    return ["juicefs", "status", meta_url]


def forget_stored_keys_args(meta_url: str) -> list[str]:
    """`juicefs config` that empties the stored object-store keys, so the client reads CREDENTIAL_ENVS.

    `--force`: without it, a key change makes `config` test the storage first (cmd/config.go:448-457),
    which needs the RSA key's passphrase on an encrypted volume; the next mount tests the storage anyway.
    """
    return ["juicefs", "config", meta_url, "--access-key", "", "--secret-key", "", "--force"]


def forget_stored_keys_script(meta_url_env: str = "META_URL") -> str:
    """Empty the keys an earlier format stored, once, so the client uses the identity it runs with.

    Stored keys win over the environment and IRSA alike (pkg/object/s3.go:617-622 uses them whenever
    set), so a volume formatted with an IAM user's key breaks when that key is deleted. An unformatted
    volume has nothing stored; any other failure (metadata unreachable) fails the run.
    """
    meta = f'"${meta_url_env}"'
    forget = shlex.join(forget_stored_keys_args("META")).replace("META", meta, 1)
    return "\n".join(
        [
            "set -eu",
            f"if ! status=$(juicefs status {meta} 2>&1); then",
            '  case "$status" in *"not formatted"*) echo "volume not formatted yet: no stored keys"; exit 0;; esac',
            '  printf "%s\\n" "$status" | tail -n 20 >&2',
            "  exit 1",
            "fi",
            'case "$status" in',
            # Its stdout would print the old access key.
            f'  *\'"AccessKey"\'*) {forget} >/dev/null && echo "stored object-store keys removed";;',
            '  *) echo "no stored object-store keys";;',
            "esac",
        ]
    )


FORMAT_TIMEOUT_S = 300
STATUS_TIMEOUT_S = 30
# Nobody without CAP_DAC_OVERRIDE (the CAS server drops it) can write into the mount point while
# JuiceFS is not mounted on it, so stores can never land on the disk underneath.
MOUNT_POINT_MODE = "0555"

# PID 1 of a container ignores TERM unless it traps it. Trapped from the first line, a stop during
# start-up ends the running step at once; once JuiceFS is mounted, it makes the mount process unmount
# and exits only when it is gone: exiting at once would leave a dead FUSE mount and a stale session.
_SUPERVISION = [
    "set -eu",
    "child=",
    'stop() { if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null || true; '
    'status=0; wait "$child" || status=$?; exit "$status"; fi; exit 143; }',
    "trap stop TERM INT",
    # Each step runs in the background so that `wait` (and with it the trap) can be interrupted.
    'step() { "$@" & child=$!; status=0; wait "$child" || status=$?; child=; return "$status"; }',
]


def mount_point_guard(shared_dir: str, name: str) -> str:
    """Shell that creates the mount point `name` in `shared_dir`, both read-only (MOUNT_POINT_MODE).

    Nothing is done to a mount point with anything mounted on it: a live JuiceFS root keeps its mode,
    and a dead one (a killed mount) would fail even `mkdir -p`; the mount container clears it.
    `shared_dir` is read-only too, so nobody without CAP_DAC_OVERRIDE can swap the mount point for a
    writable directory.
    """
    point = shlex.quote(f"{shared_dir}/{name}")
    mounted = shlex.quote(f" {shared_dir}/{name} ")
    return (
        f"if ! grep -qF {mounted} /proc/self/mounts; then mkdir -p {point} && chmod {MOUNT_POINT_MODE} {point}; fi"
        f" && chmod {MOUNT_POINT_MODE} {shlex.quote(shared_dir)}"
    )


def mount_script(
    format_command: list[str], mount_command: list[str], mountpoint: str, data_dir: str, meta_url: str
) -> str:
    """Entry script of the mount container: format, mount, create the data directory, then supervise.

    The mount point is a subdirectory of the bind of the shared host directory, so every mount and
    unmount here propagates to the host and from there to the CAS server's bind of the same directory.
    """
    shared_dir, _, name = mountpoint.rpartition("/")
    marker = mount_ready_marker(mountpoint)
    point = shlex.quote(mountpoint)
    stale = shlex.quote(f" {mountpoint} fuse.juicefs ")
    status = f"timeout {STATUS_TIMEOUT_S} {shlex.join(status_args(meta_url))} 2>/dev/null | grep -qF '\"AccessKey\"'"
    stored_keys = f"step sh -c {shlex.quote(status)}"
    forget_keys = f"step timeout {STATUS_TIMEOUT_S} {shlex.join(forget_stored_keys_args(meta_url))} >/dev/null"
    return (
        "\n".join(
            [
                *_SUPERVISION,
                # A killed predecessor leaves a dead FUSE mount that would block the new one (and
                # `mkdir -p` on it). Unmounting it here propagates to the host and the CAS server.
                f"if grep -qF {stale} /proc/self/mounts; then umount -l {point} || true; fi",
                mount_point_guard(shared_dir, name),
                # Keys stored by an earlier format would win over the environment and break at the next
                # rotation; forget them first (stdout would print the old access key).
                f"if {stored_keys}; then {forget_keys}; fi",
                # An unreachable metadata engine makes the client retry for minutes; fail, and let the
                # restart policy try again, instead of hanging with the health check never passing.
                f"step timeout {FORMAT_TIMEOUT_S} {shlex.join(format_command)}",
                f"{shlex.join(mount_command)} &",
                "child=$!",
                f'until [ -e {shlex.quote(marker)} ]; do kill -0 "$child"; sleep 1; done',
                f"mkdir -p {shlex.quote(data_dir)}",
                'wait "$child"',
            ]
        )
        + "\n"
    )


def mount_healthcheck(mountpoint: str, data_dir: str) -> list[str]:
    """Docker HEALTHCHECK test that passes only while the mount is live and the data directory exists."""
    return ["CMD-SHELL", f"test -e {shlex.quote(mount_ready_marker(mountpoint))} && test -d {shlex.quote(data_dir)}"]
