"""The argparse types both command lines share, alone and as the parsers use them.
Hypothesis runs without deadlines: tests assert behaviour, not timings, on a shared machine.
"""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import build_catalog
from recengine.cli_types import memory_size, non_negative_int, positive_int, sentinel_address
from recengine.server_cli import build_parser


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=10**12))
def test_a_positive_int_reads_back(value: int) -> None:
    assert positive_int(str(value)) == value


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=10**12))
def test_a_non_negative_int_reads_back(value: int) -> None:
    assert non_negative_int(str(value)) == value


@pytest.mark.parametrize(
    ("convert", "text", "message"),
    [
        (positive_int, "0", "expected a positive integer, got 0"),
        (positive_int, "-3", "expected a positive integer, got -3"),
        (positive_int, "two", "expected a positive integer, got 'two'"),
        (positive_int, "1.5", "expected a positive integer, got '1.5'"),
        (positive_int, "", "expected a positive integer, got ''"),
        (non_negative_int, "-1", "expected a whole number of at least 0, got -1"),
        (non_negative_int, "1e3", "expected a whole number of at least 0, got '1e3'"),
    ],
)
def test_other_numbers_are_refused_saying_what_was_expected(convert, text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as info:
        convert(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:26379", ("127.0.0.1", 26379)),
        ("sentinel-1.lan:1", ("sentinel-1.lan", 1)),
        ("[::1]:26379", ("::1", 26379)),
        ("[fe80::1]:65535", ("fe80::1", 65535)),
    ],
)
def test_a_sentinel_address_is_host_and_port(value: str, expected: tuple[str, int]) -> None:
    assert sentinel_address(value) == expected


@pytest.mark.parametrize(
    "value", ["127.0.0.1", "127.0.0.1:", ":26379", "[]:26379", "host:0", "host:65536", "host:-1", "host:2x", "host:+1"]
)
def test_anything_else_is_not_a_sentinel_address(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"is not HOST:PORT \(e\.g\. 127\.0\.0\.1:26379\)"):
        sentinel_address(value)


@settings(deadline=None)
@given(st.ip_addresses(), st.integers(min_value=1, max_value=65535))
def test_every_address_and_port_reads_back(address, port: int) -> None:
    shown = f"[{address}]" if address.version == 6 else str(address)
    assert sentinel_address(f"{shown}:{port}") == (str(address), port)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0"], "argument --workers: expected a positive integer, got 0"),
        (["--user-ttl", "-5"], "argument --user-ttl: expected a whole number of at least 0, got -5"),
        (["--sentinel", "localhost"], "argument --sentinel: 'localhost' is not HOST:PORT"),
        (
            ["--allowed-host", "http://demo.example"],
            "argument --allowed-host: 'http://demo.example' is not a host name",
        ),
    ],
)
def test_the_server_refuses_a_bad_flag_naming_it(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_server_reads_good_flags_into_their_types() -> None:
    args = build_parser().parse_args(
        ["--workers", "3", "--user-ttl", "0", "--sentinel", "[::1]:26379", "--allowed-host", "Demo.Example"]
    )
    assert (args.workers, args.user_ttl, args.sentinel, args.allowed_host) == (3, 0, [("::1", 26379)], ["demo.example"])


def test_the_catalog_builder_uses_the_same_positive_int(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_catalog.build_parser()
    flag = next(action for action in parser._actions if action.type is positive_int)
    with pytest.raises(SystemExit):
        parser.parse_args([flag.option_strings[0], "0"])
    assert "expected a positive integer, got 0" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "kept"), [("256mb", "256mb"), ("2GB", "2gb"), (" 1048576 ", "1048576"), ("1g", "1g")])
def test_a_memory_size_is_taken_as_redis_writes_it(text: str, kept: str) -> None:
    assert memory_size(text) == kept


@pytest.mark.parametrize("text", ["", "lots", "256 mb", "-5mb", "1.5gb", "256mib", "1000kb", "999999"])
def test_a_memory_size_that_redis_would_refuse_or_that_holds_nothing_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        memory_size(text)


def test_the_limits_have_their_defaults_and_zero_turns_a_budget_off() -> None:
    args = build_parser().parse_args([])
    assert (args.maxmemory, args.durable, args.new_users_per_minute, args.model_queue_per_client) == (
        None,
        False,
        60,
        4,
    )
    args = build_parser().parse_args(["--new-users-per-minute", "0", "--maxmemory", "1gb", "--durable"])
    assert (args.new_users_per_minute, args.maxmemory, args.durable) == (0, "1gb", True)
