"""argparse types shared by the command lines (build_catalog.py, demo_server.py): each turns
one argument's text into its value, or refuses it with a message argparse prints beside the
flag's name."""

from __future__ import annotations

import argparse
import re

PORT_MAX = 65535
# What redis-server takes for a memory size: bytes, or a number with a unit (its own spelling).
MEMORY_SIZE = re.compile(r"[0-9]+(b|k|kb|m|mb|g|gb)?", re.IGNORECASE)


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


def memory_size(value: str) -> str:
    """argparse type of --maxmemory: a size as Redis writes it (e.g. 256mb, 2gb, 1048576), at
    least one megabyte (below that Redis cannot hold even the catalogue)."""
    text = value.strip().lower()
    match = MEMORY_SIZE.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{value!r} is not a memory size: write it as Redis does, e.g. 256mb or 2gb")
    unit = {None: 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
    if int(text[: match.start(1)] if match.group(1) else text) * unit[match.group(1)] < 1024**2:
        raise argparse.ArgumentTypeError(f"{value!r} is under one megabyte: too little to hold the catalogue")
    return text
