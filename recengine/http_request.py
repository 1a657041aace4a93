"""A request's bytes made into what the endpoints take, without sockets: the body's length
from the framing headers, the request target, and fields from a query string, a urlencoded
form or a JSON object. Every refusal is an ApiError with the status and message the client gets.
"""

from __future__ import annotations

import email.errors
import json
import re
from collections.abc import Mapping
from email.message import Message
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit


class ApiError(Exception):
    """An answer for the client: status, a message that says what to fix, and `details`, more
    fields of the answer (e.g. which parts of a write were applied)."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.details = dict(details or {})

    def payload(self) -> dict[str, Any]:
        """The answer's JSON: the message as `error`, and the details."""
        return {"error": self.message, **self.details}


MAX_BODY_BYTES = 64 * 1024
MAX_FORM_FIELDS = 100
# Content-Length is 1*DIGIT (RFC 9110): int() would also take "+5", "1_5" and non-ASCII digits.
CONTENT_LENGTH_PATTERN = re.compile(r"[0-9]+")
# What the header parser reports for lines it dropped (not for, e.g., a multipart Content-Type
# without a body, which it also calls a defect).
HEADER_LINE_DEFECTS = (
    email.errors.MissingHeaderBodySeparatorDefect,
    email.errors.InvalidHeaderDefect,
    email.errors.FirstHeaderLineIsContinuationDefect,
)


def declared_body_length(headers: Message) -> int:
    """The body's length from the framing headers, which must be unambiguous: one
    Content-Length of plain digits, no Transfer-Encoding, no malformed header line (which the
    parser would silently drop, Content-Length included). Anything else is refused (ApiError),
    and the connection must then close: where this request ends, and the next begins, is unknown."""
    if any(isinstance(defect, HEADER_LINE_DEFECTS) for defect in headers.defects):
        raise ApiError(400, "a header line is malformed (expected `Name: value`)")
    if headers.get_all("Transfer-Encoding"):
        raise ApiError(411, "send the body with a Content-Length (chunked bodies are not accepted)")
    lengths = headers.get_all("Content-Length") or []
    if not lengths:
        return 0
    if len(lengths) > 1:
        raise ApiError(400, "send exactly one Content-Length header")
    text = lengths[0].strip(" \t")
    if not CONTENT_LENGTH_PATTERN.fullmatch(text):
        raise ApiError(400, f"invalid Content-Length {lengths[0][:40]!r}: it must be digits only")
    if len(text) > 9 or int(text) > MAX_BODY_BYTES:
        size = f"{int(text)} bytes" if len(text) <= 20 else f"{len(text)} digits long"
        raise ApiError(413, f"the body is {size}; at most {MAX_BODY_BYTES} bytes are accepted")
    return int(text)


def parse_form(data: bytes, what: str) -> dict[str, str]:
    """Urlencoded fields, UTF-8 whether raw or percent-encoded (browsers percent-encode, people
    and scripts often do not). A repeated name keeps its first value, as browsers submit a form
    and as the reference server reads one."""
    try:
        pairs = parse_qsl(
            data.decode("utf-8"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError:
        raise ApiError(400, f"the {what} is not valid UTF-8: send UTF-8 text, raw or percent-encoded") from None
    except ValueError as exc:
        raise ApiError(400, f"the {what} is malformed: {exc}") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def parse_body(content_type: str, body: bytes) -> dict[str, Any]:
    """JSON objects and urlencoded forms carry the same field names."""
    if not body.strip():
        return {}
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the JSON body must be an object of fields")
        for name, value in data.items():
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise ApiError(400, f"field {name!r} must be a string, number or boolean")
        return data
    if media_type == "application/x-www-form-urlencoded":
        return parse_form(body, "form body")
    raise ApiError(
        415,
        f"unsupported Content-Type {media_type or '(none)'!r}: send application/json or application/x-www-form-urlencoded",
    )


def split_target(target: str) -> SplitResult:
    """The request target's parts. urllib refuses some absolute URIs (`GET http://[/state`):
    that is the client's 400, not an exception that drops the connection unanswered."""
    try:
        return urlsplit(target)
    except ValueError:
        raise ApiError(400, "the request target is not a valid URL") from None
