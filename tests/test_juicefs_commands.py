"""JuiceFS command lines and URLs, as the components hand them to the client."""

from __future__ import annotations

import os
import shlex
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from components.juicefs.commands import (
    FORMAT_TIMEOUT_S,
    FormatOptions,
    MountOptions,
    format_args,
    minio_bucket_url,
    mount_args,
    mount_healthcheck,
    mount_point_guard,
    mount_script,
    postgres_meta_url,
    redis_meta_url,
    s3_bucket_url,
)
from tests.stacks import stack_settings


def options(encrypt: bool = False) -> FormatOptions:
    settings = stack_settings("dev").juicefs.model_copy(update={"encrypt": encrypt})
    return FormatOptions.from_settings(settings, "minio", minio_bucket_url("minio", 9000, "nativelink-cas"), "/k.pem")


def test_redis_url_carries_no_password() -> None:
    assert redis_meta_url("redis", 6379, 1) == "redis://redis:6379/1"
    assert redis_meta_url("cache.example", 6379, 1, tls=True) == "rediss://cache.example:6379/1"
    assert (
        redis_meta_url("127.0.0.1", 6380, 2, tls=True, ca_file="/etc/ca.pem")
        == "rediss://127.0.0.1:6380/2?tls-ca-cert-file=%2Fetc%2Fca.pem"
    )


def test_postgres_url_verifies_the_server_by_default() -> None:
    assert (
        postgres_meta_url("db.example", 5432, "juicefs", "jfs", sslrootcert="/etc/rds-ca.pem")
        == "postgres://jfs@db.example:5432/juicefs?sslmode=verify-full&sslrootcert=%2Fetc%2Frds-ca.pem"
    )


def test_bucket_urls() -> None:
    assert minio_bucket_url("minio", 9000, "b") == "http://minio:9000/b"
    assert s3_bucket_url("b", "eu-west-1") == "https://b.s3.eu-west-1.amazonaws.com"


def test_format_args_follow_the_settings() -> None:
    args = format_args(options(), "redis://redis:6379/1")
    assert args[:2] == ["juicefs", "format"]
    assert args[-2:] == ["redis://redis:6379/1", "nativelink-cas"]
    flags = dict(zip(args[2:-2:2], args[3:-2:2], strict=True))
    assert flags == {
        "--storage": "minio",
        "--bucket": "http://minio:9000/nativelink-cas",
        "--block-size": "4096",
        "--compress": "lz4",
        "--trash-days": "1",
    }


def test_encrypted_format_names_the_key_file_and_algorithm() -> None:
    args = format_args(options(encrypt=True), "redis://redis:6379/1")
    assert args[args.index("--encrypt-rsa-key") + 1] == "/k.pem"
    assert args[args.index("--encrypt-algo") + 1] == "aes256gcm-rsa"
    assert "--encrypt-rsa-key" not in format_args(options(encrypt=False), "redis://redis:6379/1")


def test_secrets_never_travel_on_argv() -> None:
    args = format_args(options(), "redis://redis:6379/1") + mount_args(
        MountOptions("/jfs", "/var/jfsCache", "5gb"), "redis://redis:6379/1"
    )
    for flag in ("--access-key", "--secret-key", "--session-token"):
        assert flag not in args


def test_mount_args_size_the_cache_in_mib() -> None:
    args = mount_args(MountOptions("/jfs", "/var/jfsCache", "5gb"), "redis://redis:6379/1")
    assert args[args.index("--cache-size") + 1] == str(5 * 1000**3 // 2**20)
    assert args[-2:] == ["redis://redis:6379/1", "/jfs"]
    assert "--no-usage-report" in args
    assert "--writeback" not in args


@pytest.fixture
def script() -> str:
    return mount_script(
        format_args(options(), "redis://redis:6379/1"),
        mount_args(MountOptions("/shared/jfs", "/var/jfsCache", "5gb"), "redis://redis:6379/1"),
        "/shared/jfs",
        "/shared/jfs/nativelink",
        "redis://redis:6379/1",
    )


def test_mount_script_is_valid_posix_shell(script: str) -> None:
    subprocess.run(["sh", "-n", "-c", script], check=True)


def test_mount_script_formats_then_mounts_then_creates_the_data_directory(script: str) -> None:
    lines = script.splitlines()
    order = [
        lines.index("trap stop TERM INT"),
        lines.index(mount_point_guard("/shared", "jfs")),
        next(i for i, line in enumerate(lines) if "juicefs config" in line),
        next(i for i, line in enumerate(lines) if line.startswith(f"step timeout {FORMAT_TIMEOUT_S} juicefs format")),
        next(i for i, line in enumerate(lines) if line.startswith("juicefs mount")),
        next(i for i, line in enumerate(lines) if "/shared/jfs/.config" in line),
        next(i for i, line in enumerate(lines) if line.startswith("mkdir -p /shared/jfs/nativelink")),
        next(i for i, line in enumerate(lines) if line.startswith("wait")),
    ]
    assert order == sorted(order)
    assert "chmod 0555 /shared/jfs; fi && chmod 0555 /shared" in mount_point_guard("/shared", "jfs")
    assert shlex.split(lines[order[3]]) == [
        "step",
        "timeout",
        str(FORMAT_TIMEOUT_S),
        *format_args(options(), "redis://redis:6379/1"),
    ]


def test_healthcheck_proves_the_mount_and_the_data_directory() -> None:
    assert mount_healthcheck("/jfs", "/jfs/nativelink") == [
        "CMD-SHELL",
        "test -e /jfs/.config && test -d /jfs/nativelink",
    ]


def test_mount_script_leaves_a_mount_point_without_juicefs_alone(tmp_path: Path) -> None:
    """In Docker the mount point is the bind of the host directory: unmounting it hides the mount from the host."""
    mountpoint, calls, bin_dir = tmp_path / "jfs", tmp_path / "umount-calls", tmp_path / "bin"
    mountpoint.mkdir()
    bin_dir.mkdir()
    (bin_dir / "umount").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "umount").chmod(0o755)
    fake_mount = ["sh", "-c", f"touch {mountpoint}/.config"]
    script = mount_script(["true"], fake_mount, str(mountpoint), str(mountpoint / "data"), "redis://127.0.0.1:1/1")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["sh", "-c", script], env=env, timeout=30, check=True)
    assert (mountpoint / "data").is_dir()
    assert not calls.exists(), calls.read_text()


def test_mount_script_outlives_the_mount_process_on_term(tmp_path: Path) -> None:
    """As a container's PID 1 the script must not exit before the mount process has unmounted."""
    mountpoint, unmounted = tmp_path / "jfs", tmp_path / "unmounted"
    mountpoint.mkdir()
    # Stands in for `juicefs mount`: ready at once, and slow to finish after TERM.
    fake_mount = [
        "sh",
        "-c",
        f"trap 'sleep 0.5; touch {unmounted}; exit 0' TERM; touch {mountpoint}/.config; while :; do sleep 0.1; done",
    ]
    script = mount_script(["true"], fake_mount, str(mountpoint), str(mountpoint / "data"), "redis://127.0.0.1:1/1")
    proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not (mountpoint / "data").is_dir() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (mountpoint / "data").is_dir()
        time.sleep(0.2)  # let it reach its final `wait`
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert unmounted.exists(), "the script exited before the mount process finished"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_mount_point_guard_leaves_a_read_only_mount_point(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    for _ in range(2):  # idempotent: every start of the mount container runs it
        subprocess.run(["sh", "-c", mount_point_guard(str(shared), "jfs")], timeout=10, check=True)
        assert stat.S_IMODE((shared / "jfs").stat().st_mode) == 0o555
        assert stat.S_IMODE(shared.stat().st_mode) == 0o555
