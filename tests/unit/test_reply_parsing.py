"""Replies of both protocols, as redis-py hands them over (RESP2 lists, RESP3 maps; bytes, or str
from a decoding client), turned into rows, candidates and user features. No Redis: the shapes
are written out here, as the integration suite sees them from the real server."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from recengine.layout import VECTOR_DIM_DEFAULT
from recengine.replies import (
    aggregate_rows,
    candidate_from_row,
    features_from_hash,
    index_info_from,
    info_dict,
    product_summary,
    raw_rows,
    search_rows,
)

PRODUCT = {
    b"name": b"Parka",
    b"description": b"Warm down",
    b"category": b"outerwear",
    b"brand": b"North",
    b"price": b"199.5",
    b"rating": b"4.5",
    b"in_stock": b"true",
}
RESP2_SEARCH = [2, b"product:p1", [b"name", b"Parka", b"vector_score", b"0.25"], b"product:p2", [b"name", b"Mitts"]]
RESP3_SEARCH = {
    b"total_results": 2,
    b"results": [
        {b"id": b"product:p1", b"extra_attributes": {b"name": b"Parka", b"vector_score": b"0.25"}},
        {b"id": b"product:p2", b"extra_attributes": {b"name": b"Mitts"}},
    ],
}
EXPECTED_ROWS = [("product:p1", {"name": "Parka", "vector_score": "0.25"}), ("product:p2", {"name": "Mitts"})]


def decoded(reply: object) -> object:
    """The reply a decode_responses=True client would give."""
    if isinstance(reply, bytes):
        return reply.decode()
    if isinstance(reply, list):
        return [decoded(item) for item in reply]
    if isinstance(reply, dict):
        return {decoded(k): decoded(v) for k, v in reply.items()}
    return reply


@pytest.mark.parametrize("reply", [RESP2_SEARCH, RESP3_SEARCH, decoded(RESP2_SEARCH), decoded(RESP3_SEARCH)])
def test_search_rows_read_both_protocols_alike(reply: object) -> None:
    assert search_rows(reply) == EXPECTED_ROWS


def test_raw_rows_keep_the_values_as_the_reply_holds_them() -> None:
    assert next(iter(raw_rows(RESP2_SEARCH))) == ("product:p1", {"name": b"Parka", "vector_score": b"0.25"})


def test_a_resp3_result_without_an_id_is_skipped() -> None:
    reply = {"results": [{"extra_attributes": {"name": "x"}}, {"id": "product:p", "extra_attributes": {}}]}
    assert search_rows(reply) == [("product:p", {})]


def test_empty_search_replies() -> None:
    assert search_rows([0]) == [] and search_rows({b"total_results": 0, b"results": []}) == []
    assert search_rows([1, b"product:gone", None]) == [("product:gone", {})]


@pytest.mark.parametrize(
    "reply",
    [
        [2, [b"brand", b"North"], [b"brand", b"South"]],
        {b"results": [{b"extra_attributes": {b"brand": b"North"}}, {b"extra_attributes": {b"brand": b"South"}}]},
    ],
)
def test_aggregate_rows_read_both_protocols_alike(reply: object) -> None:
    assert aggregate_rows(reply) == [{"brand": "North"}, {"brand": "South"}]


@pytest.mark.parametrize(
    "reply", [[b"num_docs", b"3", b"index_name", b"idx"], {b"num_docs": b"3", b"index_name": b"idx"}]
)
def test_info_dict_reads_both_protocols(reply: object) -> None:
    assert info_dict(reply) == {"num_docs": b"3", "index_name": b"idx"}


def test_index_info_names_the_last_refused_hash(caplog: pytest.LogCaptureFixture) -> None:
    reply = [
        b"num_docs", b"96", b"hash_indexing_failures", b"2", b"vector_index_sz_mb", b"0.123456789",
        b"percent_indexed", b"1",
        b"Index Errors", [b"last indexing error", b"Invalid vector", b"last indexing error key", b"product:bad"],
    ]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="recommender"):
        info = index_info_from("unit:info:idx", reply)
    assert info == {"num_docs": 96, "indexing_failures": 2, "vector_index_size_mb": 0.1235, "percent_indexed": 1.0}
    assert "the last: product:bad (Invalid vector)" in caplog.text


def test_index_info_without_percent_indexed_counts_as_caught_up() -> None:
    assert index_info_from("idx", {b"num_docs": b"0"}).percent_indexed == 1.0


# --- candidates -----------------------------------------------------------------------------------


def test_a_healthy_row_becomes_a_candidate_with_its_distance() -> None:
    found = candidate_from_row("p1", {**{k.decode(): v for k, v in PRODUCT.items()}, "vector_score": b"0.25"})
    assert (found.id, found.name, found.price, found.in_stock, found.vector_distance, found.score) == (
        "p1", "Parka", 199.5, True, 0.25, 0.25,
    )  # fmt: skip
    assert found.why.vector_distance == 0.25


def test_a_row_without_a_distance_has_none() -> None:
    """Popular and top-rated rows compared no vector (issue 24): no distance, and the farthest
    score, which orders nothing there."""
    found = candidate_from_row("p1", {k.decode(): v for k, v in PRODUCT.items()})
    assert found.vector_distance is None and found.why.vector_distance is None and found.score == 2.0


def test_a_garbled_row_is_shown_as_empty_zero_or_false_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    row = {"name": b"Odd", "price": b"abc", "in_stock": b"maybe", "vector_score": b"nan"}
    with caplog.at_level(logging.WARNING, logger="recommender"):
        found = candidate_from_row("unit-odd", row)
        candidate_from_row("unit-odd", row)
    assert (found.name, found.price, found.rating, found.in_stock, found.vector_distance) == (
        "Odd",
        0.0,
        0.0,
        False,
        2.0,
    )
    assert caplog.text.count("product 'unit-odd' has price 'abc', not a finite number") == 1
    assert "product 'unit-odd' lacks description" in caplog.text


def test_str_values_from_a_decoding_client_take_the_checked_path() -> None:
    found = candidate_from_row("p1", {k.decode(): v.decode() for k, v in PRODUCT.items()})
    assert found.name == "Parka" and found.rating == 4.5 and found.in_stock is True


def test_a_summary_leaves_out_the_description() -> None:
    summary = product_summary("p1", {k.decode(): v.decode() for k, v in PRODUCT.items()})
    assert summary == {
        "id": "p1", "name": "Parka", "category": "outerwear", "brand": "North", "price": 199.5, "rating": 4.5,
        "in_stock": True,
    }  # fmt: skip


# --- user features --------------------------------------------------------------------------------


def test_a_features_hash_becomes_user_features() -> None:
    session = np.arange(VECTOR_DIM_DEFAULT, dtype="<f4")
    stored = {
        b"session_vec": session.tobytes(), b"aff:bags": b"2.5", b"aff:shoes": b"-1", b"clicks": b"3",
        b"last_clicked_id": b"p9", b"last_clicked_category": b"bags", b"session_at": b"100.5",
    }  # fmt: skip
    features = features_from_hash("u", stored, VECTOR_DIM_DEFAULT)
    assert features.session_vec is not None and features.session_vec.tolist() == session.tolist()
    assert features.affinities == {"bags": 2.5, "shoes": -1.0}
    assert (features.clicks, features.last_clicked_id, features.last_clicked_category) == (3, "p9", "bags")
    assert (features.session_at, features.negative_at, features.negative_vec) == (100.5, None, None)


def test_an_unknown_user_has_empty_features() -> None:
    features = features_from_hash("u", {}, VECTOR_DIM_DEFAULT)
    assert features == {
        "session_vec": None, "affinities": {}, "clicks": 0, "last_clicked_id": None, "last_clicked_category": None,
        "negative_vec": None, "session_at": None, "negative_at": None, "affinity_at": None,
    }  # fmt: skip


def test_a_vector_of_the_wrong_size_is_ignored_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="recommender"):
        features = features_from_hash("unit-short", {"negative_vec": b"\x00" * 10, "clicks": "junk"}, 4)
    assert features.negative_vec is None and features.clicks == 0
    assert "user unit-short: stored negative vector has 10 bytes, expected 16" in caplog.text
