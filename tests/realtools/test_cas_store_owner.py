"""The prod CAS server's store-owner init container, run with real busybox on a store earlier releases left.

Earlier releases ran the CAS server as root; it now runs as an unprivileged user. The init container's
command, taken from the StatefulSet the program registers, runs as root with CHOWN as its only
capability; then NativeLink's filesystem-store steps (v1.6.6 filesystem_store.rs: write to temp, rename
into content, evict by unlink, prune temp, rebuild the executable directory) run as that user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.kubernetes.pods import UNPRIVILEGED_UID
from components.nativelink import layout
from tests.mocks import RecordingMocks
from tests.stacks import build, stack_settings

from .dockerd import static_busybox

ROOT_FILES = ("cas/content/d/old-blob-5", "cas/tmp/d/leftover", "cas/content.exec/d/tool-9", "ac/content/d/entry-3")
# What the CAS server does to its stores, as that user (busybox's sh, mv, rm, mkdir).
STORE_STEPS = """
set -e
cd "$1"
echo blob > cas/tmp/d/new-blob && chmod 0644 cas/tmp/d/new-blob && mv cas/tmp/d/new-blob cas/content/d/new-blob-5
rm cas/content/d/old-blob-5
rm cas/tmp/d/leftover
rm -rf cas/content.exec && mkdir -p cas/content.exec/d
echo entry > ac/tmp/d/e && mv ac/tmp/d/e ac/content/d/entry-3
"""


@pytest.fixture
def store() -> Iterator[Path]:
    """A store tree as a root CAS server left it: root's directories (0755) and files (0644/0555)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to play root and the CAS server's user")
    top = Path(tempfile.mkdtemp(prefix="cas-store-"))
    top.chmod(0o755)
    root = top / "jfs"
    for store_dir in ("cas", "ac"):
        for sub in ("content/d", "content/s", "tmp/d", "tmp/s"):
            (root / store_dir / sub).mkdir(parents=True, mode=0o755)
    (root / "cas/content.exec/d").mkdir(parents=True, mode=0o755)
    for name in ROOT_FILES:
        (root / name).write_text(name)
        (root / name).chmod(0o555 if "exec" in name else 0o644)
    try:
        yield root
    finally:
        shutil.rmtree(top)


def applets(tmp_path: Path) -> Path:
    """A PATH directory of busybox applets, as the busybox image has them."""
    busybox = static_busybox()
    directory = tmp_path / "bin"
    directory.mkdir()
    for applet in ("find", "chown", "sh", "mv", "rm", "mkdir", "chmod", "echo"):
        (directory / applet).symlink_to(busybox)
    return directory


def setpriv() -> str:
    found = shutil.which("setpriv")
    assert found is not None
    return found


def run_as_cas_server(store: Path, path: Path) -> subprocess.CompletedProcess[str]:
    uid = str(UNPRIVILEGED_UID)
    return subprocess.run(
        [setpriv(), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sh", "-c", STORE_STEPS, "sh", str(store)],
        env={"PATH": str(path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def init_command(mocks: RecordingMocks, store: Path) -> list[str]:
    build(mocks, stack_settings("prod"))
    pod = mocks.one("kubernetes:apps/v1:StatefulSet", "nativelink-cas").inputs["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    return [str(store) if part == layout.CSI_CAS_DATA.root else part for part in init["command"]]


def test_without_the_init_container_the_unprivileged_server_cannot_use_roots_store(store: Path, tmp_path: Path) -> None:
    result = run_as_cas_server(store, applets(tmp_path))
    assert result.returncode != 0
    assert "Permission denied" in result.stderr


def test_the_init_container_hands_over_the_directories_only(mocks: RecordingMocks, store: Path, tmp_path: Path) -> None:
    path = applets(tmp_path)
    command = init_command(mocks, store)
    # Root with no capability but CHOWN, as the container's security context gives it.
    init = subprocess.run(
        [setpriv(), "--bounding-set=-all,+chown", "--inh-caps=-all", *command],
        env={"PATH": str(path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    directories = [store, *(p for p in store.rglob("*") if p.is_dir())]
    assert all(d.stat().st_uid == d.stat().st_gid == UNPRIVILEGED_UID for d in directories), directories
    assert all((store / name).stat().st_uid == 0 for name in ROOT_FILES)

    result = run_as_cas_server(store, path)
    assert result.returncode == 0, result.stderr
    assert (store / "cas/content/d/new-blob-5").read_text() == "blob\n"
    assert not (store / "cas/content/d/old-blob-5").exists()
    assert list((store / "cas/content.exec/d").iterdir()) == []

    # A second start (every pod start runs it) changes nothing and still succeeds.
    again = subprocess.run(command, env={"PATH": str(path)}, capture_output=True, text=True, timeout=30, check=False)
    assert again.returncode == 0, again.stderr
