"""The Redis a run of the demo talks to, as its flags describe it: one Redis (yours, or the
bundled one), a primary with --replica-url replicas that answer searches, a service found
through Sentinels, or a Redis Cluster (README: Scaling out). Every client here is made with
local_redis.client_options, the settings local_redis.connect uses too.

Each opener checks what it was given (reachable, Search loaded, a replica really a replica)
and refuses with a ValueError or SearchUnavailableError whose message names the flag to fix.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from local_redis import (
    LocalRedis,
    SearchUnavailableError,
    client_options,
    connect,
    has_search,
    open_bundled,
    open_redis,
    redact,
)
from recengine.server_cli import DEFAULT_MAXMEMORY

log = logging.getLogger(__name__)

SENTINEL_TIMEOUT_S = 0.5


def check_scale_out_flags(args: argparse.Namespace) -> None:
    """Combinations that cannot work, refused before anything is opened."""
    if args.sentinel and args.replica_url:
        raise ValueError("the Sentinels name the replicas: drop --replica-url when using --sentinel")
    if args.cluster:
        if args.replica_url or args.sentinel or args.min_replicas_ack:
            raise ValueError(
                "--cluster sends every key to its shard's primary: drop --replica-url, --sentinel and --min-replicas-ack"
            )
        if not (args.redis_url or os.environ.get("REDIS_URL")):
            raise ValueError("--cluster needs --redis-url (or REDIS_URL) naming one node of the cluster")


def replica_without_search(where: str, fix: str) -> SearchUnavailableError:
    return SearchUnavailableError(
        f"the replica {where} has no Search module (FT.* commands are unknown), so it cannot answer searches: "
        f"load the same Search module there as on the primary (loadmodule in its config), or {fix}"
    )


def check_replica(client: redis.Redis, where: str, fix: str) -> None:
    """A read client must be a replica that can answer FT.SEARCH."""
    try:
        searchable = has_search(client)
        role = client.info("replication").get("role")
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise ValueError(f"cannot reach the replica {where} ({exc}): start it, or {fix}") from None
    if not searchable:
        raise replica_without_search(where, fix)
    if role != "slave":
        raise ValueError(f"{where} is not a replica (INFO replication says role:{role}): pass a replica, or {fix}")


def open_replica(url: str) -> redis.Redis:
    """A --replica-url: a checked connection (see check_replica), pooled as the primary's is."""
    fix = f"drop --replica-url {redact(url)}"
    try:
        client = connect(url)
    except SearchUnavailableError:
        raise replica_without_search(redact(url), fix) from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise ValueError(f"cannot reach the replica {redact(url)} ({exc}): start it, or {fix}") from None
    check_replica(client, redact(url), fix)
    return client


def open_sentinel(addresses: list[tuple[str, int]], service: str) -> tuple[redis.Redis, redis.Redis, str]:
    """The primary (master_for) and the searches' client (slave_for: the replicas in turn, the
    primary when none answers) of a service the Sentinels monitor. Both ask the Sentinels again
    when a connection fails, so a failover is followed without a restart; while no primary is
    known, commands raise MasterNotFoundError (a ConnectionError: a 503). Refuses a service no
    Sentinel knows and a node without Search. Returns the two clients and a description."""
    listed = ", ".join(f"{host}:{port}" for host, port in addresses)
    probe: dict[str, Any] = {
        "socket_connect_timeout": SENTINEL_TIMEOUT_S,
        "socket_timeout": SENTINEL_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 0),
    }
    sentinel = Sentinel(addresses, sentinel_kwargs=probe)
    known = monitored_services(sentinel, addresses)
    if service not in known:
        raise ValueError(
            f"the Sentinels at {listed} monitor no service named {service!r} (they monitor: "
            f"{', '.join(sorted(known)) or 'none'}): pass --sentinel-service NAME"
        )
    primary = sentinel.master_for(service, **client_options())
    reads = sentinel.slave_for(service, **client_options())
    try:
        host, port = sentinel.discover_master(service)
        if not has_search(primary):
            raise SearchUnavailableError(
                f"the primary of {service} ({host}:{port}) has no Search module (FT.* commands are unknown): "
                "run Redis 8 or newer, or Redis Stack, on every node of the service"
            )
    except MasterNotFoundError:
        raise ValueError(
            f"the Sentinels know {service!r} but name no primary that is up (a failover under way?): retry shortly"
        ) from None
    warn_of_unusable_replicas(sentinel, service)
    return primary, reads, f"Redis of Sentinel service {service} ({listed})"


def monitored_services(sentinel: Sentinel, addresses: list[tuple[str, int]]) -> set[str]:
    """The services the Sentinels that answer monitor. Refuses an address that is no Sentinel,
    and a list of which none answers."""
    known: set[str] = set()
    answered = 0
    for node, (host, port) in zip(sentinel.sentinels, addresses, strict=True):
        try:
            known.update(str(name) for name in node.sentinel_masters())
        except (redis.ConnectionError, redis.TimeoutError):
            continue
        except redis.ResponseError as exc:
            raise ValueError(f"{host}:{port} is not a Redis Sentinel ({exc}): check --sentinel") from None
        answered += 1
    if not answered:
        listed = ", ".join(f"{host}:{port}" for host, port in addresses)
        raise ValueError(f"no Sentinel answers at {listed}: start them, or check --sentinel HOST:PORT")
    return known


def warn_of_unusable_replicas(sentinel: Sentinel, service: str) -> None:
    """A replica the Sentinels list that is down or cannot search is logged, not refused:
    Sentinel will notice, and searches skip it meanwhile."""
    for address in sentinel.discover_slaves(service):
        # redis-py 8.2 types each pair as any encodable value; its Sentinel reply parser yields
        # the address as str and the port as int, which these conversions state for mypy.
        replica_host, replica_port = str(address[0]), int(str(address[1]))
        replica = redis.Redis(host=replica_host, port=replica_port, **client_options())
        try:
            check_replica(replica, f"{replica_host}:{replica_port} of {service}", "remove it from the service")
        except ValueError as exc:
            log.warning("%s", exc)
        finally:
            replica.close()


def open_cluster(url: str) -> tuple[RedisCluster, str]:
    """--cluster: a RedisCluster client that finds every node from the one in the URL."""
    try:
        client = RedisCluster.from_url(url, **client_options())
    except RedisClusterException as exc:
        raise ValueError(
            f"{redact(url)} is not a reachable node of a Redis Cluster ({exc}): drop --cluster, or check --redis-url"
        ) from None
    try:
        client.execute_command("FT._LIST", target_nodes=client.get_random_node())
    except redis.ResponseError:
        raise SearchUnavailableError(
            f"the Redis Cluster at {redact(url)} has no Search module (FT._LIST is refused): run Redis 8 or newer, "
            "or Redis Stack, on every node"
        ) from None
    return client, f"Redis Cluster at {redact(url)}"


def check_replicas_connected(client: redis.Redis, required: int) -> None:
    """--min-replicas-ack N with fewer replicas than N would refuse every click."""
    connected = int(client.info("replication").get("connected_slaves", 0))
    if connected < required:
        raise ValueError(
            f"--min-replicas-ack {required}, but the primary has {connected} connected replica(s), so every click "
            "would be refused: start the replicas, or lower --min-replicas-ack"
        )


@dataclass
class Topology:
    """The Redis clients of a run: `client` for writes and each user's own state,
    `read_clients` for searches (none: the primary answers them), the bundled Redis when this
    process started it (stopped by whoever stops the run), and where all that is, for messages."""

    client: redis.Redis | RedisCluster
    read_clients: list[redis.Redis]
    local: LocalRedis | None
    description: str


def open_topology(args: argparse.Namespace, data_dir: Path) -> Topology:
    """The clients the flags ask for, checked. `data_dir` keeps the bundled Redis's data when
    the run falls back to it (no --redis-url, REDIS_URL or local Redis with Search)."""
    check_scale_out_flags(args)
    client: redis.Redis | RedisCluster
    local: LocalRedis | None = None
    read_clients: list[redis.Redis] = []
    if args.sentinel:
        client, reads, description = open_sentinel(args.sentinel, args.sentinel_service)
        read_clients = [reads]
    elif args.cluster:
        client, description = open_cluster(args.redis_url or os.environ["REDIS_URL"])
    else:
        cap = args.maxmemory or DEFAULT_MAXMEMORY
        if args.data_dir is not None:
            client, local = open_bundled(args.data_dir, maxmemory=cap)
        else:
            client, local = open_redis(args.redis_url, data_dir=data_dir, maxmemory=cap)
        where = client.connection_pool.connection_kwargs
        description = f"{'bundled ' if local else ''}Redis at {where.get('host')}:{where.get('port')}"
        read_clients = [open_replica(url) for url in args.replica_url]
    if args.min_replicas_ack and isinstance(client, redis.Redis):
        check_replicas_connected(client, args.min_replicas_ack)
    if args.maxmemory and local is None:
        log.warning(
            "--maxmemory %s caps only the bundled Redis; %s keeps its own maxmemory setting (set it in its "
            "configuration, with maxmemory-policy volatile-lru so that only users are evicted)",
            args.maxmemory, description,
        )  # fmt: skip
    if args.durable and isinstance(client, redis.Redis):
        prepare_durable(client, bundled=local is not None)
    return Topology(client, read_clients, local, description)


def prepare_durable(client: redis.Redis, bundled: bool) -> None:
    """--durable waits for each write's fsync (WAITAOF). A Redis without an append-only file
    would refuse every write: refused here. With `appendfsync everysec` the wait is for the next
    once-a-second fsync, about a second per click (bench/durable_click.py); with `always` Redis
    fsyncs before it replies and WAITAOF waits for nothing more. So the bundled Redis is switched
    to `always`; another Redis keeps its setting, with a warning."""
    settings = {name: str(value) for name, value in client.config_get("append*").items()}
    if settings.get("appendonly") != "yes":
        raise ValueError(
            "--durable waits until Redis has written each click to its append-only file, but this Redis has "
            "appendonly off: turn it on (CONFIG SET appendonly yes, and in its configuration), or drop --durable"
        )
    if settings.get("appendfsync") == "always":
        return
    if bundled:
        client.config_set("appendfsync", "always")
        log.info("--durable: the bundled Redis now fsyncs every write before it answers (appendfsync always)")
    else:
        log.warning(
            "--durable with appendfsync %s: each write waits for Redis' next fsync, up to a second; set "
            "appendfsync always in its configuration to answer as soon as the write is on disk",
            settings.get("appendfsync"),
        )


def close_connections(topology: Topology) -> None:
    """Before forking workers: none of the parent's connections may be shared with a child."""
    for client in (topology.client, *topology.read_clients):
        if isinstance(client, RedisCluster):
            client.disconnect_connection_pools()
        else:
            client.connection_pool.disconnect()
