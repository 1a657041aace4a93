"""Who may write the catalogue over HTTP: whoever presents the admin bearer token.

The admin API (PUT, PATCH and DELETE /products/<id>, the batch upsert) is off unless a token is
set, by `--admin-token` or the environment variable ADMIN_TOKEN_ENV. A request then needs
`Authorization: Bearer <token>`: without one it is 401 (and told how to authenticate), with
another token 403. The shopper's signed cookie never authorises a catalogue write. Tokens are
compared in constant time (hmac.compare_digest), so the time of a refusal does not tell an
attacker how much of a guess was right.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

ADMIN_TOKEN_ENV = "RECOMMENDER_ADMIN_TOKEN"
# A token short enough to guess is refused when the server starts: 16 characters of a random
# token (e.g. `python -c "import secrets; print(secrets.token_urlsafe(24))"`) at least.
MIN_TOKEN_CHARS = 16
BEARER = "bearer"
Verdict = Literal["allowed", "missing", "wrong"]


@dataclass(frozen=True, repr=False)
class AdminToken:
    """The configured token; repr never shows it (it ends up in logs and tracebacks otherwise)."""

    secret: bytes

    def __repr__(self) -> str:
        return "AdminToken(<hidden>)"

    @classmethod
    def configured(cls, flag: str | None, environ: Mapping[str, str]) -> AdminToken | None:
        """The token of --admin-token, else of the environment; None (the admin API off) when
        neither is set. ValueError for a token too short to be secret, or with spaces."""
        value = flag if flag is not None else environ.get(ADMIN_TOKEN_ENV)
        if value is None or value == "":
            return None
        if len(value) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"the admin token must be at least {MIN_TOKEN_CHARS} characters long (got {len(value)}): "
                'make one with `python -c "import secrets; print(secrets.token_urlsafe(24))"`'
            )
        if any(ch.isspace() or not ch.isprintable() for ch in value) or not value.isascii():
            raise ValueError("the admin token must be printable ASCII without spaces")
        return cls(value.encode("ascii"))

    def verdict(self, authorization: str | None) -> Verdict:
        """What an Authorization header earns: "missing" without a bearer token, "wrong" with
        another one, "allowed" with this one."""
        if authorization is None:
            return "missing"
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != BEARER or not credentials.strip():
            return "missing"
        presented = credentials.strip().encode("utf-8", "replace")
        return "allowed" if hmac.compare_digest(presented, self.secret) else "wrong"
