"""argparse types shared by the command lines (build_catalog.py, demo_server.py): each turns
one argument's text into its value, or refuses it with a message argparse prints beside the
flag's name."""

from __future__ import annotations

import argparse

PORT_MAX = 65535


def _whole_number(text: str, minimum: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    return _whole_number(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: a whole number of at least 0."""
    return _whole_number(text, 0, "a whole number of at least 0")


def sentinel_address(value: str) -> tuple[str, int]:
    """argparse type of --sentinel: HOST:PORT, or [IPv6]:PORT."""
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) <= PORT_MAX:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:26379)")
    return host, int(port)
