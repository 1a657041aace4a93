"""The sync planner: what a sync from a file does, decided before anything is written."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recengine.catalog_schema import TEXT_DIGEST_FIELD, text_digest
from recengine.catalog_sync import SyncRefusedError, check_removals, plan_sync


def encoded(product_id: str, name: str = "Mug", price: str = "4.5", description: str = "A mug") -> tuple[str, dict]:
    fields = {"name": name, "description": description, "price": price}
    return product_id, {**fields, TEXT_DIGEST_FIELD: text_digest(f"{name}. {description}")}


def stored_from(products: list[tuple[str, dict]]) -> dict[str, dict]:
    return {product_id: dict(fields) for product_id, fields in products}


def test_a_second_sync_of_the_same_file_plans_nothing_and_says_so() -> None:
    products = [encoded("a"), encoded("b")]
    plan = plan_sync(products, stored_from(products))
    assert plan.empty
    assert plan.unchanged == ("a", "b")
    assert plan.summary().startswith("nothing to do")


def test_each_id_lands_in_exactly_one_group() -> None:
    stored = stored_from([encoded("same"), encoded("text"), encoded("price"), encoded("gone")])
    incoming = [encoded("new"), encoded("same"), encoded("text", name="Big mug"), encoded("price", price="5.0")]
    plan = plan_sync(incoming, stored)
    assert plan.added == ("new",)
    assert plan.text_changed == ("text",)
    assert plan.fields_changed == ("price",)
    assert plan.unchanged == ("same",)
    assert plan.removed == ("gone",)
    assert plan.reembed == ("new", "text")
    assert "added 1, changed 2 (1 with new text" in plan.summary()


def test_a_price_change_is_not_re_embedded() -> None:
    plan = plan_sync([encoded("a", price="9.99")], stored_from([encoded("a")]))
    assert plan.fields_changed == ("a",) and plan.reembed == ()


def test_a_stored_product_without_a_digest_is_compared_by_its_text() -> None:
    _, fields = encoded("a")
    legacy = {name: value for name, value in fields.items() if name != TEXT_DIGEST_FIELD}
    plan = plan_sync([encoded("a")], {"a": legacy})
    # Same text: no model call, but the digest gets written.
    assert plan.fields_changed == ("a",) and plan.reembed == ()
    plan = plan_sync([encoded("a", description="Another text")], {"a": legacy})
    assert plan.text_changed == ("a",)


def test_duplicate_ids_are_refused_with_their_positions() -> None:
    with pytest.raises(SyncRefusedError, match=r"'a' \(products 1 and 3\)"):
        plan_sync([encoded("a"), encoded("b"), encoded("a")], {})


@pytest.mark.parametrize(
    ("stored", "kept", "allowed", "refused"),
    [(100, 80, False, False), (100, 79, False, True), (100, 10, True, False), (0, 0, False, False)],
)
def test_removing_more_than_a_fifth_needs_allow_mass_delete(
    stored: int, kept: int, allowed: bool, refused: bool
) -> None:
    before = stored_from([encoded(str(i)) for i in range(stored)])
    plan = plan_sync([encoded(str(i)) for i in range(kept)], before)
    if refused:
        with pytest.raises(SyncRefusedError, match="--allow-mass-delete"):
            check_removals(plan, allowed=allowed)
    else:
        check_removals(plan, allowed=allowed)


ids = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF), min_size=1, max_size=8)


@given(st.sets(ids, max_size=12), st.sets(ids, max_size=12))
def test_the_groups_partition_both_sides(stored_ids: set[str], file_ids: set[str]) -> None:
    plan = plan_sync([encoded(i) for i in sorted(file_ids)], stored_from([encoded(i) for i in stored_ids]))
    groups = [plan.added, plan.text_changed, plan.fields_changed, plan.unchanged]
    assert sorted(i for group in groups for i in group) == sorted(file_ids)
    assert set(plan.removed) == stored_ids - file_ids
    assert set(plan.unchanged) == stored_ids & file_ids
