"""What one user costs Redis: memory and append-only file, per usage profile (issue 24, finding 4).

A client that invents a new `user_id` per click grows Redis by one user's state per request, so
the bytes per user decide how fast a flood fills a `--maxmemory` cap, how many real users fit in
it, and how much disk the AOF takes. For each profile this starts a fresh bundled Redis with its
data in a temporary folder (appendonly, as the demo runs it), loads the demo catalogue through
RedisRecommender, then plays the profile for N users through the library (record_click /
dismiss, what the demo's /click and /dismiss call) and reports, per user:

- `used_memory` growth (INFO memory), which is what maxmemory compares against;
- the sum of MEMORY USAGE over the keys whose name holds the user's id, and how many there are:
  the user's state (one hash since issue 24, so that a memory cap evicts a user whole; four keys
  before, evicted one at a time) and popularity's record of the products the user's clicks
  counted this window (a small set in popularity's slot, expiring with the window);
- AOF growth (the files in appendonlydir, after the buffer is written).

Profiles: `new` (one click: what a flood of invented ids costs), `typical` (10 clicks over 6
products, 2 dismissals), `heavy` (200 clicks over all products, 20 dismissals: every bounded list
full). Popularity is shared by all users and is not counted per user.

    .venv/bin/python -m bench.user_memory             # 2,000 new users, 500 typical, 100 heavy
    .venv/bin/python -m bench.user_memory --quick     # a tenth of that: a few seconds

Writes bench/results/user_memory.json and bench/results/user_memory.png.
(bench/results/user_memory_four_keys.json: the same run on the layout before, commit 13e89cf.)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from bench.harness import RESULTS_DIR, ROOT, machine, write_result
from local_redis import AOF_DIR, LocalRedis, connect
from recengine.catalog_file import read_catalog
from recommender import RedisRecommender

Profile = Callable[[RedisRecommender, str, list[str]], None]


def new_user(recommender: RedisRecommender, user_id: str, products: list[str]) -> None:
    recommender.record_click(user_id, products[zlib.crc32(user_id.encode()) % len(products)])


def typical_user(recommender: RedisRecommender, user_id: str, products: list[str]) -> None:
    start = zlib.crc32(user_id.encode()) % len(products)
    for click in range(10):
        recommender.record_click(user_id, products[(start + click % 6) % len(products)])
    for dismissal in range(2):
        recommender.dismiss(user_id, products[(start + 10 + dismissal) % len(products)])


def heavy_user(recommender: RedisRecommender, user_id: str, products: list[str]) -> None:
    for click in range(200):
        recommender.record_click(user_id, products[click % len(products)])
    for dismissal in range(20):
        recommender.dismiss(user_id, products[(dismissal * 5 + 3) % len(products)])


PROFILES: dict[str, Profile] = {"new": new_user, "typical": typical_user, "heavy": heavy_user}
USERS = {"new": 2000, "typical": 500, "heavy": 100}


@dataclass(frozen=True)
class Cost:
    profile: str
    users: int
    used_memory_per_user_b: float
    memory_usage_per_user_b: float
    keys_per_user: float
    aof_per_user_b: float
    seconds: float


def aof_bytes(data_dir: Path) -> int:
    return sum(path.stat().st_size for path in (data_dir / AOF_DIR).iterdir() if path.is_file())


def appended(client: redis.Redis) -> None:
    """Until Redis has handed every write to the kernel (the AOF's size is then final)."""
    deadline = time.monotonic() + 10
    while client.info("persistence")["aof_buffer_length"] and time.monotonic() < deadline:
        time.sleep(0.01)


def user_keys(client: redis.Redis, user_id: str) -> list[bytes]:
    """Every key whose name holds the user's id (ids end in "x", so no id is a prefix of another)."""
    return list(client.scan_iter(match=f"*{user_id}*", count=1000))


def measure(name: str, users: int, catalog: dict[str, Any]) -> Cost:
    products = [product["id"] for product in catalog["products"]]
    with tempfile.TemporaryDirectory() as folder, LocalRedis(Path(folder), persistent=True) as server:
        client = connect(server.url)
        recommender = RedisRecommender(client)
        recommender.create_index()
        recommender.index_products(catalog["products"])
        # One user first, so that script caches, popularity's keys and the like are not billed to the users.
        PROFILES[name](recommender, "warmupx", products)
        client.execute_command("BGREWRITEAOF")
        while client.info("persistence")["aof_rewrite_in_progress"]:
            time.sleep(0.05)
        appended(client)
        memory_before, aof_before = int(client.info("memory")["used_memory"]), aof_bytes(Path(folder))
        started = time.perf_counter()
        ids = [f"bpu{number:06d}x" for number in range(users)]
        for user_id in ids:
            PROFILES[name](recommender, user_id, products)
        seconds = time.perf_counter() - started
        appended(client)
        memory_after, aof_after = int(client.info("memory")["used_memory"]), aof_bytes(Path(folder))
        sample = ids[:: max(1, users // 50)]
        keys = [user_keys(client, user_id) for user_id in sample]
        usage = [sum(int(client.memory_usage(key, samples=0) or 0) for key in found) for found in keys]
    return Cost(
        profile=name,
        users=users,
        used_memory_per_user_b=round((memory_after - memory_before) / users, 1),
        memory_usage_per_user_b=round(sum(usage) / len(usage), 1),
        keys_per_user=round(sum(len(found) for found in keys) / len(keys), 2),
        aof_per_user_b=round((aof_after - aof_before) / users, 1),
        seconds=round(seconds, 2),
    )


def plot(costs: list[Cost], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.6))
    names = [cost.profile for cost in costs]
    positions = range(len(costs))
    axis.bar([p - 0.2 for p in positions], [c.used_memory_per_user_b for c in costs], 0.4, label="Redis memory")
    axis.bar([p + 0.2 for p in positions], [c.aof_per_user_b for c in costs], 0.4, label="append-only file")
    axis.set_xticks(list(positions), names)
    axis.set_ylabel("bytes per user")
    axis.set_title("What one user costs, by profile")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the users per profile")
    parser.add_argument("--profiles", nargs="+", choices=list(PROFILES), default=list(PROFILES))
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "user_memory.json")
    args = parser.parse_args(argv)
    catalog = read_catalog(ROOT / "catalog.json")
    load_at_start = os.getloadavg()[0]
    costs = [measure(name, max(10, USERS[name] // (10 if args.quick else 1)), catalog) for name in args.profiles]
    print(f"{'profile':<9} {'users':>6} {'used_memory/user':>17} {'MEMORY USAGE/user':>18} {'keys':>5} {'AOF/user':>9}")
    for cost in costs:
        print(
            f"{cost.profile:<9} {cost.users:>6} {cost.used_memory_per_user_b:>15.0f} B {cost.memory_usage_per_user_b:>16.0f} B"
            f" {cost.keys_per_user:>5.2f} {cost.aof_per_user_b:>7.0f} B"
        )
    print(f"load average {load_at_start:.2f} at start, {os.getloadavg()[0]:.2f} at the end")
    write_result(
        args.output,
        {"machine": machine(), "commit": git_commit(), "costs": [asdict(cost) for cost in costs]},
    )
    plot(costs, args.output.with_suffix(".png"))
    print(f"wrote {args.output.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
