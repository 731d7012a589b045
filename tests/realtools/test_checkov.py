"""A third-party scanner over the prod stack's Kubernetes objects: checkov's CKV_K8S rules.

The objects are the ones the program registers (under mocks), written out as manifests. Every rule
must pass except those listed in SKIPS, each for the resources named there with a one-line reason;
a skip that no longer matches a failure fails the test too, so the list cannot rot.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.mocks import RecordingMocks, reveal
from tests.stacks import ROOT, build, stack_settings

CHECKOV = Path(os.environ.get("CHECKOV", ROOT / ".venv-checkov" / "bin" / "checkov"))
ADMIN = ("Job.kube-system.juicefs-admin-forget-stored-keys", "CronJob.kube-system.juicefs-admin-metadata-dump")
WORKER = "Deployment.nativelink.nativelink-worker"
CAS = "StatefulSet.nativelink.nativelink-cas"
EVERY_WORKLOAD = "*"

# check id -> (resources it is skipped for, why)
SKIPS: dict[str, tuple[tuple[str, ...], str]] = {
    "CKV_K8S_15": (
        (EVERY_WORKLOAD,),
        "images are pinned tags promoted as a set; Always ties every pod start to the registry",
    ),
    "CKV_K8S_43": ((EVERY_WORKLOAD,), "versions are pinned by tag (digests are accepted too) and promoted dev to prod"),
    "CKV_K8S_22": ((WORKER,), "build actions write where their toolchain expects (HOME, /tmp, caches)"),
    "CKV_K8S_23": ((WORKER,), "build actions run as root, as toolchain images expect"),
    "CKV_K8S_40": ((WORKER,), "the worker runs as root (CKV_K8S_23), not a high uid"),
    "CKV_K8S_25": ((WORKER, CAS), "workers keep four file capabilities for actions; the CAS init container only CHOWN"),
    "CKV_K8S_35": (ADMIN, "juicefs reads META_PASSWORD and the AWS key from its environment only"),
}


def integral(value: Any) -> Any:
    """The manifest as Kubernetes sees it: the engine's numbers are floats, the API's integers are ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integral(item) for item in value]
    return value


def write_manifests(mocks: RecordingMocks, directory: Path) -> int:
    count = 0
    for record in mocks.resources:
        if not record.custom or not record.typ.startswith("kubernetes:") or "helm.sh" in record.typ:
            continue
        manifest = integral(reveal(record.inputs))
        if "kind" not in manifest:
            continue  # a read (StorageClass.get), not an object the program creates
        manifest.setdefault("metadata", {}).setdefault("name", record.name)
        (directory / f"{count:03d}-{record.name}.yaml").write_text(yaml.safe_dump(manifest))
        count += 1
    return count


def failures(directory: Path) -> set[tuple[str, str]]:
    if not CHECKOV.exists():
        pytest.fail(f"checkov is missing at {CHECKOV}; `make test` installs it", pytrace=False)
    result = subprocess.run(
        [str(CHECKOV), "-d", str(directory), "--framework", "kubernetes", "-o", "json", "--quiet", "--compact"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # checkov exits 1 when a check fails; anything else is the scanner failing.
    assert result.returncode in (0, 1), result.stderr[-2000:]
    reports = json.loads(result.stdout)
    found = set()
    for report in reports if isinstance(reports, list) else [reports]:
        for failed in report.get("results", {}).get("failed_checks", []):
            found.add((failed["check_id"], failed["resource"]))
    return found


def skipped(check_id: str, resource: str) -> bool:
    resources, _ = SKIPS.get(check_id, ((), ""))
    return EVERY_WORKLOAD in resources or resource in resources


def test_prod_manifests_pass_checkov_but_for_justified_skips(mocks: RecordingMocks, tmp_path: Path) -> None:
    build(mocks, stack_settings("prod", aws={"metadataEngine": "postgres"}, kubernetes={"autoscaleMaxWorkers": 10}))
    assert write_manifests(mocks, tmp_path) > 20
    found = failures(tmp_path)
    assert found, "checkov reported nothing: the manifests were not scanned"
    unjustified = sorted(failure for failure in found if not skipped(*failure))
    assert not unjustified, unjustified
    for check_id, (resources, _) in SKIPS.items():
        for resource in resources:
            matches = [f for f in found if f[0] == check_id and (resource == EVERY_WORKLOAD or f[1] == resource)]
            assert matches, f"stale skip: {check_id} no longer fails for {resource}"


def test_a_privileged_container_is_caught(mocks: RecordingMocks, tmp_path: Path) -> None:
    """The scanner sees what it should: a scheduler turned privileged fails a rule no skip covers."""
    build(mocks, stack_settings("prod"))
    record = mocks.one("kubernetes:apps/v1:Deployment", "nativelink-scheduler")
    record.inputs["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    write_manifests(mocks, tmp_path)
    found = failures(tmp_path)
    assert ("CKV_K8S_16", "Deployment.nativelink.nativelink-scheduler") in found
