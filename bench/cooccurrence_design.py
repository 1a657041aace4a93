"""Which way to keep "bought together" live in Redis, measured at Online Retail scale.

Two designs, fed the same train purchases (invoices before 2011-10-01, data/online-retail/):

- update on write (what the library does, recengine/co_occurrence.py): each product's
  neighbours are a sorted set of faded counts under its own hash tag. An event reads the user's
  window (a field of the user's hash; the library reads it with the product), then in one
  pipeline stores the window with the event in front (the library's user script does) and adds
  to the counts of its product and of each partner (at most partners_per_event; one script call
  on one Redis), each trimmed to neighbours_kept. A read is ZREVRANGE + GET on one slot.
- compute on read (session-kNN): an event adds its product to its session's set and the session
  to the product's sorted set of sessions (by time, capped at SESSIONS_KEPT). A read takes the
  product's recent sessions, then every one of their sets, and counts the products in them,
  each session faded by its age as the counts are.

For each: the commands one event sends and Redis runs (INFO commandstats), the p50 of one live
event's writes (round trips included), Redis memory per train event after the whole train set
is loaded, the p50 of reading one product's neighbours, and HR@10 / recall@10 / MRR@10 of those
neighbours on the test baskets (issue 20's protocol: the first product of 3,000 test baskets of
2+ products, drawn with the seed; what else the basket holds is what should come back). The
filter check both would share (one FT.SEARCH over the neighbour ids) is left out of both.

With --sweep, the library's pairing rules (co_occurrence_rules.pair_increments, the same code the
import runs) are replayed in Python over the train set for a grid of partners_per_event,
neighbours_kept and half_life_s, to show what the bounds cost in HR@10.

Run: .venv/bin/python -m bench.cooccurrence_design [--sweep] [--events data/online-retail/events.csv.gz]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import heapq
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import ROOT, machine, percentiles, write_result
from local_redis import LocalRedis
from recengine.co_occurrence import CoOccurrence
from recengine.co_occurrence_rules import CoOccurrenceConfig, WindowEntry, pair_increments, window_after
from recengine.event_types import EventWeights
from recengine.layout import WINDOW_FIELD, KeyLayout
from recengine.scripts import Scripts

DEFAULT_EVENTS = ROOT / "data" / "online-retail" / "events.csv.gz"
RESULTS_PATH = ROOT / "bench" / "results" / "cooccurrence_design.json"
SPLIT_AT = datetime(2011, 10, 1, tzinfo=UTC).timestamp()
K = 10
# compute on read: the recent sessions kept per product, and how long a session's set lives.
SESSIONS_KEPT = 200
SESSION_TTL_S = 365 * 86400
LOAD_BATCH = 2000
WEIGHTS = EventWeights()


@dataclass(frozen=True)
class Event:
    user_id: str
    product_id: str
    at: float
    session_id: str


def read_events(path: Path) -> list[Event]:
    """The purchases of bench/online_retail.py's event file, in file order."""
    times: dict[str, float] = {}
    events = []
    with gzip.open(path, "rt", encoding="utf-8", newline="") as stream:
        for row in csv.DictReader(stream):
            text = row["timestamp"]
            at = times.get(text)
            if at is None:
                at = times[text] = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
            events.append(Event(row["user_id"], row["product_id"], at, row["session_id"]))
    return events


def split(events: Sequence[Event]) -> tuple[list[Event], list[Event]]:
    """Train and test by the time of each invoice's first event (no basket is cut in two)."""
    start: dict[str, float] = {}
    for event in events:
        start.setdefault(event.session_id, event.at)
    return [e for e in events if start[e.session_id] < SPLIT_AT], [e for e in events if start[e.session_id] >= SPLIT_AT]


def test_queries(test: Sequence[Event], count: int, seed: int) -> list[tuple[str, set[str]]]:
    """(first product, the basket's other products) of `count` test baskets of 2+ products, drawn
    as bench/crowd.py draws them."""
    baskets: dict[str, list[str]] = {}
    for event in test:
        basket = baskets.setdefault(event.session_id, [])
        if event.product_id not in basket:
            basket.append(event.product_id)
    eligible = sorted(s for s, products in baskets.items() if len(products) >= 2)
    chosen = sorted(random.Random(seed).sample(eligible, min(count, len(eligible))))
    return [(baskets[s][0], set(baskets[s][1:])) for s in chosen]


def quality(rank: Callable[[str], list[str]], queries: Sequence[tuple[str, set[str]]]) -> dict[str, float]:
    hits = recall = mrr = 0.0
    for product_id, relevant in queries:
        found = [i for i, pid in enumerate(rank(product_id)[:K]) if pid in relevant]
        hits += bool(found)
        recall += len(found) / len(relevant)
        mrr += 1 / (found[0] + 1) if found else 0.0
    n = max(1, len(queries))
    return {f"hit_rate@{K}": round(hits / n, 4), f"recall@{K}": round(recall / n, 4), f"mrr@{K}": round(mrr / n, 4)}


def command_calls(client: Any) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


def memory_used(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


# --- update on write: the library's store ------------------------------------------------------


class UpdateOnWrite:
    name = "update on write (per-product sorted sets)"
    client_commands = ("evalsha", "hset", "hget")

    def __init__(self, client: Any, config: CoOccurrenceConfig) -> None:
        self.client = client
        self.config = config
        keys = KeyLayout("design:idx", "design:product:", "design:user:")
        self.store = CoOccurrence(keys, Scripts(client), config, shard_of=lambda key: 0)  # one Redis
        self.windows: dict[str, list[WindowEntry]] = {}

    def load(self, events: Sequence[Event]) -> None:
        """The train set as an import sends it: windows and pairs worked out here with the
        library's rules, each batch's counts summed per product, the library's script calls."""
        self.client.script_load(self.store.scripts.faded_counts.script)
        for start in range(0, len(events), LOAD_BATCH):
            batch = events[start : start + LOAD_BATCH]
            reference = max(e.at for e in batch)
            counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
            touched: set[str] = set()
            for event in batch:
                entry = WindowEntry(event.product_id, WEIGHTS.purchase, event.at, event.session_id)
                previous = self.windows.get(event.user_id, [])
                fade = 2.0 ** ((event.at - reference) / self.config.half_life_s)
                for partner, added in pair_increments(previous, entry, self.config, WEIGHTS):
                    counts[event.product_id][partner] += added * fade
                    counts[partner][event.product_id] += added * fade
                self.windows[event.user_id] = window_after(previous, entry, self.config)
                touched.add(event.user_id)
            pipe = self.client.pipeline(transaction=False)
            for call in self.store.batch_calls(reference, counts):
                pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
            for user_id in touched:
                pipe.hset(self.user_key(user_id), WINDOW_FIELD, self.encoded(self.windows[user_id]))
            pipe.execute()

    def user_key(self, user_id: str) -> str:
        return self.store.keys.user(user_id).features

    @staticmethod
    def encoded(window: Sequence[WindowEntry]) -> str:
        return "\n".join(entry.encode() for entry in window)

    def write(self, event: Event) -> None:
        """One live event's co-occurrence, as /event sends it: the window read (with the
        product, in the library), then the window stored and the count scripts, pipelined."""
        entry = WindowEntry(event.product_id, WEIGHTS.purchase, event.at, event.session_id)
        previous = self.store.window_from(self.client.hget(self.user_key(event.user_id), WINDOW_FIELD))
        calls = self.store.pair_calls(
            event.product_id, event.at, pair_increments(previous, entry, self.config, WEIGHTS)
        )
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.user_key(event.user_id), WINDOW_FIELD, self.encoded(window_after(previous, entry, self.config)))
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        pipe.execute()

    def neighbours(self, product_id: str, now: float) -> list[str]:
        pipe = self.client.pipeline(transaction=False)
        self.store.queue_neighbours(pipe, product_id, 50)
        return [n.product_id for n in self.store.neighbours_from(pipe.execute(), now)]


# --- compute on read: stored sessions ----------------------------------------------------------


class ComputeOnRead:
    name = "compute on read (session-kNN)"
    client_commands = ("sadd", "expire", "zadd", "zremrangebyrank")

    def __init__(self, client: Any, half_life_s: float) -> None:
        self.client = client
        self.half_life_s = half_life_s

    @staticmethod
    def session_key(session_id: str) -> str:
        return "{design:session:" + session_id + "}"

    @staticmethod
    def sessions_key(product_id: str) -> str:
        return "{design:sessions-of:" + product_id + "}"

    def queue(self, pipe: Any, event: Event) -> None:
        pipe.sadd(self.session_key(event.session_id), event.product_id)
        pipe.expire(self.session_key(event.session_id), SESSION_TTL_S)
        pipe.zadd(self.sessions_key(event.product_id), {event.session_id: event.at})
        pipe.zremrangebyrank(self.sessions_key(event.product_id), 0, -(SESSIONS_KEPT + 1))

    def load(self, events: Sequence[Event]) -> None:
        for start in range(0, len(events), LOAD_BATCH):
            pipe = self.client.pipeline(transaction=False)
            for event in events[start : start + LOAD_BATCH]:
                self.queue(pipe, event)
            pipe.execute()

    def write(self, event: Event) -> None:
        pipe = self.client.pipeline(transaction=False)
        self.queue(pipe, event)
        pipe.execute()

    def neighbours(self, product_id: str, now: float) -> list[str]:
        sessions = self.client.zrevrange(self.sessions_key(product_id), 0, SESSIONS_KEPT - 1, withscores=True)
        pipe = self.client.pipeline(transaction=False)
        for session, _ in sessions:
            pipe.smembers(self.session_key(session.decode()))
        counts: Counter[str] = Counter()
        for (_, at), members in zip(sessions, pipe.execute(), strict=True):
            fade = 2.0 ** (-(now - at) / self.half_life_s)
            for member in members:
                counts[member.decode()] += fade
        counts.pop(product_id, None)
        return [pid for pid, _ in heapq.nlargest(50, counts.items(), key=lambda item: (item[1], item[0]))]


# --- measuring a design ------------------------------------------------------------------------


def measure(
    design: Any, client: Any, train: Sequence[Event], live: Sequence[Event], queries: Sequence[tuple[str, set[str]]]
) -> dict[str, Any]:
    client.flushall()
    memory_before = memory_used(client)
    started = time.perf_counter()
    design.load(train)
    load_s = time.perf_counter() - started
    memory_after = memory_used(client)
    # quality before the live writes, which are test events: the counts hold the train set only
    measured = quality(lambda pid: design.neighbours(pid, SPLIT_AT), queries)
    calls_before = command_calls(client)
    latencies = []
    for event in live:
        began = time.perf_counter()
        design.write(event)
        latencies.append((time.perf_counter() - began) * 1000)
    calls = command_calls(client) - calls_before
    calls.pop("info", None)
    client_sent = sum(calls.get(name, 0) for name in design.client_commands)
    reads = []
    for product_id, _ in queries[:500]:
        began = time.perf_counter()
        design.neighbours(product_id, SPLIT_AT)
        reads.append((time.perf_counter() - began) * 1000)
    return {
        "design": design.name,
        "load_events_per_s": round(len(train) / load_s),
        "memory_bytes_per_train_event": round((memory_after - memory_before) / len(train), 1),
        "memory_mb": round((memory_after - memory_before) / 2**20, 2),
        "keys": client.dbsize(),
        "commands_sent_per_event": round(client_sent / len(live), 2),
        "commands_run_per_event": round(sum(calls.values()) / len(live), 2),
        "commands_run_by_name": {name: round(n / len(live), 2) for name, n in sorted(calls.items())},
        "write": percentiles(latencies),
        "read": percentiles(reads),
        "quality": measured,
    }


# --- the sweep: what the bounds cost, with the library's own rules ------------------------------


def replay_counts(train: Sequence[Event], config: CoOccurrenceConfig, now: float) -> dict[str, dict[str, float]]:
    """The counts update on write would hold at `now`, worked out in Python with
    pair_increments; the trim to neighbours_kept runs when a product holds twice that many
    (Redis trims on every write: this keeps slightly more, so it is the bound's best case)."""
    windows: dict[str, list[WindowEntry]] = {}
    counts: dict[str, dict[str, float]] = defaultdict(dict)
    kept = config.neighbours_kept
    for event in train:
        entry = WindowEntry(event.product_id, WEIGHTS.purchase, event.at, event.session_id)
        previous = windows.get(event.user_id, [])
        fade = 2.0 ** ((event.at - now) / config.half_life_s)
        for partner, added in pair_increments(previous, entry, config, WEIGHTS):
            for a, b in ((event.product_id, partner), (partner, event.product_id)):
                row = counts[a]
                row[b] = row.get(b, 0.0) + added * fade
                if len(row) > 2 * kept:
                    counts[a] = dict(heapq.nlargest(kept, row.items(), key=lambda item: item[1]))
        windows[event.user_id] = window_after(previous, entry, config)
    return counts


def ranked(counts: Mapping[str, Mapping[str, float]]) -> Callable[[str], list[str]]:
    def rank(product_id: str) -> list[str]:
        row = counts.get(product_id, {})
        return [pid for pid, _ in heapq.nlargest(K, row.items(), key=lambda item: (item[1], item[0]))]

    return rank


def sweep(train: Sequence[Event], queries: Sequence[tuple[str, set[str]]]) -> list[dict[str, Any]]:
    rows = []
    base = CoOccurrenceConfig()
    grid: Iterable[dict[str, Any]] = [
        *({"partners_per_event": n, "window_kept": max(base.window_kept, n + 1)} for n in (4, 8, 16, 32, 64)),
        *({"neighbours_kept": m} for m in (20, 50, 200)),
        *({"half_life_s": days * 86400.0} for days in (7, 30, 365, 3650)),
    ]
    for change in grid:
        config = CoOccurrenceConfig(**{**vars(base), **change})
        started = time.perf_counter()
        row = {
            "partners_per_event": config.partners_per_event,
            "neighbours_kept": config.neighbours_kept,
            "half_life_days": round(config.half_life_s / 86400, 1),
            **quality(ranked(replay_counts(train, config, SPLIT_AT)), queries),
        }
        print(f"  {row}  ({time.perf_counter() - started:.0f} s)", flush=True)
        rows.append(row)
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=Path, default=DEFAULT_EVENTS, help="bench/online_retail.py's event file")
    parser.add_argument("--baskets", type=int, default=3000, help="test baskets for HR@10 (default %(default)s)")
    parser.add_argument("--live", type=int, default=3000, help="test events written one by one (default %(default)s)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sweep", action="store_true", help="also replay the bounds grid in Python")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.events.exists():
        raise SystemExit(f"error: {args.events} is missing: make it with bench/online_retail.py")
    events = read_events(args.events)
    train, test = split(events)
    queries = test_queries(test, args.baskets, args.seed)
    config = CoOccurrenceConfig()
    report: dict[str, Any] = {
        "command": "python -m bench.cooccurrence_design" + (" --sweep" if args.sweep else ""),
        "train_events": len(train),
        "live_events": args.live,
        "queries": len(queries),
        "config": vars(config),
        "sessions_kept": SESSIONS_KEPT,
    }
    with LocalRedis() as server:
        client = server.client()
        report["machine"] = machine(client)
        report["designs"] = [
            measure(design, client, train, test[: args.live], queries)
            for design in (UpdateOnWrite(client, config), ComputeOnRead(client, config.half_life_s))
        ]
        client.close()
    for row in report["designs"]:
        print(
            f"{row['design']:45} write p50 {row['write']['p50_ms']:6.3f} ms  read p50 {row['read']['p50_ms']:7.3f} ms"
            f"  {row['commands_sent_per_event']:5.2f} sent / {row['commands_run_per_event']:5.2f} run per event"
            f"  {row['memory_bytes_per_train_event']:6.1f} B/event ({row['memory_mb']} MB)  {row['quality']}"
        )
    if args.sweep:
        print("bounds (update on write, replayed in Python):")
        report["sweep"] = sweep(train, queries)
    report["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    write_result(args.output, report)


if __name__ == "__main__":
    main()
