"""Is anything else competing for the cores while we measure?

The benchmarks run on a small machine shared with other people's test runs, which would
silently inflate every latency. These helpers read /proc/stat and Redis' own CPU counters to
tell how many cores processes other than ours (and our Redis) kept busy during a timed run, wait
(within a bounded budget) for the machine to calm down, and measure a run again when it was
contended.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

log = logging.getLogger("bench.contention")

# Other processes using more than this many cores during a timed run make it suspect: it is
# measured again after the machine calms down (a 2-core machine shared with test runs).
CONTENDED_CORES = 0.3
MIN_LOAD_WINDOW_S = 0.5


def server_cpu_s(client: redis.Redis) -> float:
    """CPU seconds of Redis' main thread, where commands (and HNSW inserts) run: comparing it
    with wall time tells whether the server or the client is the bottleneck."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores since boot, from /proc/stat's first line."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - values[3] - values[4]) / tick, sum(values) / tick


def machine_busy(seconds: float = 1.0) -> float:
    """Share of all cores busy over `seconds` while we sit idle: other people's test runs on a
    2-core machine would otherwise silently inflate every latency here."""
    busy_0, total_0 = machine_cpu_s()
    time.sleep(seconds)
    busy_1, total_1 = machine_cpu_s()
    return round((busy_1 - busy_0) / max(1e-9, total_1 - total_0), 3)


class QuietBudget:
    """Seconds this whole run may still spend waiting for other processes to stop competing
    for the cores: bounded, so that a machine busy for good cannot stretch a run forever."""

    remaining_s = 180.0


def wait_for_quiet(max_wait_s: float, threshold: float = 0.15) -> float:
    """Wait (up to max_wait_s, within the run's budget) until the machine is mostly idle;
    returns the last busy share."""
    started = time.monotonic()
    deadline = started + min(max_wait_s, QuietBudget.remaining_s)
    busy = machine_busy()
    while busy > threshold and time.monotonic() < deadline:
        log.info("machine %.0f%% busy with other work; waiting for it to calm down", busy * 100)
        busy = machine_busy(3.0)
    QuietBudget.remaining_s = max(0.0, QuietBudget.remaining_s - (time.monotonic() - started))
    if busy > threshold:
        log.warning("machine still %.0f%% busy: latencies will be pessimistic", busy * 100)
    return busy


@dataclass(frozen=True)
class CpuSnapshot:
    wall_s: float
    machine_busy_s: float  # all processes, from /proc/stat
    client_cpu_s: float  # this process (all its threads)
    server_cpu_s: float  # the Redis server (all its threads); 0 when there is none


def cpu_snapshot(client: redis.Redis | None) -> CpuSnapshot:
    busy, _ = machine_cpu_s()
    server = 0.0
    if client is not None:
        cpu = client.info("cpu")
        server = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    return CpuSnapshot(time.perf_counter(), busy, time.process_time(), server)


def other_cores(before: CpuSnapshot, after: CpuSnapshot) -> float:
    """Cores that processes other than ours and our Redis kept busy between two snapshots."""
    ours = (after.client_cpu_s - before.client_cpu_s) + (after.server_cpu_s - before.server_cpu_s)
    others = (after.machine_busy_s - before.machine_busy_s) - ours
    return round(max(0.0, others / max(1e-9, after.wall_s - before.wall_s)), 2)


def measured_quietly(run: Callable[[], Any], client: redis.Redis | None, what: str) -> tuple[Any, float]:
    """run() up to three times until no other process competes for the cores while it runs;
    returns its result and the other processes' load (cores) during the kept run."""
    for attempt in range(3):
        before = cpu_snapshot(client)
        result = run()
        # /proc/stat counts in 10 ms ticks: judge the load over at least half a second.
        time.sleep(max(0.0, MIN_LOAD_WINDOW_S - (time.perf_counter() - before.wall_s)))
        others = other_cores(before, cpu_snapshot(client))
        if others < CONTENDED_CORES or attempt == 2 or QuietBudget.remaining_s <= 0:
            return result, others
        log.info("%s: other processes used %.1f cores meanwhile; measuring again", what, others)
        wait_for_quiet(30)
    raise AssertionError("unreachable")
