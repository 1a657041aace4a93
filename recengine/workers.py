"""The process model of `--workers N`: a supervising parent and N forked workers that serve one
port together (SO_REUSEPORT). The parent starts the workers one after the other, replaces a
worker that dies or stops beating (a frozen worker would keep its share of new connections
waiting for ever), and stops them all on SIGTERM/SIGINT; a worker dies with its parent.

Liveness: each worker writes a byte to a pipe of its own at least every few tenths of a second
from its serving loop (its `beat`); one silent for LIVENESS_TIMEOUT_S is killed and replaced.
The parent waits for its workers by pid, never for any child: the bundled Redis is a child of
the same process, and its own supervisor must be the one to see how it ended.

Nothing here knows HTTP or Redis: a worker runs the `Work` it is given (demo_server.py's builds
a server and serves), and the parent only forks, waits and signals.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import NoReturn

from recengine.process import die_with_parent

log = logging.getLogger(__name__)

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
WORKER_STOP_TIMEOUT_S = 10
STOP_POLL_S = 0.02
# A serving worker silent this long is frozen (stopped, deadlocked, swapped out): killed, replaced.
LIVENESS_TIMEOUT_S = 5.0
# How often the parent looks at its workers (exits and heartbeats).
WATCH_POLL_S = 0.5

# What a forked worker runs: Work(seed, ready, beat) serves until stopped and returns the
# worker's exit code. `seed` is true for the first worker only (it loads the catalogue; a
# replacement must not wipe what users did meanwhile); `ready` is called once the worker
# listens; `beat` must then be called at least every second or so while it serves. A stop signal
# arrives as KeyboardInterrupt, which a worker may let through (a clean stop, exit code 0).
Work = Callable[[bool, Callable[[], None], Callable[[], None]], int]


class WorkerStartError(RuntimeError):
    """A worker exited before it listened (it has printed why)."""


def run_worker(work: Work, seed: bool, ready_fd: int, beat_fd: int, close_fds: list[int], parent: int) -> NoReturn:
    """The life of a forked worker: it writes one byte to ready_fd once it listens, beats on
    beat_fd while it serves, stops on SIGTERM/SIGINT, and gets SIGTERM when the parent dies. It
    always leaves with os._exit: the parent's exit handlers (stopping the bundled Redis) are not
    a worker's."""
    code = 1
    try:
        for fd in close_fds:
            os.close(fd)
        die_with_parent()
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(0)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        code = work(seed, lambda: _write_ready(ready_fd), lambda: _beat(beat_fd))
    except KeyboardInterrupt:
        code = 0
    except BaseException:
        log.exception("worker %d failed", os.getpid())
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _write_ready(ready_fd: int) -> None:
    os.write(ready_fd, b"1")


def _beat(beat_fd: int) -> None:
    """One heartbeat; a full pipe (the parent is behind reading) already says enough."""
    with contextlib.suppress(BlockingIOError):
        os.write(beat_fd, b".")


class Supervisor:
    """The parent of --workers N. It starts the workers one after the other (each loads the
    model; one at a time, a first start's one-time model export is never raced), replaces a
    worker that dies, and stops them all on SIGTERM/SIGINT."""

    def __init__(self, work: Work, count: int, address: tuple[str, int], reservation: socket.socket) -> None:
        self.work = work
        self.count = count
        self.address = address
        # Held until every first worker listens (see reserve_port).
        self.reservation: socket.socket | None = reservation
        self.workers: set[int] = set()
        # Each worker's heartbeat pipe (read end) and when it last beat (monotonic seconds).
        self.beats: dict[int, int] = {}
        self.last_beat: dict[int, float] = {}

    def spawn(self, seed: bool) -> int:
        """Fork a worker and wait until it listens. Stop signals are blocked across the fork,
        so that neither process is interrupted half-way (a child running the parent's cleanup
        would stop the bundled Redis)."""
        read_fd, write_fd = os.pipe()
        beat_read, beat_write = os.pipe()
        os.set_blocking(beat_read, False)
        os.set_blocking(beat_write, False)
        parent = os.getpid()
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                inherited = [read_fd, beat_read, *self.beats.values()]
                inherited += [self.reservation.fileno()] if self.reservation else []
                run_worker(self.work, seed, write_fd, beat_write, inherited, parent)
            self.workers.add(pid)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            os.close(write_fd)
            os.close(beat_write)
        try:
            ready = os.read(read_fd, 1)
        finally:
            os.close(read_fd)
        if not ready:
            os.close(beat_read)
            os.waitpid(pid, 0)
            self.workers.discard(pid)
            raise WorkerStartError(f"worker {pid} exited before it listened")
        self.beats[pid] = beat_read
        self.last_beat[pid] = time.monotonic()
        return pid

    def run(self) -> None:
        """Start the workers, then keep N of them serving until interrupted."""
        for number in range(self.count):
            self.spawn(seed=number == 0)
        if self.reservation:
            self.reservation.close()
            self.reservation = None
        log.info("listening on http://%s:%d with %d workers", *self.address, self.count)
        while True:
            for pid, status in self.exited():
                log.warning("worker %d exited (%s); starting another", pid, describe_exit(status))
                self.replace(pid)
            for pid, silent_s in self.silent():
                log.warning("worker %d not answering (no heartbeat for %.1f s); killing it", pid, silent_s)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                self.replace(pid)
            self.listen_for_beats(WATCH_POLL_S)

    def exited(self) -> list[tuple[int, int]]:
        """Workers that have exited, reaped (by pid: never another child), with their status."""
        gone = []
        for pid in list(self.workers):
            reaped, status = os.waitpid(pid, os.WNOHANG)
            if reaped:
                gone.append((pid, status))
        return gone

    def silent(self) -> list[tuple[int, float]]:
        """Workers whose last heartbeat is older than LIVENESS_TIMEOUT_S, with its age."""
        now = time.monotonic()
        return [(pid, now - at) for pid, at in self.last_beat.items() if now - at > LIVENESS_TIMEOUT_S]

    def listen_for_beats(self, timeout_s: float) -> None:
        """Wait up to timeout_s for heartbeats, and note every worker that beat."""
        readable, _, _ = select.select(list(self.beats.values()), [], [], timeout_s)
        now = time.monotonic()
        for pid, fd in list(self.beats.items()):
            if fd in readable:
                with contextlib.suppress(BlockingIOError):
                    if os.read(fd, 4096):
                        self.last_beat[pid] = now

    def replace(self, pid: int) -> None:
        """Forget a worker that is gone and start another in its place."""
        self.workers.discard(pid)
        self.last_beat.pop(pid, None)
        fd = self.beats.pop(pid, None)
        if fd is not None:
            os.close(fd)
        log.info("worker %d replaced by worker %d", pid, self.spawn(seed=False))

    def stop(self) -> None:
        """SIGTERM to every worker; SIGKILL to one still running WORKER_STOP_TIMEOUT_S later."""
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + WORKER_STOP_TIMEOUT_S
        while self.workers:
            for pid in list(self.workers):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    self.workers.discard(pid)
                elif time.monotonic() > deadline:
                    log.warning("worker %d did not stop within %d s; killing it", pid, WORKER_STOP_TIMEOUT_S)
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    self.workers.discard(pid)
            time.sleep(STOP_POLL_S)


def describe_exit(status: int) -> str:
    """A wait status in words: the signal that killed the process, or its exit code."""
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening, so it is never given connections) to host:port with
    SO_REUSEPORT: a busy port is reported before any worker starts, port 0 becomes one real
    port for every worker, and no other program takes the port while the workers start."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}. Try another --port.") from None
    return sock


def supervise(work: Work, count: int, host: str, reservation: socket.socket) -> int:
    """Serve with `count` workers on the port `reservation` holds until SIGTERM/SIGINT (a
    KeyboardInterrupt here); the exit code: 1 when a worker could not start. The workers are
    stopped, and the reservation closed, whatever happens."""
    supervisor = Supervisor(work, count, (host, reservation.getsockname()[1]), reservation)
    code = 0
    try:
        supervisor.run()
    except KeyboardInterrupt:
        log.info("stopping")
    except WorkerStartError as exc:
        log.error("%s; stopping", exc)
        code = 1
    finally:
        reservation.close()
        supervisor.stop()
    return code
