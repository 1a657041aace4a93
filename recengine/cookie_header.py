"""Reading one cookie from a Cookie request header, in linear time.

Why not `http.cookies.SimpleCookie`: it unquotes backslashes in quadratic time
(CVE-2024-7592: one 64 KB header cost 14 s of CPU), and it drops the *whole* header when any
cookie in it is not to its taste (`junk`, `secure=1`, `a[b]=1`), so a cookie planted by another
page hides the one we need. The server reads exactly one cookie, so this reads exactly that:

- the header is split at `;` once; each pair is split at its first `=`, and both sides lose
  the spaces and tabs around them (RFC 6265, section 5.4, as browsers send it);
- a pair without `=`, or of another name, is skipped without a look at its value;
- a value in double quotes loses the quotes, and nothing else: no backslash or octal
  unescaping (our own cookie never needs it);
- a header longer than MAX_COOKIE_HEADER_BYTES is ignored whole, so that no cookie work
  scales with what a client chooses to send.

Every step is one pass of a str method over its piece, and the pieces partition the header:
the work is linear in the header's length.
"""

from __future__ import annotations

from dataclasses import dataclass

# Browsers allow 4 KB per cookie; one Cookie header of ours holds one ~60-byte cookie. Other
# sites' cookies on 127.0.0.1 (cookies ignore ports) can add some, rarely this much.
MAX_COOKIE_HEADER_BYTES = 8 * 1024
# What RFC 6265 calls optional whitespace around names and values.
_SPACE = " \t"


@dataclass(frozen=True)
class CookieRead:
    """What a Cookie header says about one cookie name.

    values: every value sent under that name, in header order (a browser sends the cookie of
    the longest matching path first, so a page that planted one with a narrower path comes
    first: the caller must try each, not trust the first).
    sent_cookies: the client sent a Cookie header with something in it (cookies of any name).
    too_long: the header was over MAX_COOKIE_HEADER_BYTES and was not read.
    """

    values: tuple[str, ...]
    sent_cookies: bool
    too_long: bool


def read_cookie(header: str | None, name: str) -> CookieRead:
    """The values of cookie `name` in a Cookie header (None or "" when the request had none)."""
    if not header or not header.strip(_SPACE):
        return CookieRead((), sent_cookies=False, too_long=False)
    if len(header) > MAX_COOKIE_HEADER_BYTES:
        return CookieRead((), sent_cookies=True, too_long=True)
    values = []
    for pair in header.split(";"):
        key, equals, value = pair.partition("=")
        if equals and key.strip(_SPACE) == name:
            values.append(_unquoted(value.strip(_SPACE)))
    return CookieRead(tuple(values), sent_cookies=True, too_long=False)


def _unquoted(value: str) -> str:
    """A value without its surrounding double quotes, if it has both."""
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
