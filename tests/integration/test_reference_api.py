"""Drop-in for the reference (redis/docs, use-cases/recommendation-engine/redis-py): a script
written against the reference's API alone runs unchanged on our library.

The script is what a reader of the tutorial would write: a redis.Redis(decode_responses=False)
client, RedisRecommender and Candidate from recommender.py, LocalEmbedder from embeddings.py,
spelled and called the way the reference spells and calls them (positional filters, rerank on
the recommender, dict results, refresh_embedding by keyword, the private _build_filter_clause
the reference's own server calls). It runs in a fresh interpreter against the bundled Redis with
the real model, as the reference's default LocalEmbedder (sentence-transformers) loads it, and
prints one labelled JSON value per line; the tests below read those values.

The in-process tests at the end pin the documented deviations (docs/API.md, "Drop-in for the
reference"): where ours answers differently on purpose.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from conftest import make_products, raw, unit_vectors

from local_redis import LocalRedis
from recommender import (
    Candidate,
    IndexMissingError,
    RedisRecommender,
    build_filter_clause,
)

ROOT = Path(__file__).resolve().parents[2]
AFFINITY_WEIGHT = 0.15  # the reference's rerank default

TUTORIAL_SCRIPT = r'''
"""A tutorial reader's script: only the reference's calls."""
import base64
import json
import sys
import time

import numpy as np
import redis
from redis.commands.search.query import Query

from embeddings import LocalEmbedder
from recommender import VECTOR_DIM_DEFAULT, Candidate, RedisRecommender


def show(label, value):
    print(label, json.dumps(value), sep="\t", flush=True)


def error_name(call):
    try:
        call()
    except KeyError:  # what the reference raises for an unknown product, caught as a tutorial would
        return "KeyError"
    except Exception as exc:  # the tutorial prints what went wrong
        return type(exc).__name__
    return None


host, port = sys.argv[1], int(sys.argv[2])
client = redis.Redis(host=host, port=port, decode_responses=False)
# Positional, in the reference's order: client, index name, product prefix, user prefix, dimension.
rec = RedisRecommender(client, "tutorial:idx", "tutorial:product:", "tutorial:user:", VECTOR_DIM_DEFAULT)
show("attributes", [rec.index_name, rec.key_prefix, rec.user_key_prefix, rec.vector_dim])
same = RedisRecommender(redis_client=client, index_name="tutorial:idx", key_prefix="tutorial:product:",
                        user_key_prefix="tutorial:user:")
show("keys", [same.product_key("f1"), same.user_key("alice")])

rec.drop_index(delete_documents=True)  # a missing index is not an error
show("count_before_index", rec.count_indexed())
show("categories_before_index", rec.list_categories())
rec.create_index()
rec.create_index()  # idempotent

embedder = LocalEmbedder(model_name="sentence-transformers/all-MiniLM-L6-v2")
show("embedder", [embedder.model_name, embedder.dim])

products = [
    {"id": "r1", "name": "Harbor rain jacket", "category": "outerwear", "brand": "Fjordline",
     "description": "Lightweight waterproof rain jacket with sealed seams and an adjustable hood.",
     "price": 149.0, "rating": 4.6, "in_stock": True},
    {"id": "r2", "name": "Quilted winter parka", "category": "outerwear", "brand": "Fjordline",
     "description": "Warm insulated parka with a fur-lined hood for freezing city winters.",
     "price": 239.0, "rating": 4.4, "in_stock": True},
    {"id": "f1", "name": "Ridge trail boot", "category": "footwear", "brand": "Kestrel",
     "description": "Waterproof leather hiking boot with a grippy lugged sole.",
     "price": 169.0, "rating": 4.7, "in_stock": True},
    {"id": "f2", "name": "Canvas deck shoe", "category": "footwear", "brand": "Kestrel",
     "description": "Breathable canvas slip-on shoe for summer boardwalks.",
     "price": 59.0, "rating": 4.1, "in_stock": True},
    {"id": "f3", "name": "Mudroom rubber boot", "category": "footwear", "brand": "Harrow",
     "description": "Tall waterproof rubber boot for rain, puddles and muddy gardens.",
     "price": 79.0, "rating": 4.3, "in_stock": False},
    {"id": "a1", "name": "Lambswool scarf", "category": "accessories", "brand": "Harrow",
     "description": "Soft lambswool scarf in a classic check, warm and light.",
     "price": 45.0, "rating": 4.5, "in_stock": True},
    {"id": "b1", "name": "Roll-top dry bag", "category": "bags", "brand": "Kestrel",
     "description": "Waterproof roll-top dry bag that keeps gear dry on kayak trips.",
     "price": 35.0, "rating": 4.2, "in_stock": True},
    {"id": "b2", "name": "Leather laptop satchel", "category": "bags", "brand": "Fjordline",
     "description": "Leather satchel with a padded laptop sleeve for the office commute.",
     "price": 189.0, "rating": 4.0, "in_stock": True},
]
vectors = embedder.encode_many(f"{p['name']}. {p['description']}" for p in products)
show("encode_many", [list(vectors.shape), str(vectors.dtype)])
# Every form of vector index_products takes: base64 (as build_catalog.py writes catalog.json),
# a float32 array, a float64 array and a plain list.
for product, vector in zip(products, vectors):
    if product["category"] in ("outerwear", "footwear"):
        product["embedding_b64"] = base64.b64encode(LocalEmbedder.to_bytes(vector)).decode("ascii")
    elif product["id"] == "a1":
        product["embedding"] = vector.astype(np.float64)
    elif product["id"] == "b1":
        product["embedding"] = [float(x) for x in vector]
    else:
        product["embedding"] = vector
show("index_products", rec.index_products(products))
show("count_indexed", rec.count_indexed())

info = rec.index_info()
info["index_name"] = rec.index_name  # the reference's server adds keys before sending it
info["model"] = embedder.model_name
show("index_info", json.loads(json.dumps(info)))
show("list_products", rec.list_products())
show("list_products_limit", [p["id"] for p in rec.list_products(limit=3)])
show("list_categories", rec.list_categories())
show("list_brands", rec.list_brands())
show("hget_name", rec.redis.hget(rec.product_key("f1"), "name").decode("utf-8"))

query = embedder.encode_one("waterproof jacket for the rain")
show("encode_one", [list(query.shape), str(query.dtype), len(LocalEmbedder.to_bytes(query))])
top = rec.candidate_retrieve(query, k=3)
show("retrieve_top", [c.id for c in top])
show("retrieve_fields", top[0].to_dict())
show("retrieve_types", [type(top[0].price).__name__, type(top[0].in_stock).__name__,
                        top[0].score == top[0].vector_distance])
# The filters by position: category, brand, min_price, max_price, in_stock_only, min_rating,
# text_match, text_field, k.
show("positional_filters", [c.id for c in rec.candidate_retrieve(
    query, "footwear", None, None, 150.0, True, None, None, "description", 5)])
show("positional_rating", sorted(c.id for c in rec.candidate_retrieve(query, None, "Kestrel", 30.0, None, False, 4.2)))
show("text_match", sorted(c.id for c in rec.candidate_retrieve(query, text_match="waterproof")))
show("text_match_name", sorted(c.id for c in rec.candidate_retrieve(query, text_match="boot", text_field="name")))
show("empty_means_any", len(rec.candidate_retrieve(query, category="", brand="", text_match="", k=8)))

clause = RedisRecommender._build_filter_clause(
    category="footwear", brand=None, min_price=None, max_price=150.0,
    in_stock_only=True, min_rating=None, text_match=None,
)
show("filter_clause", clause)
show("filter_clause_empty", RedisRecommender._build_filter_clause(
    category=None, brand=None, min_price=None, max_price=None, in_stock_only=False, min_rating=None))
# The clause stands in front of a KNN clause as it is, as in the reference's candidate_retrieve.
own_query = (Query(f"{clause}=>[KNN 3 @embedding $vec AS vector_score]")
             .sort_by("vector_score").return_fields("name", "vector_score").dialect(2))
found = rec.redis.ft(rec.index_name).search(own_query, query_params={"vec": LocalEmbedder.to_bytes(query)})
show("own_knn_query", [doc.id.decode() if isinstance(doc.id, bytes) else doc.id for doc in found.docs])

cold = rec.get_user_features("alice")
show("cold_features", [cold["session_vec"] is None, cold["affinities"], cold["clicks"],
                       cold["last_clicked_id"], cold["last_clicked_category"]])
# A caller's own score, kept by rerank when the user has no affinities, as in the reference.
mine = rec.candidate_retrieve(query, k=4)
mine[-1].score = -1.0
reranked = rec.rerank(mine, cold)
show("own_score_kept", [reranked[0].id == mine[-1].id, reranked[0].score])

made = Candidate("x1", "Made-up mug", "A mug", "kitchen", "Acme", 12.5, 3.9, True, 0.25, 0.2)
made.score = 0.125
show("candidate_constructed", made.to_dict())

click = rec.record_click("alice", "f1")
show("click_1", {**click})
show("click_1_json", json.loads(json.dumps(click)))
click = rec.record_click("alice", "f3", 0.5, 2.0)  # ewma_alpha, affinity_step by position
show("click_2", [click["category"], click["affinity"], click["clicks"], click["last_clicked_id"]])
show("click_unknown", error_name(lambda: rec.record_click("alice", "no-such-product")))

features = rec.get_user_features("alice")
session = features["session_vec"]
show("features", [features["clicks"], features["affinities"], features["last_clicked_id"],
                  features["last_clicked_category"]])
show("session_vec", [int(session.shape[0]), str(session.dtype), float(np.linalg.norm(session))])

warm = embedder.encode_one("something cosy for a cold winter")
plain = rec.candidate_retrieve(warm, k=3)
blended = rec.candidate_retrieve(warm, k=3, session_vec=session, session_weight=0.5)
only_session = rec.candidate_retrieve(warm, k=1, session_vec=session, session_weight=1.0)
show("session_blend", [[c.category for c in plain], [c.category for c in blended], only_session[0].id])

pool = rec.candidate_retrieve(query, k=8)
for label, ranked in (("rerank", rec.rerank(pool, features)),
                      ("rerank_weight", rec.rerank(pool, features, 0.3)),
                      ("rerank_off", rec.rerank(pool, features, affinity_weight=0.0))):
    show(label, [[c.id, c.category, c.vector_distance, c.score] for c in ranked])

rec.refresh_embedding(product_id="a1", new_vector=embedder.encode_one("waterproof jacket for the rain"))
show("after_refresh", [c.id for c in rec.candidate_retrieve(query, k=1)])
show("refresh_unknown", error_name(lambda: rec.refresh_embedding("no-such-product", query)))
show("refresh_wrong_shape", error_name(lambda: rec.refresh_embedding("a1", np.zeros(10, dtype=np.float32))))

rec.reset_user("alice")
after = rec.get_user_features("alice")
show("after_reset", [after["clicks"], after["session_vec"] is None, after["affinities"]])

rec.drop_index()  # documents stay
show("dropped_keeps_documents", [rec.count_indexed(), int(rec.redis.exists(rec.product_key("f1")))])
rec.create_index()  # indexes the documents already there, in the background
deadline = time.time() + 30
while rec.count_indexed() < len(products) and time.time() < deadline:
    time.sleep(0.05)
show("reindexed", rec.count_indexed())
rec.drop_index(delete_documents=True)
show("dropped_with_documents", [rec.count_indexed(), int(rec.redis.exists(rec.product_key("f1")))])
show("done", True)
'''


@pytest.fixture(scope="module")
def tutorial_output(tmp_path_factory: pytest.TempPathFactory, local_redis: LocalRedis) -> dict[str, Any]:
    """Run the tutorial script once, in a fresh interpreter, and read its labelled values."""
    folder = tmp_path_factory.mktemp("tutorial")
    script = folder / "tutorial.py"
    script.write_text(TUTORIAL_SCRIPT, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script), "127.0.0.1", str(local_redis.port)],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"the tutorial script failed:\n{result.stdout}\n{result.stderr}"
    values: dict[str, Any] = {}
    for line in result.stdout.splitlines():
        label, _, value = line.partition("\t")
        values[label] = json.loads(value)
    assert values.get("done") is True, result.stdout
    return values


# --- the script, as the reference's reader wrote it -----------------------------------------


def test_construction_keys_and_index_lifecycle(tutorial_output: dict[str, Any]) -> None:
    out = tutorial_output
    assert out["attributes"] == ["tutorial:idx", "tutorial:product:", "tutorial:user:", 384]
    assert out["keys"] == ["tutorial:product:f1", "tutorial:user:alice:features"]
    assert out["count_before_index"] == 0 and out["categories_before_index"] == []
    assert out["index_products"] == 8 and out["count_indexed"] == 8
    assert out["dropped_keeps_documents"] == [0, 1]
    assert out["reindexed"] == 8
    assert out["dropped_with_documents"] == [0, 0]


def test_embedder_calls(tutorial_output: dict[str, Any]) -> None:
    out = tutorial_output
    assert out["embedder"] == ["sentence-transformers/all-MiniLM-L6-v2", 384]
    assert out["encode_many"] == [[8, 384], "float32"]
    assert out["encode_one"] == [[384], "float32", 384 * 4]


def test_index_info_and_listings(tutorial_output: dict[str, Any]) -> None:
    out = tutorial_output
    info = out["index_info"]
    assert info["num_docs"] == 8 and info["indexing_failures"] == 0 and info["vector_index_size_mb"] > 0
    assert info["index_name"] == "tutorial:idx" and info["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    products = out["list_products"]
    assert [p["price"] for p in products] == sorted(p["price"] for p in products)
    assert all(set(p) == {"id", "name", "category", "brand", "price", "rating", "in_stock"} for p in products)
    assert {p["id"]: p["in_stock"] for p in products}["f3"] is False
    assert out["list_products_limit"] == ["b1", "a1", "f2"]
    assert out["list_categories"] == ["accessories", "bags", "footwear", "outerwear"]
    assert out["list_brands"] == ["Fjordline", "Harrow", "Kestrel"]
    assert out["hget_name"] == "Ridge trail boot"


def test_retrieval_with_positional_and_keyword_filters(tutorial_output: dict[str, Any]) -> None:
    out = tutorial_output
    assert out["retrieve_top"][0] == "r1"
    shown = out["retrieve_fields"]
    reference_keys = {"id", "name", "description", "category", "brand", "price", "rating", "in_stock"}
    assert reference_keys | {"vector_distance", "score"} <= set(shown)
    assert shown["id"] == "r1" and shown["name"] == "Harbor rain jacket" and shown["in_stock"] is True
    assert out["retrieve_types"] == ["float", "bool", True]
    assert out["positional_filters"] == ["f2"]  # in stock, at most 150: not f1 (169) nor f3 (out of stock)
    assert out["positional_rating"] == ["b1", "f1"]  # Kestrel, from 30, rated 4.2 or more
    assert out["text_match"] == ["b1", "f1", "f3", "r1"]
    assert out["text_match_name"] == ["f1", "f3"]
    assert out["empty_means_any"] == 8


def test_filter_clause_is_usable_in_front_of_knn(tutorial_output: dict[str, Any]) -> None:
    out = tutorial_output
    clause = out["filter_clause"]
    assert clause.startswith("(") and clause.endswith(")")
    for predicate in ("@category:{footwear}", "@price:[-inf 150.0]", "@in_stock:{true}"):
        assert predicate in clause
    assert out["filter_clause_empty"] == "(*)"
    assert out["own_knn_query"] == ["tutorial:product:f2"]


def test_rerank_as_a_method_and_candidates_as_the_reference_made_them(tutorial_output: dict[str, Any]) -> None:
    out = tutorial_output
    assert out["cold_features"] == [True, {}, 0, None, None]
    assert out["own_score_kept"] == [True, -1.0]
    made = out["candidate_constructed"]
    assert {k: made[k] for k in ("id", "category", "price", "in_stock", "vector_distance", "score")} == {
        "id": "x1",
        "category": "kitchen",
        "price": 12.5,
        "in_stock": True,
        "vector_distance": 0.25,
        "score": 0.125,
    }
    affinity = out["features"][1]["footwear"]
    for label, weight in (("rerank", AFFINITY_WEIGHT), ("rerank_weight", 0.3), ("rerank_off", 0.0)):
        rows = out[label]
        assert len(rows) == 8
        assert [row[3] for row in rows] == sorted(row[3] for row in rows), label
        for _, category, distance, score in rows:
            bonus = math.log1p(affinity) * weight if category == "footwear" else 0.0
            assert score == pytest.approx(distance - bonus, abs=1e-9), (label, category)
    assert out["rerank"] != out["rerank_off"]


def test_clicks_and_user_features_as_dicts(tutorial_output: dict[str, Any]) -> None:
    out = tutorial_output
    reference_click = {"category": "footwear", "affinity": 1.0, "clicks": 1, "last_clicked_id": "f1"}
    assert reference_click.items() <= out["click_1"].items()
    assert out["click_1_json"] == out["click_1"]
    category, affinity, clicks, last = out["click_2"]
    assert (category, clicks, last) == ("footwear", 2, "f3")
    assert affinity == pytest.approx(3.0, abs=1e-6)  # 1 + 2, faded by the milliseconds between clicks
    assert out["click_unknown"] == "KeyError"
    clicks, affinities, last_id, last_category = out["features"]
    assert (clicks, last_id, last_category) == (2, "f3", "footwear")
    assert affinities == {"footwear": pytest.approx(3.0, abs=1e-6)}
    dim, dtype, norm = out["session_vec"]
    assert (dim, dtype) == (384, "float32") and norm == pytest.approx(1.0, abs=1e-5)


def test_session_blend_pulls_towards_the_clicks(tutorial_output: dict[str, Any]) -> None:
    plain, blended, only_session = tutorial_output["session_blend"]
    assert blended.count("footwear") > plain.count("footwear")
    assert only_session in ("f1", "f3"), "a session of two boots finds a boot"


def test_refresh_and_reset(tutorial_output: dict[str, Any]) -> None:
    out = tutorial_output
    assert out["after_refresh"] == ["a1"], "the scarf now has the query's own vector"
    assert out["refresh_unknown"] == "KeyError"
    assert out["refresh_wrong_shape"] == "ValueError"
    assert out["after_reset"] == [0, True, {}]


# --- the documented deviations, one test each ------------------------------------------------


@pytest.fixture
def products(recommender: RedisRecommender) -> list[dict]:
    catalog = make_products(12)
    recommender.index_products(catalog)
    return catalog


@pytest.mark.parametrize("k", [0, -3])
def test_k_below_one_is_a_value_error(recommender: RedisRecommender, products: list[dict], k: int) -> None:
    with pytest.raises(ValueError, match="k must be an integer"):
        recommender.candidate_retrieve(unit_vectors(1)[0], k=k)


def test_an_empty_price_range_is_a_value_error(recommender: RedisRecommender) -> None:
    with pytest.raises(ValueError, match="greater than max_price"):
        recommender.candidate_retrieve(unit_vectors(1)[0], min_price=50, max_price=10)


def test_missing_index_counts_zero_but_index_info_raises(redis_client: redis.Redis) -> None:
    rec = RedisRecommender(redis_client, index_name="never:created")
    assert rec.count_indexed() == 0
    assert rec.list_categories() == [] and rec.list_brands() == []
    with pytest.raises(IndexMissingError):
        rec.index_info()
    with pytest.raises(redis.ResponseError):  # IndexMissingError is one, as the reference's code expects
        rec.list_products()


def test_rerank_with_affinities_returns_rescored_copies(recommender: RedisRecommender, products: list[dict]) -> None:
    pool = recommender.candidate_retrieve(unit_vectors(1, seed=9)[0], k=6)
    scores = [c.score for c in pool]
    ranked = recommender.rerank(pool, {"affinities": {pool[-1].category: 5.0}})
    assert [c.score for c in pool] == scores, "the inputs keep their scores"
    assert ranked[0].category == pool[-1].category
    assert ranked[0].why.affinity_bonus == pytest.approx(math.log1p(5.0) * AFFINITY_WEIGHT)


def test_filter_clause_spellings() -> None:
    assert RedisRecommender._build_filter_clause(category="bags") == f"({build_filter_clause(category='bags')})"
    assert RedisRecommender.build_filter_clause(category="bags") == "@category:{bags}"
    assert build_filter_clause(category=" ", brand="") == "*"
    with pytest.raises(TypeError):
        RedisRecommender._build_filter_clause(colour="red")


def test_results_are_dicts_and_json(recommender: RedisRecommender, products: list[dict]) -> None:
    click = recommender.record_click("u1", products[0]["id"])
    info = recommender.index_info()
    features = recommender.get_user_features("u1")
    for result in (click, info, features):
        assert isinstance(result, dict)
    assert json.loads(json.dumps(click))["clicks"] == click.clicks == 1
    assert repr(click) == repr(dict(click)), "printed as the reference's dict"
    info["index_name"] = recommender.index_name  # as the reference's server does
    assert json.loads(json.dumps(info))["num_docs"] == info.num_docs == 12
    assert features["clicks"] == features.clicks and features["session_vec"] is features.session_vec


def test_candidate_to_dict_keeps_full_precision_and_adds_why() -> None:
    made = Candidate("x", "n", "d", "c", "b", 1.0, 4.0, True, 0.123456789, 0.123456789)
    shown = made.to_dict()
    assert shown["vector_distance"] == shown["score"] == 0.123456789  # the reference rounds to 4 places
    assert shown["why"] == {}


def test_stored_product_hash_matches_the_reference_layout(recommender: RedisRecommender) -> None:
    product = {**make_products(1)[0], "in_stock": True}
    recommender.index_products([product])
    stored = recommender.redis.hgetall(recommender.product_key(product["id"]))
    assert stored[b"in_stock"] == b"true"
    assert stored[b"price"] == str(float(product["price"])).encode()
    assert np.array_equal(np.frombuffer(raw(stored[b"embedding"]), dtype=np.float32), product["embedding"])
