"""QueryEncoder with the real model on the ONNX backend: batched vectors are the single-call
vectors, concurrent callers each get their own text's vector, a lone query does not wait for a
batch to fill, repeats come from the cache, a model error reaches its callers and not the
encoder's later ones, and close() stops the worker thread."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from build_catalog import DEFAULT_INPUT
from query_encoder import DEFAULT_CACHE_SIZE, DEFAULT_MAX_BATCH, DEFAULT_WINDOW_S, EncoderClosedError, QueryEncoder
from recengine.catalog_file import product_text
from recengine.catalog_input import load_products

REPO = Path(__file__).resolve().parents[2]
QUERIES = (REPO / "data" / "sample_queries.txt").read_text().splitlines()
# The largest gap seen between a batched row and the same text embedded alone, over 400 rows of
# 200 varied texts in shuffled batches of 8 and 16 (bench/batching.py): none, the rows were
# bit-identical. The bound leaves room for another CPU's kernels, far below what would move a
# neighbour (the backends' own agreement is checked to cosine 0.9999).
BATCH_TOLERANCE = 1e-6
# Malformed UTF-16 that the tokenizer refuses with a TypeError: a real model error.
UNENCODABLE = "jacket \ud800"

EncoderFactory = Callable[..., QueryEncoder]


def varied_texts() -> list[str]:
    """64 texts of very different lengths: queries, product texts and names, edge cases, and two
    texts past the 256-token limit that pad every text batched with them (bench/batching.py
    checks 200 such texts; this is the fast version)."""
    products = load_products(DEFAULT_INPUT)[:20]
    edge = ["", "a", "naïve café crème brûlée", "東京で買える暖かいジャケット", "🧥❄️🥾 winter kit"]
    long = ["Waterproof leather hiking boots with a grippy rubber sole. " * 30, "word " * 1000]
    texts = [*QUERIES[:20], *(product_text(p) for p in products), *edge, *long, *(p["name"] for p in products)]
    return list(dict.fromkeys(texts))[:64]


@pytest.fixture
def make_encoder(onnx_embedder) -> Iterator[EncoderFactory]:
    """QueryEncoders on the shared ONNX model, every one closed after the test."""
    made: list[QueryEncoder] = []

    def make(
        *, window_s: float = DEFAULT_WINDOW_S, max_batch: int = DEFAULT_MAX_BATCH, cache_size: int = DEFAULT_CACHE_SIZE
    ) -> QueryEncoder:
        encoder = QueryEncoder(onnx_embedder, window_s=window_s, max_batch=max_batch, cache_size=cache_size)
        made.append(encoder)
        return encoder

    yield make
    for encoder in made:
        encoder.close()


def test_batched_vectors_equal_single_call_vectors(onnx_embedder, make_encoder: EncoderFactory) -> None:
    texts = varied_texts()
    assert len(texts) == 64
    alone = {text: onnx_embedder.encode_one(text) for text in texts}
    random.Random(7).shuffle(texts)  # long and short texts in the same batches
    encoder = make_encoder(window_s=0.05, max_batch=16, cache_size=0)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(encoder.encode, texts))

    assert encoder.stats().largest_batch > 1, "the texts were never batched: the test proves nothing"
    worst = max(float(np.abs(vector - alone[text]).max()) for text, (vector, _) in zip(texts, results, strict=True))
    assert worst <= BATCH_TOLERANCE


def test_padding_to_a_long_text_leaves_a_short_texts_vector_unchanged(onnx_embedder) -> None:
    """What batching rests on: in one call, every text is padded to the longest, and the export's
    attention mask and mean pooling over real tokens keep the padding out of the vector."""
    texts = ["", "a", "warm socks", *QUERIES[:3], "word " * 1000, "Waterproof leather hiking boots. " * 40]
    batched = onnx_embedder.encode_many(texts, batch_size=len(texts))
    alone = np.stack([onnx_embedder.encode_one(text) for text in texts])
    assert float(np.abs(batched - alone).max()) <= BATCH_TOLERANCE


def test_a_long_text_is_not_batched_with_short_ones(onnx_embedder, make_encoder: EncoderFactory) -> None:
    """Padding three short queries to a 1000-character text would cost them many times their own
    work: the long text gets a model call of its own."""
    texts = ["rain jacket", "warm wool socks", "trail runners", "Waterproof leather hiking boots. " * 30]
    encoder = make_encoder(window_s=0.5, max_batch=len(texts))
    with ThreadPoolExecutor(len(texts)) as pool:
        results = list(pool.map(encoder.encode, texts))

    for text, (vector, _) in zip(texts, results, strict=True):
        np.testing.assert_allclose(vector, onnx_embedder.encode_one(text), atol=BATCH_TOLERANCE)
    stats = encoder.stats()
    assert (stats.model_calls, stats.texts_embedded, stats.largest_batch) == (2, 4, 3)


def test_concurrent_callers_each_get_their_own_vector(onnx_embedder, make_encoder: EncoderFactory) -> None:
    """16 threads, each with its own queries plus some every thread asks for at the same time:
    some calls run on the caller's thread, the rest queue behind them and run on the worker."""
    shared = QUERIES[:4]
    per_thread = {
        thread: [f"{QUERIES[(thread * 5 + i) % len(QUERIES)]} for client {thread}" for i in range(6)] + shared
        for thread in range(16)
    }
    expected = {text: onnx_embedder.encode_one(text) for texts in per_thread.values() for text in texts}
    encoder = make_encoder()  # no window: texts batch up while the model is busy
    start = threading.Barrier(16)
    got: dict[int, list[tuple[str, np.ndarray]]] = {}

    def client(index: int) -> None:
        start.wait()
        got[index] = [(text, encoder.encode(text)[0]) for text in per_thread[index]]

    threads = [threading.Thread(target=client, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(got) == list(range(16))
    for index, pairs in got.items():
        assert [text for text, _ in pairs] == per_thread[index]
        for text, vector in pairs:
            np.testing.assert_allclose(vector, expected[text], atol=BATCH_TOLERANCE, err_msg=text)
    stats = encoder.stats()
    assert stats.requests == 16 * 10
    assert stats.largest_batch > 1, "16 concurrent callers were never batched"
    # Each distinct text reaches the model once: later askers share its pending row or its cache entry.
    assert stats.texts_embedded == len(expected)


def test_identical_texts_waiting_together_are_embedded_once(onnx_embedder, make_encoder: EncoderFactory) -> None:
    encoder = make_encoder(window_s=0.5, max_batch=16)
    start = threading.Barrier(8)
    vectors: list[np.ndarray] = []

    def client() -> None:
        start.wait()
        vectors.append(encoder.encode("warm wool socks")[0])

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(vectors) == 8
    expected = onnx_embedder.encode_one("warm wool socks")
    for vector in vectors:
        np.testing.assert_allclose(vector, expected, atol=BATCH_TOLERANCE)
    stats = encoder.stats()
    assert (stats.model_calls, stats.texts_embedded) == (1, 1)


@pytest.mark.parametrize("window_s", [DEFAULT_WINDOW_S, 0.2], ids=["default-window", "200ms-window"])
def test_a_lone_query_does_not_wait_for_a_full_batch(
    onnx_embedder, make_encoder: EncoderFactory, window_s: float
) -> None:
    encoder = make_encoder(window_s=window_s, max_batch=16)
    result: list[tuple[np.ndarray, bool]] = []
    caller = threading.Thread(target=lambda: result.append(encoder.encode("a lone query")))
    caller.start()
    caller.join(timeout=1.0)

    assert not caller.is_alive(), "a lone query waited for a batch that would never fill"
    vector, cached = result[0]
    assert not cached
    np.testing.assert_allclose(vector, onnx_embedder.encode_one("a lone query"), atol=BATCH_TOLERANCE)
    stats = encoder.stats()
    assert (stats.model_calls, stats.largest_batch) == (1, 1)


def test_repeats_come_from_the_cache_least_recently_used_first_out(make_encoder: EncoderFactory) -> None:
    encoder = make_encoder(cache_size=2)
    first, cached = encoder.encode("rain jacket")
    assert not cached
    again, cached = encoder.encode("rain jacket")
    assert cached and again is first
    assert not again.flags.writeable, "a cached vector changed in place would change every later answer"

    encoder.encode("hiking boots")
    encoder.encode("rain jacket")  # now the most recently used
    encoder.encode("wool socks")  # evicts "hiking boots", the least recently used
    assert encoder.encode("rain jacket")[1]
    assert not encoder.encode("hiking boots")[1]

    stats = encoder.stats()
    assert (stats.requests, stats.cache_hits, stats.texts_embedded) == (7, 3, 4)


def test_uncached_texts_neither_read_nor_fill_the_cache(onnx_embedder, make_encoder: EncoderFactory) -> None:
    encoder = make_encoder()
    product = "Storm shell. Waterproof rain jacket"
    vector = encoder.encode_uncached(product)
    np.testing.assert_allclose(vector, onnx_embedder.encode_one(product), atol=BATCH_TOLERANCE)
    assert not encoder.encode(product)[1]
    encoder.encode_uncached(product)  # the model again, though the text is cached by now
    assert encoder.stats().texts_embedded == 3


def test_a_model_error_reaches_its_callers_and_the_encoder_keeps_working(
    onnx_embedder, make_encoder: EncoderFactory
) -> None:
    """The bad text shares a batch with good ones: its callers get the tokenizer's error, the
    good texts' callers still get their vectors, and later calls work."""
    texts = ["down parka", UNENCODABLE, "trail runners", UNENCODABLE]
    encoder = make_encoder(window_s=0.5, max_batch=3)
    start = threading.Barrier(len(texts))
    outcomes: dict[int, np.ndarray | Exception] = {}

    def client(index: int) -> None:
        start.wait()
        try:
            outcomes[index] = encoder.encode(texts[index])[0]
        except Exception as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=client, args=(index,)) for index in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert encoder.stats().largest_batch == 3, "the bad text was not batched with good ones"
    for index, text in enumerate(texts):
        outcome = outcomes[index]
        if text == UNENCODABLE:
            assert isinstance(outcome, TypeError)
        else:
            assert isinstance(outcome, np.ndarray), outcome
            np.testing.assert_allclose(outcome, onnx_embedder.encode_one(text), atol=BATCH_TOLERANCE)

    with pytest.raises(TypeError):
        encoder.encode(UNENCODABLE)  # alone, and not cached as a failure: it fails again
    vector, cached = encoder.encode("insulated gloves")
    assert not cached
    np.testing.assert_allclose(vector, onnx_embedder.encode_one("insulated gloves"), atol=BATCH_TOLERANCE)
    assert encoder.running


def test_close_finishes_queued_texts_then_stops_the_thread(onnx_embedder, make_encoder: EncoderFactory) -> None:
    encoder = make_encoder(window_s=1.0, max_batch=16)
    result: list[tuple[np.ndarray, bool]] = []
    caller = threading.Thread(target=lambda: result.append(encoder.encode("queued at shutdown")))
    caller.start()
    while encoder.stats().requests == 0:
        threading.Event().wait(0.001)
    encoder.close()  # does not wait out the window
    caller.join(timeout=5)

    assert not encoder.running
    assert not caller.is_alive()
    np.testing.assert_allclose(result[0][0], onnx_embedder.encode_one("queued at shutdown"), atol=BATCH_TOLERANCE)
    with pytest.raises(EncoderClosedError):
        encoder.encode("after close")
    encoder.close()  # twice is fine


def test_context_manager_closes(onnx_embedder) -> None:
    with QueryEncoder(onnx_embedder) as encoder:
        encoder.encode("a scarf")
    assert not encoder.running


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"window_s": -0.001}, "window_s"),
        ({"window_s": float("nan")}, "window_s"),
        ({"window_s": 5}, "window_s"),
        ({"max_batch": 0}, "max_batch"),
        ({"cache_size": -1}, "cache_size"),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(onnx_embedder, settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QueryEncoder(onnx_embedder, **settings)


def test_a_text_that_is_not_a_string_is_refused(make_encoder: EncoderFactory) -> None:
    encoder = make_encoder()
    with pytest.raises(TypeError, match="str"):
        encoder.encode(b"bytes")  # type: ignore[arg-type]
    assert encoder.encode("still works")[0].shape == (384,)
