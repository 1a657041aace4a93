"""The --workers process model's small parts: how an exit is described, and the port a run
reserves before any worker starts. Real processes and sockets; no Redis, no model."""

from __future__ import annotations

import os
import signal
import socket
import sys

import pytest

from recengine.workers import describe_exit, reserve_port


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
