"""The demo server's command line: every flag of `python demo_server.py`, with its type, its
default and the help a person reads. demo_server.main parses it; the flags' combinations are
checked where they are used (recengine.topology for the Redis ones)."""

from __future__ import annotations

import argparse
from pathlib import Path

from embeddings import BACKENDS, QUERY_ENCODERS, QueryEncoderName
from recengine.cli_types import memory_size, non_negative_int, positive_int, sentinel_address
from recengine.experiments import Experiment, ExperimentFileError, load_experiment
from recengine.impressions import DEFAULT_CAP
from recengine.web_guard import allowed_host_argument
from recommender import DEFAULT_EF_RUNTIME, DEFAULT_USER_TTL_S, DEFAULT_VECTOR_TYPE, HYBRID_POLICIES, VECTOR_TYPES

# The catalogue beside demo_server.py, which build_catalog.py writes by default.
DEFAULT_CATALOG = Path(__file__).resolve().parent.parent / "catalog.json"
# The bundled Redis' memory cap: the demo catalogue takes ~2 MB, a user ~2.7 KB (README,
# "Memory"), so this holds ~90,000 users before the least recently active are evicted.
DEFAULT_MAXMEMORY = "256mb"
# Per client (IP address). A browser creates one user; 60 a minute is a page reloaded without
# cookies every second.
DEFAULT_NEW_USERS_PER_MINUTE = 60
# Per client: requests of one client waiting for the model at once.
DEFAULT_MODEL_QUEUE_PER_CLIENT = 4


def experiment_argument(text: str) -> Experiment:
    """--experiment FILE, read and checked whole while the command line is parsed."""
    try:
        return load_experiment(Path(text))
    except ExperimentFileError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Serve the real-time recommendation demo: the page and its JSON API.",
        epilog="Redis: --redis-url, else REDIS_URL, else a Redis with Search on localhost:6379, "
        "else the bundled Redis with Search (data kept in .redis-data/). --data-dir picks the bundled one directly.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; the demo has no authentication)"
    )
    parser.add_argument("--port", type=int, default=8084, help="port to listen on (default 8084)")
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        type=allowed_host_argument,
        metavar="NAME",
        help="a host name browsers may use to reach the demo, e.g. behind a reverse proxy (repeatable). "
        "Requests whose Host header names anything but this, 127.0.0.1, localhost, [::1] or --host get a 421",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="serve with N processes on the one port (SO_REUSEPORT), each with its own model; all state is "
        "in Redis (default 1)",
    )
    redis_choice = parser.add_mutually_exclusive_group()
    redis_choice.add_argument(
        "--redis-url", help="your Redis with Search, e.g. redis://:password@host:6379 or rediss:// for TLS"
    )
    redis_choice.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="use the bundled Redis with Search and keep its data (append-only file) in this folder; "
        "REDIS_URL and localhost:6379 are then not tried (without this flag the bundled Redis, "
        "when it is the one used, keeps its data in .redis-data/)",
    )
    redis_choice.add_argument(
        "--sentinel",
        action="append",
        default=[],
        type=sentinel_address,
        metavar="HOST:PORT",
        help="a Redis Sentinel to find the primary and its replicas through, instead of --redis-url (repeatable: "
        "give each Sentinel). Searches go to the replicas; a failover is followed without a restart",
    )
    parser.add_argument("--index-name", default="recommend:idx", help="the Search index name (default recommend:idx)")
    parser.add_argument("--key-prefix", default="product:", help="key prefix of product hashes (default product:)")
    parser.add_argument(
        "--catalog", type=Path, default=DEFAULT_CATALOG, help="catalog built by build_catalog.py (default catalog.json)"
    )
    parser.add_argument(
        "--topk", type=int, default=10, help="results per search when the request has no k (default 10)"
    )
    parser.add_argument(
        "--no-reset", action="store_true", help="keep the data already in Redis; only make sure the index exists"
    )
    parser.add_argument(
        "--admin-token",
        metavar="TOKEN",
        help="turn on the admin API (PUT/PATCH/DELETE /products/<id>, POST /products) for requests with "
        "`Authorization: Bearer TOKEN` (at least 16 characters); also read from $RECOMMENDER_ADMIN_TOKEN. "
        "With it set, POST /reset-index needs the token too. Default: off",
    )
    parser.add_argument(
        "--model", help="embedding model name or path (default: the bundled all-MiniLM-L6-v2); must match the catalog's"
    )
    parser.add_argument(
        "--ef-runtime",
        type=positive_int,
        default=DEFAULT_EF_RUNTIME,
        help=f"HNSW search breadth per query: higher is more recall and more time (default {DEFAULT_EF_RUNTIME})",
    )
    parser.add_argument(
        "--hybrid-policy",
        choices=[p for p in HYBRID_POLICIES if p],
        help="force BATCHES (best for broad filters) or ADHOC_BF (best for filters matching a few hundred items) "
        "on filtered queries; default: Redis chooses per query",
    )
    parser.add_argument("--hnsw-m", type=positive_int, help="HNSW M for a newly created index (default: Redis' 16)")
    parser.add_argument(
        "--vector-type",
        choices=VECTOR_TYPES,
        default=DEFAULT_VECTOR_TYPE,
        help="the "
        + "element type of the product vectors in a newly created index: FLOAT32 (default, what every port writes) "
        "or FLOAT16 (half the vectors' memory, slightly less recall: bench/million.py). An existing index keeps "
        "its own type, and products are written in it",
    )
    parser.add_argument(
        "--hnsw-ef-construction",
        type=positive_int,
        help="HNSW EF_CONSTRUCTION for a newly created index (default: Redis' 200)",
    )
    parser.add_argument(
        "--embedding-backend",
        choices=BACKENDS,
        default="onnx",
        help="how query texts are embedded: onnx (default; ~4x faster per query, starts in a fraction of a second, "
        "same vectors as torch; the first start exports the model once) or torch (sentence-transformers)",
    )
    parser.add_argument(
        "--query-encoder",
        choices=QUERY_ENCODERS,
        default=None,
        help="how search queries are embedded: int8 (the default on the onnx backend: ~3x faster per query, "
        "NDCG@10 on the judged set within 0.004 of float: plain KNN +0.002, stated filters -0.003, the text alone "
        "-0.002) or float (the model's own vectors; the default, and the only choice, on torch); product vectors "
        "stay float",
    )
    parser.add_argument(
        "--user-ttl",
        type=non_negative_int,
        default=DEFAULT_USER_TTL_S,
        metavar="SECONDS",
        help=f"every key of a user expires this long after their last click or dismissal, so abandoned users "
        f"do not fill Redis (default {DEFAULT_USER_TTL_S} = 30 days; 0 keeps users forever)",
    )
    limits = parser.add_argument_group("limits and guarantees (SECURITY.md, README: Memory, Durability)")
    limits.add_argument(
        "--maxmemory",
        type=memory_size,
        metavar="SIZE",
        help=f"cap the bundled Redis' memory (default {DEFAULT_MAXMEMORY}); past it, the least recently active "
        "users are evicted, each whole, and products never are. For your own Redis, set maxmemory in its "
        "configuration (this flag then only warns)",
    )
    limits.add_argument(
        "--new-users-per-minute",
        type=non_negative_int,
        default=DEFAULT_NEW_USERS_PER_MINUTE,
        metavar="N",
        help=f"how many new users one client (IP address) may create per minute, per worker; past it a write that "
        f"would create one is a 429 (default {DEFAULT_NEW_USERS_PER_MINUTE}; 0: no limit, e.g. behind a reverse "
        "proxy, where every browser is the proxy)",
    )
    limits.add_argument(
        "--model-queue-per-client",
        type=non_negative_int,
        default=DEFAULT_MODEL_QUEUE_PER_CLIENT,
        metavar="N",
        help=f"how many requests of one client may wait for the model at once; more is a 429 (default "
        f"{DEFAULT_MODEL_QUEUE_PER_CLIENT}; 0: no bound)",
    )
    limits.add_argument(
        "--durable",
        action="store_true",
        help="answer a click, dismissal or refreshed embedding only once Redis has fsynced it to its append-only "
        "file (WAITAOF; with --min-replicas-ack, the replicas' files too); not confirmed in time is a 503 that "
        "says the outcome is unknown. Switches the bundled Redis to appendfsync always (a few ms per write); another "
        "Redis with appendfsync everysec makes each write wait for its next fsync, up to a second (README: Durability)",
    )
    measure = parser.add_argument_group("measuring (README: Metrics, impressions and experiments)")
    measure.add_argument(
        "--no-metrics", action="store_true", help="serve no GET /metrics and count nothing for it (to measure its cost)"
    )
    measure.add_argument(
        "--no-impressions",
        action="store_true",
        help="log no impressions: list answers carry no rec_id, and GET /report answers 404",
    )
    measure.add_argument(
        "--impressions-cap",
        type=positive_int,
        default=DEFAULT_CAP,
        metavar="N",
        help=f"keep about the newest N impressions, and N attributed events, in Redis (default {DEFAULT_CAP})",
    )
    measure.add_argument(
        "--experiment",
        type=experiment_argument,
        metavar="FILE",
        help="run the A/B experiment this JSON file defines: arms as RankingConfig changes with shares of the users",
    )
    scale = parser.add_argument_group("beyond one Redis (README: Scaling out)")
    scale.add_argument(
        "--replica-url",
        action="append",
        default=[],
        metavar="URL",
        help="a replica of the Redis in use, with Search, to answer the searches (repeatable; used in turn, the "
        "primary when one fails). Writes and each user's own state stay on the primary",
    )
    scale.add_argument(
        "--sentinel-service",
        default="mymaster",
        metavar="NAME",
        help="the service the --sentinel Sentinels monitor (default mymaster)",
    )
    scale.add_argument(
        "--min-replicas-ack",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="answer a click, dismissal or refreshed embedding only once N replicas have it (WAIT); fewer within "
        "--replica-ack-timeout-ms is a 503, and the write stays on the primary (default 0: the primary's word)",
    )
    scale.add_argument(
        "--replica-ack-timeout-ms",
        type=positive_int,
        default=1000,
        metavar="MS",
        help="how long a write waits for --min-replicas-ack replicas (default 1000)",
    )
    scale.add_argument(
        "--cluster",
        action="store_true",
        help="--redis-url is a node of a Redis Cluster: user keys and popularity are routed to their shards. "
        "Searches need Search that spans shards (the coordinator of Redis Software or Redis Cloud)",
    )
    return parser


def chosen_query_encoder(backend: str, asked: QueryEncoderName | None) -> QueryEncoderName:
    """The query encoder a server runs: the one asked for, else int8 on the onnx backend (its
    quality cost is within noise: bench/encoder.py, NDCG@10 on the judged set within 0.005 of
    float in every configuration) and float on torch, which has no other."""
    if asked is not None:
        return asked
    return "int8" if backend == "onnx" else "float"
