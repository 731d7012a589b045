"""The dev stack's own checks, run for real: the one-shot job check against a real Docker daemon, and
the worker's registration health check against real TCP connections in a network namespace of its own."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.docker.jobs import LOG_TAIL, job_check_script
from components.docker.nativelink_cluster import WORKER_REGISTERED
from components.nativelink import layout

from .dockerd import DockerDaemon, static_busybox

BUSYBOX_IMAGE = "realtools/busybox:checks"


@pytest.fixture(scope="module")
def busybox_image(docker_daemon: DockerDaemon) -> str:
    docker_daemon.build_scratch_image(BUSYBOX_IMAGE, {"/bin/busybox": static_busybox()})
    return BUSYBOX_IMAGE


@pytest.fixture
def daemon(docker_daemon: DockerDaemon) -> Iterator[DockerDaemon]:
    yield docker_daemon
    docker_daemon.remove_all_containers()


def check_job(daemon: DockerDaemon, name: str) -> subprocess.CompletedProcess[str]:
    """The check as pulumi-command runs it: `/bin/sh -c`, with the docker CLI talking to this daemon."""
    cli = shutil.which("docker")
    assert cli is not None
    env = {"PATH": f"{Path(cli).parent}:/usr/bin:/bin", "DOCKER_HOST": f"unix://{daemon.socket}"}
    env["DOCKER_CONFIG"] = str(daemon.tmp_dir / "cli")
    return subprocess.run(
        ["/bin/sh", "-c", job_check_script(name)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def run_job(daemon: DockerDaemon, image: str, name: str, script: str) -> None:
    # As the provider's `attach`: run to the end; like it, ignore the exit code here.
    daemon.docker("run", "--name", name, "--network", "none", image, "sh", "-c", script, timeout=60)


def test_a_job_that_exited_0_passes(daemon: DockerDaemon, busybox_image: str) -> None:
    run_job(daemon, busybox_image, "job-ok", "echo made the directory")
    result = check_job(daemon, "job-ok")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_a_failed_job_fails_with_its_exit_code_and_its_own_log_lines(daemon: DockerDaemon, busybox_image: str) -> None:
    # The error comes last, on stderr; the pause keeps Docker's two log streams in that order.
    script = 'for i in $(seq 1 100); do echo "line $i"; done; sleep 1; echo "cp: cannot create /opt/x" >&2; exit 7'
    run_job(daemon, busybox_image, "job-failed", script)
    result = check_job(daemon, "job-failed")
    assert result.returncode == 1
    assert "one-shot container job-failed exited with code 7" in result.stderr
    assert "cp: cannot create /opt/x" in result.stderr
    assert "line 100" in result.stderr and "line 1\n" not in result.stderr  # the tail only
    assert result.stderr.count("line ") == LOG_TAIL - 1


def test_a_missing_job_fails(daemon: DockerDaemon) -> None:
    assert check_job(daemon, "no-such-job").returncode != 0


# Its own session (start_new_session), so `kill 0` on exit ends the listeners and clients with it.
NETNS_CHECK = """
set -e
trap 'kill 0 2>/dev/null' EXIT
ip link set lo up
busybox nc -l -p {api} -e cat >/dev/null 2>&1 &
busybox nc -l -p {cas} -e cat >/dev/null 2>&1 &
sleep 0.3
check() {{ sh -c "$HEALTH" && echo healthy || echo unhealthy; }}
check
sleep 30 | busybox nc 127.0.0.1 {cas} >/dev/null 2>&1 &
sleep 0.3
check
sleep 30 | busybox nc 127.0.0.1 {api} >/dev/null 2>&1 &
sleep 0.3
check
"""


def test_worker_is_healthy_only_while_connected_to_the_worker_api() -> None:
    """Not before it connects, not for a connection to another port (the CAS), only to 50061."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2)")
    busybox = static_busybox()
    script = NETNS_CHECK.format(api=layout.WORKER_API_PORT, cas=layout.WORKER_CAS_PORT)
    env = {"PATH": f"{busybox.parent}:/usr/sbin:/usr/bin:/bin", "HEALTH": WORKER_REGISTERED[1]}
    result = subprocess.run(
        ["unshare", "--net", "--kill-child", "sh", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        start_new_session=True,
    )
    assert result.stdout.split() == ["unhealthy", "unhealthy", "healthy"], result.stdout + result.stderr
