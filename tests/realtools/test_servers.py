"""The fixtures are real servers: they enforce credentials and TLS, and FUSE data round-trips."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from .servers import (
    JuiceFsMount,
    JuiceFsTimeoutError,
    PostgresServer,
    RedisServer,
    S3Gateway,
    TlsPostgresServer,
    TlsRedisServer,
    describe,
    free_port,
    run_juicefs,
)


def file_storage(tmp_path: Path) -> list[str]:
    return [
        "--storage",
        "file",
        "--bucket",
        f"{tmp_path / 'blobs'}/",
        "--trash-days",
        "0",
    ]


def test_redis_refuses_wrong_password(redis_server: RedisServer, tmp_path: Path) -> None:
    meta = redis_server.meta_url()
    args = ["format", meta, "rt-redis-auth", *file_storage(tmp_path)]

    wrong = run_juicefs(args, {"META_PASSWORD": "not-the-password"})
    assert wrong.returncode != 0, describe(wrong)
    assert "WRONGPASS" in wrong.stderr, describe(wrong)

    missing = run_juicefs(args)
    assert missing.returncode != 0, describe(missing)
    assert "NOAUTH" in missing.stderr, describe(missing)

    ok = run_juicefs(args, redis_server.env())
    assert ok.returncode == 0, describe(ok)
    # The server is configured the way JuiceFS wants it, so no warning about it.
    assert "AOF is not enabled" not in ok.stderr
    assert "maxmemory-policy" not in ok.stderr
    assert redis_server.command("CONFIG", "GET", "maxmemory-policy") == [
        b"maxmemory-policy",
        b"noeviction",
    ]
    assert redis_server.command("CONFIG", "GET", "appendonly") == [
        b"appendonly",
        b"yes",
    ]


def test_tls_redis_needs_the_ca(tls_redis_server: TlsRedisServer, tmp_path: Path) -> None:
    db = tls_redis_server.allocate_db()
    args = [*file_storage(tmp_path), "rt-redis-tls"]

    no_ca = tls_redis_server.meta_url(db, query={})
    untrusted = run_juicefs(["format", no_ca, *args], tls_redis_server.env())
    assert untrusted.returncode != 0, describe(untrusted)
    assert "certificate signed by unknown authority" in untrusted.stderr, describe(untrusted)

    trusted = run_juicefs(["format", tls_redis_server.meta_url(db), *args], tls_redis_server.env())
    assert trusted.returncode == 0, describe(trusted)


def test_s3_gateway_refuses_wrong_secret(s3_gateway: S3Gateway, redis_server: RedisServer, tmp_path: Path) -> None:
    bucket = s3_gateway.create_bucket()
    status, body = s3_gateway.request("GET", f"/{bucket}", secret_key="wrong-secret-key")
    assert status == 403, body
    assert b"SignatureDoesNotMatch" in body

    # Against a wrong key juicefs retries its storage check for about 12 s before giving up.
    meta = redis_server.meta_url()
    args = [
        "format",
        meta,
        "rt-s3-auth",
        "--storage",
        "minio",
        "--bucket",
        s3_gateway.bucket_url(bucket),
    ]
    bad_env = {
        **redis_server.env(),
        "ACCESS_KEY": s3_gateway.access_key,
        "SECRET_KEY": "wrong-secret-key",
    }
    wrong = run_juicefs(args, bad_env, timeout=45)
    assert wrong.returncode != 0, describe(wrong)
    assert "SignatureDoesNotMatch" in wrong.stderr, describe(wrong)
    assert s3_gateway.list_keys(bucket) == []

    ok = run_juicefs(args, {**redis_server.env(), **s3_gateway.env()})
    assert ok.returncode == 0, describe(ok)
    assert s3_gateway.list_keys(bucket, "rt-s3-auth/") == ["rt-s3-auth/juicefs_uuid"]


def test_postgres_refuses_wrong_password(postgres_server: PostgresServer, tmp_path: Path) -> None:
    database = postgres_server.create_database()
    args = [
        "format",
        postgres_server.meta_url(database),
        "rt-pg-auth",
        *file_storage(tmp_path),
    ]

    wrong = run_juicefs(args, {"META_PASSWORD": "not-the-password"})
    assert wrong.returncode != 0, describe(wrong)
    assert "password authentication failed" in wrong.stderr, describe(wrong)

    ok = run_juicefs(args, postgres_server.env())
    assert ok.returncode == 0, describe(ok)
    tables = postgres_server.psql("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'jfs_%';\n", database)
    assert int(tables) > 10


def test_postgres_verify_full_needs_the_ca(tls_postgres_server: TlsPostgresServer, tmp_path: Path) -> None:
    pg = tls_postgres_server
    database = pg.create_database()
    args = ["rt-pg-tls", *file_storage(tmp_path)]

    no_ca = pg.meta_url(database, query={"sslmode": "verify-full"})
    untrusted = run_juicefs(["format", no_ca, *args], pg.env())
    assert untrusted.returncode != 0, describe(untrusted)
    assert "certificate signed by unknown authority" in untrusted.stderr, describe(untrusted)

    plain = pg.meta_url(database, query={"sslmode": "disable"})
    refused = run_juicefs(["format", plain, *args], pg.env())
    assert refused.returncode != 0, describe(refused)
    assert "no pg_hba.conf entry" in refused.stderr, describe(refused)

    verified = pg.meta_url(database)
    assert "sslmode=verify-full" in verified and f"sslrootcert={pg.ca_file}" in verified
    formatted = run_juicefs(["format", verified, *args], pg.env())
    assert formatted.returncode == 0, describe(formatted)
    status = run_juicefs(["status", verified], pg.env())
    assert status.returncode == 0, describe(status)
    assert '"Name": "rt-pg-tls"' in status.stdout, describe(status)


def test_run_juicefs_keeps_secrets_off_argv(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="META_PASSWORD"):
        run_juicefs(
            ["status", f"redis://:{redis_server.password}@127.0.0.1:1/1"],
            redis_server.env(),
        )


def test_run_juicefs_times_out_on_unreachable_engine() -> None:
    with pytest.raises(JuiceFsTimeoutError, match=r"timed out after 1\.5 s"):
        run_juicefs(["status", f"redis://127.0.0.1:{free_port()}/1"], timeout=1.5)


def test_fuse_round_trip_through_gateway(fuse: None, redis_server: RedisServer, s3_gateway: S3Gateway) -> None:
    bucket = s3_gateway.create_bucket()
    meta = redis_server.meta_url()
    formatted = run_juicefs(
        [
            "format",
            meta,
            "rt-fuse",
            "--storage",
            "minio",
            "--bucket",
            s3_gateway.bucket_url(bucket),
            "--trash-days",
            "0",
        ],
        {**redis_server.env(), **s3_gateway.env()},
    )
    assert formatted.returncode == 0, describe(formatted)

    data = os.urandom(1024 * 1024)
    with JuiceFsMount(meta, env=redis_server.env()) as mount:
        mountpoint = mount.mountpoint
        (mountpoint / "random.bin").write_bytes(data)
        assert '"SecretKey": "removed"' in (mountpoint / ".config").read_text()
    assert not os.path.ismount(mountpoint)

    assert any(key.startswith("rt-fuse/chunks/") for key in s3_gateway.list_keys(bucket, "rt-fuse/"))
    # A fresh mount has an empty cache dir, so the bytes come back through the gateway.
    with JuiceFsMount(meta, env=redis_server.env()) as mount:
        read_back = (mount.mountpoint / "random.bin").read_bytes()
    assert hashlib.sha256(read_back).hexdigest() == hashlib.sha256(data).hexdigest()
