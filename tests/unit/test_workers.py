"""The --workers process model's small parts: how an exit is described, and the port a run
reserves before any worker starts. Real processes and sockets; no Redis, no model."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time

import pytest

from recengine.workers import LIVENESS_TIMEOUT_S, Supervisor, describe_exit, reserve_port


def wait_status(*argv: str) -> int:
    """The wait status of a Python that runs argv."""
    pid = os.posix_spawn(sys.executable, [sys.executable, *argv], os.environ)
    return os.waitpid(pid, 0)[1]


def test_an_exit_is_described_by_its_code_or_its_signal() -> None:
    assert describe_exit(wait_status("-c", "raise SystemExit(3)")) == "exit code 3"
    assert describe_exit(wait_status("-c", "pass")) == "exit code 0"
    killed = wait_status("-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert describe_exit(killed) == f"killed by {signal.SIGKILL.name}"


def test_port_zero_becomes_one_real_port_that_workers_can_share() -> None:
    reservation = reserve_port("127.0.0.1", 0)
    try:
        port = reservation.getsockname()[1]
        assert port > 0
        with reserve_port("127.0.0.1", port) as second:  # SO_REUSEPORT: another worker's socket
            assert second.getsockname()[1] == port
    finally:
        reservation.close()


def test_a_port_another_program_listens_on_is_refused_with_the_fix() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(ValueError, match=rf"cannot listen on 127\.0\.0\.1:{port}: .*Try another --port"):
            reserve_port("127.0.0.1", port)


def idle_supervisor() -> Supervisor:
    """A Supervisor that has started nothing: its bookkeeping, driven by hand."""
    return Supervisor(lambda seed, ready, beat: 0, 1, ("127.0.0.1", 0), reserve_port("127.0.0.1", 0))


def test_a_worker_is_silent_once_its_last_beat_is_older_than_the_limit() -> None:
    supervisor = idle_supervisor()
    read_fd, write_fd = os.pipe()
    try:
        supervisor.beats[4242] = read_fd
        supervisor.last_beat[4242] = time.monotonic() - LIVENESS_TIMEOUT_S - 1
        assert [pid for pid, _ in supervisor.silent()] == [4242]
        os.write(write_fd, b"...")  # three beats, read as one
        supervisor.listen_for_beats(1.0)
        assert supervisor.silent() == []
    finally:
        os.close(read_fd)
        os.close(write_fd)
        assert supervisor.reservation is not None
        supervisor.reservation.close()


def test_only_the_workers_are_reaped_never_another_child() -> None:
    """The bundled Redis is a child of the same process: its own supervisor must see its exit."""
    supervisor = idle_supervisor()
    other = os.posix_spawn(sys.executable, [sys.executable, "-c", "pass"], os.environ)
    worker = os.posix_spawn(sys.executable, [sys.executable, "-c", "raise SystemExit(3)"], os.environ)
    supervisor.workers.add(worker)
    try:
        deadline = time.monotonic() + 30
        exited: list[tuple[int, int]] = []
        while not exited:
            assert time.monotonic() < deadline
            exited = supervisor.exited()
            time.sleep(0.02)
        assert [(pid, describe_exit(status)) for pid, status in exited] == [(worker, "exit code 3")]
        assert os.waitpid(other, 0)[0] == other  # still ours to reap: nobody took it
    finally:
        assert supervisor.reservation is not None
        supervisor.reservation.close()
