"""`make dev-up` names what the machine lacks, with where to get it, before running anything."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def dev_up(path: str, home: Path) -> subprocess.CompletedProcess[str]:
    make = shutil.which("make")
    assert make is not None
    return subprocess.run(
        [make, "--no-print-directory", "-C", str(ROOT), "dev-up"],
        env={"PATH": path, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stub(bin_dir: Path, name: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text("#!/bin/sh\necho stub-called >&2\nexit 3\n")
    (bin_dir / name).chmod(0o755)


@pytest.mark.parametrize(
    ("present", "missing", "link"),
    [
        ((), "The Pulumi CLI is missing", "https://www.pulumi.com/docs/install/"),
        (("pulumi",), "Docker is missing", "https://docs.docker.com/engine/install/"),
    ],
)
def test_dev_up_names_what_is_missing(tmp_path: Path, present: tuple[str, ...], missing: str, link: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in present:
        stub(bin_dir, name)
    result = dev_up(str(bin_dir), tmp_path)
    assert result.returncode != 0
    assert missing in result.stderr and link in result.stderr, result.stderr
    assert "stub-called" not in result.stderr
    assert not (tmp_path / ".pulumi-nativelink-juicefs").exists()


def test_dev_up_runs_pulumi_once_both_are_there(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    for name in ("pulumi", "docker"):
        stub(bin_dir, name)
    # mkdir comes from the system; the stub pulumi fails, which is as far as this test goes.
    result = dev_up(f"{bin_dir}:/usr/bin:/bin", tmp_path)
    assert "stub-called" in result.stderr, result.stderr
    assert "missing" not in result.stderr
