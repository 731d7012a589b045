"""Run the program's JuiceFS mount-container entry script the way a container runs it.

``ContainerScript`` starts ``sh -c SCRIPT`` as PID 1 of a fresh PID namespace
(``unshare --pid --fork --kill-child``), so the script meets a container's rules: signals
it has no trap for are ignored, and when it exits the kernel kills everything it left
running. The mount namespace is shared, so the FUSE mount is visible here, as it is on
a Docker host through an ``rshared`` bind.

``MountHost`` is the host side of such a container: one mount point, and a new container
(own cache directory and metrics port) per start, all built by the program's pure functions.

Also here: running a Docker ``CMD-SHELL`` healthcheck, reading the mount table (a dead
FUSE mount fails ``stat`` with ENOTCONN, so ``os.path.ismount`` cannot see it), a
last-resort cleanup of a mount point, ``juicefs status`` and small file helpers.

Needs root (PID namespaces, FUSE) and util-linux (``unshare``, ``umount``, ``mountpoint``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

from components.juicefs.commands import MountOptions, SecretEnv, mount_args, mount_healthcheck, mount_script

from .servers import (
    LOOPBACK,
    S3Gateway,
    _check_no_secret_on_argv,
    _pid_alive,
    describe,
    free_port,
    juicefs_binary,
    juicefs_env,
    run_juicefs,
    spawn_logged,
    tail_file,
    wait_until,
)

HEALTHCHECK_TIMEOUT = 10.0


def pid_namespaces_available() -> tuple[bool, str]:
    """Whether ``unshare --pid --fork`` works here, and why not."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return False, "unshare (util-linux) is not installed"
    try:
        result = subprocess.run(
            [unshare, "--pid", "--fork", "--kill-child", "true"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"unshare failed: {exc}"
    if result.returncode != 0:
        return False, f"cannot create a PID namespace: {result.stderr.strip()}"
    return True, "PID namespaces are available"


def run_program_juicefs(
    argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run a command line made by the program (``["juicefs", ...]``) with ``run_juicefs``."""
    if not argv or argv[0] != "juicefs":
        raise ValueError(f"not a juicefs command line: {argv!r}")
    return run_juicefs(argv[1:], env, timeout)


def healthcheck(test: Sequence[str], timeout: float = HEALTHCHECK_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a Docker HEALTHCHECK test (``["CMD-SHELL", command]``) the way Docker does: ``sh -c``."""
    if len(test) != 2 or test[0] != "CMD-SHELL":
        raise ValueError(f"not a CMD-SHELL healthcheck: {test!r}")
    return subprocess.run(
        ["sh", "-c", test[1]],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def healthy(test: Sequence[str]) -> bool:
    try:
        return healthcheck(test).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _unescape_mountinfo(field: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts_at(path: Path) -> list[tuple[str, str]]:
    """``(fstype, source)`` of every mount stacked on ``path``, from /proc/self/mountinfo."""
    target = os.path.realpath(path)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) >= 5 and _unescape_mountinfo(fields[4]) == target:
            fstype, source, *_ = right.split()
            found.append((fstype, _unescape_mountinfo(source)))
    return found


def mountpoint_command(path: Path) -> subprocess.CompletedProcess[str]:
    """util-linux ``mountpoint PATH`` (exit 0: a mount point)."""
    return subprocess.run(["mountpoint", str(path)], capture_output=True, text=True, timeout=10, check=False)


def processes_mentioning(path: Path) -> list[int]:
    """PIDs (other than this one) with ``path`` as a word of their command line (also inside ``sh -c``)."""
    target = str(path)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            words = entry.joinpath("cmdline").read_bytes().decode(errors="replace").replace("\0", " ").split()
        except OSError:
            continue
        if any(word == target or word.startswith(target + "/") for word in words) and _pid_alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def force_cleanup(mountpoint: Path) -> None:
    """Kill whatever still serves ``mountpoint`` and detach every mount on it."""
    for pid in processes_mentioning(mountpoint):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for _ in range(10):
        if not mounts_at(mountpoint):
            break
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=30, check=False)


@contextlib.contextmanager
def own_mount(directory: Path, propagation: str) -> Iterator[Path]:
    """``directory`` (created) bound onto itself with ``propagation`` (rshared, private, ...), then undone.

    A mount of its own gives a test the propagation it needs whatever the machine's root mount has.
    """
    directory.mkdir(parents=True, exist_ok=True)
    try:
        for args in (["--bind", str(directory), str(directory)], [f"--make-{propagation}", str(directory)]):
            subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30, check=True)
        yield directory
    finally:
        force_cleanup(directory)


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                kids += [int(p) for p in (task / "children").read_text().split()]
    return kids


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


class ContainerScript:
    """``sh -c SCRIPT`` as PID 1 of its own PID namespace, with juicefs on PATH.

    Secrets go in ``env`` only; the script text is checked not to contain them.
    Leaving the ``with`` block kills the namespace (if still running) and cleans up
    ``mountpoint``, so nothing outlives a failed test.
    """

    def __init__(self, script: str, env: Mapping[str, str], log_file: Path, mountpoint: Path) -> None:
        _check_no_secret_on_argv([script], env)
        self.script = script
        self.env = juicefs_env({**env, "PATH": f"{juicefs_binary().parent}{os.pathsep}{os.environ.get('PATH', '')}"})
        self.log_file = log_file
        self.mountpoint = mountpoint
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None
        self._pid1 = 0

    # -- lifecycle

    def start(self) -> Self:
        if self._proc is not None:
            raise RuntimeError("already started")
        self._log = self.log_file.open("ab")
        self._proc = spawn_logged(
            ["unshare", "--pid", "--fork", "--kill-child", "sh", "-c", self.script], self._log, env=self.env
        )
        proc = self._proc
        if not wait_until(lambda: bool(_children(proc.pid)), 10, 0.01, alive=lambda: proc.poll() is None):
            self.close()
            raise RuntimeError(f"the script did not start\n{self.describe()}")
        self._pid1 = _children(proc.pid)[0]
        return self

    @property
    def pid1(self) -> int:
        """The script's shell (PID 1 inside its namespace), as seen from here."""
        if not self._pid1:
            raise RuntimeError("not started")
        return self._pid1

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        """Poll ``predicate`` while the script runs; fail with its log otherwise."""
        if not wait_until(predicate, timeout, 0.05, alive=lambda: self.running):
            state = f"exited with {self.returncode}" if not self.running else f"still running after {timeout:g} s"
            raise AssertionError(f"{what}: not reached; the script {state}\n{self.describe()}")

    def wait_healthy(self, test: Sequence[str], timeout: float = 30.0) -> float:
        """Poll the healthcheck until it passes; returns the seconds it took."""
        start = time.monotonic()
        self.wait_for("healthcheck passes", lambda: healthy(test), timeout)
        return time.monotonic() - start

    def supervised_processes(self) -> list[str]:
        """Names of the script's direct children (while waiting on the mount: just ``juicefs``)."""
        return [_comm(pid) for pid in _children(self.pid1)]

    def wait_supervising(self, timeout: float = 10.0) -> None:
        """Wait until the script has only the mount process left to wait for (past its start-up loop)."""

        def settled() -> bool:
            if self.supervised_processes() != ["juicefs"]:
                return False
            time.sleep(0.05)
            return self.supervised_processes() == ["juicefs"]

        self.wait_for("script waits on the mount process", settled, timeout)

    def namespace_processes(self) -> list[int]:
        """Every process in the script's PID namespace (PIDs as seen from here), parents first."""
        if self._proc is None:
            return []
        found: list[int] = []
        todo = _children(self._proc.pid)
        while todo:  # breadth first: parents before their children
            pid = todo.pop(0)
            found.append(pid)
            todo += _children(pid)
        return found

    def terminate(self, timeout: float = 15.0) -> int:
        """``docker stop``: SIGTERM to PID 1, then wait for the namespace to end; returns its exit code."""
        assert self._proc is not None
        os.kill(self.pid1, signal.SIGTERM)
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the script did not exit within {timeout:g} s of SIGTERM\n{self.describe()}"
            ) from None

    def kill(self, timeout: float = 10.0) -> int:
        """``docker kill``: SIGKILL to PID 1; the kernel kills the rest of the namespace."""
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid1, signal.SIGKILL)
        return self._proc.wait(timeout)

    def kill_all(self, name: str) -> list[int]:
        """SIGKILL every process called ``name`` in the namespace, parents first; returns their PIDs."""
        victims = [pid for pid in self.namespace_processes() if _comm(pid) == name]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return victims

    def wait_exit(self, timeout: float) -> int:
        assert self._proc is not None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the script did not exit within {timeout:g} s\n{self.describe()}") from None

    def close(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid1 or proc.pid, signal.SIGKILL)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        force_cleanup(self.mountpoint)

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def describe(self) -> str:
        return f"--- {self.log_file} (tail) ---\n{tail_file(self.log_file, 60)}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class MountHost:
    """The host side of a mount container: one mount point, a new container per start.

    Every start gets its own empty cache directory and metrics port; the format command, the
    mount command, the script and the healthcheck are the program's.
    """

    def __init__(
        self,
        tmp_path: Path,
        meta_url: str,
        format_command: list[str],
        env: Mapping[str, str],
        cache_size: str,
    ) -> None:
        self.tmp_path = tmp_path
        self.meta_url = meta_url
        self.format_command = format_command
        self.env = dict(env)
        self.cache_size = cache_size
        self.mountpoint = tmp_path / "jfs"
        self.mountpoint.mkdir()
        self.data_dir = self.mountpoint / "nativelink"
        self.healthcheck = mount_healthcheck(str(self.mountpoint), str(self.data_dir))
        self.metrics_address = ""
        self.containers: list[ContainerScript] = []

    def cache_dir(self, run: int) -> Path:
        return self.tmp_path / f"cache-{run}"

    def mount_command(self, run: int) -> list[str]:
        self.metrics_address = f"{LOOPBACK}:{free_port()}"
        options = MountOptions(
            str(self.mountpoint), str(self.cache_dir(run)), self.cache_size, metrics_address=self.metrics_address
        )
        return mount_args(options, self.meta_url)

    def container(self, env: Mapping[str, str] | None = None) -> ContainerScript:
        """A new container run of the program's mount script (not started)."""
        run = len(self.containers) + 1
        script = mount_script(
            self.format_command, self.mount_command(run), str(self.mountpoint), str(self.data_dir), self.meta_url
        )
        container = ContainerScript(
            script, self.env if env is None else env, self.tmp_path / f"container-{run}.log", self.mountpoint
        )
        self.containers.append(container)
        return container

    def close(self) -> None:
        for container in self.containers:
            container.close()
        force_cleanup(self.mountpoint)


def juicefs_status(meta_url: str, meta_password: str) -> dict[str, Any]:
    """``juicefs status META`` as parsed JSON (asserting it succeeds)."""
    result = run_program_juicefs(["juicefs", "status", meta_url], {SecretEnv.META_PASSWORD: meta_password})
    assert result.returncode == 0, describe(result)
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def bucket_objects(gateway: S3Gateway, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix``, fetched through the S3 API."""
    found = {}
    for key in gateway.list_keys(bucket, prefix):
        status, body = gateway.request("GET", f"/{bucket}/{key}")
        assert status == 200, (key, status, body[:200])
        found[key] = body
    return found


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_synced(path: Path, data: bytes) -> str:
    """Write and fsync ``data``; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return hashlib.sha256(data).hexdigest()


def text_with_marker(marker: str) -> bytes:
    """About 130 kB of hex lines with ``marker`` once in the middle.

    The marker is in capitals, which never occur before it, so compression cannot turn it into a
    back-reference: an unencrypted object holds it verbatim.
    """
    lines = [secrets.token_hex(32) for _ in range(2000)]
    lines.insert(1000, marker)
    return ("\n".join(lines) + "\n").encode()
