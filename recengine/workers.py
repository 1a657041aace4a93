"""The process model of `--workers N`: a supervising parent and N forked workers that serve one
port together (SO_REUSEPORT). The parent starts the workers one after the other, replaces a
worker that dies, and stops them all on SIGTERM/SIGINT; a worker dies with its parent.

Nothing here knows HTTP or Redis: a worker runs the `Work` it is given (demo_server.py's builds
a server and serves), and the parent only forks, waits and signals.
"""

from __future__ import annotations

import contextlib
import logging
import os
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

# What a forked worker runs: Work(seed, ready) serves until stopped and returns the worker's exit
# code. `seed` is true for the first worker only (it loads the catalogue; a replacement must not
# wipe what users did meanwhile); `ready` is called once the worker listens. A stop signal
# arrives as KeyboardInterrupt, which a worker may let through (a clean stop, exit code 0).
Work = Callable[[bool, Callable[[], None]], int]


class WorkerStartError(RuntimeError):
    """A worker exited before it listened (it has printed why)."""


def run_worker(work: Work, seed: bool, ready_fd: int, close_fds: list[int], parent: int) -> NoReturn:
    """The life of a forked worker: it writes one byte to ready_fd once it listens, stops on
    SIGTERM/SIGINT, and gets SIGTERM when the parent dies. It always leaves with os._exit: the
    parent's exit handlers (stopping the bundled Redis) are not a worker's."""
    code = 1
    try:
        for fd in close_fds:
            os.close(fd)
        die_with_parent()
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(0)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        code = work(seed, lambda: _write_ready(ready_fd))
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

    def spawn(self, seed: bool) -> int:
        """Fork a worker and wait until it listens. Stop signals are blocked across the fork,
        so that neither process is interrupted half-way (a child running the parent's cleanup
        would stop the bundled Redis)."""
        read_fd, write_fd = os.pipe()
        parent = os.getpid()
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                inherited = [read_fd, *([self.reservation.fileno()] if self.reservation else [])]
                run_worker(self.work, seed, write_fd, inherited, parent)
            self.workers.add(pid)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            os.close(write_fd)
        try:
            ready = os.read(read_fd, 1)
        finally:
            os.close(read_fd)
        if not ready:
            os.waitpid(pid, 0)
            self.workers.discard(pid)
            raise WorkerStartError(f"worker {pid} exited before it listened")
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
            pid, status = os.wait()
            if pid in self.workers:
                self.workers.discard(pid)
                log.warning("worker %d exited (%s); starting another", pid, describe_exit(status))
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
