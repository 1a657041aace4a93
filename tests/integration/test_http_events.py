"""POST /event and the signal of /similar and /recommend, over HTTP."""

from __future__ import annotations

import pytest
from test_http import call, first_in, get_state, post


def test_an_event_counts_and_shows_in_the_next_similar(
    demo_url: str, user_id: str, encoding: str, catalog: dict
) -> None:
    coat, boot = first_in(catalog, "outerwear")["id"], first_in(catalog, "footwear")["id"]
    first = post(demo_url, "/event", {"product_id": coat, "event": "purchase", "user_id": user_id}, encoding)
    assert first["event"] == "purchase" and first["paired_with"] == 0 and first["user"]["clicks"] == 1
    second = post(demo_url, "/event", {"product_id": boot, "event": "purchase", "user_id": user_id}, encoding)
    assert second["paired_with"] == 1
    together = post(demo_url, "/similar", {"product_id": coat, "signal": "co_occurrence", "user_id": user_id}, encoding)
    assert together["signal"] == "co_occurrence"
    mine = next(c for c in together["candidates"] if c["id"] == boot)
    assert mine["why"]["signal"] == "co_occurrence" and mine["why"]["reason"].startswith(f"bought together with {coat}")
    blended = post(demo_url, "/similar", {"product_id": coat, "user_id": user_id}, encoding)
    assert blended["signal"] == "blend" and boot in [c["id"] for c in blended["candidates"]]
    assert {c["why"]["signal"] for c in blended["candidates"]} <= {"content", "co_occurrence", "blend"}


def test_the_feed_takes_a_signal(demo_url: str, user_id: str, encoding: str, catalog: dict) -> None:
    product = first_in(catalog, "bags")["id"]
    post(demo_url, "/event", {"product_id": product, "event": "view", "user_id": user_id}, encoding)
    content = post(demo_url, "/recommend", {"signal": "content", "user_id": user_id}, encoding)
    assert content["signal"] == "content" and content["source"] == "session"
    assert all(c["why"]["signal"] == "content" for c in content["candidates"])
    assert post(demo_url, "/recommend", {"user_id": user_id}, encoding)["signal"] == "blend"


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"event": "view"}, 400, "product_id"),
        ({"product_id": "p001"}, 400, "event"),
        ({"product_id": "p001", "event": "buy"}, 400, "view, click, cart, purchase"),
        ({"product_id": "p001", "event": ""}, 400, "event"),
        ({"product_id": "x" * 257, "event": "view"}, 400, "product_id"),
        ({"product_id": "no-such-product", "event": "view"}, 404, "no-such-product"),
    ],
)
def test_bad_events_are_4xx_and_change_nothing(
    demo_url: str, user_id: str, encoding: str, fields: dict, status: int, words: str
) -> None:
    assert words in call(demo_url, "POST", "/event", {**fields, "user_id": user_id}, encoding=encoding).error(status)
    assert get_state(demo_url, user_id)["user"]["clicks"] == 0


@pytest.mark.parametrize("path", ["/similar", "/recommend"])
def test_an_unknown_signal_is_400(demo_url: str, user_id: str, path: str) -> None:
    fields = {"product_id": "p001", "signal": "everything", "user_id": user_id}
    assert "content, co_occurrence, blend" in call(demo_url, "POST", path, fields).error(400)
