"""The stacks as the tests build them: config from the real stack files, built under mocks."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pulumi
import yaml

from components.settings import PROJECT, Settings, parse_settings
from components.stack import SECRET_KEYS, StackSecrets, build_stack
from tests.mocks import RecordingMocks

ROOT = Path(__file__).resolve().parent.parent
# A throwaway CA standing in for the RDS bundle, which the operator commits (README, Prod).
TEST_CA_BUNDLE = "tests/fixtures/test-ca-bundle.pem"


def stack_config(stack: str) -> dict[str, Any]:
    """Pulumi.<stack>.yaml's plain project config, keyed without the `nativelink-juicefs:` prefix."""
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    prefix = f"{PROJECT}:"
    return {
        key.removeprefix(prefix): value
        for key, value in document["config"].items()
        if key.startswith(prefix) and key.removeprefix(prefix) not in SECRET_KEYS
    }


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
    raw = stack_config(stack)
    if stack == "prod":
        raw = merged(raw, {"aws": {"rds": {"caBundleFile": TEST_CA_BUNDLE}}})
    return parse_settings(merged(raw, overrides))


def build(
    mocks: RecordingMocks, settings: Settings, secrets: StackSecrets | None = None
) -> dict[str, pulumi.Output[Any]]:
    """Register the whole stack, as `__main__.py` does, and wait until every resource is registered."""
    exports: dict[str, pulumi.Output[Any]] = {}

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> pulumi.Output[list[Any]]:
        built = build_stack(
            settings, secrets or StackSecrets(), pulumi.ResourceOptions(transformations=[mocks.transformation])
        )
        exports.update({key: pulumi.Output.from_input(value) for key, value in built.items()})
        return pulumi.Output.all(*exports.values())

    program()
    return exports


def build_fresh(settings: Settings, secrets: StackSecrets | None = None) -> RecordingMocks:
    """Build the stack once more in the same test, on a fresh root stack and fresh mocks."""
    pulumi.runtime.reset_options()
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="nativelink-juicefs", stack="test", preview=False)
    build(mocks, settings, secrets)
    return mocks
