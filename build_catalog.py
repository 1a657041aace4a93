"""Build catalog.json: every product of a JSONL or CSV file with its all-MiniLM-L6-v2 vector.

The catalog is the hand-off between ports of this demo, so its format is fixed:
{"model", "dim", "products": [{id, name, description, category, brand, price, rating,
in_stock, embedding_b64}]}, embedding_b64 being the base64 of little-endian float32 bytes.
Embedding once here means the demo server and the other ports start without a model.

The input is checked completely before the model is even loaded, and every problem is
reported at once with its line, so a bad file costs one round trip, not one per mistake.

    python build_catalog.py                      # data/products.jsonl -> catalog.json
    python build_catalog.py --input my.csv --output /tmp/catalog.json --load
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import redis
from tqdm import tqdm

from embeddings import BACKENDS, LocalEmbedder, ModelNotFoundError
from local_redis import LocalRedisError, SearchUnavailableError, open_redis, redact
from recengine.catalog_file import DEFAULT_BATCH_SIZE, check_output, chunks, embed_products, write_catalog
from recengine.catalog_input import (
    MAX_FIELD_CHARS,
    MAX_LINE_CHARS,
    CatalogError,
    InputSchema,
    input_schema,
    load_products,
)
from recengine.catalog_sync import DEFAULT_MAX_REMOVAL_SHARE, SyncRefusedError, check_removals, plan_sync
from recengine.cli_types import column_mapping, positive_int
from recengine.layout import product_fields
from recommender import DEFAULT_VECTOR_TYPE, VECTOR_TYPES, RedisRecommender

# Named, not __name__: run as a script this module is __main__, and its warnings should carry
# the same logger name either way.
log = logging.getLogger("build_catalog")

REPO_DIR = Path(__file__).resolve().parent
DEFAULT_INPUT = REPO_DIR / "data" / "products.jsonl"
DEFAULT_OUTPUT = REPO_DIR / "catalog.json"
REDIS_DATA_DIR = REPO_DIR / ".redis-data"
LOAD_BATCH_SIZE = 100

# --- Redis ----------------------------------------------------------------------------------


def push_to_redis(recommender: RedisRecommender, products: Sequence[dict[str, Any]]) -> int:
    """Create the index if needed and upsert every product; returns how many were written."""
    recommender.create_index()
    written = 0
    with tqdm(total=len(products), desc="loading", unit="product") as bar:
        for batch in chunks(products, LOAD_BATCH_SIZE):
            written += recommender.index_products(batch)
            bar.update(len(batch))
    return written


@contextmanager
def redis_target(url: str | None) -> Iterator[redis.Redis]:
    """A client on the Redis to load into, in open_redis's order (URL, REDIS_URL,
    localhost:6379, the bundled server). A bundled server we started is stopped on the way
    out rather than at interpreter exit, so main() can be called more than once."""
    client, local = open_redis(url, data_dir=REDIS_DATA_DIR)
    try:
        yield client
    finally:
        client.close()
        if local is not None:
            local.stop()


# --- the command line -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Embed a product file and write catalog.json (model, dim, products with base64 float32 "
            "vectors). The input is fully checked first: every problem is listed with its line, and "
            "nothing is written (exit status 2) if there is any."
        ),
    )
    parser.add_argument(
        "--input",
        type=Path,
        default=DEFAULT_INPUT,
        help="products as JSON Lines (.jsonl, one object per line) or CSV (.csv, with a header row). "
        "Every product needs an id (any printable text), a name and a price (>= 0); description, "
        "category (a path 'A > B > C' is filterable at every level), brand, rating (0-5) and in_stock "
        "(JSON true/false; in CSV true/false/yes/no/1/0) are optional, with the defaults '', '', '', 0 "
        "(unrated) and true; other fields are ignored with a warning unless declared by --tag-field or "
        f"--numeric-field. A text field holds at most {MAX_FIELD_CHARS:,} characters and a line (a CSV row) "
        f"{MAX_LINE_CHARS:,}, in UTF-8 (default: %(default)s)",
    )
    parser.add_argument(
        "--map",
        dest="maps",
        metavar="FIELD=COLUMN",
        type=column_mapping,
        action="append",
        default=[],
        help="read the product's FIELD from the file's COLUMN (repeatable), e.g. --map id=StockCode "
        "--map name=Description; a column that a mapping replaces is ignored",
    )
    parser.add_argument(
        "--tag-field",
        metavar="NAME",
        action="append",
        default=[],
        help="keep the column NAME as a TAG filter field (exact values, no commas; repeatable)",
    )
    parser.add_argument(
        "--numeric-field",
        metavar="NAME",
        action="append",
        default=[],
        help="keep the column NAME as a NUMERIC filter field (ranges; repeatable)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="catalog file to write, replaced atomically; an existing symlink, device or directory is refused "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="sentence-transformers model: a local directory or a name in the Hugging Face cache "
        "(nothing is downloaded); default: the bundled all-MiniLM-L6-v2, which any of its names also loads "
        "(sentence-transformers/all-MiniLM-L6-v2, Xenova/all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--embedding-backend",
        choices=BACKENDS,
        default="torch",
        help="torch (default: sentence-transformers, the reference, so the committed catalog.json is "
        "reproducible byte for byte) or onnx (2-2.4x the texts/s, vectors equal to torch's within "
        "1e-6: use it for large catalogs)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        help="texts embedded per batch (default: %(default)s)",
    )
    parser.add_argument(
        "--load",
        action="store_true",
        help="also upsert the products into Redis and create the index if it is missing "
        "(products already there and absent from the input are left alone)",
    )
    parser.add_argument(
        "--sync",
        action="store_true",
        help="with --load: make Redis hold exactly the file's products: print a plan (added, changed, unchanged, "
        "removed), then write only the added and changed ones, embed only those whose text is new, and remove the "
        "products the file no longer has. Writes no catalog file",
    )
    parser.add_argument(
        "--vector-type",
        choices=VECTOR_TYPES,
        default=DEFAULT_VECTOR_TYPE,
        help="with --load: the "
        + "element type of the product vectors in a newly created index: FLOAT32 (default, what every port writes) "
        "or FLOAT16 (half the vectors' memory, slightly less recall: bench/million.py). An existing index keeps "
        "its own type, and products are written in it",
    )
    parser.add_argument("--dry-run", action="store_true", help="with --load --sync: print the plan, write nothing")
    parser.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="with --load --sync: allow removing more than --max-removal-share of the stored products",
    )
    parser.add_argument(
        "--max-removal-share",
        type=float,
        default=DEFAULT_MAX_REMOVAL_SHARE,
        help="with --load --sync: the largest share of the stored products a sync removes without "
        "--allow-mass-delete (default %(default)s)",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="Redis with Search for --load, e.g. redis://localhost:6379 or rediss://user:pass@host:port; "
        "default: $REDIS_URL, else localhost:6379 if it has Search, else the bundled local Redis "
        "(data in .redis-data/, stopped when this command ends)",
    )
    parser.add_argument("--index-name", default="recommend:idx", help="index to load into (default: %(default)s)")
    parser.add_argument(
        "--key-prefix", default="product:", help="prefix of the product hash keys (default: %(default)s)"
    )
    return parser


def build(args: argparse.Namespace) -> None:
    """Check, connect, embed, write, load: cheapest failures first, so a bad file or an
    unreachable Redis is reported before minutes of embedding rather than after."""
    schema = input_schema(args.maps, args.tag_field, args.numeric_field)
    if (args.sync or args.dry_run or args.allow_mass_delete) and not (args.load and args.sync):
        raise CatalogError("--sync, --dry-run and --allow-mass-delete go with --load --sync")
    products = load_products(args.input, schema)
    if args.sync:
        with redis_target(args.redis_url) as client:
            sync(args, schema, products, client)
        return
    check_output(args.output)
    with redis_target(args.redis_url) if args.load else nullcontext() as client:
        started = time.perf_counter()
        embedder = LocalEmbedder(args.model, backend=args.embedding_backend)
        log.info("loaded the model %s in %.1f s", embedder.model_name, time.perf_counter() - started)
        started = time.perf_counter()
        embedded = embed_products(products, embedder, args.batch_size)
        seconds = time.perf_counter() - started
        try:
            write_catalog(args.output, embedder.model_name, embedder.dim, embedded, schema.extra_fields)
        except OSError as exc:
            raise CatalogError(f"{args.output}: cannot write it: {exc.strerror or exc}") from None
        log.info(
            "embedded %d products in %.2f s (%.1f texts/s) with %s; wrote %s",
            len(embedded),
            seconds,
            len(embedded) / seconds if seconds > 0 else float("inf"),
            embedder.model_name,
            args.output,
        )
        if client is not None:
            recommender = RedisRecommender(
                client,
                index_name=args.index_name,
                key_prefix=args.key_prefix,
                vector_dim=embedder.dim,
                vector_type=args.vector_type,
                extra_fields=schema.extra_fields,
            )
            started = time.perf_counter()
            written = push_to_redis(recommender, embedded)
            info = recommender.index_info()
            log.info(
                "loaded %d products into %s (keys %s*) in %.2f s: %d documents indexed, %d indexing failures",
                written,
                args.index_name,
                args.key_prefix,
                time.perf_counter() - started,
                info["num_docs"],
                info["indexing_failures"],
            )


def sync(args: argparse.Namespace, schema: InputSchema, products: list[dict[str, Any]], client: redis.Redis) -> None:
    """--load --sync: make Redis hold exactly the file's products. The plan comes first (added,
    changed, unchanged, removed, from the stored fields and text digests: recengine/catalog_sync),
    then, unless --dry-run, only the added and changed products are written and only those whose
    text is new are embedded (the model is not even loaded when none is); removals beyond
    --max-removal-share need --allow-mass-delete. No catalog file is written."""
    started = time.perf_counter()
    planner = RedisRecommender(
        client, index_name=args.index_name, key_prefix=args.key_prefix, extra_fields=schema.extra_fields
    )
    incoming = [(str(product["id"]), product_fields(product, schema.extra_fields)) for product in products]
    try:
        plan = plan_sync(incoming, planner.stored_products())
        print(f"sync plan for {args.index_name}: {plan.summary()}")
        check_removals(plan, max_share=args.max_removal_share, allowed=args.allow_mass_delete)
    except SyncRefusedError as exc:
        raise CatalogError(f"{args.input}: {exc}") from None
    if args.dry_run or plan.empty:
        print("dry run: nothing was written" if args.dry_run else "nothing was written")
        return
    embedder = LocalEmbedder(args.model, backend=args.embedding_backend) if plan.reembed else None
    recommender = RedisRecommender(
        client,
        index_name=args.index_name,
        key_prefix=args.key_prefix,
        vector_dim=embedder.dim if embedder is not None else planner.vector_dim,
        vector_type=args.vector_type,
        extra_fields=schema.extra_fields,
    )
    recommender.create_index()
    chosen = set(plan.added) | set(plan.changed)

    def embed(texts: list[str]) -> np.ndarray:
        assert embedder is not None
        return embedder.encode_many(texts, batch_size=args.batch_size)

    writes = recommender.upsert_products([p for p in products if p["id"] in chosen], embed=embed)
    removed = sum(recommender.delete_product(product_id) for product_id in plan.removed)
    print(
        f"synced in {time.perf_counter() - started:.2f} s: {sum(1 for w in writes if w.fields)} written "
        f"({sum(1 for w in writes if w.embedded)} embedded), {removed} removed"
    )


def describe_redis(url: str | None) -> str:
    url = url or os.environ.get("REDIS_URL")
    return f"the Redis at {redact(url)}" if url else "the local Redis"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        build(args)
    except (CatalogError, ModelNotFoundError, SearchUnavailableError, LocalRedisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"error: cannot use {describe_redis(args.redis_url)} for --load: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
