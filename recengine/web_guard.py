"""The demo server's guard at the door, without sockets: which Host names it answers for (DNS
rebinding), the signed user cookie, the same-origin rule for requests that change state, and
the headers every response carries. SECURITY.md has the threat model; demo_server.py applies
these rules to each request and turns a refusal into its HTTP answer.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from recengine.cookie_header import read_cookie

log = logging.getLogger(__name__)

USER_COOKIE = "rr_user"
USER_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# A year: the browser keeps its user across visits.
USER_COOKIE_MAX_AGE_S = 365 * 24 * 3600
# A Host header: a DNS name or IPv4 address, or a bracketed IPv6 address, and an optional port.
HOST_PATTERN = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::([0-9]{1,5}))?")
DNS_NAME_PATTERN = re.compile(r"(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
COOKIE_SECRET_FILE = "cookie-secret"
COOKIE_SECRET_MIN_CHARS = 32
SIGNATURE_BYTES = 16
# What Sec-Fetch-Site says of a request the page itself (or the user, typing a URL) made.
SAME_SITE_FETCHES = ("same-origin", "none")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def valid_user_id(value: Any) -> str | None:
    return value if isinstance(value, str) and USER_ID_PATTERN.fullmatch(value) else None


# --- host names ----------------------------------------------------------------------------------


def host_name(value: str) -> str | None:
    """A host as the Host check compares it: lower case, an IPv6 address in brackets; None for
    anything else (a port, a scheme, a wildcard, spaces)."""
    name = value.strip().lower()
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
        return f"[{address.compressed}]" if address.version == 6 else address.compressed
    return name if DNS_NAME_PATTERN.fullmatch(name) else None


def allowed_host_argument(value: str) -> str:
    name = host_name(value)
    if name is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a host name: give the bare name the browser uses, e.g. demo.example.com "
            "(no scheme, port or wildcard)"
        )
    return name


@functools.lru_cache(maxsize=256)
def split_host_header(value: str) -> tuple[str, int | None] | None:
    """(name, port) of a Host header or a target's authority; None when malformed. Remembered
    for the last few hundred values: every request carries one, nearly always the same, and
    parsing it (a regex, an address parse) was a measurable part of a request's own time."""
    match = HOST_PATTERN.fullmatch(value.strip().lower())
    if not match:
        return None
    name = host_name(match.group(1))
    return (name, int(match.group(2)) if match.group(2) else None) if name else None


@dataclass(frozen=True)
class AllowedHosts:
    """The names a server answers for: the loopback names and its own address, with its port
    or none; `extra_names` (--allowed-host) with any port, since behind a proxy the public port
    is not ours."""

    local_names: frozenset[str]
    extra_names: frozenset[str]
    port: int

    @classmethod
    def serving(cls, host: str, port: int, allowed_hosts: Iterable[str] = ()) -> AllowedHosts:
        """The names of a server listening on host:port, plus `allowed_hosts`."""
        own = {name for name in (*LOOPBACK_NAMES, host_name(host) or "") if name}
        extra = filter(None, (host_name(name) for name in allowed_hosts))
        return cls(frozenset(own), frozenset(extra), port)

    def allows(self, host: str) -> bool:
        """Whether a Host header (or an absolute target's authority) names this server."""
        parsed = split_host_header(host)
        if parsed is None:
            return False
        name, port = parsed
        if name in self.extra_names:
            return True
        return name in self.local_names and port in (None, self.port)


# --- the same-origin rule -----------------------------------------------------------------------


def origin_netloc(origin: str) -> str | None:
    """host[:port] of an Origin header; None for one urllib cannot parse, which is never ours."""
    try:
        return urlsplit(origin).netloc
    except ValueError:
        return None


def cross_site_refusal(fetch_site: str | None, origin: str | None, host: str) -> str | None:
    """Why a request that changes state is refused, or None to serve it. Another web page must
    not drive a user's local demo: browsers mark cross-site requests with Sec-Fetch-Site and
    Origin, which a page cannot forge. `host` is the request's Host header ("" when absent)."""
    if fetch_site and fetch_site not in SAME_SITE_FETCHES:
        return "cross-site requests are refused: use the demo page itself"
    if origin and origin != "null" and origin_netloc(origin) != host:
        return "cross-origin requests are refused: use the demo page itself"
    if origin == "null":
        return "requests from an opaque origin are refused"
    return None


# --- the user cookie --------------------------------------------------------------------------


class CookieSigner:
    """The user cookie is `<user id>.<HMAC-SHA256 of the id>`, so that a cookie planted by
    someone without the server's secret (a page on another port of 127.0.0.1 can set cookies
    for this one) is ignored instead of choosing the user."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def signature(self, user_id: str) -> str:
        digest = hmac.new(self._secret, user_id.encode("utf-8"), hashlib.sha256).digest()[:SIGNATURE_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def sign(self, user_id: str) -> str:
        return f"{user_id}.{self.signature(user_id)}"

    def verify(self, value: str) -> str | None:
        """The user id of a genuine cookie value, else None."""
        user_id, _, signature = value.rpartition(".")
        if valid_user_id(user_id) is None:
            return None
        return user_id if hmac.compare_digest(signature, self.signature(user_id)) else None

    def read(self, cookie_header: str | None) -> CookieUser:
        """What a Cookie header says about the user: the first genuine (signed) user cookie in
        it, whatever else it holds. Every `rr_user` value is tried, since a page can plant one
        with a narrower path that the browser sends first (recengine/cookie_header.py reads the
        header in linear time and ignores one over 8 KB)."""
        read = read_cookie(cookie_header, USER_COOKIE)
        user_id = next(filter(None, map(self.verify, read.values)), None)
        return CookieUser(user_id, sent_cookies=read.sent_cookies, too_long=read.too_long)

    def mint(self) -> tuple[str, str]:
        """A new user of its own: its id, and the Set-Cookie value that gives it to a browser."""
        user_id = f"u-{secrets.token_hex(8)}"
        cookie = f"{USER_COOKIE}={self.sign(user_id)}; Path=/; HttpOnly; SameSite=Lax; Max-Age={USER_COOKIE_MAX_AGE_S}"
        return user_id, cookie


@dataclass(frozen=True)
class CookieUser:
    """The user a request's cookies name (None: no genuine user cookie), whether it sent any
    cookie at all, and whether its Cookie header was too long to read. A client that sent
    cookies but no genuine user cookie is a browser whose cookie was lost, replaced or hidden:
    it gets a user of its own, never the shared one that cookie-less scripts get."""

    user_id: str | None
    sent_cookies: bool
    too_long: bool


def load_cookie_secret(data_dir: Path) -> bytes:
    """The secret that signs user cookies, kept in `data_dir` so that cookies stay good across
    restarts and between the workers and servers sharing the folder. Created when absent:
    written privately (0600) under a temporary name and linked into place, so a concurrent
    start either wins or reads the winner's secret, never half a file or a second secret."""
    path = data_dir / COOKIE_SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=data_dir, prefix=f".{COOKIE_SECRET_FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as temp:
                temp.write(secrets.token_hex(32) + "\n")
                temp.flush()
                os.fsync(temp.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temp_name, path)
        finally:
            os.unlink(temp_name)
    secret = path.read_text(encoding="ascii", errors="replace").strip()
    if len(secret) < COOKIE_SECRET_MIN_CHARS:
        raise ValueError(
            f"{path} holds no usable secret (under {COOKIE_SECRET_MIN_CHARS} characters): delete it and start "
            "again to make a new one (browsers then get new user cookies)"
        )
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        log.warning("%s can be read by other users: run `chmod 600 %s`", path, path)
    return secret.encode("ascii")
