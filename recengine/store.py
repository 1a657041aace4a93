"""The connections to Redis and how they are used: writes and a user's own state on the primary,
searches on the replicas in turn (a failing replica falls back to the primary for that call),
pipelines, and the confirmation asked of a write: WAIT for replicas to acknowledge it, or, when
durable, WAITAOF for it to be fsynced (and on the replicas' disks too). Every Redis error reply
leaves here classified (errors.py).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
import redis.cluster
from redis.crc import key_slot

from recengine.errors import DurabilityTimeoutError, RecommenderError, ReplicationTimeoutError, classified_errors
from recengine.query import Command

log = logging.getLogger("recommender")
# How long a durable write waits for its fsync. With `appendfsync everysec` the next fsync is at
# most a second away; the bound stays below the client's 2 s socket timeout (local_redis), so a
# slow disk is reported as "not confirmed", never as a lost connection.
DURABLE_TIMEOUT_MS = 1500
_Answer = TypeVar("_Answer")
Client = redis.Redis | redis.cluster.RedisCluster


class Store:
    """The primary, the replicas, and the guarantee asked of writes."""

    def __init__(
        self,
        primary: Client,
        read_clients: Sequence[redis.Redis],
        min_replicas_ack: int,
        replica_ack_timeout_ms: int,
        durable: bool = False,
    ) -> None:
        self.primary = primary
        self.is_cluster = isinstance(primary, redis.cluster.RedisCluster)
        if (min_replicas_ack or durable) and self.is_cluster:
            raise ValueError("min_replicas_ack and durable are not supported on a Redis Cluster client")
        for client in (primary, *read_clients):
            if client.get_connection_kwargs().get("decode_responses"):
                raise ValueError("RedisRecommender needs clients with decode_responses=False: vectors are binary")
        self.read_clients = list(read_clients)
        self._next_reader = itertools.cycle(range(len(self.read_clients))) if self.read_clients else None
        self._reader_lock = threading.Lock()
        self.min_replicas_ack = min_replicas_ack
        self.replica_ack_timeout_ms = replica_ack_timeout_ms
        self.durable = durable

    def shard_of(self, key: str) -> int:
        """Which keys may share one script: on a cluster, those of one hash slot (a script whose
        keys span two fails with CROSSSLOT); on one Redis, any (all are 0). Writes that group
        their keys by it take one code path on both."""
        return key_slot(key.encode()) if self.is_cluster else 0

    # reading from replicas

    def _reader(self) -> Client:
        if self._next_reader is None:
            return self.primary
        with self._reader_lock:
            return self.read_clients[next(self._next_reader)]

    def _on_reader(self, read: Callable[[Any], _Answer]) -> _Answer:
        """`read` on the next replica (the primary when there are none); a replica that fails
        falls back to the primary for this call, with a log line."""
        reader = self._reader()
        with classified_errors():
            if reader is self.primary:
                return read(self.primary)
            try:
                return read(reader)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("replica %s failed (%s); reading from the primary", _describe(reader), exc)
                return read(self.primary)

    def search(self, command: Command) -> Any:
        """FT.SEARCH / FT.AGGREGATE, on a replica when there are any."""
        return self._on_reader(lambda client: client.execute_command(*command))

    def knows(self, command_info: Command, known: Callable[[Any], bool]) -> bool:
        """Whether the nodes that search know a command: `command_info` asks (COMMAND INFO) and
        `known` reads the reply. A failure to ask (no connection, an error reply) counts as no:
        the caller keeps to what every server has."""

        def ask(client: Any) -> Any:
            if self.is_cluster:  # any node answers for all
                return client.execute_command(*command_info, target_nodes=redis.cluster.RedisCluster.RANDOM)
            return client.execute_command(*command_info)

        try:
            return known(self._on_reader(ask))
        except (redis.RedisError, redis.exceptions.RedisClusterException, RecommenderError) as exc:
            log.info("could not ask Redis %r (%s): taken as absent", command_info, exc)
            return False

    def search_many(self, commands: Sequence[Command]) -> list[Any]:
        """Several FT.SEARCH in one pipelined round trip, on a replica when there are any."""

        def send(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return list(pipe.execute())

        return self._on_reader(send)

    def read_hashes(self, keys: Sequence[str], names: Sequence[str]) -> list[Any]:
        """HMGET of the same fields from many hashes, in one pipelined round trip to the same kind
        of node searches use, so the fields match what the search saw."""

        def fetch(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, list(names))
            return list(pipe.execute())

        return self._on_reader(fetch)

    # the primary

    def command(self, *args: Any) -> Any:
        """One command on the primary."""
        client: Any = self.primary  # redis-py leaves RedisCluster.execute_command untyped
        with classified_errors():
            return client.execute_command(*args)

    def pipeline(self) -> Any:
        """A pipeline (no MULTI) on the primary, for execute()."""
        return self.primary.pipeline(transaction=False)

    def execute(self, pipe: Any) -> list[Any]:
        """Send a pipeline of execute's making; its replies."""
        with classified_errors():
            return list(pipe.execute())

    def write_hashes(self, batch: Sequence[tuple[str, dict[str, bytes | str]]]) -> int:
        """HSET each (key, mapping) in one pipelined round trip; how many."""
        if not batch:
            return 0
        pipe = self.pipeline()
        for key, mapping in batch:
            pipe.hset(key, mapping=mapping)
        self.execute(pipe)
        return len(batch)

    # what a write's answer waits for

    @property
    def confirms_writes(self) -> bool:
        """Whether queue_confirmation queues anything (then check_confirmation reads its reply)."""
        return self.durable or bool(self.min_replicas_ack)

    def queue_confirmation(self, pipe: Any) -> None:
        """Queue what a write's answer waits for: WAITAOF 1 N when durable (fsynced here, and on
        N replicas' disks), else WAIT N when replicas are required, else nothing."""
        if self.durable:
            pipe.execute_command("WAITAOF", 1, self.min_replicas_ack, DURABLE_TIMEOUT_MS)
        elif self.min_replicas_ack:
            pipe.execute_command("WAIT", self.min_replicas_ack, self.replica_ack_timeout_ms)

    def check_confirmation(self, reply: Any) -> None:
        """DurabilityTimeoutError or ReplicationTimeoutError when queue_confirmation's reply is
        short of what is required."""
        if self.durable:
            local, replicas = (int(count) for count in reply)
            if local < 1 or replicas < self.min_replicas_ack:
                raise DurabilityTimeoutError(local, replicas, self.min_replicas_ack, DURABLE_TIMEOUT_MS)
        elif int(reply) < self.min_replicas_ack:
            raise ReplicationTimeoutError(int(reply), self.min_replicas_ack, self.replica_ack_timeout_ms)


def _describe(client: Any) -> str:
    kwargs = client.get_connection_kwargs() if hasattr(client, "get_connection_kwargs") else {}
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
