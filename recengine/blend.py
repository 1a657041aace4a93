"""Blending "bought together" with "looks like": the math, with no Redis in it.

A product's co-occurrence counts (in purchases, faded to now) and its content neighbours (the
KNN of its vector, best first) are merged into one list. Each candidate scores

    count + β / (content rank + 1)        (0 when it is not counted, or not in the content list)

so counts speak in co-purchases and the content list adds what its top match is worth, β, down
to β/30 at rank 30. β = evidence_prior × agreement, where agreement is the share of the product's
counted mass that the content list also holds: where the products bought together look alike
(a gift shop's matching cups and plates) content keeps its say; where they do not (pasta and
its sauce), it falls to a tie-breaker. A product with no counts yet has agreement 1 and gets
the content list as it is (the cold start).

So the evidence each product has sets the mix, not a share fixed in advance: a product with a
hundred co-purchases is ranked by its counts, one with two by its look-alikes and those two, and
evidence_prior (4 co-purchases by default) only says how much the top look-alike is worth
against a count. bench/cooccurrence_design.py and bench/crowd.py measure it on real baskets
and on generated complements, where content is useless.

Scores here are "higher is better"; a Candidate's score is their negative (the index's
orientation, lower is better, as everywhere in ranking.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from ranking import finite_number

# What ranks "more like this" and the feed: the product's vector, the crowd's counts, or both.
Signal = Literal["content", "co_occurrence", "blend"]
SIGNALS: tuple[Signal, ...] = get_args(Signal)


def check_signal(signal: object) -> Signal:
    """The signal, or ValueError naming the three there are."""
    if not isinstance(signal, str) or signal not in SIGNALS:
        raise ValueError(f"signal must be one of {', '.join(SIGNALS)}, got {signal!r}")
    return signal


@dataclass(frozen=True)
class Blended:
    """One candidate of a blend: its score (higher is better), its count (None when the crowd did
    not put it there), its place in the content list (None when content did not) and the product
    whose counts contributed most (for `why`: "bought together with ...")."""

    product_id: str
    score: float
    co_count: float | None
    content_rank: int | None
    together_with: str | None


def agreement(counts: Mapping[str, float], content_ids: Sequence[str]) -> float:
    """The share of the counted mass that the content list also holds; 1 without counts."""
    total = sum(counts.values())
    if total <= 0:
        return 1.0
    listed = set(content_ids)
    return sum(count for product_id, count in counts.items() if product_id in listed) / total


def content_weight(counts: Mapping[str, float], content_ids: Sequence[str], evidence_prior: float) -> float:
    """β: what the top look-alike is worth, in co-purchases, for this product's evidence."""
    prior = finite_number("evidence_prior", evidence_prior)
    if prior is None or prior <= 0:
        raise ValueError(f"evidence_prior must be a positive number, got {evidence_prior!r}")
    return prior * agreement(counts, content_ids)


def blend(
    counts: Mapping[str, float],
    content_ids: Sequence[str],
    evidence_prior: float,
    contributors: Mapping[str, str] | None = None,
) -> list[Blended]:
    """Every candidate of either list, best first (ties by content rank, then id).

    counts: product → count in purchases (faded), from the crowd. content_ids: the content
    list, best first. contributors: product → the product whose counts gave it the most (the
    feed sums the neighbours of several recent products); without it, `together_with` is None
    and the caller names the product it asked about."""
    beta = content_weight(counts, content_ids, evidence_prior)
    rank = {product_id: i for i, product_id in enumerate(content_ids)}
    blended = []
    for product_id in dict.fromkeys([*counts, *content_ids]):
        count = counts.get(product_id)
        place = rank.get(product_id)
        score = (count or 0.0) + (beta / (place + 1) if place is not None else 0.0)
        together = (contributors or {}).get(product_id) if count else None
        blended.append(Blended(product_id, score, count if count else None, place, together))
    blended.sort(key=lambda b: (-b.score, b.content_rank if b.content_rank is not None else len(rank), b.product_id))
    return blended


def ranked_counts(counts: Mapping[str, float]) -> list[Blended]:
    """The crowd's signal alone: by count, ties by id."""
    return [
        Blended(product_id, count, count, None, None)
        for product_id, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]


def summed_counts(per_source: Sequence[tuple[str, Mapping[str, float]]]) -> tuple[dict[str, float], dict[str, str]]:
    """Several products' neighbours as one: counts summed per neighbour, and for each the source
    product that gave it the most (the feed's "bought together with what you looked at")."""
    total: dict[str, float] = {}
    best: dict[str, tuple[float, str]] = {}
    for source, counts in per_source:
        for product_id, count in counts.items():
            total[product_id] = total.get(product_id, 0.0) + count
            if count > best.get(product_id, (0.0, ""))[0]:
                best[product_id] = (count, source)
    return total, {product_id: source for product_id, (_, source) in best.items()}


def reason(item: Blended, asked_about: str | None) -> str:
    """What put a candidate in the list, in words: "bought together with p012 (14 times)",
    "looks like p012", or both. `asked_about` is similar()'s product (None in the feed, where
    the look-alike is of the session)."""
    parts = []
    if item.co_count is not None:
        source = item.together_with or asked_about
        times = round(item.co_count)
        counted = f"{times} time{'s' if times != 1 else ''}" if times >= 1 else "less than once, faded"
        parts.append(f"bought together with {source} ({counted})")
    if item.content_rank is not None:
        parts.append(f"looks like {asked_about}" if asked_about else "looks like what you viewed")
    return "; ".join(parts)
