"""The bundled Redis when things go wrong, against real processes: Redis killed (supervision),
two processes on one data dir (the lock, sharing, taking over), a full disk (tmpfs), a damaged
append-only file (the repair command), a memory cap, and a connection pool under a burst.

Every process a test starts is stopped by that test; tmpfs mounts are unmounted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from local_redis import (
    DISK_RESERVE_FILE,
    LOCK_FILE,
    POOL_MAX_CONNECTIONS,
    CorruptAofError,
    DataDirBusyError,
    LocalRedis,
    connect,
    open_bundled,
    repair_aof,
    repair_command,
    restart_delay,
)

ROOT = Path(__file__).resolve().parents[2]
HEAL_LIMIT_S = 15.0


def wait_for(condition, what: str, limit_s: float = HEAL_LIMIT_S) -> None:
    """Poll `condition` until it is true; fail naming `what` after limit_s."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {limit_s} s"
        time.sleep(0.05)


def answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def redis_servers_on(data_dir: Path) -> list[int]:
    """Pids of every redis-server on this machine working in data_dir (Redis retitles its
    process, dropping --dir, but runs in that folder)."""
    wanted = data_dir.resolve()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if b"redis-server" in (entry / "cmdline").read_bytes() and (entry / "cwd").resolve() == wanted:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def running_process(server: LocalRedis) -> subprocess.Popen:
    assert server.process is not None, "this LocalRedis runs no redis-server"
    return server.process


def wait_until_appended(client: redis.Redis) -> None:
    """What `appendfsync everysec` promises for an acknowledged write holds once Redis has
    handed it to the kernel; it may hold it back (up to 2 s) only while an earlier fsync runs."""
    wait_for(lambda: client.info("persistence")["aof_buffer_length"] == 0, "the AOF buffer drained", 5)


# --- supervision -----------------------------------------------------------------------------


def test_restart_delays_double_from_a_fifth_of_a_second_up_to_five_seconds() -> None:
    assert [restart_delay(attempt) for attempt in range(1, 9)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


def test_a_supervised_redis_killed_with_sigkill_comes_back_on_its_port_with_its_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = LocalRedis(tmp_path, persistent=True).start(supervise=True)
    try:
        client = connect(server.url)
        port = server.port
        for i in range(200):
            client.hset(f"product:{i}", mapping={"name": f"item {i}", "price": i})
        wait_until_appended(client)
        caplog.set_level(logging.WARNING, logger="local_redis")
        for restart in (1, 2):
            killed = running_process(server).pid
            os.kill(killed, signal.SIGKILL)
            wait_for(lambda: answers(client), f"PING after kill -9 number {restart}")
            assert server.port == port and running_process(server).pid != killed
            assert client.hget("product:199", "name") == b"item 199" and client.dbsize() == 200
        restarts = [record.getMessage() for record in caplog.records if "restarting it on" in record.getMessage()]
        assert len(restarts) == 2
        assert "killed by SIGKILL" in restarts[0] and f"127.0.0.1:{port} in 0.2 s (restart 1)" in restarts[0]
        assert "in 0.4 s (restart 2)" in restarts[1]
        process = running_process(server)
    finally:
        server.stop()
    assert process.returncode == 0 and redis_servers_on(tmp_path) == []
    assert not any(thread.name.startswith("redis-supervisor") for thread in threading.enumerate())


def test_an_unsupervised_redis_stays_down(tmp_path: Path) -> None:
    """Tests (and the fault tests of the demo) stop Redis on purpose: no one restarts it."""
    with LocalRedis(tmp_path, persistent=True) as server:
        client = connect(server.url)
        assert not any(thread.name.startswith("redis-supervisor") for thread in threading.enumerate())
        running_process(server).kill()
        running_process(server).wait()
        time.sleep(5 * restart_delay(1))
        assert not answers(client)


def test_the_demo_server_heals_by_itself_when_its_bundled_redis_is_killed(tmp_path: Path, catalog: dict) -> None:
    """demo_server.py --data-dir, as a person runs it: its Redis is OOM-killed (kill -9), and
    requests succeed again, with the user's acknowledged click, without touching the server."""
    from test_reliability import BundledDemo  # here: the demo's modules are needed by this test only

    demo = BundledDemo(str(tmp_path))
    try:
        demo.wait_until_listening()
        user_id, product_id = "supervised-user", catalog["products"][0]["id"]
        assert demo.request("POST", "/click", {"product_id": product_id, "user_id": user_id})["clicks"] == 1
        wait_until_appended(connect(f"redis://127.0.0.1:{(tmp_path / 'redis.port').read_text()}"))
        os.kill(int((tmp_path / "redis.pid").read_text()), signal.SIGKILL)

        def served() -> bool:
            try:
                return demo.request("GET", f"/state?user_id={user_id}")["user"]["clicks"] == 1
            except OSError:  # urllib's HTTPError (the 503s meanwhile) and refused connections
                return False

        wait_for(served, "the demo serving the user again")
        assert "restarting it on 127.0.0.1:" in demo.log
        assert demo.interrupt() == 0
        assert "Traceback" not in demo.log
    finally:
        demo.kill()
    assert redis_servers_on(tmp_path) == []


# --- two processes on one data dir -----------------------------------------------------------

# A process of ours using the bundled Redis, driven line by line over stdin: it imports, says
# "ready", waits for "go", calls open_bundled, reports, then runs one Redis command per line.
PEER = r"""
import json, os, sys
from pathlib import Path
import redis
from local_redis import open_bundled

print("ready", flush=True)
sys.stdin.readline()
try:
    client, local = open_bundled(Path(sys.argv[1]), share_wait_s=float(sys.argv[2]))
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
    sys.exit(1)
print(json.dumps({"owner": local.owner, "port": local.port, "pid": os.getpid()}), flush=True)
for line in sys.stdin:
    command, *args = line.split()
    if command == "stop":
        local.stop()
        print(json.dumps({"stopped": True}), flush=True)
        break
    try:
        reply = client.execute_command(command, *args)
        reply = reply.decode() if isinstance(reply, bytes) else reply
    except redis.RedisError as exc:
        reply = f"error: {exc}"
    print(json.dumps({"reply": reply, "owner": local.owner, "port": local.port}), flush=True)
"""


class Peer:
    def __init__(self, data_dir: Path, share_wait_s: float = 15.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", PEER, str(data_dir), str(share_wait_s)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.readline() == "ready"
        self.hello: dict[str, Any] = {}

    def readline(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            stderr = self.process.stderr.read() if self.process.stderr else ""
            pytest.fail(f"the peer process exited ({self.process.wait()}):\n{stderr}")
        return line.strip()

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def go(self) -> None:
        self.send("go")

    def started(self) -> dict[str, Any]:
        self.hello = json.loads(self.readline())
        return self.hello

    def command(self, line: str) -> dict[str, Any]:
        self.send(line)
        return json.loads(self.readline())

    def stop(self) -> None:
        assert self.command("stop") == {"stopped": True}
        assert self.process.wait(timeout=30) == 0

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe:
                pipe.close()


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.kill()
    wait_for(lambda: redis_servers_on(tmp_path) == [], "every Redis on the data dir gone", 20)


def test_two_processes_starting_at_the_same_instant_run_one_redis_and_share_it(
    tmp_path: Path, peers: list[Peer]
) -> None:
    for round_number in range(3):
        data_dir = tmp_path / f"round-{round_number}"
        pair = [Peer(data_dir), Peer(data_dir)]
        peers.extend(pair)
        for peer in pair:  # both have imported everything: only open_bundled is left to race
            peer.go()
        first, second = (peer.started() for peer in pair)
        assert sorted([first["owner"], second["owner"]]) == [False, True], (first, second)
        assert first["port"] == second["port"]
        assert len(redis_servers_on(data_dir)) == 1
        owner = pair[0] if first["owner"] else pair[1]
        assert (data_dir / LOCK_FILE).read_text() == str(owner.hello["pid"])
        assert pair[0].command(f"SET from-first {round_number}")["reply"] is True
        assert pair[1].command("GET from-first")["reply"] == str(round_number)
        for peer in pair:
            peer.stop()
        assert redis_servers_on(data_dir) == []


@pytest.mark.parametrize("how", ["stop", "kill -9"])
def test_when_the_owner_goes_the_sharer_takes_over_with_every_acknowledged_write(
    tmp_path: Path, peers: list[Peer], how: str
) -> None:
    owner = Peer(tmp_path)
    peers.append(owner)
    owner.go()
    assert owner.started()["owner"] is True
    sharer = Peer(tmp_path)
    peers.append(sharer)
    sharer.go()
    assert sharer.started()["owner"] is False and sharer.hello["port"] == owner.hello["port"]
    for i in range(50):
        assert sharer.command(f"SET clicked:{i} {i}")["reply"] is True
    assert owner.command("GET clicked:49")["reply"] == "49"

    if how == "stop":
        owner.stop()
    else:
        owner.kill()  # SIGKILL: its Redis gets SIGTERM from the kernel and flushes its AOF

    def served_by_the_sharer() -> bool:
        # Right after a kill -9 the owner's Redis still answers while it flushes and exits.
        return sharer.command("PING") == {"reply": True, "owner": True, "port": owner.hello["port"]}

    wait_for(served_by_the_sharer, f"the sharer running Redis after the owner's {how}")
    state = sharer.command("GET clicked:49")
    assert state == {"reply": "49", "owner": True, "port": owner.hello["port"]}
    assert sharer.command("DBSIZE")["reply"] == 50
    assert len(redis_servers_on(tmp_path)) == 1
    assert (tmp_path / LOCK_FILE).read_text() == str(sharer.hello["pid"])
    sharer.stop()
    assert redis_servers_on(tmp_path) == []


# Holds the data dir's lock like an owner that is still starting its Redis, until stdin closes.
LOCK_HOLDER = r"""
import sys
from pathlib import Path
from local_redis import DataDirLock
lock = DataDirLock(Path(sys.argv[1]))
assert lock.try_acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_data_dir_whose_owner_does_not_answer_is_refused_naming_its_pid(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataDirBusyError, match=rf"process {holder.pid} runs the bundled Redis") as busy:
            LocalRedis(tmp_path, persistent=True).start()
        assert busy.value.owner_pid == holder.pid
        with pytest.raises(DataDirBusyError, match=rf"process {holder.pid} .* did not answer within"):
            open_bundled(tmp_path, share_wait_s=0.5)
        assert redis_servers_on(tmp_path) == []
    finally:
        holder.communicate(timeout=10)
    with LocalRedis(tmp_path, persistent=True) as server:  # the lock died with its holder
        assert server.owner and answers(server.client())


# --- a full disk -----------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs for the data dir: the disk a test can fill without filling the machine's."""
    mount_point = tmp_path / "tiny-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"a full disk needs a tmpfs, and mounting one was refused ({mounted.stderr.strip()}); run as root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def fill_until_refused(client: redis.Redis, disk: Path) -> tuple[list[str], redis.ResponseError, Path]:
    """Leave ~40 KB free with a filler file, then write 4 KB values until Redis refuses.
    Returns the acknowledged keys, the refusal and the filler (to free the space again)."""
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(disk).free - 40_000))
    acknowledged: list[str] = []
    for i in range(1000):
        try:
            client.set(f"click:{i}", "x" * 4000)
        except redis.ResponseError as refusal:
            return acknowledged, refusal, filler
        acknowledged.append(f"click:{i}")
    pytest.fail("Redis accepted 4 MB on a 2 MB disk")


def keys_after_restart(disk: Path) -> set[str]:
    with LocalRedis(disk, persistent=True) as server:
        return {os.fsdecode(key) for key in server.client().keys("click:*")}


def test_a_full_disk_refuses_writes_serves_reads_and_stop_keeps_every_acknowledged_write(
    tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = LocalRedis(tiny_disk, persistent=True).start()
    assert (tiny_disk / DISK_RESERVE_FILE).stat().st_size > 0
    try:
        client = connect(server.url)
        acknowledged, refusal, filler = fill_until_refused(client, tiny_disk)
        assert str(refusal).startswith("MISCONF Errors writing to the AOF file: No space left on device")
        assert client.get(acknowledged[0]) == b"x" * 4000 and client.dbsize() == len(acknowledged)
        persistence = client.info("persistence")
        assert persistence["aof_last_write_status"] == "err"
        assert persistence["aof_buffer_length"] > 0  # the last acknowledged write is only in Redis' memory
        process = running_process(server)
        caplog.set_level(logging.INFO, logger="local_redis")
    finally:
        server.stop()
    assert process.returncode == 0  # it exited when asked: not killed after a timeout
    assert not (tiny_disk / DISK_RESERVE_FILE).exists()  # given to Redis' last flush
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("deleted its disk reserve" in message and str(tiny_disk) in message for message in warnings)
    assert keys_after_restart(tiny_disk) == set(acknowledged)  # written while the disk was still full
    filler.unlink()
    assert keys_after_restart(tiny_disk) == set(acknowledged)
    assert (tiny_disk / DISK_RESERVE_FILE).exists()  # made again once there was room


def test_without_room_for_a_reserve_the_start_warns_and_stop_reports_the_acknowledged_writes_it_lost(
    tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hog = tiny_disk / "hog"
    hog.write_bytes(b"\0" * (shutil.disk_usage(tiny_disk).free - 200_000))
    caplog.set_level(logging.INFO, logger="local_redis")
    server = LocalRedis(tiny_disk, persistent=True).start()
    try:
        assert not (tiny_disk / DISK_RESERVE_FILE).exists()
        assert any("no room for a disk reserve" in record.getMessage() for record in caplog.records)
        client = connect(server.url)
        acknowledged, _, filler = fill_until_refused(client, tiny_disk)
        unwritten = client.info("persistence")["aof_buffer_length"]
    finally:
        server.stop()
    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert f"{unwritten} bytes of acknowledged writes since the last successful AOF write are not on disk" in errors[0]
    assert str(tiny_disk) in errors[0]
    filler.unlink()
    hog.unlink()
    assert keys_after_restart(tiny_disk) == set(acknowledged[:-1])


def test_space_freed_before_stop_keeps_every_acknowledged_write(
    tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = LocalRedis(tiny_disk, persistent=True).start()
    try:
        acknowledged, _, filler = fill_until_refused(connect(server.url), tiny_disk)
        filler.unlink()
        caplog.set_level(logging.INFO, logger="local_redis")
    finally:
        server.stop()
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert keys_after_restart(tiny_disk) == set(acknowledged)


# --- a damaged append-only file --------------------------------------------------------------


def write_clicks(data_dir: Path, count: int) -> Path:
    """count SETs through a persistent server, stopped cleanly; returns the AOF it appended to."""
    with LocalRedis(data_dir, persistent=True) as server:
        client = server.client()
        for i in range(count):
            client.set(f"click:{i}", str(i))
    return data_dir / "appendonlydir" / "appendonly.aof.1.incr.aof"


def test_a_damaged_aof_stops_the_start_with_the_repair_command_and_the_repair_keeps_what_came_before(
    tmp_path: Path,
) -> None:
    incr = write_clicks(tmp_path, 10)
    data = incr.read_bytes()
    damaged_at = data.index(b"*3\r\n$3\r\nSET\r\n$7\r\nclick:5")
    damaged = data[: damaged_at + 16] + data[damaged_at + 30 :]  # half of click:5's SET cut out
    incr.write_bytes(damaged)

    with pytest.raises(CorruptAofError) as corrupt:
        LocalRedis(tmp_path, persistent=True).start()
    message = str(corrupt.value)
    assert f"the append-only file in {tmp_path} is damaged (Bad file format reading the append only file" in message
    assert f"`{repair_command(tmp_path)}`" in message and "--repair-aof" in message
    assert redis_servers_on(tmp_path) == []

    repaired = subprocess.run(
        [sys.executable, "local_redis.py", "--repair-aof", str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert repaired.returncode == 0, repaired.stderr
    assert f"repaired {tmp_path / 'appendonlydir'}: appendonly.aof.1.incr.aof cut from" in repaired.stdout
    backups = list(tmp_path.glob("appendonlydir.before-repair-*"))
    assert len(backups) == 1 and (backups[0] / incr.name).read_bytes() == damaged

    with LocalRedis(tmp_path, persistent=True) as server:
        assert sorted(server.client().keys("click:*")) == [f"click:{i}".encode() for i in range(5)]
        with pytest.raises(DataDirBusyError, match=rf"process {os.getpid()} runs the bundled Redis"):
            repair_aof(tmp_path)
    assert repair_aof(tmp_path) == f"the append-only file in {tmp_path} is valid: nothing to repair"


def test_a_torn_last_command_is_trimmed_by_redis_itself(tmp_path: Path) -> None:
    """What a crash or a full disk leaves: Redis loads everything before the tear (aof-load-truncated)."""
    incr = write_clicks(tmp_path, 10)
    incr.write_bytes(incr.read_bytes()[:-7])
    with LocalRedis(tmp_path, persistent=True) as server:
        assert sorted(server.client().keys("click:*")) == sorted(f"click:{i}".encode() for i in range(9))


def test_the_repair_command_explains_what_it_needs() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "local_redis.py", *args], cwd=ROOT, capture_output=True, text=True)

    nothing = run()
    assert nothing.returncode == 2 and "nothing to do: pass --repair-aof [DATA_DIR]" in nothing.stderr
    missing = run("--repair-aof", "/nonexistent/data")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "there is no append-only file to repair in /nonexistent/data" in missing.stderr


# --- memory and connections ------------------------------------------------------------------


def test_a_memory_cap_evicts_users_and_never_products() -> None:
    with LocalRedis(maxmemory="8mb") as server:
        client = server.client()
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-lru"}
        for i in range(200):
            client.hset(f"product:{i}", mapping={"name": f"item {i}", "description": "y" * 1000})
        for i in range(3000):  # 12 MB of users, each with the expiry users get
            client.hset(f"user:{i}:features", mapping={"session_vec": "z" * 4000})
            client.expire(f"user:{i}:features", 30 * 86400)
        assert client.info("stats")["evicted_keys"] > 0
        assert all(client.exists(f"product:{i}") for i in range(200))
        assert len(client.keys("user:*")) < 3000
        with pytest.raises(redis.exceptions.OutOfMemoryError, match=r"used memory > .maxmemory."):
            for i in range(3000):  # products alone past the cap: refused, not evicted
                client.hset(f"product:extra-{i}", mapping={"description": "y" * 4000})
        assert all(client.exists(f"product:{i}") for i in range(200))


def test_a_burst_of_callers_waits_for_the_pooled_connections_instead_of_opening_more(
    local_redis: LocalRedis,
) -> None:
    client = connect(local_redis.url)
    observer = local_redis.client()
    callers = POOL_MAX_CONNECTIONS + 16
    errors: list[BaseException] = []
    most_connected = 0

    def blocking_call() -> None:
        try:
            client.blpop([f"burst-queue-{threading.get_ident()}"], timeout=1)  # holds its connection 1 s
        except redis.RedisError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=blocking_call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        most_connected = max(most_connected, observer.info("clients")["blocked_clients"])
        time.sleep(0.01)
    for thread in threads:
        thread.join()
    assert errors == []
    assert most_connected == POOL_MAX_CONNECTIONS
    observer.close()
    client.close()
