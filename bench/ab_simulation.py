"""Does the A/B report find a real difference, and only a real one? The simulated shoppers of
bench/quality.py are the traffic.

1. Every shopper shops twice, once per arm ("session blend" on: RankingConfig(); off:
   session_weight 0), through the library with the arm's config: each list shown is logged with
   ImpressionLog (a real Redis stream), each click joined to its impression, and a click on what
   the shopper wants converts (a "purchase" outcome) with probability --buy. Shoppers look at a
   list with probability --look, so that clicks are chance events, not a fixed script.
2. The report's statistics (recengine.ab_stats, per-user delta method) are computed from what the
   streams hold: each arm's click-through rate, and from the two arms' variances the users per
   arm the z-test needs for 80 % power (users_per_arm).
3. Power: --repeats times, draw that many users per arm (disjoint halves of the shoppers, dealt by
   a fresh experiment name's hash, as the server deals them) and run the test: the share that
   finds the difference should be about 80 %.
4. A/A: --repeats times, deal the shoppers of one arm into two halves by a fresh experiment name
   and test: the share that "finds" a difference is the false-positive rate, about 5 %.

Run: .venv/bin/python -m bench.ab_simulation [--shoppers 600 --repeats 1000]
Writes bench/results/ab_simulation.json and .png.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.harness import ROOT, machine, write_result
from bench.quality import (
    CATALOG_PATH,
    ROUNDS,
    K,
    SimClock,
    bundled_intents,
    choose_click,
    load_index,
    make_shoppers,
)
from embeddings import LocalEmbedder
from local_redis import LocalRedis, connect
from ranking import RankingConfig
from recengine.ab_stats import Rate, compare_rates, rate_over_units, users_per_arm
from recengine.catalog_file import catalog_vectors, read_catalog
from recengine.experiments import bucket_point
from recengine.impressions import ImpressionLog, tally
from recommender import RedisRecommender

RESULTS = ROOT / "bench" / "results" / "ab_simulation.json"
ARMS: Mapping[str, RankingConfig] = {"blend-on": RankingConfig(), "blend-off": RankingConfig(session_weight=0.0)}
PREFIX = "bench:ab"


@dataclass(frozen=True)
class Pool:
    """Per shopper id: (impressions, clicked impressions) under one arm."""

    arm: str
    per_user: dict[str, tuple[int, int]]

    def rate(self, users: Sequence[str]) -> Rate:
        return rate_over_units([self.per_user[u] for u in users])


def shop(rec: RedisRecommender, clock: SimClock, log: ImpressionLog, arm: str, shoppers: Sequence[Any],
         vectors: Mapping[str, np.ndarray], rng: random.Random, look: float, buy: float) -> None:  # fmt: skip
    """Every shopper through ROUNDS + 1 lists of this arm (`clock` is rec's); impressions and
    outcomes to the log."""
    for shopper in shoppers:
        user = f"{arm}:{shopper.id}"
        clicked: set[str] = set()
        for round_no in range(ROUNDS + 1):
            result = rec.recommend(vectors[shopper.intent.query], user_id=user, k=K, use_session=True,
                                   use_rerank=False, exclude_clicked=True)  # fmt: skip
            shown = [c.id for c in result.candidates]
            rec_id = log.record(user, "search", arm, shown)
            pick = choose_click(shown, shopper.intent, clicked) if rng.random() < look else None
            if pick is not None:
                impression = log.find(user, rec_id, pick)
                rec.record_click(user, pick)
                log.record_outcome(impression, "click", pick)
                clicked.add(pick)
                if pick in shopper.intent.fits and rng.random() < buy:
                    log.record_outcome(impression, "purchase", pick)
            clock.advance(shopper.think_s[min(round_no, len(shopper.think_s) - 1)])
        rec.reset_user(user)


def pools_from_log(log: ImpressionLog) -> dict[str, Pool]:
    impressions, outcomes = log.window(10 * 86400)
    _, by_arm = tally(impressions, outcomes)
    return {
        arm: Pool(arm, {user.split(":", 1)[1]: (t.impressions, t.clicked) for user, t in group.users.items()})
        for arm, group in by_arm.items()
    }


def halves(name: str, users: Sequence[str]) -> tuple[list[str], list[str]]:
    """The users dealt 50/50 by the experiment `name`, as Experiment.arm_for deals them."""
    first = [u for u in users if bucket_point(name, u) < 0.5]
    chosen = set(first)
    return first, [u for u in users if u not in chosen]


def power_run(on: Pool, off: Pool, n: int, repeats: int, seed: int) -> float:
    """Share of repeats in which n users per arm (each shopper in one arm only) show a significant difference."""
    users = sorted(on.per_user)
    found = 0
    runs = 0
    rng = random.Random(seed)
    for repeat in range(repeats):
        a, b = halves(f"ab-{seed}-{repeat}", users)
        if len(a) < n or len(b) < n:
            continue
        runs += 1
        found += compare_rates(on.rate(rng.sample(a, n)), off.rate(rng.sample(b, n))).significant
    return found / runs if runs else float("nan")


def false_positive_run(pool: Pool, repeats: int, seed: int) -> tuple[float, list[float]]:
    users = sorted(pool.per_user)
    p_values = []
    for repeat in range(repeats):
        a, b = halves(f"aa-{seed}-{repeat}", users)
        p_values.append(compare_rates(pool.rate(a), pool.rate(b)).p_value)
    return float(np.mean([p < 0.05 for p in p_values])), p_values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shoppers", type=int, default=600, help="shoppers per arm (default 600)")
    parser.add_argument(
        "--repeats", type=int, default=1000, help="repeated experiments for power and A/A (default 1000)"
    )
    parser.add_argument("--look", type=float, default=0.6, help="chance a shopper looks at a list at all (default 0.6)")
    parser.add_argument(
        "--buy", type=float, default=0.3, help="chance a click on a wanted product converts (default 0.3)"
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    catalog = read_catalog(CATALOG_PATH)
    products = catalog["products"]
    embedder = LocalEmbedder(backend="onnx")
    shoppers = make_shoppers(bundled_intents(products), args.shoppers, args.seed, returning=False)
    queries = sorted({s.intent.query for s in shoppers})
    vectors = dict(zip(queries, embedder.encode_many(queries), strict=True))
    with LocalRedis() as server:
        client = connect(server.url)
        clock = SimClock()
        base = RedisRecommender(client, index_name=f"{PREFIX}:idx", key_prefix=f"{PREFIX}:product:",
                                user_key_prefix=f"{PREFIX}:user:", clock=clock)  # fmt: skip
        load_index(base, products, catalog_vectors(catalog))
        log = ImpressionLog(client)
        rng = random.Random(args.seed)
        for arm, config in ARMS.items():
            shop(base.with_config(config), clock, log, arm, shoppers, vectors, rng, args.look, args.buy)
        memory = log.memory()
        info = machine(client)
        pools = pools_from_log(log)
    on, off = pools["blend-on"], pools["blend-off"]
    users = sorted(on.per_user)
    rate_on, rate_off = on.rate(users), off.rate(users)
    n_needed = users_per_arm(rate_on.unit_variance, rate_off.unit_variance, rate_off.rate - rate_on.rate)
    power = power_run(on, off, n_needed, args.repeats, args.seed)
    fp_rate, p_values = false_positive_run(on, args.repeats, args.seed)
    impressions = memory["shown_entries"]
    report = {
        "machine": info,
        "args": vars(args),
        "ctr": {"blend-on": round(rate_on.rate, 4), "blend-off": round(rate_off.rate, 4)},
        "users_per_arm_for_80pct_power": n_needed,
        "power_at_that_size": round(power, 4),
        "aa_false_positive_rate": round(fp_rate, 4),
        "aa_repeats": args.repeats,
        "impression_memory": {**memory, "bytes_per_impression": round(memory["shown_bytes"] / impressions, 1)},
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"CTR per impression: blend on {rate_on.rate:.4f}, off {rate_off.rate:.4f} ({len(users)} shoppers each)")
    print(f"users per arm for 80 % power (z-test, α 0.05): {n_needed}")
    print(f"power measured at {n_needed} users per arm over {args.repeats} experiments: {power:.1%}")
    print(f"A/A false-positive rate over {args.repeats} experiments: {fp_rate:.1%}")
    print(f"impressions: {impressions} entries, {memory['shown_bytes']} bytes: "
          f"{report['impression_memory']['bytes_per_impression']} B each")  # fmt: skip
    write_result(RESULTS, report)
    draw(p_values, fp_rate, power, n_needed, RESULTS.with_suffix(".png"))


def draw(p_values: Sequence[float], fp_rate: float, power: float, n: int, path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.hist(p_values, bins=20, range=(0, 1), color="#888")
    left.set_title(f"A/A p-values (false positives {fp_rate:.1%})")
    left.set_xlabel("p-value")
    right.bar(["A/A: found", f"A/B at n={n}: found"], [fp_rate, power], color=["#888", "#2a7"])
    right.axhline(0.05, linestyle=":", color="k")
    right.axhline(0.8, linestyle="--", color="k")
    right.set_ylim(0, 1)
    right.set_title("share of experiments with p < 0.05")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
