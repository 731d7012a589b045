"""The prod shape of the JuiceFS volume, run for real through the program's pure functions.

Prod differs from dev in what these tests can reach on one machine: metadata over TLS
(Postgres with ``sslmode=verify-full``, ``rediss://``, or a TLS Redis Cluster with an ACL user as
MemoryDB runs it) with a private CA standing in for the AWS one, an encrypted volume
(passphrase-protected RSA key, both algorithms the settings allow) and trash. The objects go to
the S3 gateway with ``--storage s3``. The volume is mounted by the program's mount command inside
its entry script, run as a container.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from components.aws.memorydb import ACCESS_STRING, MAX_RETRY_BACKOFF
from components.juicefs.commands import (
    CREDENTIAL_ENVS,
    FormatOptions,
    SecretEnv,
    format_args,
    minio_bucket_url,
    postgres_meta_url,
    redis_meta_url,
)
from components.settings import JuiceFsSettings, ProdSettings, parse_settings
from tests.stacks import merged, stack_config

from .container import (
    MountHost,
    bucket_objects,
    force_cleanup,
    juicefs_status,
    mounts_at,
    processes_mentioning,
    run_program_juicefs,
    sha256_file,
    text_with_marker,
    write_synced,
)
from .redis_cluster import HOST_NAME, MemoryDbStandIn
from .servers import S3Gateway, TlsPostgresServer, TlsRedisServer, describe, new_secret

START_TIMEOUT = 30.0
# The stand-in's client went on about 22 s after losing the primary.
NODE_LOSS_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0
TRASH_DAYS = 7

CASES = [
    pytest.param(("postgres", "aes256gcm-rsa"), id="postgres-verify-full-aes256gcm"),
    pytest.param(("redis", "chacha20-rsa"), id="rediss-chacha20"),
    pytest.param(("memorydb", "aes256gcm-rsa"), id="memorydb-cluster-aes256gcm"),
]


def prod_settings(engine: str, algo: str, **juicefs: Any) -> JuiceFsSettings:
    """A prod stack's JuiceFS settings: platform aws, encryption on (the guardrail demands it)."""
    # Dev's settings on platform aws, without the dev-only docker block.
    dev = {key: value for key, value in stack_config("dev").items() if key != "docker"}
    settings = parse_settings(
        merged(
            dev,
            {
                "platform": "aws",
                "aws": {
                    "region": "eu-west-1",
                    "replicaRegion": "eu-central-1",
                    "vpcId": "vpc-0123456789abcdef0",
                    "subnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
                    "nodeSecurityGroupId": "sg-0123456789abcdef0",
                    "metadataEngine": engine,
                },
                "juicefs": {"encrypt": True, "encryptAlgo": algo, "trashDays": TRASH_DAYS, **juicefs},
                "kubernetes": {"clientNamespaces": [], "exposure": "cluster"},
                "tls": {"clients": ["ci"]},
            },
        )
    )
    assert isinstance(settings, ProdSettings) and settings.aws.metadata_engine == engine
    return settings.juicefs


def write_rsa_key(path: Path, passphrase: str) -> None:
    """RSA 2048 as passphrase-protected PKCS#8 PEM (``ENCRYPTED PRIVATE KEY``), mode 0600."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase.encode()),
    )
    path.touch(mode=0o600)
    path.write_bytes(pem)


class ProdVolume:
    """One encrypted volume: TLS metadata in its own database, its own bucket, its own key."""

    def __init__(self, engine: str, algo: str, meta_url: str, meta_password: str, gateway: S3Gateway, tmp: Path):
        self.engine, self.algo = engine, algo
        self.settings = prod_settings(engine, algo)
        self.meta_url = meta_url
        self.meta_password = meta_password
        self.gateway = gateway
        self.bucket = gateway.create_bucket()
        self.bucket_url = minio_bucket_url(gateway.host, gateway.port, self.bucket)
        self.passphrase = new_secret()
        self.key_file = tmp / "juicefs-rsa.pem"
        write_rsa_key(self.key_file, self.passphrase)

    def format_command(self, **changes: Any) -> list[str]:
        settings = prod_settings(self.engine, self.algo, **changes) if changes else self.settings
        options = FormatOptions.from_settings(settings, "s3", self.bucket_url, str(self.key_file))
        return format_args(options, self.meta_url)

    def env(self, passphrase: str | None = "") -> dict[str, str]:
        """Secrets for juicefs; ``passphrase=None`` leaves the RSA passphrase out, ``""`` uses the right one."""
        # The key only in the standard credential variables, as the CSI Secret's envs give it: nothing is
        # stored in the volume.
        access, secret = CREDENTIAL_ENVS["s3"]
        env = {
            SecretEnv.META_PASSWORD: self.meta_password,
            access: self.gateway.access_key,
            secret: self.gateway.secret_key,
        }
        if passphrase is not None:
            env[SecretEnv.RSA_PASSPHRASE] = passphrase or self.passphrase
        return env

    def format(self, **changes: Any) -> subprocess.CompletedProcess[str]:
        return run_program_juicefs(self.format_command(**changes), self.env())

    def setting(self) -> dict[str, Any]:
        result: dict[str, Any] = juicefs_status(self.meta_url, self.meta_password)["Setting"]
        return result

    def objects(self) -> dict[str, bytes]:
        return bucket_objects(self.gateway, self.bucket, f"{self.settings.volume_name}/")


def memorydb_url(stand_in: MemoryDbStandIn, db: int, user: str | None, node: int = 0) -> str:
    """The program's MemoryDB URL: the configuration endpoint, the ACL user; here with the test CA."""
    port = stand_in.nodes[node].port
    ca_file = str(stand_in.ca_file)
    return redis_meta_url(
        HOST_NAME, port, db, tls=True, ca_file=ca_file, user=user or "", max_retry_backoff=MAX_RETRY_BACKOFF
    )


def memorydb_volume(stand_in: MemoryDbStandIn, gateway: S3Gateway, tmp_path: Path, node: int = 0) -> ProdVolume:
    meta_url = memorydb_url(stand_in, stand_in.allocate_db(), stand_in.user, node)
    return ProdVolume("memorydb", "aes256gcm-rsa", meta_url, stand_in.password, gateway, tmp_path)


@pytest.fixture(params=CASES)
def volume(request: pytest.FixtureRequest, s3_gateway: S3Gateway, tmp_path: Path) -> ProdVolume:
    engine, algo = request.param
    if engine == "postgres":
        pg: TlsPostgresServer = request.getfixturevalue("tls_postgres_server")
        database = pg.create_database()
        meta_url = postgres_meta_url(
            pg.host, pg.port, database, pg.user, sslmode="verify-full", sslrootcert=str(pg.ca_file)
        )
        assert "sslmode=verify-full" in meta_url
        password = pg.password
    elif engine == "memorydb":
        return memorydb_volume(request.getfixturevalue("memorydb_stand_in"), s3_gateway, tmp_path)
    else:
        redis: TlsRedisServer = request.getfixturevalue("tls_redis_server")
        meta_url = redis_meta_url(redis.host, redis.port, redis.allocate_db(), tls=True, ca_file=str(redis.ca_file))
        assert meta_url.startswith("rediss://")
        password = redis.password
    return ProdVolume(engine, algo, meta_url, password, s3_gateway, tmp_path)


@pytest.fixture
def host(volume: ProdVolume, tmp_path: Path) -> Iterator[MountHost]:
    mount_host = MountHost(tmp_path, volume.meta_url, volume.format_command(), volume.env(), volume.settings.cache_size)
    try:
        yield mount_host
    finally:
        mount_host.close()


def test_encrypted_format_needs_the_passphrase(volume: ProdVolume) -> None:
    name = volume.settings.volume_name
    command = volume.format_command()
    assert command[command.index("--encrypt-rsa-key") + 1] == str(volume.key_file)
    assert command[command.index("--encrypt-algo") + 1] == volume.algo

    missing = run_program_juicefs(command, volume.env(passphrase=None))
    assert missing.returncode != 0, describe(missing)
    assert "passphrase is required to private key" in missing.stderr, describe(missing)
    wrong = run_program_juicefs(command, volume.env(passphrase="not-the-passphrase"))
    assert wrong.returncode != 0, describe(wrong)
    assert "parse private key" in wrong.stderr, describe(wrong)
    # Nothing was created by either attempt.
    assert volume.gateway.list_keys(volume.bucket) == []
    unformatted = run_program_juicefs(["juicefs", "status", volume.meta_url], volume.env())
    assert unformatted.returncode != 0 and "not formatted" in unformatted.stderr, describe(unformatted)

    formatted = volume.format()
    assert formatted.returncode == 0, describe(formatted)
    setting = volume.setting()
    assert setting["Name"] == name
    assert setting["Storage"] == "s3"
    assert setting["Bucket"] == f"{volume.gateway.endpoint}/{volume.bucket}"
    assert setting["BlockSize"] == volume.settings.block_size_kib == 4096
    assert setting["Compression"] == volume.settings.compress == "lz4"
    assert setting["TrashDays"] == volume.settings.trash_days == TRASH_DAYS
    assert setting["EncryptAlgo"] == volume.algo
    assert setting["KeyEncrypted"] is True
    assert setting["EncryptKey"] == "removed"
    # No object-store key stored: the client takes the one in its environment (or its IRSA role).
    assert "AccessKey" not in setting and "SecretKey" not in setting
    assert volume.gateway.list_keys(volume.bucket) == [f"{name}/juicefs_uuid"]

    # The metadata holds the (obfuscated) key, so mounts need only the passphrase; it never holds the
    # passphrase itself, even in a dump that keeps secrets.
    dump = run_program_juicefs(["juicefs", "dump", volume.meta_url, "--keep-secret-key"], volume.env())
    assert dump.returncode == 0, describe(dump)
    assert len(json.loads(dump.stdout)["Setting"]["EncryptKey"]) > 1000
    assert volume.passphrase not in dump.stdout


def test_reformat_is_harmless_and_refuses_immutable_changes(volume: ProdVolume) -> None:
    first = volume.format()
    assert first.returncode == 0, describe(first)
    uuid = volume.setting()["UUID"]

    again = volume.format()
    assert again.returncode == 0, describe(again)
    assert volume.setting()["UUID"] == uuid

    wrong = run_program_juicefs(volume.format_command(), volume.env(passphrase="not-the-passphrase"))
    assert wrong.returncode != 0, describe(wrong)
    assert "parse private key" in wrong.stderr, describe(wrong)

    block = volume.format(blockSizeKib=1024)
    assert block.returncode != 0, describe(block)
    assert "cannot update volume block size from 4096 to 1024" in block.stderr, describe(block)
    compress = volume.format(compress="zstd")
    assert compress.returncode != 0, describe(compress)
    assert "cannot update volume compression from lz4 to zstd" in compress.stderr, describe(compress)

    # A mutable setting changed in the stack config is applied by the next format.
    trash = volume.format(trashDays=3)
    assert trash.returncode == 0, describe(trash)

    setting = volume.setting()
    assert (setting["UUID"], setting["BlockSize"], setting["Compression"], setting["TrashDays"]) == (
        uuid,
        4096,
        "lz4",
        3,
    )
    assert setting["EncryptAlgo"] == volume.algo


@pytest.mark.usefixtures("fuse", "pid_namespaces")
def test_encrypted_volume_round_trip_through_the_mount(volume: ProdVolume, host: MountHost) -> None:
    name = volume.settings.volume_name
    formatted = volume.format()
    assert formatted.returncode == 0, describe(formatted)
    uuid = volume.setting()["UUID"]

    # The mount refuses a wrong passphrase (it reads the key from the metadata).
    try:
        refused = run_program_juicefs(
            host.mount_command(0), volume.env(passphrase="not-the-passphrase"), timeout=START_TIMEOUT
        )
    finally:
        force_cleanup(host.mountpoint)
    assert refused.returncode != 0, describe(refused)
    assert "parse private key" in refused.stderr, describe(refused)
    assert mounts_at(host.mountpoint) == []

    first = host.container().start()
    first.wait_healthy(host.healthcheck, START_TIMEOUT)
    assert mounts_at(host.mountpoint) == [("fuse.juicefs", f"JuiceFS:{name}")]
    marker = f"PROD-PLAINTEXT-MARKER-{secrets.token_hex(8).upper()}"
    text, blob = text_with_marker(marker), os.urandom(5 * 2**20 + 7)
    text_sum = write_synced(host.data_dir / "cas" / "text.txt", text)
    blob_sum = write_synced(host.data_dir / "cas" / "blob.bin", blob)
    assert sha256_file(host.data_dir / "cas" / "text.txt") == text_sum
    assert first.terminate(STOP_TIMEOUT) == 0, first.describe()
    assert mounts_at(host.mountpoint) == []

    # No object in the bucket holds the plaintext (the dev test shows the same check finding it).
    objects = volume.objects()
    chunks = {key: body for key, body in objects.items() if key.startswith(f"{name}/chunks/")}
    assert sum(len(body) for body in chunks.values()) > len(text) // 2, sorted(objects)
    for key, body in objects.items():
        assert marker.encode() not in body, key
        assert blob[:64] not in body and blob[-64:] not in body, key

    # Formatting again (as every container start does) keeps the volume and its data.
    again = volume.format()
    assert again.returncode == 0, describe(again)
    assert volume.setting()["UUID"] == uuid

    second = host.container().start()
    second.wait_healthy(host.healthcheck, START_TIMEOUT)
    # An empty cache: the bytes are fetched from the bucket and decrypted.
    assert sha256_file(host.data_dir / "cas" / "text.txt") == text_sum
    assert sha256_file(host.data_dir / "cas" / "blob.bin") == blob_sum

    # Trash is on: a deleted file is kept under .trash.
    (host.data_dir / "cas" / "text.txt").unlink()
    trashed = [entry for _, _, files in os.walk(host.mountpoint / ".trash") for entry in files]
    assert any(entry.endswith("-text.txt") for entry in trashed), trashed

    assert second.terminate(STOP_TIMEOUT) == 0, second.describe()
    assert mounts_at(host.mountpoint) == []
    assert processes_mentioning(host.mountpoint) == []
    assert juicefs_status(volume.meta_url, volume.meta_password)["Sessions"] == []


@pytest.mark.usefixtures("fuse", "pid_namespaces", "juicefs")
def test_a_mount_rides_out_a_memorydb_node_loss(s3_gateway: S3Gateway, tmp_path: Path) -> None:
    # A cluster of its own: this test kills a node.
    stand_in = MemoryDbStandIn(tmp_path / "memorydb", "nativelink-juicefs-prod", ACCESS_STRING).start()
    try:
        # Through the replica's address: MemoryDB's configuration endpoint always names a live node, and the
        # primary is the one that dies here.
        volume = memorydb_volume(stand_in, s3_gateway, tmp_path, node=1)
        formatted = volume.format()
        assert formatted.returncode == 0, describe(formatted)
        # Cluster mode, found from the one endpoint in the URL: every key carries the volume's hash tag.
        db = volume.meta_url.split("/")[3].split("?")[0]
        keys = stand_in.keys()
        assert f"{{{db}}}setting" in keys, keys
        # Only the ACL user gets in: MemoryDB's `default` user is in no ACL of the stack.
        anonymous = run_program_juicefs(["juicefs", "status", memorydb_url(stand_in, int(db), None)], volume.env())
        assert anonymous.returncode != 0 and "WRONGPASS" in anonymous.stderr, describe(anonymous)
        ride_out_node_loss(stand_in, volume, tmp_path)
    finally:
        stand_in.stop()


def ride_out_node_loss(stand_in: MemoryDbStandIn, volume: ProdVolume, tmp_path: Path) -> None:
    host = MountHost(tmp_path, volume.meta_url, volume.format_command(), volume.env(), volume.settings.cache_size)
    try:
        mount = host.container().start()
        mount.wait_healthy(host.healthcheck, START_TIMEOUT)
        before = write_synced(host.data_dir / "cas" / "before.bin", os.urandom(3 * 2**20))
        survivor = stand_in.fail_over()
        assert survivor is stand_in.nodes[1]
        # The live mount finds the promoted node (its cluster client reloads the slots) and goes on; a
        # client that never does fails here rather than hanging the suite.
        with ThreadPoolExecutor(1) as pool:
            writing = pool.submit(write_synced, host.data_dir / "cas" / "after.bin", os.urandom(3 * 2**20))
            try:
                after = writing.result(timeout=NODE_LOSS_TIMEOUT)
            except TimeoutError:
                force_cleanup(host.mountpoint)
                pytest.fail(f"no write went through within {NODE_LOSS_TIMEOUT:g} s of the node loss")
        assert sha256_file(host.data_dir / "cas" / "before.bin") == before
        assert mount.terminate(STOP_TIMEOUT) == 0, mount.describe()

        # A restarted mount pod, through the same configuration endpoint.
        again = host.container().start()
        again.wait_healthy(host.healthcheck, START_TIMEOUT)
        assert sha256_file(host.data_dir / "cas" / "before.bin") == before
        assert sha256_file(host.data_dir / "cas" / "after.bin") == after
        assert again.terminate(STOP_TIMEOUT) == 0, again.describe()
    finally:
        host.close()
