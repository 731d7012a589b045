"""Stack config validation: good stacks load, bad values are refused naming the key and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from components.settings import (
    PROJECT,
    ConfigError,
    DevSettings,
    ProdSettings,
    load_settings,
    parse_settings,
    size_bytes,
)
from tests.stacks import prod_config, stack_config, stack_settings


def with_value(config: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """`config` with the dotted `path` (as `pulumi config set --path` takes it) set to `value`."""
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return config


def test_dev_stack_file_is_valid() -> None:
    settings = parse_settings(stack_config("dev"))
    assert settings.platform == "docker"
    assert settings.workers.count == 3
    assert settings.versions.nativelink.endswith(":v1.6.6")


def test_defaults_fill_what_the_stack_leaves_out() -> None:
    minimal = {"platform": "docker", "versions": stack_config("dev")["versions"]}
    settings = parse_settings(minimal)
    assert isinstance(settings, DevSettings)
    assert settings.docker.ports.cas == 50051
    assert settings.docker.ports.scheduler == 50052
    assert settings.docker.ports.minio_console is None
    assert settings.docker.wipe_volumes_on_destroy is False
    assert settings.workers.count == 3


def test_values_set_as_strings_by_the_cli_are_coerced() -> None:
    settings = parse_settings(with_value(stack_config("dev"), "workers.count", "5"))
    assert settings.workers.count == 5


@pytest.mark.parametrize("size, expected", [("10gb", 10 * 1000**3), ("500mb", 500 * 1000**2), ("1tb", 1000**4)])
def test_size_bytes(size: str, expected: int) -> None:
    assert size_bytes(size) == expected


# (config path, bad value, the key named in the error, a fragment of the explanation)
BAD_VALUES: list[tuple[str, Any, str, str]] = [
    ("platform", "gcp", "platform", "'docker' or 'aws'"),
    ("workers.count", 0, "workers.count", "greater than or equal to 1"),
    ("workers.count", -2, "workers.count", "greater than or equal to 1"),
    ("workers.count", "three", "workers.count", "valid integer"),
    ("workers.count", 1001, "workers.count", "less than or equal to 1000"),
    ("workers.fastStoreSize", "10GiB", "workers.fastStoreSize", "kb, mb, gb or tb"),
    ("workers.fastStoreSize", "0gb", "workers.fastStoreSize", "kb, mb, gb or tb"),
    ("nativelink.casMaxBytes", 1000, "nativelink.casMaxBytes", "valid string"),
    ("versions.nativelink", "ghcr.io/tracemachina/nativelink:latest", "versions.nativelink", "floating tag"),
    ("versions.nativelink", "ghcr.io/tracemachina/nativelink", "versions.nativelink", "no tag or digest"),
    ("versions.nativelink", "ghcr.io/tracemachina/nativelink:v1.6.5", "versions.nativelink", "older than v1.6.6"),
    ("versions.redis", "Redis:7", "versions.redis", "not an image reference"),
    ("versions.juicefsCsiChart", "latest", "versions.juicefsCsiChart", "should match pattern"),
    ("docker.ports.cas", 0, "docker.ports.cas", "greater than or equal to 1"),
    ("docker.ports.scheduler", 70000, "docker.ports.scheduler", "less than or equal to 65535"),
    ("docker.ports.scheduler", 50061, "docker.ports.scheduler", "worker API port"),
    ("docker.ports.scheduler", 50051, "docker.ports.scheduler", "already used by docker.ports.cas"),
    ("docker.hostMountDir", "relative/dir", "docker.hostMountDir", "should match pattern"),
    ("docker.wipeVolumesOnDestroy", "sometimes", "docker.wipeVolumesOnDestroy", "valid boolean"),
    ("juicefs.volumeName", "my_volume", "juicefs.volumeName", "should match pattern"),
    ("juicefs.bucketName", "Upper_Case", "juicefs.bucketName", "not a bucket name: 3 to 63"),
    ("juicefs.bucketName", "cas..store", "juicefs.bucketName", "no dot next to another dot"),
    ("juicefs.bucketName", "192.168.10.20", "juicefs.bucketName", "may not look like an IP address"),
    ("juicefs.bucketName", "xn--cas", "juicefs.bucketName", "S3 reserves the prefixes"),
    ("juicefs.bucketName", "cas-s3alias", "juicefs.bucketName", "S3 reserves the prefixes"),
    ("juicefs.bucketName", "cas-an", "juicefs.bucketName", "S3 reserves the prefixes"),
    ("workers.fastStoreSize", "20000000000tb", "workers.fastStoreSize", "more than NativeLink can count"),
    ("versions.redis", "redis:alpine", "versions.redis", "tag without a version number"),
    ("docker.networkName", "bridge", "docker.networkName", "one of Docker's own networks"),
    ("docker.hostMountDir", "/mnt", "docker.hostMountDir", "a directory of its own"),
    ("docker.networkName", "host", "docker.networkName", "one of Docker's own networks"),
    ("juicefs.compress", "gzip", "juicefs.compress", "'none', 'lz4' or 'zstd'"),
    ("juicefs.trashDays", -1, "juicefs.trashDays", "greater than or equal to 0"),
    ("juicefs.blockSizeKib", 32, "juicefs.blockSizeKib", "greater than or equal to 64"),
    ("nativelink.logLevel", "verbose", "nativelink.logLevel", "'error', 'warn', 'info', 'debug' or 'trace'"),
    ("workers.unknownKnob", 1, "workers.unknownKnob", "unknown setting"),
    ("juicefs.encrypt", True, "juicefs.encrypt", "not supported on platform 'docker'"),
    (
        "versions.nativelinkWorkerInit",
        "ghcr.io/tracemachina/nativelink-worker-init:v1.6.7",
        "versions.nativelinkWorkerInit",
        "workers must run the same release",
    ),
]


@pytest.mark.parametrize("path, value, key, explanation", BAD_VALUES, ids=[f"{p}={v!r}" for p, v, _, _ in BAD_VALUES])
def test_bad_value_is_refused_naming_the_key(path: str, value: Any, key: str, explanation: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_settings(with_value(stack_config("dev"), path, value))
    message = str(raised.value)
    assert f"{PROJECT}:{key}" in message
    assert explanation in message
    if "unknown" not in explanation:
        assert repr(value) in message or str(value) in message


# Prod: (config path, bad value, the key named in the error, a fragment of the explanation)
PROD_BAD_VALUES: list[tuple[str, Any, str, str]] = [
    ("aws.subnetIds", ["subnet-0123456789abcdef0"] * 2, "aws.subnetIds", "more than once"),
    ("aws.replicaBucketName", "nativelink-cas-prod", "aws.replicaBucketName", "equals juicefs.bucketName"),
    ("aws.replicaBucketName", "a..b", "aws.replicaBucketName", "no dot next to another dot"),
    # The default, "<bucketName>-<replicaRegion>", would be 64 characters long.
    ("juicefs.bucketName", "b" * 54, "aws.replicaBucketName", "the default, not a bucket name"),
    # And names what an earlier release made of it (cut to 63), for a stack whose replica exists.
    ("juicefs.bucketName", "b" * 54, "aws.replicaBucketName", f"to '{'b' * 54}-us-west'"),
    ("aws.rds.caBundleFile", "../outside.pem", "aws.rds.caBundleFile", "outside the repository"),
    ("aws.memorydb", {"engine": "valkey"}, "aws.memorydb.engineVersion", "Valkey from 7.2"),
]


@pytest.mark.parametrize(
    "path, value, key, explanation", PROD_BAD_VALUES, ids=[f"{p}={str(v)[:20]}" for p, v, _, _ in PROD_BAD_VALUES]
)
def test_bad_prod_value_is_refused_naming_the_key(path: str, value: Any, key: str, explanation: str) -> None:
    config = with_value(prod_config(), "juicefs.bucketName", "nativelink-cas-prod")
    config = with_value(config, "aws.metadataEngine", "postgres")
    with pytest.raises(ConfigError) as raised:
        parse_settings(with_value(config, path, value))
    message = str(raised.value)
    assert f"{PROJECT}:{key}" in message
    assert explanation in message


def test_memorydb_without_tls_is_refused_even_with_the_override() -> None:
    config = with_value(prod_config(), "aws.metadataEngine", "memorydb")
    config = with_value(config, "aws.metadataTls", False)
    config["allowInsecure"] = ["plaintext-metadata"]
    with pytest.raises(ConfigError, match=r"nativelink-juicefs:aws.metadataTls = False: refused with aws.metadataEn"):
        parse_settings(config)
    assert isinstance(parse_settings(with_value(config, "aws.metadataEngine", "redis")), ProdSettings)


def test_a_missing_metadata_engine_is_never_guessed() -> None:
    # Earlier releases defaulted to ElastiCache: a stack that relied on that must say so, not move.
    config = prod_config()
    del config["aws"]["metadataEngine"]
    with pytest.raises(ConfigError) as raised:
        parse_settings(config)
    message = str(raised.value)
    assert "nativelink-juicefs:aws.metadataEngine: missing; set it to 'memorydb' for a new stack" in message
    assert "'redis' (ElastiCache, what earlier releases chose when it was unset)" in message


def test_the_default_replica_bucket_is_named_after_the_bucket_and_region() -> None:
    settings = parse_settings(prod_config())
    assert isinstance(settings, ProdSettings) and settings.aws.replica_bucket_name is None
    assert settings.replica_bucket_name() == f"{settings.juicefs.bucket_name}-{settings.aws.replica_region}"


def test_missing_versions_block_says_how_to_set_it() -> None:
    config = stack_config("dev")
    del config["versions"]
    with pytest.raises(ConfigError, match=r"nativelink-juicefs:versions: missing; set it with `pulumi config set"):
        parse_settings(config)


def test_every_problem_is_reported_at_once() -> None:
    config = with_value(with_value(stack_config("dev"), "workers.count", 0), "juicefs.compress", "gzip")
    with pytest.raises(ConfigError, match=r"2 problem\(s\)"):
        parse_settings(config)


def test_aws_platform_needs_aws_settings() -> None:
    with pytest.raises(ConfigError) as error:
        parse_settings(with_value(stack_config("dev"), "platform", "aws"))
    message = str(error.value)
    assert "nativelink-juicefs:aws: missing; required when platform is 'aws': set aws.region" in message
    # One settings model per platform: what only the other platform reads is refused by name.
    assert "nativelink-juicefs:docker: read only on platform 'docker', and this stack's platform is 'aws'" in message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, "nativelink-juicefs:platform: missing; set it to 'docker' or 'aws'"),
        # A typo is a typo, not the other platform's key.
        ({"platform": "docker", "wrokers": {}}, "nativelink-juicefs:wrokers: unknown setting"),
        ({"platform": "gcp"}, "nativelink-juicefs:platform = 'gcp': not a platform; set it to 'docker' or 'aws'"),
    ],
)
def test_the_platform_chooses_the_settings(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_settings(raw)
    assert expected in str(error.value)
    assert isinstance(parse_settings(stack_config("dev")), DevSettings)
    assert isinstance(stack_settings("prod"), ProdSettings)


def test_unknown_top_level_key_is_refused_before_validation() -> None:
    def get_object(key: str) -> Any:
        return stack_config("dev").get(key)

    keys = {f"{PROJECT}:{key}": "x" for key in stack_config("dev")} | {f"{PROJECT}:worker": "{}"}
    with pytest.raises(ConfigError, match="unknown key\\(s\\) nativelink-juicefs:worker;"):
        load_settings(get_object, keys)


def test_load_settings_reads_each_top_level_key() -> None:
    config = stack_config("dev")
    settings = load_settings(config.get, {f"{PROJECT}:{key}": "x" for key in config})
    assert isinstance(settings, DevSettings)
    assert settings == parse_settings(config)
