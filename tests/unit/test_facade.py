"""recommender.py is the library's front: every name code was written against is importable from
it, and the reference's drop-in names are there, while the work lives in recengine/."""

from __future__ import annotations

import inspect

import recommender
from ranking import Candidate as RankingCandidate


def test_every_exported_name_is_importable() -> None:
    missing = [name for name in recommender.__all__ if not hasattr(recommender, name)]
    assert missing == []


def test_the_reference_drop_in_names() -> None:
    assert recommender.Candidate is RankingCandidate
    assert recommender.VECTOR_DIM_DEFAULT == 384
    for name in ("candidate_retrieve", "rerank", "user_key", "_build_filter_clause", "build_filter_clause"):
        assert callable(getattr(recommender.RedisRecommender, name))


def test_candidate_retrieve_takes_the_filters_by_position_as_the_reference_does() -> None:
    parameters = list(inspect.signature(recommender.RedisRecommender.candidate_retrieve).parameters)
    assert parameters == [
        "self", "query_vec", "category", "brand", "min_price", "max_price", "in_stock_only", "min_rating",
        "text_match", "text_field", "k", "session_vec", "session_weight",
    ]  # fmt: skip


def test_the_server_shares_the_error_classification() -> None:
    assert recommender.classify_response_error.__module__ == "recengine.errors"
    assert recommender.is_missing_index_error.__module__ == "recengine.errors"
