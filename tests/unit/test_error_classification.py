"""Redis' error replies become the library's errors in one place (recengine/errors.py), whatever
the reply's wording and however redis-py wrapped it."""

from __future__ import annotations

import pytest
import redis

from recengine.errors import (
    IndexMissingError,
    ProductNotFoundError,
    RecommenderError,
    ReplicationTimeoutError,
    WriteRefusedError,
    classified_errors,
    classify_response_error,
    is_missing_index_error,
)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "memory is full"),
        (redis.ResponseError("OOM command not allowed"), "memory is full"),
        (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), "read-only replica"),
        (redis.ResponseError("READONLY You can't write"), "read-only replica"),
        (
            redis.ResponseError("Command # 1 (EVALSHA ...) of pipeline caused error: MISCONF Redis is configured"),
            "disk",
        ),
        (redis.ResponseError("NOREPLICAS Not enough good replicas to write."), "too few replicas"),
    ],
)
def test_refused_writes_say_why(error: redis.ResponseError, reason: str) -> None:
    classified = classify_response_error(error)
    assert isinstance(classified, WriteRefusedError) and reason in classified.reason
    assert isinstance(classified, redis.ResponseError)


@pytest.mark.parametrize("message", ["recommend:idx: no such index", "Unknown index name", "Unknown Index name"])
def test_a_missing_index_is_recognised_in_every_wording(message: str) -> None:
    error = redis.ResponseError(message)
    assert isinstance(classify_response_error(error), IndexMissingError)
    assert is_missing_index_error(error) and is_missing_index_error(IndexMissingError(message))


def test_other_errors_are_left_as_they_are() -> None:
    error = redis.ResponseError("Syntax error at offset 3")
    assert classify_response_error(error) is error
    assert not is_missing_index_error(error)
    assert not is_missing_index_error(ValueError("no such index"))  # not a Redis reply


def test_classified_errors_raise_the_librarys_errors_and_keep_the_cause() -> None:
    with pytest.raises(IndexMissingError) as caught, classified_errors():
        raise redis.ResponseError("no such index")
    assert isinstance(caught.value.__cause__, redis.ResponseError)
    with pytest.raises(ReplicationTimeoutError), classified_errors():
        raise ReplicationTimeoutError(0, 1, 100)


def test_the_hierarchy() -> None:
    assert issubclass(ProductNotFoundError, KeyError) and issubclass(ProductNotFoundError, RecommenderError)
    assert ProductNotFoundError("p9").product_id == "p9"
    timeout = ReplicationTimeoutError(1, 2, 500)
    assert (timeout.acked, timeout.required) == (1, 2) and "only 1 of 2 replica(s)" in str(timeout)
