"""The stacks as the tests build them: config from the real stack files, built under mocks."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pulumi
import yaml

from components.settings import PROJECT, DevSettings, ProdSettings, Settings, parse_settings
from components.stack import SECRET_KEYS, StackSecrets, build_stack
from tests.mocks import RecordingMocks

ROOT = Path(__file__).resolve().parent.parent
# A throwaway CA standing in for the RDS bundle, which the operator commits (README, Prod).
TEST_CA_BUNDLE = "tests/fixtures/test-ca-bundle.pem"
# What an operator fills in before the first prod `up`: the file lists no client ranges, so that the
# program refuses it until someone chooses.
PROD_CHOICES = {"kubernetes": {"clientCidrs": ["10.20.30.0/24"]}}


def project_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stack file's `config:` as the program reads it: the project's plain keys, without the prefix.

    Secret keys are left out; they reach the program through StackSecrets.
    """
    prefix = f"{PROJECT}:"
    return {
        key.removeprefix(prefix): value
        for key, value in config.items()
        if key.startswith(prefix) and key.removeprefix(prefix) not in SECRET_KEYS
    }


def stack_config(stack: str) -> dict[str, Any]:
    """Pulumi.<stack>.yaml's plain project config, keyed without the `nativelink-juicefs:` prefix."""
    return project_config(yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"])


def prod_config() -> dict[str, Any]:
    """Pulumi.prod.yaml's config with the operator's choices (PROD_CHOICES) filled in."""
    return merged(stack_config("prod"), PROD_CHOICES)


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in, nested mappings key by key."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def stack_settings(stack: str, **overrides: Any) -> Settings:
    """The stack's settings with `overrides` merged in; prod gets the throwaway RDS CA bundle."""
    raw = stack_config(stack)
    if stack == "prod":
        raw = merged(prod_config(), {"aws": {"rds": {"caBundleFile": TEST_CA_BUNDLE}}})
    return parse_settings(merged(raw, overrides))


def dev_settings(**overrides: Any) -> DevSettings:
    """Pulumi.dev.yaml's settings with `overrides` merged in, typed as the dev stack's."""
    settings = stack_settings("dev", **overrides)
    assert isinstance(settings, DevSettings)
    return settings


def prod_stack_settings(**overrides: Any) -> ProdSettings:
    """Pulumi.prod.yaml's settings with `overrides` merged in, typed as the prod stack's."""
    settings = stack_settings("prod", **overrides)
    assert isinstance(settings, ProdSettings)
    return settings


def run_program(program: Callable[[], Any]) -> None:
    """Run `program` as the Pulumi program under the mocks and wait until all it registers is registered."""
    settle: Callable[[Callable[[], Any]], Callable[[], None]] = pulumi.runtime.test
    settle(program)()


def build(
    mocks: RecordingMocks, settings: Settings, secrets: StackSecrets | None = None
) -> dict[str, pulumi.Output[Any]]:
    """Register the whole stack, as `__main__.py` does, and wait until every resource is registered."""
    exports: dict[str, pulumi.Output[Any]] = {}

    def program() -> pulumi.Output[list[Any]]:
        built = build_stack(
            settings, secrets or StackSecrets(), pulumi.ResourceOptions(transformations=[mocks.transformation])
        )
        exports.update({key: pulumi.Output.from_input(value) for key, value in built.items()})
        return pulumi.Output.all(*exports.values())

    run_program(program)
    return exports


def _fresh_mocks() -> RecordingMocks:
    pulumi.runtime.reset_options()
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="nativelink-juicefs", stack="test", preview=False)
    return mocks


def fresh_stack(
    settings: Settings, secrets: StackSecrets | None = None
) -> tuple[RecordingMocks, dict[str, pulumi.Output[Any]]]:
    """Build the stack once more in the same test, on a fresh root stack and fresh mocks."""
    mocks = _fresh_mocks()
    return mocks, build(mocks, settings, secrets)


def build_fresh(settings: Settings, secrets: StackSecrets | None = None) -> RecordingMocks:
    return fresh_stack(settings, secrets)[0]


def fresh_exports(settings: Settings, secrets: StackSecrets | None = None) -> dict[str, pulumi.Output[Any]]:
    return fresh_stack(settings, secrets)[1]


def resolve_exports(exports: Mapping[str, pulumi.Output[Any]]) -> dict[str, tuple[bool, Any]]:
    """Each stack output as (is secret, resolved value)."""

    async def resolve() -> dict[str, tuple[bool, Any]]:
        return {key: (await output.is_secret(), await output.future()) for key, output in exports.items()}

    return asyncio.get_event_loop().run_until_complete(resolve())
