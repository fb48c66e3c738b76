"""Which Redis a URL names — one server, a Sentinel-managed master, or a cluster — and the
redis-py client for it.

    redis://[[user]:password@]host:port[/db]          one server (rediss:// for TLS, unix://)
    redis+sentinel://[[user]:password@]h:p[,h:p…]/service[/db]   the master of `service`
    redis+cluster://[[user]:password@]h:p[,h:p…]      a cluster, from any of its nodes
    rediss+sentinel://…, rediss+cluster://…             the same over TLS

The Sentinel client is redis-py's `Sentinel.master_for`: every new connection asks the
Sentinels where the master is, and a connection to a demoted master (READONLY) is dropped, so a
failover is a reconnect, not a restart. The cluster client is redis-py's `RedisCluster`, which
follows MOVED/ASK redirections and refreshes its slot map after a node failover. The password in
the URL is the data nodes'; Sentinels that require their own give it as `?sentinel_password=`.
TLS options ride in the query as redis-py spells them (`ssl_ca_certs`, `ssl_certfile`,
`ssl_keyfile`, `ssl_cert_reqs`).

The client is returned typed as `redis.Redis` although a cluster client is a `RedisCluster`:
both speak the same command API for everything tutormax sends (single-key commands,
non-transactional pipelines, SCAN over every primary). What differs — a MULTI, whose keys
would live in different slots — is asked through `transactional`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, unquote

import redis

from tutormax_cli.errors import UsageError

STANDALONE = "standalone"
SENTINEL = "sentinel"
CLUSTER = "cluster"

SENTINEL_PORT = 26379
"""The Sentinel port when a host of a `redis+sentinel://` URL names none."""

REDIS_PORT = 6379

SOCKET_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0

TRANSIENT: tuple[type[BaseException], ...] = (
    redis.ConnectionError,  # incl. MasterNotFoundError, BusyLoadingError, a demoted master
    redis.TimeoutError,
    redis.exceptions.ClusterDownError,  # incl. MasterDownError: a failover in progress
    redis.exceptions.TryAgainError,  # a slot being migrated
    redis.exceptions.ReadOnlyError,  # a demoted master, before the client notices
    redis.exceptions.RedisClusterException,  # no node reachable, slots not covered
)
"""Failures that a failover, a restart or a network blip cause and that a retry outlives:
consumers back off and retry them; anything else is a bug or a misconfiguration."""

_SCHEMES = {
    "redis+sentinel": (SENTINEL, False),
    "rediss+sentinel": (SENTINEL, True),
    "redis+cluster": (CLUSTER, False),
    "rediss+cluster": (CLUSTER, True),
}

_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_ca_path")


@dataclass(frozen=True)
class Topology:
    """A parsed multi-host URL (Sentinel or cluster); a plain URL is left to redis-py."""

    kind: str
    hosts: tuple[tuple[str, int], ...]
    tls: bool = False
    username: str | None = None
    password: str | None = None
    service: str | None = None
    db: int = 0
    sentinel_password: str | None = None
    tls_options: dict[str, str] = field(default_factory=dict)


def kind_of(url: str) -> str:
    """`standalone`, `sentinel` or `cluster`, from the URL's scheme alone."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    return _SCHEMES.get(scheme, (STANDALONE, False))[0]


def _hosts(netloc: str, default_port: int, url_label: str) -> tuple[tuple[str, int], ...]:
    hosts = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):  # [::1]:26379
            host, _, rest = part[1:].partition("]")
            port_text = rest.lstrip(":")
        else:
            host, _, port_text = part.rpartition(":") if ":" in part else (part, "", "")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise UsageError(
                f"bad Redis URL {url_label}: port {port_text!r} is not a number"
            ) from None
        if not host or not 0 < port < 65536:
            raise UsageError(f"bad Redis URL {url_label}: bad host:port {part!r}")
        hosts.append((host, port))
    if not hosts:
        raise UsageError(f"bad Redis URL {url_label}: no host:port")
    return tuple(hosts)


def parse(url: str) -> Topology:
    """Split a `redis+sentinel://` or `redis+cluster://` URL; a one-line error names what is
    wrong. Plain URLs are not parsed here (redis-py's `from_url` does)."""
    from tutormax_cli.settings import redact_url

    label = redact_url(url)
    scheme, _, rest = url.partition("://")
    kind, tls = _SCHEMES[scheme.lower()]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostpart = netloc.rpartition("@")
    if not at:
        userinfo, hostpart = "", netloc
    username, colon, password = userinfo.partition(":")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - {"sentinel_password", *_TLS_OPTIONS})
    if unknown:
        raise UsageError(f"bad Redis URL {label}: unknown option {unknown[0]!r}")
    segments = [s for s in path.split("/") if s]
    service: str | None = None
    db = 0
    if kind == SENTINEL:
        if not segments:
            raise UsageError(
                f"bad Redis URL {label}: name the Sentinel service, "
                "redis+sentinel://host:port[,host:port…]/<service-name>[/db]"
            )
        service = unquote(segments[0])
        if len(segments) > 2:
            raise UsageError(f"bad Redis URL {label}: expected /<service-name>[/db]")
        if len(segments) == 2:
            db = _db_number(segments[1], label, "db")
    elif segments:
        raise UsageError(
            f"bad Redis URL {label}: a cluster has only db 0, so the URL takes no path"
        )
    return Topology(
        kind=kind,
        hosts=_hosts(hostpart, SENTINEL_PORT if kind == SENTINEL else REDIS_PORT, label),
        tls=tls,
        username=unquote(username) or None,
        password=unquote(password) if colon else None,
        service=service,
        db=db,
        sentinel_password=options.get("sentinel_password") or None,
        tls_options={k: v for k, v in options.items() if k in _TLS_OPTIONS},
    )


def _client_kwargs(topology: Topology) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
    }
    if topology.username:
        kwargs["username"] = topology.username
    if topology.password is not None:
        kwargs["password"] = topology.password
    if topology.tls:
        kwargs["ssl"] = True
        kwargs.update(topology.tls_options)
    return kwargs


def _db_number(text: str, label: str, where: str) -> int:
    """A db number as a URL gives it (ASCII digits: `int` would take '٣', redis-py's own
    parse would then fall back to db 0), or a usage error naming it."""
    if not _DIGITS.fullmatch(text):
        raise UsageError(f"bad Redis URL {label}: {where} {text!r} is not a number")
    return int(text)


_DIGITS = re.compile(r"[0-9]+")


def _check_db(url: str) -> None:
    """A plain `redis://` / `rediss://` URL's db number must be a number: redis-py ignores a
    path it cannot read (`/abc` connects to db 0, `/0/1` to db 1), so a typo would read and
    write another database's streams. `unix://` paths are the socket's, left to redis-py."""
    from tutormax_cli.settings import redact_url, split_userinfo

    scheme, _, rest = url.partition("://")
    if scheme.lower() not in ("redis", "rediss"):
        return
    label = redact_url(url)
    rest, _, query = rest.partition("?")
    path = rest.partition("/")[2]
    if split_userinfo(rest)[1] and "@" in path:  # the first '/' was the password's
        raise UsageError(
            f"bad Redis URL {label}: a '/' in the password must be percent-encoded as %2F"
        )
    if path:
        _db_number(path, label, "db")
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "db":
            _db_number(value, label, "db option")


def open_client(url: str) -> redis.Redis:
    """The redis-py client for `url` (bytes responses). Does not ping; a cluster client reads
    the slot map from the first reachable node as it is built, so an unreachable cluster
    raises here."""
    kind = kind_of(url)
    if kind == STANDALONE:
        _check_db(url)
        return redis.Redis.from_url(
            url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT
        )
    topology = parse(url)
    kwargs = _client_kwargs(topology)
    if kind == SENTINEL:
        from redis.sentinel import Sentinel

        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": CONNECT_TIMEOUT,
            "socket_connect_timeout": CONNECT_TIMEOUT,
        }
        if topology.sentinel_password:
            sentinel_kwargs["password"] = topology.sentinel_password
        if topology.tls:
            sentinel_kwargs["ssl"] = True
            sentinel_kwargs.update(topology.tls_options)
        sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]  # untyped before redis-py 8
            list(topology.hosts), sentinel_kwargs=sentinel_kwargs, **kwargs
        )
        assert topology.service is not None
        master = sentinel.master_for(topology.service, db=topology.db)  # type: ignore[no-untyped-call, unused-ignore]
        return cast(redis.Redis, master)
    from redis.cluster import ClusterNode, RedisCluster

    cluster = RedisCluster(
        startup_nodes=[
            ClusterNode(host, port)  # type: ignore[no-untyped-call]
            for host, port in topology.hosts
        ],
        **kwargs,
    )
    return cast(redis.Redis, cluster)


def is_cluster(client: Any) -> bool:
    """Whether `client` talks to a Redis Cluster (a MULTI must then stay in one slot)."""
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def transactional(client: Any) -> bool:
    """Whether a MULTI spanning several keys is available: yes on one server and under
    Sentinel; not on a cluster, where keys live in different slots (CROSSSLOT) and redis-py's
    cluster transactions parse replies unlike its other clients. There tutormax uses
    per-key steps in an order that stays correct (`docs/redis-cluster-audit.md`)."""
    return not is_cluster(client)


def server_id(client: Any, key: str) -> str:
    """Which server holds `key` now: its `run_id` (the master a Sentinel names, the primary
    of the key's slot in a cluster, or the one server). A change means a failover or a
    restart: what the old one had not replicated or persisted may be gone."""
    if is_cluster(client):
        node = client.get_node_from_key(key)
        info = client.info("server", target_nodes=node)
        return f"{node.name}/{info.get('run_id', '')}"
    return str(client.info("server").get("run_id", ""))
