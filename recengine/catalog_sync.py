"""What a sync from a file would do to the catalogue in Redis, decided before anything is written.

Pure: the caller reads the stored products (their fields without the vector) and encodes the
file's products the way they would be stored; `plan_sync` compares the two and says, per id,
whether it is added, changed (and then whether its embedded text changed, which alone costs a
model call), unchanged or removed. `check_removals` refuses a plan that would remove more than a
set share of the catalogue unless the caller allows it. A second sync of the same file plans
nothing, and says so.

The embedded text is compared by its digest (TEXT_DIGEST_FIELD, which the writers keep in every
product hash): a 64-character field read instead of every description. A stored product without
a digest (written by another port, or before digests) is compared by its name and description.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from recengine.catalog_schema import TEXT_DIGEST_FIELD

# The fields the embedded text is made of, for stored products that have no digest.
TEXT_SOURCE_FIELDS = ("name", "description")
DEFAULT_MAX_REMOVAL_SHARE = 0.20


@dataclass(frozen=True)
class SyncPlan:
    """Ids by what a sync does to them, each tuple in the file's order (removed: sorted).

    `reembed` are the added and the text-changed products: only they go through the model.
    `rewrite` are the products whose other fields changed: written without a new vector."""

    added: tuple[str, ...]
    text_changed: tuple[str, ...]
    fields_changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    removed: tuple[str, ...]
    stored: int

    @property
    def changed(self) -> tuple[str, ...]:
        return self.text_changed + self.fields_changed

    @property
    def reembed(self) -> tuple[str, ...]:
        return self.added + self.text_changed

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)

    @property
    def removal_share(self) -> float:
        return len(self.removed) / self.stored if self.stored else 0.0

    def summary(self) -> str:
        """One line for the user: what the sync does, or that it has nothing to do."""
        if self.empty:
            return f"nothing to do: the {len(self.unchanged):,} products in Redis already match the file"
        return (
            f"added {len(self.added):,}, changed {len(self.changed):,} "
            f"({len(self.text_changed):,} with new text, re-embedded; {len(self.fields_changed):,} other fields only), "
            f"unchanged {len(self.unchanged):,}, removed {len(self.removed):,}"
        )


class SyncRefusedError(ValueError):
    """A sync that must not run as asked: duplicate ids in the file, or more removals than the
    allowed share. The message names the fix."""


def plan_sync(incoming: Sequence[tuple[str, Mapping[str, str]]], stored: Mapping[str, Mapping[str, str]]) -> SyncPlan:
    """Compare the file's products, each (id, fields as they would be stored, with
    TEXT_DIGEST_FIELD), with the stored ones ({id: stored fields}, vectors left out).

    Raises SyncRefusedError when the file holds an id twice: a sync must not guess which wins."""
    seen: dict[str, int] = {}
    duplicates = []
    for position, (product_id, _) in enumerate(incoming):
        if product_id in seen:
            duplicates.append(f"{product_id!r} (products {seen[product_id] + 1} and {position + 1})")
        seen.setdefault(product_id, position)
    if duplicates:
        shown = ", ".join(duplicates[:5]) + (f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else "")
        raise SyncRefusedError(f"the file holds {len(duplicates)} duplicate id(s): {shown}; nothing was written")
    added, text_changed, fields_changed, unchanged = [], [], [], []
    for product_id, fields in incoming:
        before = stored.get(product_id)
        if before is None:
            added.append(product_id)
        elif _text_changed(fields, before):
            text_changed.append(product_id)
        elif _fields_changed(fields, before):
            fields_changed.append(product_id)
        else:
            unchanged.append(product_id)
    removed = sorted(set(stored) - seen.keys())
    return SyncPlan(
        tuple(added), tuple(text_changed), tuple(fields_changed), tuple(unchanged), tuple(removed), len(stored)
    )


def _text_changed(fields: Mapping[str, str], before: Mapping[str, str]) -> bool:
    digest = before.get(TEXT_DIGEST_FIELD)
    if digest is not None:
        return digest != fields.get(TEXT_DIGEST_FIELD)
    return any(before.get(name) != fields.get(name) for name in TEXT_SOURCE_FIELDS)


def _fields_changed(fields: Mapping[str, str], before: Mapping[str, str]) -> bool:
    """Any stored field the write would set to another value, or a digest the write adds."""
    return any(before.get(name) != value for name, value in fields.items())


def check_removals(plan: SyncPlan, *, max_share: float = DEFAULT_MAX_REMOVAL_SHARE, allowed: bool = False) -> None:
    """Refuse a plan that removes more than `max_share` of the stored catalogue, unless
    `allowed`: a truncated export or the wrong file must not empty a shop."""
    if allowed or plan.removal_share <= max_share:
        return
    raise SyncRefusedError(
        f"the sync would remove {len(plan.removed):,} of the {plan.stored:,} products in Redis "
        f"({plan.removal_share:.0%}), more than the {max_share:.0%} allowed: check the file, or pass "
        "--allow-mass-delete if that is what you want"
    )
