"""The web guard's rules as functions: which Host names the server answers for, the signed user
cookie, the same-origin rule, and the headers every answer carries. No socket, no Redis.
Hypothesis runs without deadlines: tests assert behaviour, not timings, on a shared machine.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import stat
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recengine.web_guard import (
    COOKIE_SECRET_FILE,
    COOKIE_SECRET_MIN_CHARS,
    SECURITY_HEADERS,
    USER_COOKIE,
    USER_ID_PATTERN,
    AllowedHosts,
    CookieSigner,
    CookieUser,
    allowed_host_argument,
    cross_site_refusal,
    host_name,
    load_cookie_secret,
    origin_netloc,
    split_host_header,
    valid_user_id,
)

user_ids = st.from_regex(USER_ID_PATTERN, fullmatch=True)
ports = st.integers(min_value=1, max_value=65535)
dns_labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
dns_names = st.lists(dns_labels, min_size=1, max_size=4).map(".".join)


# --- host names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("LocalHost", "localhost"),
        (" demo.example.com ", "demo.example.com"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "[::1]"),
        ("::1", "[::1]"),
        ("[0:0:0:0:0:0:0:1]", "[::1]"),
        ("[FE80::A]", "[fe80::a]"),
        ("under_score.lan", "under_score.lan"),
    ],
)
def test_a_host_name_is_compared_in_one_spelling(value: str, expected: str) -> None:
    assert host_name(value) == expected


@pytest.mark.parametrize(
    "value",
    ["localhost:8084", "http://localhost", "*.example.com", "demo example", "", "-lead.example", "a..b", "a" * 254],
)
def test_anything_but_a_bare_host_is_no_host_name(value: str) -> None:
    assert host_name(value) is None


@settings(deadline=None)
@given(st.ip_addresses(v=4))
def test_every_ipv4_address_is_its_own_host_name(address: ipaddress.IPv4Address) -> None:
    assert host_name(str(address)) == str(address)


@settings(deadline=None)
@given(st.ip_addresses(v=6))
def test_an_ipv6_address_is_bracketed_and_compressed_with_or_without_brackets(address: ipaddress.IPv6Address) -> None:
    expected = f"[{address.compressed}]"
    assert host_name(str(address)) == expected
    assert host_name(f"[{address.exploded}]") == expected


@settings(deadline=None)
@given(dns_names, ports)
def test_a_host_header_splits_into_name_and_port(name: str, port: int) -> None:
    assert split_host_header(f"{name.upper()}:{port}") == (name, port)
    assert split_host_header(name) == (name, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("[::1]:8084", ("[::1]", 8084)), ("127.0.0.1:80", ("127.0.0.1", 80)), ("localhost", ("localhost", None))],
)
def test_addresses_in_host_headers(value: str, expected: tuple[str, int | None]) -> None:
    assert split_host_header(value) == expected


@pytest.mark.parametrize(
    "value", ["localhost:", ":8084", "localhost:123456", "::1:8084", "http://localhost", "a b", "[::1", "user@host"]
)
def test_a_malformed_host_header_splits_into_nothing(value: str) -> None:
    assert split_host_header(value) is None


def test_allowed_host_takes_a_bare_name_and_refuses_the_rest_with_the_fix() -> None:
    assert allowed_host_argument("Demo.Example.COM") == "demo.example.com"
    for value in ("https://demo.example.com", "demo.example.com:443", "*.example.com"):
        with pytest.raises(argparse.ArgumentTypeError, match="give the bare name the browser uses"):
            allowed_host_argument(value)


# --- which hosts a server answers for --------------------------------------------------------------


@pytest.fixture
def loopback_hosts() -> AllowedHosts:
    return AllowedHosts.serving("127.0.0.1", 8084, ["Demo.Example.com"])


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:8084", "127.0.0.1", "localhost:8084", "LOCALHOST", "[::1]:8084", "[0::1]", "demo.example.com:443"],
)
def test_the_loopback_names_and_allowed_hosts_are_answered(loopback_hosts: AllowedHosts, host: str) -> None:
    assert loopback_hosts.allows(host)


@pytest.mark.parametrize(
    "host", ["127.0.0.1:9999", "localhost:80", "evil.example", "127.0.0.1.nip.io", "localhost.evil.example", "", "?"]
)
def test_other_names_and_other_ports_of_ours_are_refused(loopback_hosts: AllowedHosts, host: str) -> None:
    assert not loopback_hosts.allows(host)


def test_a_server_answers_for_the_address_it_listens_on() -> None:
    hosts = AllowedHosts.serving("192.168.1.23", 8084)
    assert hosts.allows("192.168.1.23:8084")
    assert not hosts.allows("192.168.1.24:8084")


@settings(deadline=None)
@given(dns_names, st.one_of(st.none(), ports))
def test_no_name_but_ours_is_answered_dns_rebinding(name: str, port: int | None) -> None:
    hosts = AllowedHosts.serving("127.0.0.1", 8084, ["demo.example.com"])
    header = name if port is None else f"{name}:{port}"
    assert hosts.allows(header) == (name in ("localhost", "demo.example.com") and port in (None, 8084))


# --- the same-origin rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("site", "origin", "host"),
    [
        (None, None, "127.0.0.1:8084"),
        ("same-origin", "http://127.0.0.1:8084", "127.0.0.1:8084"),
        ("none", None, "127.0.0.1:8084"),
        (None, "http://localhost:8084", "localhost:8084"),
    ],
)
def test_same_origin_requests_are_served(site: str | None, origin: str | None, host: str) -> None:
    assert cross_site_refusal(site, origin, host) is None


@pytest.mark.parametrize(
    ("site", "origin", "words"),
    [
        ("cross-site", None, "cross-site requests are refused"),
        ("same-site", "http://127.0.0.1:8084", "cross-site requests are refused"),
        (None, "http://evil.example", "cross-origin requests are refused"),
        (None, "http://127.0.0.1:9999", "cross-origin requests are refused"),
        (None, "http://[", "cross-origin requests are refused"),
        ("same-origin", "null", "opaque origin"),
    ],
)
def test_cross_site_requests_are_refused_with_a_reason(site: str | None, origin: str | None, words: str) -> None:
    refusal = cross_site_refusal(site, origin, "127.0.0.1:8084")
    assert refusal is not None and words in refusal


def test_an_origin_urllib_cannot_parse_has_no_netloc() -> None:
    assert origin_netloc("http://[") is None
    assert origin_netloc("http://127.0.0.1:8084") == "127.0.0.1:8084"


# --- the signed user cookie ---------------------------------------------------------------------


@settings(deadline=None)
@given(user_ids)
def test_a_signed_user_id_verifies(user_id: str) -> None:
    signer = CookieSigner(b"k" * 32)
    assert signer.verify(signer.sign(user_id)) == user_id


@settings(deadline=None)
@given(user_ids, user_ids)
def test_a_signature_is_good_for_its_own_user_only(user_id: str, other: str) -> None:
    signer = CookieSigner(b"k" * 32)
    forged = f"{other}.{signer.signature(user_id)}"
    assert signer.verify(forged) == (other if other == user_id else None)


@settings(deadline=None)
@given(user_ids, st.data())
def test_a_tampered_signature_is_ignored(user_id: str, data: st.DataObject) -> None:
    signer = CookieSigner(b"k" * 32)
    signature = signer.signature(user_id)
    position = data.draw(st.integers(0, len(signature) - 1))
    replacement = data.draw(st.sampled_from("ABCxyz019-_").filter(lambda ch: ch != signature[position]))
    tampered = signature[:position] + replacement + signature[position + 1 :]
    assert signer.verify(f"{user_id}.{tampered}") is None


def test_a_cookie_signed_with_another_secret_is_ignored() -> None:
    planted = CookieSigner(b"a" * 32).sign("victim")
    assert CookieSigner(b"b" * 32).verify(planted) is None


@pytest.mark.parametrize("value", ["", ".", "demo", "demo.", ".abc", "bad user.abc", "x" * 65 + ".abc"])
def test_a_value_without_a_user_and_signature_is_ignored(value: str) -> None:
    assert CookieSigner(b"k" * 32).verify(value) is None


def test_the_user_cookie_is_found_among_others_and_garbage_is_ignored() -> None:
    signer = CookieSigner(b"k" * 32)
    genuine = signer.sign("u-1")
    for header in (f"theme=dark; {USER_COOKIE}={genuine}; x=y", f"junk; secure=1; a[b]=1; {USER_COOKIE}={genuine}"):
        assert signer.read(header) == CookieUser("u-1", sent_cookies=True, too_long=False)
    assert signer.read("theme=dark") == CookieUser(None, sent_cookies=True, too_long=False)
    assert signer.read("") == signer.read(None) == CookieUser(None, sent_cookies=False, too_long=False)
    assert signer.read(f'{USER_COOKIE}="unterminated').user_id is None
    assert signer.read(f"{USER_COOKIE}=u-1.forged").user_id is None


def test_a_planted_user_cookie_sent_first_does_not_shadow_the_genuine_one() -> None:
    signer = CookieSigner(b"k" * 32)
    assert signer.read(f"{USER_COOKIE}=victim.forged; {USER_COOKIE}={signer.sign('u-1')}").user_id == "u-1"


def test_a_cookie_header_over_8_kb_is_not_read() -> None:
    signer = CookieSigner(b"k" * 32)
    header = f"{USER_COOKIE}={signer.sign('u-1')}; pad=" + "x" * 9000
    assert signer.read(header) == CookieUser(None, sent_cookies=True, too_long=True)


def test_a_minted_user_cookie_is_signed_private_and_kept_a_year() -> None:
    signer = CookieSigner(b"k" * 32)
    user_id, header = signer.mint()
    cookie = SimpleCookie()
    cookie.load(header)
    morsel = cookie[USER_COOKIE]
    assert signer.verify(morsel.value) == user_id
    assert user_id.startswith("u-")
    assert morsel["path"] == "/"
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert morsel["max-age"] == str(365 * 24 * 3600)
    assert signer.mint()[1] != header


def test_valid_user_ids() -> None:
    assert valid_user_id("a.b:c-d_e") == "a.b:c-d_e"
    for value in ("", "x" * 65, "with space", "é", 5, None):
        assert valid_user_id(value) is None


# --- the cookie secret -------------------------------------------------------------------------


def test_the_secret_is_made_once_privately_and_then_kept(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_cookie_secret(data_dir)
    path = data_dir / COOKIE_SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= COOKIE_SECRET_MIN_CHARS
    assert load_cookie_secret(data_dir) == first
    assert [p.name for p in data_dir.iterdir()] == [COOKIE_SECRET_FILE]  # no temporary file left


def test_a_short_secret_is_refused_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / COOKIE_SECRET_FILE).write_text("too short\n")
    with pytest.raises(ValueError, match="delete it and start again"):
        load_cookie_secret(tmp_path)


def test_a_secret_others_can_read_is_used_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / COOKIE_SECRET_FILE
    path.write_text("s" * 64 + "\n")
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="recengine.web_guard"):
        assert load_cookie_secret(tmp_path) == b"s" * 64
    assert f"chmod 600 {path}" in caplog.text


# --- headers ---------------------------------------------------------------------------------------


def test_every_answer_forbids_framing_sniffing_referrers_and_foreign_scripts() -> None:
    policy = SECURITY_HEADERS["Content-Security-Policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"):
        assert directive in policy
    assert "unsafe-inline" not in policy
    assert SECURITY_HEADERS["X-Content-Type-Options"] == "nosniff"
    assert SECURITY_HEADERS["Referrer-Policy"] == "no-referrer"
    assert SECURITY_HEADERS["X-Frame-Options"] == "DENY"
