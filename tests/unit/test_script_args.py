"""The Lua scripts' arguments: each typed builder binds its fields to the positions its script
reads, and the scripts are found beside the module. The scripts themselves run in the
integration suite (tests/integration/test_feed.py), against the real Redis."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from recengine import scripts
from recengine.scripts import FadedCounts, PopularityClick, RefreshEmbedding, UserEvent, UserEventReply

LUA_DIR = Path(scripts.__file__).parent / "lua"
EVENT = UserEvent(
    mode="click",
    product_id="p1",
    category="bags",
    vector=b"\x01\x02\x03\x04",
    alpha=0.4,
    step=1,
    vector_dim=1,
    now=1700000000.25,
    vector_half_life_s=1800.0,
    affinity_half_life_s=604800.0,
    seen_kept=200,
    recent_kept=6,
    ttl_s=2592000,
    event_id="e-1",
    event_ids_kept=32,
)


def argv_names(script: str) -> dict[str, int]:
    """The script's own names for its ARGV, from its `local a, b = ARGV[1], tonumber(ARGV[2])`
    lines: name → 1-based position."""
    names: dict[str, int] = {}
    for left, right in re.findall(r"^local ([\w, ]+) = (.*ARGV\[\d+\].*)$", script, flags=re.MULTILINE):
        positions = [int(n) for n in re.findall(r"ARGV\[(\d+)\]", right)]
        names.update(zip([name.strip() for name in left.split(",")], positions, strict=True))
    return names


def test_the_scripts_are_read_from_the_lua_files_beside_the_module() -> None:
    for name, source in [
        ("user_event", scripts.USER_EVENT_LUA),
        ("popularity", scripts.POPULARITY_LUA),
        ("faded_counts", scripts.FADED_COUNTS_LUA),
        ("refresh_embedding", scripts.REFRESH_EMBEDDING_LUA),
    ]:
        assert source == (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8") and "redis.call" in source


def test_a_click_binds_every_argv_the_user_script_reads() -> None:
    positions = argv_names(scripts.USER_EVENT_LUA)
    argv = EVENT.argv()
    assert len(argv) == max(positions.values()) == 29
    by_name = {name: argv[position - 1] for name, position in positions.items()}
    assert by_name == {
        "mode": "click", "product_id": "p1", "category": "bags", "blob": b"\x01\x02\x03\x04",
        "alpha": "0.4", "step": "1.0", "dim": 1, "now": "1700000000.25",
        "vector_half_life": "1800.0", "affinity_half_life": "604800.0",
        "seen_kept": 200, "recent_kept": 6, "ttl": 2592000,
        "vec_field": "session_vec", "vec_at_field": "session_at", "aff_at_field": "affinity_at",
        "aff_prefix": "aff:", "clicks_field": "clicks", "last_id_field": "last_clicked_id",
        "last_cat_field": "last_clicked_category",
        "recent_field": "recent", "seen_field": "seen", "dismissed_field": "dismissed", "events_field": "event_ids",
        "event_id": "e-1", "events_kept": 32,
        "window_field": "window", "window_entry": "", "window_kept": 0,
    }  # fmt: skip


def test_a_dismissal_moves_the_negative_vector() -> None:
    argv = UserEvent(**{**vars(EVENT), "mode": "dismiss", "step": -1.0}).argv()
    positions = argv_names(scripts.USER_EVENT_LUA)
    assert argv[positions["mode"] - 1] == "dismiss" and argv[positions["step"] - 1] == "-1.0"
    assert (argv[positions["vec_field"] - 1], argv[positions["vec_at_field"] - 1]) == ("negative_vec", "negative_at")


def test_numbers_travel_at_full_precision() -> None:
    argv = UserEvent(**{**vars(EVENT), "alpha": 1 / 3, "now": 1 / 7}).argv()
    assert float(argv[4]) == 1 / 3 and float(argv[7]) == 1 / 7


def test_the_user_scripts_reply_is_parsed_by_name() -> None:
    assert UserEventReply.parse([b"1.5", 3, 1, 0, 0]) == UserEventReply(1.5, 3, True, False, False)
    assert UserEventReply.parse([b"junk", 0, 0, 1, 0]) == UserEventReply(0.0, 0, False, True, False)
    assert UserEventReply.parse([b"2", 4, 0, 0, 1]).already_applied


def test_popularity_arguments() -> None:
    argv = PopularityClick("p1", 1700000000.5, 604800.0, 86400.0).argv()
    assert argv == ["p1", "1700000000.5", "604800.0", 64.0, "86400.0"]
    assert re.findall(r"ARGV\[(\d+)\]", scripts.POPULARITY_LUA) == ["2", "3", "4", "5", "1", "1"]


def test_a_typed_event_remembers_its_window_entry() -> None:
    argv = UserEvent(**{**vars(EVENT), "window_entry": "1.0|4.0|s|p1", "window_kept": 32}).argv()
    positions = argv_names(scripts.USER_EVENT_LUA)
    assert (argv[positions["window_entry"] - 1], argv[positions["window_kept"] - 1]) == ("1.0|4.0|s|p1", 32)


def test_faded_counts_arguments() -> None:
    popularity = FadedCounts(1700000000.5, 604800.0, [[("p1", 1.0)]]).argv()
    assert popularity == ["1700000000.5", "604800.0", 64.0, 0, 0, '[[["p1",1.0]]]']
    counts = FadedCounts(5.0, 10.0, [[("a", 0.25), ('b|"x', 2.0)], [("c", 1.0)]], keep=100, ttl_s=99).argv()
    assert counts[:5] == ["5.0", "10.0", 64.0, 100, 99]
    assert json.loads(counts[5]) == [[["a", 0.25], ['b|"x', 2.0]], [["c", 1.0]]]
    assert json.loads(FadedCounts(5.0, 10.0, [[("a", math.nan)]]).argv()[5]) == [[["a", None]]]
    positions = argv_names(scripts.FADED_COUNTS_LUA)
    assert positions == {"reference": 1, "half_life": 2, "limit": 3, "keep": 4, "ttl": 5, "sets_json": 6}


def test_refresh_arguments() -> None:
    assert RefreshEmbedding(b"\x00" * 4).argv() == ["embedding", b"\x00" * 4]
    assert "NOPRODUCT" in scripts.REFRESH_EMBEDDING_LUA


@pytest.mark.parametrize("name", ["user_event", "popularity", "faded_counts", "refresh_embedding"])
def test_every_script_touches_only_its_keys(name: str) -> None:
    """Cluster safety: no script names a key it was not given (no string keys in redis.call)."""
    source = (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")
    calls = re.findall(r"redis\.call\('(\w+)', ([^,)]+)", source)
    assert calls
    for call in calls:
        assert re.fullmatch(r"KEYS\[\d\]|user|key|set_key|epoch_key", call[1]), call
