"""How __main__.py reads the stack config: plain settings stay plain, credentials stay secret."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from typing import Any

import pulumi
import pytest

from components.settings import PROJECT, ConfigError
from components.stack import all_config, read_secrets, read_settings
from tests.mocks import RecordingMocks
from tests.stacks import prod_config, stack_config


@pytest.fixture
def engine_config() -> Iterator[None]:
    """Config handed to the program as the language host does: every key, and which ones are secret."""
    yield
    pulumi.runtime.set_all_config({}, [])


def load(config: dict[str, Any], secret: Sequence[str] = ()) -> None:
    values = {f"{PROJECT}:{key}": v if isinstance(v, str) else json.dumps(v) for key, v in config.items()}
    pulumi.runtime.set_all_config(values, [f"{PROJECT}:{key}" for key in secret])


def test_the_dev_stack_reads_back(engine_config: None) -> None:
    load(stack_config("dev"))
    settings = read_settings(pulumi.Config(PROJECT), all_config())
    assert settings.platform == "docker"


def test_secrets_are_read_as_secrets(engine_config: None, mocks: RecordingMocks) -> None:
    load({**prod_config(), "juicefsPassphrase": "pass-4711"}, secret=["juicefsPassphrase"])
    read_settings(pulumi.Config(PROJECT), all_config())
    secrets = read_secrets(pulumi.Config(PROJECT))
    assert secrets.juicefs_passphrase is not None
    assert asyncio.get_event_loop().run_until_complete(secrets.juicefs_passphrase.is_secret())
    assert secrets.kubeconfig is None


@pytest.mark.parametrize("key", ["kubeconfig", "juicefsRsaKey", "juicefsPassphrase"])
def test_a_credential_stored_in_plain_text_is_refused(engine_config: None, key: str) -> None:
    load({**prod_config(), key: "plaintext-credential-0815"})
    with pytest.raises(ConfigError) as error:
        read_settings(pulumi.Config(PROJECT), all_config())
    message = str(error.value)
    assert f"{PROJECT}:{key}" in message
    assert "--secret" in message
    assert "plaintext-credential-0815" not in message


@pytest.mark.parametrize("key", ["aws", "juicefs"])
def test_a_setting_stored_as_a_secret_is_refused(engine_config: None, key: str) -> None:
    """`pulumi config set --secret --path aws.vpcId ...` encrypts the whole `aws` key, which the program
    would then read as plain settings and put into resource inputs and outputs in plain text."""
    load(prod_config(), secret=[key])
    with pytest.raises(ConfigError) as error:
        read_settings(pulumi.Config(PROJECT), all_config())
    message = str(error.value)
    assert f"{PROJECT}:{key}" in message
    assert "without --secret" in message
