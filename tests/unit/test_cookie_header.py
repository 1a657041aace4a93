"""The Cookie header reader (recengine/cookie_header.py): it finds our cookie whatever else the
header holds, ignores every other cookie, ignores a header over 8 KB, and works in time linear
in the header's length, on any input (issue 24, finding 1: SimpleCookie's quadratic unquoting,
CVE-2024-7592; finding 2: SimpleCookie dropping the whole header for one odd cookie)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from recengine import cookie_header
from recengine.cookie_header import MAX_COOKIE_HEADER_BYTES, CookieRead, read_cookie

NAME = "rr_user"
GENUINE = "u-0123456789abcdef.AbCdEfGhIjKlMnOpQrStUv"

# Cookie names and values as pages can set them, our name excluded.
other_names = st.text(st.characters(codec="latin-1", exclude_characters=";="), max_size=12).filter(
    lambda name: name.strip(" \t") != NAME
)
values = st.text(st.characters(codec="latin-1", exclude_characters=";"), max_size=40)
# Pieces that, in any arrangement, are what quadratic parsers choke on.
ADVERSARIAL_PIECES = ["\\", '"', ";", "=", " ", "\t", ",", "\\0", "\\12", NAME, "x", "[", "]"]
adversarial_headers = st.lists(st.sampled_from(ADVERSARIAL_PIECES), max_size=400).map("".join)


def header_of(pairs: list[str]) -> str:
    return "; ".join(pairs)


# --- what it reads --------------------------------------------------------------------------------


def test_no_header_means_no_cookies() -> None:
    for header in (None, "", "  \t"):
        assert read_cookie(header, NAME) == CookieRead((), sent_cookies=False, too_long=False)


@pytest.mark.parametrize(
    "planted",
    ["junk", "secure=1", "a[b]=1", 'x="\\\\\\\\"', "=", "=nameless", ";;", "rr_user", 'q="unterminated'],
    ids=[
        "no-equals",
        "attribute-name",
        "brackets",
        "backslashes",
        "bare-equals",
        "no-name",
        "empties",
        "bare-name",
        "open-quote",
    ],
)
def test_a_planted_cookie_of_any_shape_never_hides_ours(planted: str) -> None:
    """SimpleCookie gives up on the whole header for each of these (issue 24, finding 2)."""
    for header in (f"{planted}; {NAME}={GENUINE}", f"{NAME}={GENUINE}; {planted}", f"{planted};{NAME}={GENUINE}"):
        read = read_cookie(header, NAME)
        assert read.values == (GENUINE,), header
        assert read.sent_cookies and not read.too_long


def test_every_value_under_our_name_is_kept_in_order() -> None:
    """A page can plant `rr_user` with a narrower path, which the browser then sends first."""
    assert read_cookie(f"{NAME}=planted; other=1; {NAME}={GENUINE}", NAME).values == ("planted", GENUINE)


def test_spaces_and_quotes_around_a_value_go_and_nothing_else_changes() -> None:
    assert read_cookie(f' \t{NAME} \t= \t"{GENUINE}" \t', NAME).values == (GENUINE,)
    assert read_cookie(f'{NAME}="a\\"b"', NAME).values == ('a\\"b',)  # no unescaping
    assert read_cookie(f"{NAME}=a=b", NAME).values == ("a=b",)  # the first "=" splits
    assert read_cookie(f'{NAME}="', NAME).values == ('"',)
    assert read_cookie(f"{NAME}=", NAME).values == ("",)


def test_names_match_exactly() -> None:
    assert read_cookie(f"RR_USER={GENUINE}; rr_user_x=1; x{NAME}=2", NAME).values == ()


def test_a_header_over_8_kb_is_not_read() -> None:
    ours = f"{NAME}={GENUINE}"
    at_limit = ours + "; " + "p=" + "x" * (MAX_COOKIE_HEADER_BYTES - len(ours) - 4)
    assert len(at_limit) == MAX_COOKIE_HEADER_BYTES
    assert read_cookie(at_limit, NAME).values == (GENUINE,)
    over = at_limit + "x"
    assert read_cookie(over, NAME) == CookieRead((), sent_cookies=True, too_long=True)


@given(others=st.lists(st.tuples(other_names, values), max_size=20), position=st.integers(0, 20))
def test_other_cookies_never_change_what_is_read(others: list[tuple[str, str]], position: int) -> None:
    pairs = [f"{name}={value}" for name, value in others]
    pairs.insert(min(position, len(pairs)), f"{NAME}={GENUINE}")
    header = header_of(pairs)
    read = read_cookie(header, NAME)
    if len(header) <= MAX_COOKIE_HEADER_BYTES:
        assert read.values == (GENUINE,)
    assert read.sent_cookies


@given(header=st.text(st.characters(codec="latin-1"), max_size=300) | adversarial_headers)
@example(header='x="' + "\\" * 8000 + '"')
def test_any_header_is_read_without_error(header: str) -> None:
    """http.server hands headers over as Latin-1 text: any of it is read, never raised on."""
    read = read_cookie(header, NAME)
    assert all(isinstance(value, str) for value in read.values)
    assert read.sent_cookies == bool(header.strip(" \t"))


# --- how much work it does --------------------------------------------------------------------------


def lines_run(function: Callable[[], Any]) -> int:
    """Python lines executed inside cookie_header while `function` runs: the parser's own
    operation count (the str methods it calls are single linear passes in C)."""
    count = 0
    source = cookie_header.__file__

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if frame.f_code.co_filename != source:
            return None
        if event == "line":
            count += 1
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        function()
    finally:
        sys.settrace(previous)
    return count


@settings(max_examples=200)
@given(header=adversarial_headers)
@example(header=";" * MAX_COOKIE_HEADER_BYTES)
@example(header=f"{NAME}=;" * (MAX_COOKIE_HEADER_BYTES // 9))
@example(header='x="' + "\\" * (MAX_COOKIE_HEADER_BYTES - 4) + '"')
def test_the_work_grows_linearly_with_the_header(header: str) -> None:
    """At most a fixed number of Python steps per `;`-separated piece, and there are never
    more pieces than characters: linear, whatever the characters are."""
    pieces = header.count(";") + 1
    assert lines_run(lambda: read_cookie(header, NAME)) <= 6 * pieces + 12


def worst_seconds(header: str, repeats: int = 5) -> float:
    """The best of a few runs (the machine is shared: the least disturbed run is the cost)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        read_cookie(header, NAME)
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize(
    "pattern",
    ["\\", '\\"', ";", "=", f"{NAME}=x;", "\\012", " "],
    ids=["backslashes", "escaped-quotes", "semicolons", "equals", "our-name", "octal", "spaces"],
)
def test_the_largest_header_read_costs_milliseconds_at_most(pattern: str) -> None:
    """CVE-2024-7592: SimpleCookie spends ~0.13 s of CPU on 8 KB of quoted backslashes, 14 s on
    64 KB. The bound here is ~100 times what this reader needs."""
    body = pattern * (MAX_COOKIE_HEADER_BYTES // len(pattern))
    header = ('x="' + body)[: MAX_COOKIE_HEADER_BYTES - 1] + '"'
    assert worst_seconds(header) < 0.01
