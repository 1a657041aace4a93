"""What a child process of ours does about its parent: one rule for every process we start."""

from __future__ import annotations

import ctypes
import signal

# Linux's prctl option that names the signal a child gets when its parent goes away.
PR_SET_PDEATHSIG = 1

# Resolved once, at import, not in the child: a forked child of a threaded program (the demo)
# must not load libraries between fork and exec.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when the thread that started it ends, so that a
    crashed test run, a killed CLI or a killed demo never leaves an orphan behind (a
    redis-server, a Sentinel, a demo worker). Called in the child: before exec as a
    `preexec_fn`, or first thing after fork. The signal follows the starting *thread*, not the
    process, which is why a supervisor thread outlives the Redis it starts, and a set of
    servers is started from a thread that outlives them."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
