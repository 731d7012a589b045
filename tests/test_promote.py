"""`python -m components.promote`: copying the version set from dev to prod, on temporary stack files."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from components import promote
from components.settings import PROJECT, parse_settings
from tests.stacks import project_config

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = f"{PROJECT}:versions"

# The versions block of PROD_BEFORE, below.
PROD_BLOCK_BEFORE = """\
    # The scheduler, CAS and worker image.
    nativelink: ghcr.io/tracemachina/nativelink:v1.6.6   # first release with the new config format
    juicefs: "juicedata/mount:ce-v1.4.1"
    redis: redis:7.4.1-alpine
    minio: minio/minio:RELEASE.2025-01-01T00-00-00Z
    retired: alpine:3.20
    busybox: busybox:1.36.1
"""

# A stand-in for Pulumi.prod.yaml (owned by the prod stack's author): valid for the program, two
# releases behind dev, without juicefsCsiChart, with an extra key, comments in and around the
# versions block, a quoted value, a secret and a sequence in Pulumi's own indentation.
PROD_BEFORE = f"""\
# Prod: AWS services, NativeLink on Kubernetes.
secretsprovider: passphrase
config:
  aws:region: eu-west-1
  nativelink-juicefs:platform: aws
  # Promoted from dev with `python -m components.promote dev prod`; do not edit by hand.
  nativelink-juicefs:versions:
{PROD_BLOCK_BEFORE}  # AWS placement; the ids are examples.
  nativelink-juicefs:aws:
    region: eu-west-1
    replicaRegion: eu-central-1
    vpcId: vpc-0123456789abcdef0
    subnetIds:
      - subnet-0123456789abcdef0
      - subnet-0123456789abcdef1
    nodeSecurityGroupId: sg-0123456789abcdef0
    metadataEngine: memorydb
  nativelink-juicefs:juicefs:
    encrypt: true
  nativelink-juicefs:kubernetes:
    clientNamespaces: [ci]
    clientCidrs: ["10.20.30.0/24"]
  nativelink-juicefs:tls:
    clients: [ci]
  nativelink-juicefs:kubeconfig:
    secure: v1:AAABAFakeCiphertextForTestsOnly0000000000000000000000000000000000000000000000000000000
# End of the prod stack file.
"""

# Dev's versions in prod's layout: same comments, same quoting, `retired` gone, the new key last.
PROD_BLOCK_AFTER = """\
    # The scheduler, CAS and worker image.
    nativelink: ghcr.io/tracemachina/nativelink:v1.6.6   # first release with the new config format
    juicefs: "juicedata/mount:ce-v1.4.2"
    redis: redis:7.4.2-alpine
    minio: minio/minio:RELEASE.2025-04-22T22-12-26Z
    busybox: busybox:1.37.0
    nativelinkWorkerInit: ghcr.io/tracemachina/nativelink-worker-init:v1.6.6
    worker: gcc:14.2.0
    juicefsCsiChart: 0.32.4
"""

DEV_VERSIONS_BLOCK = """\
  nativelink-juicefs:versions:
    nativelink: ghcr.io/tracemachina/nativelink:v1.6.6
    nativelinkWorkerInit: ghcr.io/tracemachina/nativelink-worker-init:v1.6.6
    worker: gcc:14.2.0
    juicefs: juicedata/mount:ce-v1.4.2
    redis: redis:7.4.2-alpine
    minio: minio/minio:RELEASE.2025-04-22T22-12-26Z
    busybox: busybox:1.37.0
    juicefsCsiChart: 0.32.4
"""

# The dev file the tests run on: the repository's own Pulumi.dev.yaml when its versions block is the
# one these tests expect, otherwise (after a version bump on main) a copy with that block restored,
# so the expectations below stay fixed.
DEV_TEXT = (ROOT / "Pulumi.dev.yaml").read_text(encoding="utf-8")
_DEV_BLOCK_RE = re.compile(r"^  nativelink-juicefs:versions:\n(?:    .*\n)+", re.MULTILINE)
DEV_TEXT = _DEV_BLOCK_RE.sub(lambda _: DEV_VERSIONS_BLOCK, DEV_TEXT, count=1)


@pytest.fixture
def stacks(tmp_path: Path) -> Path:
    """A project directory with temporary copies of the dev and prod stack files."""
    (tmp_path / "Pulumi.dev.yaml").write_text(DEV_TEXT, encoding="utf-8")
    write_prod(tmp_path, PROD_BEFORE)
    return tmp_path


def run(directory: Path, *args: str) -> int:
    return promote.main(["dev", "prod", "--dir", str(directory), *args])


def config_of(text: str) -> dict[str, Any]:
    document = YAML(typ="safe").load(text)
    config = document.get("config") or {}
    assert isinstance(config, dict)
    return config


def prod_file(directory: Path) -> Path:
    return directory / "Pulumi.prod.yaml"


def prod_text(directory: Path) -> str:
    return prod_file(directory).read_text(encoding="utf-8")


def write_prod(directory: Path, text: str) -> None:
    prod_file(directory).write_text(text, encoding="utf-8")


def set_dev_version(directory: Path, line: str, replacement: str) -> None:
    path = directory / "Pulumi.dev.yaml"
    text = path.read_text(encoding="utf-8")
    assert line in text, line
    path.write_text(text.replace(line, replacement, 1), encoding="utf-8")


# --- promotion ---------------------------------------------------------------------------------------


def test_promotion_copies_exactly_the_versions(stacks: Path) -> None:
    assert run(stacks) == promote.EXIT_OK

    dev, prod_before, prod_after = config_of(DEV_TEXT), config_of(PROD_BEFORE), config_of(prod_text(stacks))
    assert prod_after[VERSIONS] == dev[VERSIONS]
    assert list(prod_after[VERSIONS]) == [
        "nativelink",
        "juicefs",
        "redis",
        "minio",
        "busybox",
        "nativelinkWorkerInit",
        "worker",
        "juicefsCsiChart",
    ]
    others = {key: value for key, value in prod_before.items() if key != VERSIONS}
    assert {key: value for key, value in prod_after.items() if key != VERSIONS} == others
    assert list(prod_after) == list(prod_before)  # the block keeps its place among the config keys


def test_promotion_keeps_everything_outside_the_block_byte_identical(stacks: Path) -> None:
    run(stacks)

    after = prod_text(stacks)
    head, _, tail = PROD_BEFORE.partition(PROD_BLOCK_BEFORE)
    assert after.startswith(head)
    assert after.endswith(tail)
    assert after == head + PROD_BLOCK_AFTER + tail


def test_promotion_keeps_comments_order_and_quoting_inside_the_block(stacks: Path) -> None:
    run(stacks)

    after = prod_text(stacks)
    assert "    # The scheduler, CAS and worker image.\n    nativelink:" in after
    assert "v1.6.6   # first release with the new config format\n" in after
    assert '    juicefs: "juicedata/mount:ce-v1.4.2"\n' in after


def test_promoted_prod_file_is_still_valid_for_the_program(stacks: Path) -> None:
    run(stacks)

    settings = parse_settings(project_config(config_of(prod_text(stacks))))
    assert settings.versions.juicefs_csi_chart == "0.32.4"
    assert settings.versions.redis == "redis:7.4.2-alpine"


def test_the_diff_of_the_destination_is_printed(stacks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(stacks) == promote.EXIT_OK

    out, err = capsys.readouterr()
    assert out == promote.unified_diff(PROD_BEFORE, prod_text(stacks), "Pulumi.prod.yaml")
    assert out.startswith("--- a/Pulumi.prod.yaml\n+++ b/Pulumi.prod.yaml\n@@ ")
    assert "-    redis: redis:7.4.1-alpine\n" in out
    assert "+    redis: redis:7.4.2-alpine\n" in out
    assert "-    retired: alpine:3.20\n" in out
    assert "+    juicefsCsiChart: 0.32.4\n" in out
    assert "vpcId" not in out  # only the block and a few lines of context
    assert "(8 key(s) changed)" in err


def test_promoting_twice_changes_nothing_the_second_time(stacks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(stacks)
    first = prod_text(stacks)
    capsys.readouterr()

    assert run(stacks) == promote.EXIT_OK
    out, err = capsys.readouterr()
    assert prod_text(stacks) == first
    assert out == ""
    assert "nothing to do" in err


def test_a_missing_versions_block_in_the_destination_is_added(stacks: Path) -> None:
    without = PROD_BEFORE.replace(PROD_BLOCK_BEFORE, "").replace("  nativelink-juicefs:versions:\n", "")
    without = without.replace(
        "  # Promoted from dev with `python -m components.promote dev prod`; do not edit by hand.\n", ""
    )
    write_prod(stacks, without)

    assert run(stacks, "--check") == promote.EXIT_BEHIND
    assert run(stacks) == promote.EXIT_OK
    after = prod_text(stacks)
    assert config_of(after)[VERSIONS] == config_of(DEV_TEXT)[VERSIONS]
    # Appended at the end of `config:`, before the file's closing comment.
    assert after == without.replace(
        "# End of the prod stack file.\n", DEV_VERSIONS_BLOCK + "# End of the prod stack file.\n"
    )


def test_indentless_sequences_are_kept(stacks: Path) -> None:
    indentless = PROD_BEFORE.replace("      - subnet-", "    - subnet-")
    write_prod(stacks, indentless)

    assert run(stacks) == promote.EXIT_OK
    assert prod_text(stacks) == indentless.replace(PROD_BLOCK_BEFORE, PROD_BLOCK_AFTER)


def test_a_file_ruamel_cannot_reproduce_is_refused_not_reformatted(
    stacks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = PROD_BEFORE.replace("    encrypt: true\n", "    encrypt:    true\n")
    write_prod(stacks, odd)

    assert run(stacks) == promote.EXIT_REFUSED
    assert prod_text(stacks) == odd
    assert "cannot be rewritten without reformatting" in capsys.readouterr().err


def test_file_permissions_are_kept(stacks: Path) -> None:
    path = prod_file(stacks)
    path.chmod(0o640)
    run(stacks)
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in stacks.iterdir()) == ["Pulumi.dev.yaml", "Pulumi.prod.yaml"]


# --- --check -----------------------------------------------------------------------------------------


def test_check_fails_when_prod_is_behind_and_writes_nothing(stacks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = prod_file(stacks).stat()

    assert run(stacks, "--check") == promote.EXIT_BEHIND

    assert prod_text(stacks) == PROD_BEFORE
    assert prod_file(stacks).stat().st_mtime_ns == before.st_mtime_ns
    out = capsys.readouterr().out
    assert out.startswith("prod is behind dev on 8 version key(s):\n")
    assert "  nativelink-juicefs:versions.redis: prod has 'redis:7.4.1-alpine'; dev has 'redis:7.4.2-alpine'\n" in out
    assert "  nativelink-juicefs:versions.juicefsCsiChart: missing in prod; dev has '0.32.4'\n" in out
    assert "  nativelink-juicefs:versions.retired: only in prod ('alpine:3.20'); promoting removes it\n" in out
    assert "versions.nativelink:" not in out  # already equal
    assert "python -m components.promote dev prod\n" in out


def test_check_passes_after_promotion(stacks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(stacks, "--check") == promote.EXIT_BEHIND
    assert run(stacks) == promote.EXIT_OK
    capsys.readouterr()

    assert run(stacks, "--check") == promote.EXIT_OK
    assert capsys.readouterr().out == "prod has dev's versions.\n"


def test_check_ignores_key_order_and_quoting(stacks: Path) -> None:
    same = PROD_BEFORE.replace(PROD_BLOCK_BEFORE, "".join(reversed(DEV_VERSIONS_BLOCK.splitlines(True)[1:])))
    same = same.replace("busybox: busybox:1.37.0", "busybox: 'busybox:1.37.0'")
    write_prod(stacks, same)

    assert run(stacks, "--check") == promote.EXIT_OK
    assert run(stacks) == promote.EXIT_OK
    assert prod_text(stacks) == same


# --- refusals ----------------------------------------------------------------------------------------

REFUSALS = {
    "floating tag": (
        "    redis: redis:7.4.2-alpine\n",
        "    redis: redis:latest\n",
        "nativelink-juicefs:versions.redis = 'redis:latest': 'redis:latest' uses the floating tag 'latest'",
    ),
    "missing tag": (
        "    busybox: busybox:1.37.0\n",
        "    busybox: busybox\n",
        "nativelink-juicefs:versions.busybox = 'busybox': 'busybox' has no tag or digest",
    ),
    "unknown key": (
        "    busybox: busybox:1.37.0\n",
        "    busybox: busybox:1.37.0\n    postgres: postgres:16.4\n",
        "nativelink-juicefs:versions.postgres: unknown setting",
    ),
    "snake_case key": (
        "    juicefsCsiChart: 0.32.4\n",
        "    juicefs_csi_chart: 0.32.4\n",
        "nativelink-juicefs:versions.juicefs_csi_chart: unknown setting",
    ),
    "missing key": (
        "    juicefsCsiChart: 0.32.4\n",
        "",
        "nativelink-juicefs:versions.juicefsCsiChart: missing",
    ),
    "bad chart version": (
        "    juicefsCsiChart: 0.32.4\n",
        "    juicefsCsiChart: 0.32\n",
        "nativelink-juicefs:versions.juicefsCsiChart = 0.32:",
    ),
    "nativelink too old": (
        "    nativelink: ghcr.io/tracemachina/nativelink:v1.6.6\n",
        "    nativelink: ghcr.io/tracemachina/nativelink:v1.5.0\n",
        "nativelink-juicefs:versions.nativelink = 'ghcr.io/tracemachina/nativelink:v1.5.0': older than v1.6.6",
    ),
    "missing versions block": (
        DEV_VERSIONS_BLOCK,
        "",
        "Pulumi.dev.yaml: nativelink-juicefs:versions: missing; nothing to promote",
    ),
    "versions not a mapping": (
        DEV_VERSIONS_BLOCK,
        "  nativelink-juicefs:versions: latest\n",
        "nativelink-juicefs:versions = 'latest': must be a mapping",
    ),
}


@pytest.mark.parametrize("check", [False, True], ids=["promote", "check"])
@pytest.mark.parametrize(("line", "replacement", "message"), REFUSALS.values(), ids=REFUSALS.keys())
def test_invalid_source_versions_are_refused(
    stacks: Path,
    capsys: pytest.CaptureFixture[str],
    line: str,
    replacement: str,
    message: str,
    check: bool,
) -> None:
    set_dev_version(stacks, line, replacement)

    assert run(stacks, *(["--check"] if check else [])) == promote.EXIT_REFUSED

    out, err = capsys.readouterr()
    assert message in err
    assert out == ""
    assert prod_text(stacks) == PROD_BEFORE


def test_every_problem_is_listed_at_once(stacks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    set_dev_version(stacks, "    redis: redis:7.4.2-alpine\n", "    redis: redis:latest\n")
    set_dev_version(stacks, "    busybox: busybox:1.37.0\n", "    busybox: busybox@sha256:abc\n")

    assert run(stacks) == promote.EXIT_REFUSED
    err = capsys.readouterr().err
    assert "refusing to promote (2 problem(s))" in err
    assert "nativelink-juicefs:versions.redis = 'redis:latest'" in err
    assert "nativelink-juicefs:versions.busybox = 'busybox@sha256:abc'" in err


def test_a_digest_pin_is_accepted(stacks: Path) -> None:
    digest = "busybox@sha256:" + "0" * 64
    set_dev_version(stacks, "    busybox: busybox:1.37.0\n", f"    busybox: {digest}\n")

    assert run(stacks) == promote.EXIT_OK
    assert config_of(prod_text(stacks))[VERSIONS]["busybox"] == digest


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["dev", "prod"], "Pulumi.prod.yaml: not found"),
        (["dev", "dev"], "source and destination are the same stack"),
        (["dev", "../prod"], "'../prod' is not a stack name"),
        (["staging", "prod"], "Pulumi.staging.yaml: not found"),
    ],
)
def test_bad_stacks_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "Pulumi.dev.yaml").write_text(DEV_TEXT, encoding="utf-8")

    assert promote.main([*argv, "--dir", str(tmp_path)]) == promote.EXIT_REFUSED
    assert message in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert promote.main(["dev"]) == promote.EXIT_REFUSED
    assert "usage: python -m components.promote" in capsys.readouterr().err


# --- pure functions and the module entry point ------------------------------------------------------------


def test_version_drift_lists_changed_missing_and_extra_keys() -> None:
    drift = promote.version_drift({"a": "x:1", "b": "y:2"}, {"b": "y:1", "c": "z:1"})
    assert [(d.key, d.source, d.destination) for d in drift] == [
        ("a", "x:1", None),
        ("b", "y:2", "y:1"),
        ("c", None, "z:1"),
    ]
    assert promote.version_drift({"a": "x:1"}, {"a": "x:1"}) == []
    assert [d.key for d in promote.version_drift({"a": "x:1"}, None)] == ["a"]


def test_apply_versions_does_not_write(stacks: Path) -> None:
    destination = promote.load_stack_file(prod_file(stacks))
    source = promote.load_stack_file(stacks / "Pulumi.dev.yaml")
    versions = promote.validate_versions(promote.read_versions(source), "Pulumi.dev.yaml")

    new_text = promote.apply_versions(destination, versions)

    assert new_text == PROD_BEFORE.replace(PROD_BLOCK_BEFORE, PROD_BLOCK_AFTER)
    assert prod_text(stacks) == PROD_BEFORE


def test_runs_as_a_module(stacks: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "components.promote", "dev", "prod", "--check", "--dir", str(stacks)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == promote.EXIT_BEHIND, result.stderr
    assert "prod is behind dev" in result.stdout


def without_versions_block(text: str) -> str:
    """The text minus the versions key and the lines indented under it."""
    kept, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith(f"  {VERSIONS}:"):
            inside = True
            continue
        if inside and (line.startswith("    ") or not line.strip()):
            continue
        inside = False
        kept.append(line)
    return "".join(kept)


def test_without_versions_block_helper() -> None:
    assert without_versions_block(PROD_BEFORE) == PROD_BEFORE.replace(
        "  nativelink-juicefs:versions:\n" + PROD_BLOCK_BEFORE, ""
    )


def test_the_real_prod_file_can_be_promoted_without_collateral_changes(tmp_path: Path) -> None:
    dev_text = (ROOT / "Pulumi.dev.yaml").read_text(encoding="utf-8")
    (tmp_path / "Pulumi.dev.yaml").write_text(dev_text, encoding="utf-8")
    shutil.copy(prod_file(ROOT), prod_file(tmp_path))
    before = prod_text(tmp_path)

    assert run(tmp_path) == promote.EXIT_OK

    after = prod_text(tmp_path)
    assert config_of(after)[VERSIONS] == config_of(dev_text)[VERSIONS]
    assert without_versions_block(after) == without_versions_block(before)
