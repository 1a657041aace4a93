"""The library in one screen: create -> index -> retrieve with filters -> click -> rerank ->
refresh, against the bundled Redis with Search (or your own: set REDIS_URL).

Run: .venv/bin/python examples/quickstart.py
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from embeddings import LocalEmbedder
from local_redis import LocalRedis, connect
from recommender import RedisRecommender

PRODUCTS = [
    (
        "q1",
        "Storm shell jacket",
        "Waterproof breathable rain jacket for hiking in wet weather",
        "outerwear",
        "Northpeak",
        189.0,
    ),
    ("q2", "Down parka", "Hooded goose down parka for deep winter cold", "outerwear", "Tidewater", 320.0),
    ("q3", "Trail runner", "Grippy lightweight shoe for trail running on rocky paths", "footwear", "Northpeak", 135.0),
    ("q4", "Rain boots", "Waterproof rubber boots for muddy walks and garden work", "footwear", "Urban Loom", 60.0),
    (
        "q5",
        "Merino beanie",
        "Soft merino wool hat that keeps your head warm on cold days",
        "headwear",
        "Tidewater",
        32.0,
    ),
]


def main() -> None:
    local = None if os.environ.get("REDIS_URL") else LocalRedis().start()
    client = connect(os.environ.get("REDIS_URL") or local.url)
    embedder = LocalEmbedder()
    rec = RedisRecommender(client, index_name="quickstart:idx", key_prefix="quickstart:product:")

    rec.drop_index(delete_documents=True)
    rec.create_index()
    vectors = embedder.encode_many([f"{name}. {text}" for _, name, text, *_ in PRODUCTS])
    rec.index_products(
        {"id": pid, "name": name, "description": text, "category": cat, "brand": brand, "price": price,
         "rating": 4.5, "in_stock": True, "embedding": vec}
        for (pid, name, text, cat, brand, price), vec in zip(PRODUCTS, vectors, strict=True)
    )  # fmt: skip
    print("indexed:", rec.count_indexed())

    query = embedder.encode_one("something to keep me dry in the rain")
    for c in rec.candidate_retrieve(query, k=3, max_price=200, text_match="waterproof"):
        print(f"  {c.id} {c.name:<20} {c.category:<10} distance={c.vector_distance:.3f}")

    print("click:", rec.record_click("alice", "q5"))
    result = rec.recommend(query, user_id="alice", k=3)
    print(
        "after a click on a beanie (session blended, reranked):", [(c.id, round(c.score, 3)) for c in result.candidates]
    )

    rec.refresh_embedding("q4", embedder.encode_one("Insulated winter snow boots"))
    print("q4 after refresh:", rec.candidate_retrieve(embedder.encode_one("snow boots"), k=1)[0].name)

    rec.drop_index(delete_documents=True)
    if local:
        local.stop()


if __name__ == "__main__":
    main()
