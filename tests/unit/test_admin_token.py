"""The admin bearer token: off unless set, at least 16 characters, compared in constant time."""

from __future__ import annotations

import pytest

from recengine.admin_token import ADMIN_TOKEN_ENV, AdminToken

TOKEN = "s3cret-admin-token-0123"


def test_the_admin_api_is_off_unless_a_token_is_set() -> None:
    assert AdminToken.configured(None, {}) is None
    assert AdminToken.configured(None, {ADMIN_TOKEN_ENV: ""}) is None


def test_the_flag_wins_over_the_environment() -> None:
    token = AdminToken.configured(TOKEN, {ADMIN_TOKEN_ENV: "another-token-entirely"})
    assert token is not None and token.verdict(f"Bearer {TOKEN}") == "allowed"
    from_env = AdminToken.configured(None, {ADMIN_TOKEN_ENV: TOKEN})
    assert from_env is not None and from_env.verdict(f"Bearer {TOKEN}") == "allowed"


@pytest.mark.parametrize("bad", ["short", "has a space in it!!", "ünïcode-token-long-enough"])
def test_a_weak_or_odd_token_is_refused_at_start(bad: str) -> None:
    with pytest.raises(ValueError, match="admin token"):
        AdminToken.configured(bad, {})


@pytest.mark.parametrize(
    ("header", "verdict"),
    [
        (None, "missing"),
        ("", "missing"),
        ("Bearer", "missing"),
        ("Basic dXNlcjpwYXNz", "missing"),
        (f"Bearer {TOKEN}", "allowed"),
        (f"bearer   {TOKEN}  ", "allowed"),
        (f"Bearer {TOKEN}x", "wrong"),
        (f"Bearer {TOKEN[:-1]}", "wrong"),
        ("Bearer ünïcode", "wrong"),
    ],
)
def test_a_request_is_allowed_only_with_the_token(header: str | None, verdict: str) -> None:
    token = AdminToken.configured(TOKEN, {})
    assert token is not None and token.verdict(header) == verdict


def test_the_token_never_shows_in_a_repr() -> None:
    assert TOKEN not in repr(AdminToken.configured(TOKEN, {}))
