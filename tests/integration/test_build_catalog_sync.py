"""`build_catalog.py --load --sync` against a real Redis with Search and the real model: a plan
first, only what changed written, only new text embedded, removals of products the file lost,
--dry-run, the mass-delete guard, duplicate ids refused before any write, and a second run that
does nothing and says so."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from build_catalog import main
from local_redis import LocalRedis
from recommender import RedisRecommender


@dataclass(frozen=True)
class Shop:
    redis: LocalRedis
    index_name: str
    key_prefix: str
    path: Path

    def argv(self, *extra: str) -> list[str]:
        return [
            "--input", str(self.path), "--load", "--sync", "--embedding-backend", "onnx", "--redis-url", self.redis.url,
            "--index-name", self.index_name, "--key-prefix", self.key_prefix, *extra,
        ]  # fmt: skip

    def write(self, products: list[dict[str, Any]]) -> None:
        self.path.write_text("".join(json.dumps(p) + "\n" for p in products), encoding="utf-8")

    def recommender(self) -> RedisRecommender:
        return RedisRecommender(self.redis.client(), index_name=self.index_name, key_prefix=self.key_prefix)


def products(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"s{i:02d}",
            "name": f"Sync test item {i}",
            "description": f"A sturdy thing number {i}.",
            "price": i + 1.0,
        }
        for i in range(n)
    ]


@pytest.fixture
def shop(local_redis: LocalRedis, tmp_path: Path) -> Iterator[Shop]:
    tag = uuid.uuid4().hex[:8]
    shop = Shop(local_redis, f"sync-{tag}:idx", f"sync-{tag}:", tmp_path / "shop.jsonl")
    yield shop
    shop.recommender().drop_index(delete_documents=True)


def run(shop: Shop, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    status = main(shop.argv(*extra))
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_a_sync_plans_writes_what_changed_and_a_second_run_does_nothing(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    shop.write(products(10))
    status, out = run(shop, capsys)
    assert status == 0 and "added 10, changed 0" in out and "10 written (10 embedded), 0 removed" in out
    assert shop.recommender().count_indexed() == 10

    status, out = run(shop, capsys)
    assert status == 0 and "nothing to do: the 10 products in Redis already match the file" in out
    assert "nothing was written" in out

    changed = products(10)
    changed[1]["price"] = 99.0  # a field: written, not embedded
    changed[2]["description"] = "Completely different words."  # new text: embedded
    del changed[3]  # removed
    changed.append({"id": "s99", "name": "A newcomer", "price": 5.0})  # added: embedded
    shop.write(changed)
    status, out = run(shop, capsys, "--dry-run")
    assert "added 1, changed 2 (1 with new text, re-embedded; 1 other fields only), unchanged 7, removed 1" in out
    assert "dry run: nothing was written" in out
    assert shop.recommender().get_products(["s01"])["s01"]["price"] == 2.0

    status, out = run(shop, capsys)
    assert status == 0 and "3 written (2 embedded), 1 removed" in out
    rec = shop.recommender()
    assert rec.count_indexed() == 10
    assert rec.get_products(["s01"])["s01"]["price"] == 99.0 and not rec.get_products(["s03"])
    assert "nothing to do" in run(shop, capsys)[1]


def test_removing_more_than_a_fifth_needs_allow_mass_delete(shop: Shop, capsys: pytest.CaptureFixture[str]) -> None:
    shop.write(products(10))
    assert run(shop, capsys)[0] == 0
    shop.write(products(7))
    status, out = run(shop, capsys)
    assert status == 2 and "would remove 3 of the 10 products in Redis (30%)" in out and "--allow-mass-delete" in out
    assert shop.recommender().count_indexed() == 10
    status, out = run(shop, capsys, "--allow-mass-delete")
    assert status == 0 and "0 written (0 embedded), 3 removed" in out
    assert shop.recommender().count_indexed() == 7


def test_a_file_with_duplicate_ids_is_refused_before_anything_is_written(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    shop.write([*products(3), products(1)[0]])
    status, out = run(shop, capsys)
    assert status == 2 and "duplicate id 's00'" in out
    assert shop.recommender().count_indexed() == 0


def test_sync_flags_need_load_and_sync(shop: Shop, capsys: pytest.CaptureFixture[str]) -> None:
    shop.write(products(1))
    assert main(["--input", str(shop.path), "--dry-run"]) == 2
    assert "--load --sync" in capsys.readouterr().err
