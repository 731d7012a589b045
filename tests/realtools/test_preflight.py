"""The dev stack's host preflight, run as `pulumi up` runs it: `/bin/sh -c "$SCRIPT"` on this machine.

Against the private dockerd (Debian's, older than the minimum) and real mounts of each propagation;
a stub `docker` on PATH stands in for the engine versions this machine cannot run.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from components.docker.preflight import MIN_DOCKER_VERSION, SCRIPT_ENV, preflight_script

from .container import own_mount
from .dockerd import DockerDaemon

MINIMUM = ".".join(map(str, MIN_DOCKER_VERSION))
WORKER_CPUS = 2


def run_preflight(
    host_mount_dir: Path, env: Mapping[str, str], worker_cpus: int = WORKER_CPUS
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", "-c", f'/bin/sh -c "${SCRIPT_ENV}"'],
        env={**env, SCRIPT_ENV: preflight_script(str(host_mount_dir), worker_cpus)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a shared mount of its own, with the host mount directory not created yet inside."""
    with own_mount(tmp_path / "shared", "rshared") as directory:
        yield directory


@pytest.fixture
def private_dir(tmp_path: Path) -> Iterator[Path]:
    with own_mount(tmp_path / "private", "private") as directory:
        yield directory


def stub_docker(
    tmp_path: Path,
    version: str,
    operating_system: str = "Ubuntu 24.04 LTS",
    security: str = "[name=apparmor name=seccomp,profile=builtin name=cgroupns]",
    cpus: int = 8,
) -> dict[str, str]:
    """An environment whose `docker` answers `version` and `info --format` as such an engine would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "docker"
    stub.write_text(
        "#!/bin/sh\n"
        'case "$1 $3" in\n'
        f"  'version '*) echo {version};;\n"
        f"  *OperatingSystem*) echo '{operating_system}';;\n"
        f"  *SecurityOptions*) echo '{security}';;\n"
        f"  *NCPU*) echo {cpus};;\n"
        "  *) exit 2;;\n"
        "esac\n"
    )
    stub.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key != "DOCKER_HOST"}
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"}


def test_an_old_engine_is_refused_with_the_version_to_install(docker_daemon: DockerDaemon, shared_dir: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{docker_daemon.socket}"}
    server = docker_daemon.check("version", "--format", "{{.Server.Version}}").strip()
    result = run_preflight(shared_dir / "nativelink-juicefs", env)
    assert result.returncode == 1, result.stderr
    assert f"Docker Engine {server} lets other hosts on the LAN reach ports published on 127.0.0.1" in result.stderr
    assert f"upgrade to {MINIMUM} or later" in result.stderr
    assert "1 problem(s); no container was created" in result.stderr


@pytest.mark.parametrize(
    ("version", "accepted"),
    [("28.3.3", True), ("28.4.0", True), ("29.0.1", True), ("28.3.2", False), ("27.5.1", False), ("28.3.3-rc1", True)],
)
def test_engine_versions(tmp_path: Path, shared_dir: Path, version: str, accepted: bool) -> None:
    result = run_preflight(shared_dir / "nativelink-juicefs", stub_docker(tmp_path, version))
    assert (result.returncode == 0) == accepted, result.stderr
    assert ("upgrade to" in result.stderr) != accepted


def test_a_host_directory_on_a_private_mount_is_refused_with_the_fix(tmp_path: Path, private_dir: Path) -> None:
    wanted = private_dir / "nativelink-juicefs"
    result = run_preflight(wanted, stub_docker(tmp_path, MINIMUM))
    assert result.returncode == 1
    assert f"{private_dir}, which holds docker.hostMountDir {wanted}, is not on a shared mount" in result.stderr
    assert f"sudo mount --make-rshared {wanted}" in result.stderr
    # The fix it names works: the directory made a shared mount of its own passes.
    with own_mount(wanted, "rshared"):
        assert run_preflight(wanted, stub_docker(tmp_path, MINIMUM)).returncode == 0


def test_docker_desktop_and_a_remote_engine_are_refused(tmp_path: Path, shared_dir: Path) -> None:
    desktop = run_preflight(shared_dir, stub_docker(tmp_path, "28.5.0", "Docker Desktop"))
    assert desktop.returncode == 1 and "Docker Desktop runs containers in a VM" in desktop.stderr
    remote = run_preflight(shared_dir, {**stub_docker(tmp_path, "28.5.0"), "DOCKER_HOST": "tcp://build-host:2376"})
    assert remote.returncode == 1 and "DOCKER_HOST=tcp://build-host:2376 is another machine" in remote.stderr


def test_rootless_docker_and_too_few_cpus_are_refused(tmp_path: Path, shared_dir: Path) -> None:
    rootless = run_preflight(shared_dir, stub_docker(tmp_path, "28.5.0", security="[name=seccomp name=rootless]"))
    assert rootless.returncode == 1 and "rootless Docker mounts in a namespace of its own" in rootless.stderr
    small = run_preflight(shared_dir, stub_docker(tmp_path, "28.5.0", cpus=1))
    assert small.returncode == 1
    assert "docker.workerCpus is 2 but the engine has 1 CPUs" in small.stderr
    assert run_preflight(shared_dir, stub_docker(tmp_path, "28.5.0", cpus=1), worker_cpus=1).returncode == 0


def test_an_unreadable_version_is_refused(tmp_path: Path, shared_dir: Path) -> None:
    result = run_preflight(shared_dir, stub_docker(tmp_path, "dev"))
    assert result.returncode == 1 and "cannot read the Docker Engine version 'dev'" in result.stderr


def test_an_unreachable_engine_is_named(tmp_path: Path, shared_dir: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path / 'no-such.sock'}"}
    result = run_preflight(shared_dir, env)
    assert result.returncode == 1
    assert "cannot reach the Docker engine" in result.stderr
