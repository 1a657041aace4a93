"""What the library asks RediSearch, as text: the typed filter (SearchFilters) and its clause,
the hybrid KNN query, and the whole argument list of every FT.* command it sends. Pure
functions, so each command can be read (and tested) without a Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, Unpack

import numpy as np

from ranking import finite_number
from recengine.catalog_schema import FIELD_NAME
from recengine.layout import EMBEDDING_FIELD, PRODUCT_FIELDS, PRODUCT_TEXT_FIELDS, SCORE_FIELD
from recengine.validation import check_literal

# One command's arguments, as execute_command takes them (the vector is bytes).
Command = list[str | bytes]
HybridPolicy = Literal["BATCHES", "ADHOC_BF"]
# How a typed query's text and vector searches are fused: by FT.HYBRID on the server (Redis
# 8.4+), or as KNN and BM25 searches pipelined in one round trip, fused by the ranking.
TextFusion = Literal["pipelined", "ft.hybrid"]
HYBRID_POLICIES = (None, "BATCHES", "ADHOC_BF")
# Redis' own EF_RUNTIME (10) gives recall@10 0.65 at 100k items; 100 gives 0.99 for +0.14 ms
# p50 (bench/retrieval.py, 2 cores). Small catalogs are exact either way.
DEFAULT_EF_RUNTIME = 100
# Every query is parsed by dialect 2 (parameters, the KNN syntax).
_DIALECT = ("DIALECT", "2")


# --- filters: one typed request, one clause ---------------------------------------------------


def escape_tag_value(value: str) -> str:
    """Escape a literal TAG value so that no character in it is query syntax.

    Every ASCII character other than letters and digits is backslash-escaped, and so is any
    whitespace. `_` is escaped too: RediSearch 2.10 reads a lone `{_}` as a syntax error, while
    `\\_` matches it (and any `_` inside a value) literally. Other Unicode characters stay as they
    are: RediSearch matches them literally, and escaping them would stop them from matching.
    """
    return "".join("\\" + ch if (ch.isascii() and not ch.isalnum()) or ch.isspace() else ch for ch in value)


def escape_text_phrase(value: str) -> str:
    """One quoted phrase: only `\\` and `"` are special inside the quotes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _range(field_name: str, low: float | None, high: float | None) -> str:
    low_text = "-inf" if low is None else repr(low)
    high_text = "+inf" if high is None else repr(high)
    return f"@{field_name}:[{low_text} {high_text}]"


@dataclass(frozen=True)
class SearchFilters:
    """What a result must be: the structured pre-filter of the hybrid query.

    Travels unchanged from the HTTP parser (or a script) to FT.SEARCH, and checks its own rules
    once, here: values are literals (TAG values are escaped character by character and the TEXT
    match is one quoted phrase, so `x} | @brand:{y` can neither widen the query nor break it),
    prices and ratings are finite numbers, and min_price ≤ max_price. None or an empty string
    means "any" (the reference treats `category=""` so, and so does a form's "Any" option).
    """

    category: str | None = None
    brand: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    in_stock_only: bool = False
    min_rating: float | None = None
    text_match: str | None = None
    text_field: str = "description"
    # A shop's extra fields (catalog_schema.ExtraField): (name, value) TAG matches and
    # (name, low, high) NUMERIC ranges, either bound None for open.
    tags: tuple[tuple[str, str], ...] = ()
    ranges: tuple[tuple[str, float | None, float | None], ...] = ()

    def __post_init__(self) -> None:
        for name in ("category", "brand", "text_match"):
            value = getattr(self, name)
            if value is not None:
                check_literal(name, value)
                object.__setattr__(self, name, value.strip() or None)
        for name in ("min_price", "max_price", "min_rating"):
            object.__setattr__(self, name, finite_number(name, getattr(self, name)))
        if not isinstance(self.in_stock_only, (bool, np.bool_)):
            raise ValueError(f"in_stock_only must be a boolean, got {self.in_stock_only!r}")
        object.__setattr__(self, "in_stock_only", bool(self.in_stock_only))
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError(f"min_price ({self.min_price:g}) is greater than max_price ({self.max_price:g})")
        if self.text_field not in PRODUCT_TEXT_FIELDS:
            raise ValueError(f"text_field must be one of {PRODUCT_TEXT_FIELDS}, got {self.text_field!r}")
        object.__setattr__(self, "tags", tuple((_extra_name(n), check_literal(n, v)) for n, v in self.tags))
        ranges = tuple((_extra_name(n), finite_number(n, low), finite_number(n, high)) for n, low, high in self.ranges)
        for name, low, high in ranges:
            if low is not None and high is not None and low > high:
                raise ValueError(f"{name}: the low bound ({low:g}) is greater than the high one ({high:g})")
        object.__setattr__(self, "ranges", ranges)

    def clause(self) -> str:
        """The pre-filter half of the hybrid query; `*` when nothing filters."""
        parts = [f"@{name}:{{{escape_tag_value(value)}}}" for name, value in self._tags() if value is not None]
        if self.in_stock_only:
            parts.append("@in_stock:{true}")
        if self.min_price is not None or self.max_price is not None:
            parts.append(_range("price", self.min_price, self.max_price))
        if self.min_rating is not None:
            parts.append(_range("rating", self.min_rating, None))
        if self.text_match is not None:
            parts.append(f"@{self.text_field}:{escape_text_phrase(self.text_match)}")
        parts += [f"@{name}:{{{escape_tag_value(value)}}}" for name, value in self.tags if value.strip()]
        parts += [_range(name, low, high) for name, low, high in self.ranges if (low, high) != (None, None)]
        return " ".join(parts) if parts else "*"

    def _tags(self) -> tuple[tuple[str, str | None], ...]:
        return (("category", self.category), ("brand", self.brand))


def _extra_name(name: str) -> str:
    """An extra field's name, as an ExtraField takes it: it becomes query syntax (`@name:`)."""
    if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
        raise ValueError(f"an extra filter field must be named with letters, digits and _ (got {name!r})")
    return name


NO_FILTERS = SearchFilters()


class FilterFields(TypedDict, total=False):
    """SearchFilters' fields, as keyword arguments of build_filter_clause."""

    category: str | None
    brand: str | None
    min_price: float | None
    max_price: float | None
    in_stock_only: bool
    min_rating: float | None
    text_match: str | None
    text_field: str


def build_filter_clause(**filters: Unpack[FilterFields]) -> str:
    """The FT.SEARCH pre-filter for these filters (`SearchFilters(**filters).clause()`); raises
    ValueError for a value that could not be a literal or a range that cannot match, TypeError
    for a keyword that is no filter."""
    return SearchFilters(**filters).clause()


def knn_query(
    filter_clause: str, k: int, ef_runtime: int | None, hybrid_policy: str | None
) -> tuple[str, dict[str, str | bytes]]:
    """The hybrid query string and its parameters (the vector is added by the caller).

    RediSearch accepts HYBRID_POLICY only when there is a filter, and EF_RUNTIME only when
    the HNSW graph is walked (not with ADHOC_BF, which scores the filtered set directly).
    """
    attributes: list[str] = []
    params: dict[str, str | bytes] = {}
    filtered = filter_clause != "*"
    if hybrid_policy and filtered:
        attributes.append(f"HYBRID_POLICY {hybrid_policy}")
    if ef_runtime is not None and not (filtered and hybrid_policy == "ADHOC_BF"):
        attributes.append("EF_RUNTIME $ef")
        params["ef"] = str(ef_runtime)
    knn = " ".join([f"KNN {k} @{EMBEDDING_FIELD} $vec", *attributes, f"AS {SCORE_FIELD}"])
    return f"({filter_clause})=>[{knn}]", params


# --- every FT.* command, whole --------------------------------------------------------------------


def returned_fields(with_vectors: bool) -> tuple[str, ...]:
    """The product fields a search returns: the displayed ones, and the vector for MMR."""
    return (*PRODUCT_FIELDS, EMBEDDING_FIELD) if with_vectors else PRODUCT_FIELDS


def _return(fields: Sequence[str]) -> Command:
    return ["RETURN", str(len(fields)), *fields]


def _limit(n: int) -> Command:
    return ["LIMIT", "0", str(n)]


def create_index_command(index_name: str, key_prefix: str, schema: Sequence[str]) -> Command:
    """FT.CREATE over the hashes under key_prefix.

    STOPWORDS 0 indexes every word: with RediSearch's default stop-word list a TEXT filter that
    holds one ("down for bitter", "and") matches nothing. It costs about a third more inverted
    index (bench/stopwords.py); an index another port created keeps its own list.
    """
    return ["FT.CREATE", index_name, "ON", "HASH", "PREFIX", "1", key_prefix, "STOPWORDS", "0", "SCHEMA", *schema]


def drop_index_command(index_name: str, delete_documents: bool) -> Command:
    """FT.DROPINDEX, with DD to delete the product hashes too."""
    return ["FT.DROPINDEX", index_name, *(["DD"] if delete_documents else [])]


def knn_search_command(
    index_name: str,
    filter_clause: str,
    vector: bytes,
    n: int,
    fields: Sequence[str],
    ef_runtime: int | None,
    hybrid_policy: str | None,
) -> Command:
    """The n nearest products passing the filter, closest first, with the given fields and the
    distance."""
    query, params = knn_query(filter_clause, n, ef_runtime, hybrid_policy)
    params["vec"] = vector
    return [
        "FT.SEARCH", index_name, query,
        "PARAMS", str(2 * len(params)), *[item for pair in params.items() for item in pair],
        *_return((*fields, SCORE_FIELD)),
        "SORTBY", SCORE_FIELD,
        *_limit(n),
        *_DIALECT,
    ]  # fmt: skip


def knn_in_keys_search_command(
    index_name: str, filter_clause: str, vector: bytes, keys: Sequence[str], fields: Sequence[str]
) -> Command:
    """Which of the given product keys pass the filter, closest to the vector first, with the
    given fields and the distance: the KNN runs over those keys only (INKEYS restricts the
    documents it scores), so every one that passes comes back, however far."""
    query, params = knn_query(filter_clause, len(keys), None, None)
    params["vec"] = vector
    return [
        "FT.SEARCH", index_name, query,
        "INKEYS", str(len(keys)), *keys,
        "PARAMS", str(2 * len(params)), *[item for pair in params.items() for item in pair],
        *_return((*fields, SCORE_FIELD)),
        "SORTBY", SCORE_FIELD,
        *_limit(len(keys)),
        *_DIALECT,
    ]  # fmt: skip


def in_keys_search_command(index_name: str, filter_clause: str, keys: Sequence[str], with_vectors: bool) -> Command:
    """Which of the given product keys pass the filter (popular()'s candidates), with their fields."""
    return [
        "FT.SEARCH", index_name, filter_clause,
        "INKEYS", str(len(keys)), *keys,
        *_return(returned_fields(with_vectors)),
        *_limit(len(keys)),
        *_DIALECT,
    ]  # fmt: skip


def top_rated_search_command(index_name: str, filter_clause: str, n: int, with_vectors: bool) -> Command:
    """The n highest rated products passing the filter, with their fields."""
    return [
        "FT.SEARCH", index_name, filter_clause,
        *_return(returned_fields(with_vectors)),
        "SORTBY", "rating", "DESC",
        *_limit(n),
        *_DIALECT,
    ]  # fmt: skip


def by_price_search_command(index_name: str, limit: int) -> Command:
    """Up to `limit` products, cheapest first, without vectors."""
    return [
        "FT.SEARCH", index_name, "*",
        *_return(PRODUCT_FIELDS),
        "SORTBY", "price", "ASC",
        *_limit(limit),
        *_DIALECT,
    ]  # fmt: skip


def distinct_values_command(index_name: str, field_name: str) -> Command:
    """FT.AGGREGATE GROUPBY one field: its distinct values over the indexed documents.

    GROUPBY rather than FT.TAGVALS: TAGVALS lower-cases ("urban loom") and keeps values of
    deleted documents until Redis garbage-collects them."""
    return ["FT.AGGREGATE", index_name, "*", "GROUPBY", "1", f"@{field_name}"]


def info_command(index_name: str) -> Command:
    """FT.INFO: the index's size and health."""
    return ["FT.INFO", index_name]


# --- text relevance: BM25 beside the KNN, or both in one FT.HYBRID --------------------------------

# The fields a typed query's words are matched in (brand is a TAG: query understanding names it).
TEXT_MATCH_FIELDS = PRODUCT_TEXT_FIELDS
TEXT_SCORER = "BM25"


def text_terms_query(filter_clause: str, terms: Sequence[str]) -> str:
    """Any of the words in name or description, within the filter. The words are letters and
    digits only (intent.understand splits on everything else), so none is query syntax."""
    if not terms or not all(term.isalnum() for term in terms):
        raise ValueError(f"text terms must be non-empty words of letters and digits, got {list(terms)!r}")
    match = f"@{'|'.join(TEXT_MATCH_FIELDS)}:({'|'.join(terms)})"
    return match if filter_clause == "*" else f"({filter_clause}) {match}"


def bm25_search_command(
    index_name: str, filter_clause: str, terms: Sequence[str], n: int, fields: Sequence[str]
) -> Command:
    """The n products whose name or description best matches any of the words (BM25), passing
    the filter, with their scores and the given fields."""
    return [
        "FT.SEARCH", index_name, text_terms_query(filter_clause, terms),
        "SCORER", TEXT_SCORER, "WITHSCORES",
        *_return(fields),
        *_limit(n),
        *_DIALECT,
    ]  # fmt: skip


def hybrid_command_info() -> Command:
    """Whether the server knows FT.HYBRID (Redis 8.4+): COMMAND INFO answers [nil] for an unknown
    command. "COMMAND INFO" is one word here: redis-py sends it as two, and then hands back the
    reply as it is (its parser for "COMMAND" fails on the nil)."""
    return ["COMMAND INFO", "FT.HYBRID"]


def knows_command(reply: Any) -> bool:
    """COMMAND INFO's reply, [nil] or [[name, arity, ...]], as "the server knows it"."""
    return isinstance(reply, list | tuple) and len(reply) == 1 and bool(reply[0])


# What FT.HYBRID names the text leg's score in each row (YIELD_SCORE_AS), beside `__key`.
HYBRID_TEXT_SCORE = "text_score"


def ft_hybrid_command(
    index_name: str,
    filter_clause: str,
    terms: Sequence[str],
    vector: bytes,
    n: int,
    fields: Sequence[str],
    text_weight: float,
    ef_runtime: int | None = None,
) -> Command:
    """FT.HYBRID (Redis 8.4+; syntax from its documentation, untested against such a server):
    the n best text matches (BM25, score yielded as HYBRID_TEXT_SCORE) and the n nearest
    neighbours, both within the filter, fused on the server by a linear combination (text_weight
    for the text score), every row of the union (at most 2n) returned with the given fields.
    The caller re-scores the rows exactly as it scores the pipelined searches' rows."""
    knn = ["K", str(n), *(["EF_RUNTIME", str(ef_runtime)] if ef_runtime is not None else [])]
    return [
        "FT.HYBRID", index_name,
        "SEARCH", text_terms_query(filter_clause, terms), "SCORER", TEXT_SCORER, "YIELD_SCORE_AS", HYBRID_TEXT_SCORE,
        "VSIM", f"@{EMBEDDING_FIELD}", "$vec", "KNN", str(len(knn)), *knn,
        *(["FILTER", filter_clause] if filter_clause != "*" else []),
        "COMBINE", "LINEAR", "6", "ALPHA", repr(1.0 - text_weight), "BETA", repr(text_weight), "WINDOW", str(n),
        "LOAD", str(len(fields)), *[f"@{name}" for name in fields],
        *_limit(2 * n),
        "PARAMS", "2", "vec", vector,
    ]  # fmt: skip


def price_quantile_command(index_name: str, quantile: float) -> Command:
    """FT.AGGREGATE: the price below which `quantile` of the indexed products lie."""
    return [
        "FT.AGGREGATE", index_name, "*",
        "GROUPBY", "0", "REDUCE", "QUANTILE", "2", "@price", repr(quantile), "AS", "price",
    ]  # fmt: skip
