"""Every Kubernetes object the prod stack registers is valid against the Kubernetes OpenAPI schema."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from tests.mocks import RecordingMocks, reveal
from tests.stacks import build, stack_settings

# The oldest and the newest Kubernetes minor the prod stack supports (README, Prod).
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")
# Not Kubernetes objects: a Helm release is the provider's own resource.
NOT_OBJECTS = ("kubernetes:helm.sh/v3:Release",)


def kubernetes_objects(mocks: RecordingMocks) -> list[dict[str, Any]]:
    objects = [
        reveal(record.inputs)
        for record in mocks.resources
        if record.custom and record.typ.startswith("kubernetes:") and record.typ not in NOT_OBJECTS
    ]
    return [obj for obj in objects if "kind" in obj]


@pytest.mark.parametrize("engine", ["memorydb", "redis", "postgres"])
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_prod_objects_match_the_schema(mocks: RecordingMocks, engine: str, version: str) -> None:
    build(mocks, stack_settings("prod", aws={"metadataEngine": engine}, kubernetes={"autoscaleMaxWorkers": 10}))
    objects = kubernetes_objects(mocks)
    kinds = {obj["kind"] for obj in objects}
    assert kinds >= {
        "Namespace",
        "Secret",
        "StorageClass",
        "PersistentVolumeClaim",
        "ConfigMap",
        "Service",
        "StatefulSet",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "HorizontalPodAutoscaler",
    }
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_schema_check_rejects_what_kubernetes_would(mocks: RecordingMocks) -> None:
    build(mocks, stack_settings("prod"))
    (statefulset,) = [obj for obj in kubernetes_objects(mocks) if obj["kind"] == "StatefulSet"]
    unknown_field = copy.deepcopy(statefulset)
    unknown_field["spec"]["template"]["spec"]["containers"][0]["mountPropagation"] = "HostToContainer"
    wrong_type = copy.deepcopy(statefulset)
    wrong_type["spec"]["replicas"] = "one"
    for broken in (unknown_field, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)
