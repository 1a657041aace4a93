"""A request's bytes made into fields, and its framing checked, without a socket: the same
functions the demo server's handler calls.
Hypothesis runs without deadlines: tests assert behaviour, not timings, on a shared machine.
"""

from __future__ import annotations

import http.client
import io
import json
import string
from collections.abc import Callable
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recengine.http_request import (
    CONTENT_LENGTH_PATTERN,
    MAX_BODY_BYTES,
    MAX_FORM_FIELDS,
    ApiError,
    declared_body_length,
    parse_body,
    parse_form,
    split_target,
)


def headers(*lines: str) -> http.client.HTTPMessage:
    """Header lines parsed as http.server parses a request's (defects included)."""
    return http.client.parse_headers(io.BytesIO("".join(f"{line}\r\n" for line in (*lines, "")).encode("latin-1")))


def refusal(call: Callable[..., object], *args: object) -> ApiError:
    with pytest.raises(ApiError) as info:
        call(*args)
    return info.value


# --- forms and query strings ----------------------------------------------------------------------


def test_a_form_is_utf8_whether_raw_or_percent_encoded() -> None:
    assert parse_form("query=café".encode(), "form body") == {"query": "café"}
    assert parse_form(b"query=caf%C3%A9&k=3", "form body") == {"query": "café", "k": "3"}
    assert parse_form(b"query=a+b&empty=", "query string") == {"query": "a b", "empty": ""}


def test_a_repeated_field_keeps_its_first_value() -> None:
    assert parse_form(b"user_id=first&user_id=second", "query string") == {"user_id": "first"}


@settings(deadline=None)
@given(st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=8), st.text(max_size=20), max_size=10))
def test_any_urlencoded_form_reads_back(fields: dict[str, str]) -> None:
    assert parse_form(urlencode(fields).encode("ascii"), "form body") == fields


def test_bytes_that_are_not_utf8_are_a_400_naming_the_fix() -> None:
    for data in (b"query=caf\xe9", b"query=caf%E9"):
        error = refusal(parse_form, data, "query string")
        assert error.status == 400
        assert "the query string is not valid UTF-8" in error.message


def test_too_many_fields_are_a_400() -> None:
    data = "&".join(f"f{i}=x" for i in range(MAX_FORM_FIELDS + 1)).encode()
    error = refusal(parse_form, data, "form body")
    assert error.status == 400 and "the form body is malformed" in error.message
    assert len(parse_form(data.rsplit(b"&", 1)[0], "form body")) == MAX_FORM_FIELDS


# --- bodies ---------------------------------------------------------------------------------------


def test_json_and_forms_carry_the_same_fields() -> None:
    as_json = parse_body("application/json", json.dumps({"query": "coat", "k": 3, "fresh": True}).encode())
    as_form = parse_body("application/x-www-form-urlencoded; charset=UTF-8", b"query=coat&k=3&fresh=true")
    assert as_json == {"query": "coat", "k": 3, "fresh": True}
    assert as_form == {"query": "coat", "k": "3", "fresh": "true"}
    assert parse_body("Application/JSON; charset=utf-8", b'{"k": null}') == {"k": None}


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", ""])
def test_an_empty_body_is_no_fields_whatever_its_type(content_type: str) -> None:
    assert parse_body(content_type, b"  \r\n ") == {}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "the body is not valid JSON"),
        (b"\xff\xfe{}", "the body is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "the body is not valid JSON"),
        (b"[1, 2]", "must be an object of fields"),
        (b'"text"', "must be an object of fields"),
        (b'{"filters": {"brand": "x"}}', "field 'filters' must be a string, number or boolean"),
        (b'{"ids": [1, 2]}', "field 'ids' must be a string, number or boolean"),
    ],
)
def test_json_that_is_not_an_object_of_plain_values_is_a_400(body: bytes, words: str) -> None:
    error = refusal(parse_body, "application/json", body)
    assert error.status == 400
    assert words in error.message


@pytest.mark.parametrize(("content_type", "named"), [("text/plain", "'text/plain'"), ("", "'(none)'")])
def test_other_media_types_are_a_415_naming_the_ones_accepted(content_type: str, named: str) -> None:
    error = refusal(parse_body, content_type, b"query=coat")
    assert error.status == 415
    assert named in error.message and "application/json" in error.message


# --- the request target -------------------------------------------------------------------------


def test_a_target_splits_into_path_and_query() -> None:
    target = split_target("/search?query=coat&k=3")
    assert (target.path, target.query, target.netloc) == ("/search", "query=coat&k=3", "")
    assert split_target("http://127.0.0.1:8084/state").netloc == "127.0.0.1:8084"


@pytest.mark.parametrize("target", ["http://[/state", "http://[::1/state"])
def test_a_target_urllib_refuses_is_a_400(target: str) -> None:
    error = refusal(split_target, target)
    assert error.status == 400 and "not a valid URL" in error.message


# --- framing ------------------------------------------------------------------------------------


@settings(deadline=None)
@given(st.text(max_size=12))
def test_content_length_is_ascii_digits_only(text: str) -> None:
    is_digits = bool(text) and all(ch in "0123456789" for ch in text)
    assert bool(CONTENT_LENGTH_PATTERN.fullmatch(text)) == is_digits


@pytest.mark.parametrize("text", ["+5", "-5", "1_5", "5.0", "0x10", "٣", "²", " 5", ""])
def test_what_int_would_take_is_no_content_length(text: str) -> None:
    assert not CONTENT_LENGTH_PATTERN.fullmatch(text)


def test_no_content_length_is_no_body() -> None:
    assert declared_body_length(headers("Host: localhost")) == 0


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=MAX_BODY_BYTES))
def test_a_content_length_up_to_the_limit_is_the_body_length(length: int) -> None:
    assert declared_body_length(headers(f"Content-Length: {length}")) == length
    assert declared_body_length(headers(f"Content-Length: 000{length}")) == length


@settings(deadline=None)
@given(st.integers(min_value=MAX_BODY_BYTES + 1, max_value=10**30))
def test_a_body_over_the_limit_is_a_413_saying_how_large(length: int) -> None:
    error = refusal(declared_body_length, headers(f"Content-Length: {length}"))
    assert error.status == 413
    assert f"at most {MAX_BODY_BYTES} bytes" in error.message
    assert (f"{length} bytes" if len(str(length)) <= 20 else f"{len(str(length))} digits long") in error.message


@pytest.mark.parametrize(
    ("lines", "status", "words"),
    [
        (["Content-Length: 5", "Content-Length: 5"], 400, "exactly one Content-Length"),
        (["Content-Length: +5"], 400, "it must be digits only"),
        (["Content-Length: 5, 5"], 400, "it must be digits only"),
        (["Transfer-Encoding: chunked"], 411, "chunked bodies are not accepted"),
        (["Transfer-Encoding: chunked", "Content-Length: 5"], 411, "chunked bodies are not accepted"),
        (["Host: localhost", "no colon here", "Content-Length: 5"], 400, "a header line is malformed"),
        ([" folded: first line", "Content-Length: 5"], 400, "a header line is malformed"),
    ],
)
def test_ambiguous_framing_is_refused(lines: list[str], status: int, words: str) -> None:
    error = refusal(declared_body_length, headers(*lines))
    assert error.status == status
    assert words in error.message
