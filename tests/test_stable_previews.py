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


# (stack, the one setting changed, the resources a preview must show as changed)
ONE_SETTING = [
    pytest.param(
        "dev",
        {"workers": {"count": 5}},
        {"nativelink-worker-3", "nativelink-worker-3-data", "nativelink-worker-4", "nativelink-worker-4-data"},
        id="dev-worker-count",
    ),
    pytest.param("prod", {"workers": {"count": 5}}, {"nativelink-worker"}, id="prod-worker-count"),
    pytest.param(
        "dev",
        {"versions": NEXT_NATIVELINK},
        {
            "nativelink-nativelink-image",
            "nativelink-nativelink-worker-init-image",
            "nativelink-cas",
            "nativelink-scheduler",
            "nativelink-worker-binary",
        },
        id="dev-nativelink-version",
    ),
    pytest.param(
        "prod",
        {"versions": NEXT_NATIVELINK},
        {"nativelink-cas", "nativelink-scheduler", "nativelink-worker"},
        id="prod-nativelink-version",
    ),
    # The CSI driver's config carries the client image, and the CAS server rolls so its mount pod is
    # recreated with it. The StorageClass stays put: the provisioner copies its parameters into the PV
    # once, so an image there would pin the CAS volume to the first release for good. The admin runs
    # take the new client too (the stored-keys Job runs again; it changes nothing a second time).
    pytest.param(
        "prod",
        {"versions": NEXT_JUICEFS},
        {"juicefs-csi-driver", "nativelink-cas", "juicefs-admin-forget-stored-keys", "juicefs-admin-metadata-dump"},
        id="prod-juicefs",
    ),
    # A new mount container reaches the running CAS server by propagation: nothing else is replaced.
    pytest.param(
        "dev",
        {"versions": NEXT_JUICEFS},
        {"nativelink-juicefs-image", "nativelink-juicefs-mount"},
        id="dev-juicefs",
    ),
    pytest.param(
        "dev",
        {"docker": {"workerCpus": 4}},
        {"nativelink-worker-0", "nativelink-worker-1", "nativelink-worker-2"},
        id="dev-worker-cpus",
    ),
]


@pytest.mark.parametrize("stack, setting, expected", ONE_SETTING)
def test_one_setting_changes_only_its_resources(
    mocks: RecordingMocks, stack: str, setting: dict[str, Any], expected: set[str]
) -> None:
    build(mocks, stack_settings(stack))
    after = build_fresh(stack_settings(stack, **setting))
    assert changed(snapshot(mocks), snapshot(after)) == expected


def test_dev_workers_follow_the_binary_through_its_container(mocks: RecordingMocks) -> None:
    """A NativeLink bump leaves the workers' own inputs alone; their label names the copy container's id,
    which its replacement changes (mock ids do not, so the link itself is what is checked here)."""
    build(mocks, stack_settings("dev", versions=NEXT_NATIVELINK))
    workers = [record for record in mocks.resources if re.fullmatch(r"nativelink-worker-[0-9]+", record.name)]
    assert len(workers) == 3
    for record in workers:
        labels = {label["label"]: label["value"] for label in record.inputs["labels"]}
        assert labels["nativelink-juicefs.worker-binary"] == "nativelink-worker-binary-id"
