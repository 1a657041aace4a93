"""Reading what Redis answers: FT.SEARCH, FT.AGGREGATE and FT.INFO replies of either protocol
(RESP2 lists, RESP3 maps), and stored hashes turned back into typed values. This is the one
place that knows both reply shapes. A garbled stored value never breaks a page: it is shown as
empty, 0 or false, and logged once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

from ranking import Candidate, UserFeatures, Why
from recengine import layout
from recengine.catalog_schema import stored_category
from recengine.results import IndexInfo

# The library's one logger name, whichever module logs.
log = logging.getLogger("recommender")

# One raw row: the product key (or id) and its fields' values as the reply holds them.
RawRow = tuple[str, dict[str, Any]]


def text(value: Any) -> str:
    """A reply value as text ("" for none)."""
    if value is None:
        return ""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def number(value: Any, default: float = 0.0) -> float:
    """A reply value as a finite float, or `default` for anything else."""
    try:
        parsed = float(text(value))
    except ValueError:
        return default
    return parsed if math.isfinite(parsed) else default


def _results(response: Mapping[Any, Any]) -> list[Any]:
    return response.get(b"results", response.get("results")) or []


def _attributes(result: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return result.get(b"extra_attributes", result.get("extra_attributes")) or {}


def raw_rows(response: Any) -> Iterator[RawRow]:
    """(key, {field: raw value}) from FT.SEARCH, whichever protocol the client speaks.

    RESP2: [total, key, [field, value, ...], key, [...], ...]
    RESP3: {total_results, results: [{id, extra_attributes: {field: value}}]}, keys as bytes
    or str depending on decode_responses.
    A RESP3 search that hits Search's query timeout (policy "return", as on a busy replica)
    may carry a result without an id: it is no product and is skipped.
    """
    if isinstance(response, dict):
        for result in _results(response):
            key = result.get(b"id", result.get("id"))
            if key is None:
                continue
            attributes = _attributes(result)
            yield text(key), dict(zip(_field_names(tuple(attributes)), attributes.values(), strict=True))
        return
    for i in range(1, len(response) - 1, 2):
        flat = response[i + 1] or []
        yield text(response[i]), dict(zip(_field_names(tuple(flat[0:-1:2])), flat[1::2], strict=True))


# A row's field names as replies spell them (bytes, or str from a decoding client), decoded once
# per combination: every row of every search repeats the same one or two. Bounded, in case
# replies name fields without end.
_FIELD_NAMES: dict[tuple[Any, ...], tuple[str, ...]] = {}
_FIELD_NAMES_KEPT = 256


def _field_names(raw: tuple[Any, ...]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(raw)
    if names is None:
        names = tuple(text(name) for name in raw)
        if len(_FIELD_NAMES) < _FIELD_NAMES_KEPT:
            _FIELD_NAMES[raw] = names
    return names


def hybrid_rows(response: Any) -> Iterator[RawRow]:
    """(key, {field: raw value}) from FT.HYBRID (Redis 8.4+), either protocol, as its
    documentation describes the reply (untested against such a server): RESP3 a map whose
    `results` are maps of a row's fields, RESP2 the same as a flat [name, value, ...] list whose
    `results` are flat lists. Each row names its key in `__key` (a row without one is skipped)
    and holds the loaded fields and the yielded scores."""
    if isinstance(response, dict):
        reply = {text(name): value for name, value in response.items()}
        rows = [{text(name): value for name, value in row.items()} for row in reply.get("results") or []]
    else:
        reply = {text(response[i]): response[i + 1] for i in range(0, len(response) - 1, 2)}
        rows = [{text(row[j]): row[j + 1] for j in range(0, len(row) - 1, 2)} for row in reply.get("results") or []]
    for row in rows:
        key = row.pop("__key", None)
        if key is not None:
            yield text(key), row


def search_rows(response: Any) -> list[tuple[str, dict[str, str]]]:
    """(key, {field: text}) rows from an FT.SEARCH reply of either protocol."""
    return [(key, {name: text(value) for name, value in raw.items()}) for key, raw in raw_rows(response)]


def aggregate_rows(response: Any) -> list[dict[str, str]]:
    """Field maps from FT.AGGREGATE: RESP2 [total, [field, value, ...], ...]; RESP3
    {results: [{extra_attributes: {...}}]}. Like search_rows, the one place for both shapes."""
    if isinstance(response, dict):
        return [{text(k): text(v) for k, v in _attributes(r).items()} for r in _results(response)]
    return [{text(row[j]): text(row[j + 1]) for j in range(0, len(row) - 1, 2)} for row in response[1:]]


def info_dict(response: Any) -> dict[str, Any]:
    """FT.INFO as a dict with str keys: RESP3 gives a map (bytes keys), RESP2 a flat list."""
    if isinstance(response, dict):
        return {text(k): v for k, v in response.items()}
    return {text(response[i]): response[i + 1] for i in range(0, len(response) - 1, 2)}


def index_vector_type(response: Any) -> layout.VectorType | None:
    """The element type of the product vectors an FT.INFO reply's index holds (its `embedding`
    attribute's data_type); None when it has no such field or a type this library cannot write."""
    for attribute in info_dict(response).get("attributes") or []:
        fields = info_dict(attribute)
        if text(fields.get("attribute")) == layout.EMBEDDING_FIELD and text(fields.get("type")) == "VECTOR":
            found = text(fields.get("data_type"))
            return next((known for known in layout.VECTOR_TYPES if known == found), None)
    return None


# Data problems already logged: the page asks /state after every click, so logging a broken
# product on every read would bury the log in repeats of one line.
_reported_problems: set[str] = set()


def report_once(message: str) -> None:
    """Log a problem of the stored data, the first time it is met."""
    if message not in _reported_problems:
        _reported_problems.add(message)
        log.warning("%s", message)


def index_info_from(index_name: str, response: Any) -> IndexInfo:
    """IndexInfo from an FT.INFO reply. A hash the index refuses (a price of "abc", a vector of
    the wrong size) silently drops out of every search; FT.INFO keeps the last culprit, so it is
    named in the log."""
    info = info_dict(response)
    failures = int(number(info.get("hash_indexing_failures")))
    if failures:
        errors = info_dict(info.get("Index Errors") or [])
        report_once(
            f"index {index_name}: {failures} product hash(es) could not be indexed and are left out of "
            f"searches; the last: {text(errors.get('last indexing error key'))} "
            f"({text(errors.get('last indexing error'))})"
        )
    return IndexInfo(
        num_docs=int(number(info.get("num_docs"))),
        indexing_failures=failures,
        vector_index_size_mb=round(number(info.get("vector_index_sz_mb")), 4),
        percent_indexed=number(info.get("percent_indexed"), default=1.0),
    )


def product_display_fields(product_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """The PRODUCT_FIELDS of one stored product as shown to users. A missing or garbled field
    (a price of "abc", an in_stock of "maybe") is shown as empty, 0 or false, so one bad hash
    cannot break a page of results, and is logged once, so the corrupt data gets noticed."""
    problems = [f"lacks {name}" for name in layout.PRODUCT_FIELDS if name not in fields]
    numbers = {name: number(fields.get(name), default=math.nan) for name in layout.PRODUCT_NUMERIC_FIELDS}
    problems += [
        f"has {name} {fields[name]!r}, not a finite number"
        for name, value in numbers.items()
        if name in fields and math.isnan(value)
    ]
    in_stock = fields.get("in_stock", "").lower()
    if "in_stock" in fields and in_stock not in ("true", "false"):
        problems.append(f"has in_stock {fields['in_stock']!r}, neither true nor false")
    for problem in problems:
        report_once(f"product {product_id!r} {problem}; shown as empty, 0 or false")
    return {
        "name": fields.get("name", ""),
        "description": fields.get("description", ""),
        "category": stored_category(fields.get("category", "")),
        "brand": fields.get("brand", ""),
        **{name: 0.0 if math.isnan(value) else value for name, value in numbers.items()},
        "in_stock": in_stock == "true",
    }


def product_summary(product_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """A product as lists show it: the display fields without the long description."""
    shown = product_display_fields(product_id, fields)
    del shown["description"]
    return {"id": product_id, **shown}


_STOCK_WORDS = {b"true": True, b"false": False}


# The largest cosine distance.
_FARTHEST = 2.0


def _distance(score: Any) -> float:
    """A row's vector distance; the farthest when garbled."""
    try:
        distance = float(score)  # float() takes the reply's bytes as they are
    except (TypeError, ValueError):
        return _FARTHEST
    return distance if math.isfinite(distance) else _FARTHEST


def candidate_from_row(product_id: str, raw: Mapping[str, Any]) -> Candidate:
    """One FT.SEARCH row as a Candidate. Healthy rows take the short path (one conversion per
    field, no checks to log, the Candidate built directly); any other row (a field missing or
    garbled, values already decoded to str) goes through product_display_fields, which names a
    problem once."""
    score = raw.get(layout.SCORE_FIELD)
    # Rows of popular() and its rating fallback have no distance: None, and their why says so by
    # omission. Their score, which orders nothing (popularity or rating does), is the farthest.
    distance = None if score is None else _distance(score)
    why = Why(vector_distance=distance)
    try:
        price, rating, in_stock = float(raw["price"]), float(raw["rating"]), _STOCK_WORDS[raw["in_stock"]]
        if math.isfinite(price) and math.isfinite(rating):
            return Candidate(
                product_id,
                raw["name"].decode("utf-8", "replace"),
                raw["description"].decode("utf-8", "replace"),
                stored_category(raw["category"].decode("utf-8", "replace")),
                raw["brand"].decode("utf-8", "replace"),
                price,
                rating,
                in_stock,
                distance,
                _FARTHEST if distance is None else distance,
                why,
            )
    except (KeyError, ValueError, TypeError, AttributeError):  # a field missing or garbled, or str values
        pass
    shown = product_display_fields(product_id, {n: text(v) for n, v in raw.items() if n != layout.EMBEDDING_FIELD})
    return Candidate(
        id=product_id, **shown, vector_distance=distance, score=_FARTHEST if distance is None else distance, why=why
    )


def features_from_hash(user_id: str, stored: Mapping[Any, Any], vector_dim: int) -> UserFeatures:
    """A user's features hash (HGETALL) as UserFeatures; a vector of the wrong size is ignored,
    and logged once."""
    raw = {text(k): v for k, v in stored.items()}
    vectors = {}
    for name in (layout.SESSION_VEC_FIELD, layout.NEGATIVE_VEC_FIELD):
        vectors[name] = layout.bytes_to_vector(raw.get(name), vector_dim)
        if vectors[name] is None and raw.get(name) is not None:
            label = "session vector" if name == layout.SESSION_VEC_FIELD else "negative vector"
            report_once(
                f"user {user_id}: stored {label} has {len(raw[name])} bytes, expected {vector_dim * 4}; ignoring it"
            )
    timestamps = {name: number(raw[name], default=math.nan) if name in raw else math.nan
                  for name in (layout.SESSION_AT_FIELD, layout.NEGATIVE_AT_FIELD, layout.AFFINITY_AT_FIELD)}  # fmt: skip
    last_id, last_category = raw.get(layout.LAST_CLICKED_ID_FIELD), raw.get(layout.LAST_CLICKED_CATEGORY_FIELD)
    return UserFeatures(
        session_vec=vectors[layout.SESSION_VEC_FIELD],
        affinities={
            name[len(layout.AFFINITY_PREFIX) :]: number(value)
            for name, value in raw.items()
            if name.startswith(layout.AFFINITY_PREFIX)
        },
        clicks=int(number(raw.get(layout.CLICKS_FIELD))),
        last_clicked_id=text(last_id) if last_id is not None else None,
        last_clicked_category=text(last_category) if last_category is not None else None,
        negative_vec=vectors[layout.NEGATIVE_VEC_FIELD],
        **{name: None if math.isnan(value) else value for name, value in timestamps.items()},
    )


def scored_rows(response: Any) -> Iterator[tuple[str, float, dict[str, Any]]]:
    """(key, score, {field: raw value}) from FT.SEARCH ... WITHSCORES, either protocol.

    RESP2: [total, key, score, [field, value, ...], ...]; RESP3: results carry a `score`."""
    if isinstance(response, dict):
        for result in _results(response):
            key = result.get(b"id", result.get("id"))
            if key is None:
                continue
            attributes = _attributes(result)
            fields = dict(zip(_field_names(tuple(attributes)), attributes.values(), strict=True))
            yield text(key), number(result.get(b"score", result.get("score"))), fields
        return
    for i in range(1, len(response) - 2, 3):
        flat = response[i + 2] or []
        yield (
            text(response[i]),
            number(response[i + 1]),
            dict(zip(_field_names(tuple(flat[0:-1:2])), flat[1::2], strict=True)),
        )
