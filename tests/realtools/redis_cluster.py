"""A stand-in for MemoryDB: a Redis Cluster of one shard (a primary and a replica), reachable as MemoryDB is.

What the JuiceFS client meets on MemoryDB, reproduced with Debian's redis-server:
* cluster mode, entered through one configuration endpoint;
* TLS only, with node addresses announced as host names (MemoryDB's certificates name hosts, not
  IPs), verified against the certificate's names;
* an ACL user with the program's access string, the `default` user off;
* no CONFIG command (MemoryDB offers none);
* a failover that moves the primary to the other node: the primary killed, the replica taking over.
What it cannot show is MemoryDB's own durability (its transaction log): Redis replicates
asynchronously, so the stand-in fails over only once the replica has caught up.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import ssl
from pathlib import Path

from .servers import (
    LOOPBACK,
    CertificateAuthority,
    ManagedServer,
    RedisError,
    RespValue,
    _require_binary,
    _resp_encode,
    _resp_read,
    free_port,
    new_secret,
    wait_until,
)

# The name nodes announce and their certificate carries (no IP address in it).
HOST_NAME = "localhost"
SLOTS = 16384


class ClusterNode(ManagedServer):
    """One TLS-only cluster node with the stand-in's ACL."""

    kind = "redis-cluster-node"

    def __init__(
        self,
        ca: CertificateAuthority,
        cert: tuple[Path, Path],
        bus_cert: tuple[Path, Path],
        user: str,
        access: str,
        password: str,
    ):
        super().__init__()
        self.ca, self.cert, self.bus_cert = ca, cert, bus_cert
        self.user, self.access, self.password = user, access, password
        self.bus_port = 0
        self._binary: Path | None = None

    def _check_dependencies(self) -> None:
        self._binary = _require_binary("redis-server", "apt-get install -y redis-server", ["/usr/bin", "/usr/sbin"])

    def _config_lines(self) -> list[str]:
        cert_file, key_file = self.cert
        bus_cert_file, bus_key_file = self.bus_cert
        return [
            f"bind {self.host}",
            "port 0",
            f"tls-port {self.port}",
            f'tls-cert-file "{cert_file}"',
            f'tls-key-file "{key_file}"',
            f'tls-ca-cert-file "{self.ca.ca_file}"',
            "tls-auth-clients no",
            # Nodes authenticate each other on the cluster bus and replication links.
            f'tls-client-cert-file "{bus_cert_file}"',
            f'tls-client-key-file "{bus_key_file}"',
            "tls-cluster yes",
            "tls-replication yes",
            "repl-diskless-sync-delay 0",
            "cluster-enabled yes",
            f"cluster-port {self.bus_port}",
            "cluster-config-file nodes.conf",
            "cluster-node-timeout 3000",
            f"cluster-announce-hostname {HOST_NAME}",
            "cluster-preferred-endpoint-type hostname",
            "daemonize no",
            f'dir "{self.tmp_dir}"',
            f'logfile "{self.log_file}"',
            "appendonly yes",
            "maxmemory-policy noeviction",
            "user default off",
            f"user {self.user} {self.access} >{self.password}",
            f"masteruser {self.user}",
            f"masterauth {self.password}",
            'rename-command CONFIG ""',
        ]

    def _start(self) -> None:
        assert self._binary is not None
        self.port, self.bus_port = free_port(), free_port()
        conf = self.tmp_dir / "redis.conf"
        conf.touch(mode=0o600)
        conf.write_text("\n".join(self._config_lines()) + "\n")
        self._spawn([self._binary, conf])
        self._wait_ready(self._ping_ok, "answer PING over TLS")

    def command(self, *args: str, user: str | None = None, password: str | None = None) -> RespValue:
        """One command on a fresh TLS connection, authenticated as the ACL user (or as given)."""
        context = ssl.create_default_context(cafile=str(self.ca.ca_file))
        with (
            socket.create_connection((LOOPBACK, self.port), timeout=5.0) as raw,
            context.wrap_socket(raw, server_hostname=HOST_NAME) as sock,
            sock.makefile("rb") as stream,
        ):
            sock.sendall(_resp_encode("AUTH", user or self.user, password or self.password) + _resp_encode(*args))
            _resp_read(stream)
            return _resp_read(stream)

    def info(self, *command: str) -> dict[str, str]:
        """An INFO-style reply as a mapping, e.g. ``info("INFO", "replication")`` or ``info("CLUSTER", "INFO")``."""
        text = _text(self.command(*command))
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def role(self) -> str:
        return self.info("INFO", "replication")["role"]

    def node_id(self) -> str:
        return _text(self.command("CLUSTER", "MYID"))

    def kill(self) -> None:
        """SIGKILL, as a lost node; the process is reaped."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGKILL)
        self._proc.wait(10)

    def _ping_ok(self) -> bool:
        try:
            return self.command("PING") == "PONG"
        except (OSError, ConnectionError, RedisError, ssl.SSLError):
            return False


def _text(reply: RespValue) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


class MemoryDbStandIn:
    """Two cluster nodes, one shard: the primary holds every slot, the replica follows it."""

    def __init__(self, directory: Path, user: str, access: str) -> None:
        self.user, self.password = user, new_secret()
        # JuiceFS keys a volume on a cluster by the URL's database number ({n}): one number per volume.
        self._numbers = itertools.count(1)
        self.ca = CertificateAuthority(directory / "tls")
        cert = self.ca.issue("node", hosts=(HOST_NAME,))
        bus_cert = self.ca.issue("node-client", hosts=(HOST_NAME,), client=True)
        self.nodes = [ClusterNode(self.ca, cert, bus_cert, user, access, self.password) for _ in range(2)]

    @property
    def ca_file(self) -> Path:
        return self.ca.ca_file

    def allocate_db(self) -> int:
        return next(self._numbers)

    def start(self) -> MemoryDbStandIn:
        first, second = self.nodes
        try:
            self._form(first, second)
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self, first: ClusterNode, second: ClusterNode) -> None:
        for node in self.nodes:
            node.start()
        first.command("CLUSTER", "ADDSLOTSRANGE", "0", str(SLOTS - 1))
        second.command("CLUSTER", "MEET", LOOPBACK, str(first.port), str(first.bus_port))
        primary_id = first.node_id()
        if not wait_until(lambda: primary_id in _text(second.command("CLUSTER", "NODES")), 20):
            raise RuntimeError("the replica never learned of the primary\n" + second.log_tail())
        second.command("CLUSTER", "REPLICATE", primary_id)
        self.wait_settled(first, second)

    def wait_settled(self, primary: ClusterNode, replica: ClusterNode) -> None:
        """Until `primary` leads with every slot and `replica` is in sync with it."""

        def settled() -> bool:
            try:
                state = [node.info("CLUSTER", "INFO").get("cluster_state") for node in self.nodes]
                return (
                    state == ["ok", "ok"]
                    and primary.role() == "master"
                    and replica.info("INFO", "replication").get("master_link_status") == "up"
                )
            except (OSError, ConnectionError, RedisError, ssl.SSLError):
                return False

        if not wait_until(settled, 30, interval=0.2):
            raise RuntimeError("the cluster did not settle\n" + primary.log_tail() + "\n" + replica.log_tail())

    def primary(self) -> ClusterNode:
        (primary,) = [node for node in self.nodes if node.running and node.role() == "master"]
        return primary

    def fail_over(self) -> ClusterNode:
        """Kill the primary once the replica holds all it acknowledged, and promote the replica; returns it."""
        old = self.primary()
        (new,) = [node for node in self.nodes if node is not old]

        def caught_up() -> bool:
            offset = old.info("INFO", "replication")["master_repl_offset"]
            return new.info("INFO", "replication").get("slave_repl_offset") == offset

        if not wait_until(caught_up, 10, interval=0.05):
            raise RuntimeError("the replica did not catch up with the primary")
        old.kill()
        # MemoryDB promotes on its own; a lone Redis replica needs TAKEOVER (no majority left to vote).
        new.command("CLUSTER", "FAILOVER", "TAKEOVER")
        if not wait_until(lambda: new.role() == "master", 20, interval=0.1):
            raise RuntimeError("the replica was not promoted\n" + new.log_tail())
        return new

    def keys(self) -> list[str]:
        reply = self.primary().command("KEYS", "*")
        assert isinstance(reply, list)
        return sorted(_text(key) for key in reply)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
