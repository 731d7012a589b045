"""`__main__.py` itself, as `pulumi up` runs it: config in, the whole stack registered."""

from __future__ import annotations

import json
import runpy
from collections.abc import Iterator
from typing import Any

import pulumi
import pytest

from components.settings import PROJECT, ConfigError
from tests.mocks import RecordingMocks
from tests.stacks import ROOT, stack_config


@pytest.fixture
def stack_file_config() -> Iterator[None]:
    yield
    pulumi.runtime.set_all_config({}, [])


def run_main(config: dict[str, Any]) -> None:
    pulumi.runtime.set_all_config(
        {f"{PROJECT}:{key}": value if isinstance(value, str) else json.dumps(value) for key, value in config.items()}
    )

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> None:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")

    program()


def test_main_builds_the_dev_stack_from_its_stack_file(stack_file_config: None, mocks: RecordingMocks) -> None:
    run_main(stack_config("dev"))
    containers = {record.name for record in mocks.of_type("docker:index/container:Container")}
    assert {"nativelink-cas", "nativelink-scheduler", "nativelink-juicefs-mount"} <= containers
    assert sum(name.startswith("nativelink-worker-") and name[-1].isdigit() for name in containers) == 3


def test_main_refuses_bad_config_before_any_resource(stack_file_config: None, mocks: RecordingMocks) -> None:
    config = stack_config("dev")
    config["workers"] = {**config["workers"], "count": 0}
    with pytest.raises(ConfigError, match=r"nativelink-juicefs:workers\.count = 0"):
        run_main(config)
    assert [record for record in mocks.resources if record.custom] == []
