"""Previews show exactly what changed: same config, same inputs; one setting, only its resources."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.mocks import RecordingMocks, reveal
from tests.stacks import build, build_fresh, stack_settings

# The version a release bump would bring; the worker-init image moves with it.
NEXT_NATIVELINK = {
    "nativelink": "ghcr.io/tracemachina/nativelink:v1.6.7",
    "nativelinkWorkerInit": "ghcr.io/tracemachina/nativelink-worker-init:v1.6.7",
}
NEXT_JUICEFS = {"juicefs": "juicedata/mount:ce-v1.4.3"}


def snapshot(mocks: RecordingMocks) -> dict[tuple[str, str], Any]:
    """Every resource's inputs, secrets revealed: what a preview diffs."""
    return {(record.typ, record.name): reveal(record.inputs) for record in mocks.resources}


def changed(before: dict[tuple[str, str], Any], after: dict[tuple[str, str], Any]) -> set[str]:
    """Names of the resources added, removed or with different inputs."""
    return {name for (typ, name) in before.keys() | after.keys() if before.get((typ, name)) != after.get((typ, name))}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_same_config_gives_identical_inputs(mocks: RecordingMocks, stack: str) -> None:
    settings = stack_settings(stack)
    build(mocks, settings)
    again = build_fresh(settings)
    assert snapshot(mocks) == snapshot(again)
    assert len(mocks.resources) > 30


def test_dev_worker_count_touches_only_workers(mocks: RecordingMocks) -> None:
    build(mocks, stack_settings("dev"))
    more = build_fresh(stack_settings("dev", workers={"count": 5}))
    assert changed(snapshot(mocks), snapshot(more)) == {
        "nativelink-worker-3",
        "nativelink-worker-3-data",
        "nativelink-worker-4",
        "nativelink-worker-4-data",
    }


def test_prod_worker_count_touches_only_the_worker_deployment(mocks: RecordingMocks) -> None:
    build(mocks, stack_settings("prod"))
    more = build_fresh(stack_settings("prod", workers={"count": 5}))
    assert changed(snapshot(mocks), snapshot(more)) == {"nativelink-worker"}


def test_dev_nativelink_version_touches_only_what_runs_nativelink(mocks: RecordingMocks) -> None:
    build(mocks, stack_settings("dev"))
    bumped = build_fresh(stack_settings("dev", versions=NEXT_NATIVELINK))
    assert changed(snapshot(mocks), snapshot(bumped)) == {
        "nativelink-nativelink-image",
        "nativelink-nativelink-worker-init-image",
        "nativelink-cas",
        "nativelink-scheduler",
        "nativelink-worker-binary",
    }
    # The workers' own inputs stay put; they follow the binary through its container's id, which a
    # replacement changes (mock ids do not, so the link itself is what is checked here).
    for record in bumped.resources:
        if re.fullmatch(r"nativelink-worker-[0-9]+", record.name):
            labels = {label["label"]: label["value"] for label in record.inputs["labels"]}
            assert labels["nativelink-juicefs.worker-binary"] == "nativelink-worker-binary-id"


def test_prod_nativelink_version_touches_only_what_runs_nativelink(mocks: RecordingMocks) -> None:
    build(mocks, stack_settings("prod"))
    bumped = build_fresh(stack_settings("prod", versions=NEXT_NATIVELINK))
    assert changed(snapshot(mocks), snapshot(bumped)) == {
        "nativelink-cas",
        "nativelink-scheduler",
        "nativelink-worker",
    }


def test_prod_juicefs_version_reaches_the_cas_mount_and_nothing_else(mocks: RecordingMocks) -> None:
    """The CSI driver's config carries the client image, and the CAS server rolls so its mount pod is
    recreated with it. The StorageClass stays put: the provisioner copies its parameters into the PV
    once, so an image there would pin the CAS volume to the first release for good."""
    build(mocks, stack_settings("prod"))
    bumped = build_fresh(stack_settings("prod", versions=NEXT_JUICEFS))
    assert changed(snapshot(mocks), snapshot(bumped)) == {"juicefs-csi-driver", "nativelink-cas"}
