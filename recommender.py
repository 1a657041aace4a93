"""RedisRecommender: vector KNN with structured pre-filters in one FT.SEARCH, per-user signals
(session vector, category affinities, dismissals, what was seen) updated atomically on every
click, a "for you" feed, "more like this", time-decayed popularity, and hot embedding refresh.

This module is the library's front: every public name is importable from here, under the names
the other ports of Redis' recommendation-engine tutorial use. The work is done in the package
`recengine` (see README's layout section), one concern per module: the data layout (layout.py),
the commands (query.py) and their replies (replies.py), the Lua scripts (scripts.py), the
connections (store.py), the catalogue (catalog.py), users (users.py, events.py), candidate
retrieval (retrieval.py) and the lists built from them (feeds.py). The ranking math itself lives
in ranking.py, without Redis.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy.typing as npt
import redis
import redis.cluster

from ranking import (
    POPULARITY_REBASE_HALF_LIVES,
    Candidate,
    DictResult,
    RankingConfig,
    Recommendation,
    UserFeatures,
    Why,
    blend_query,
    check_unit_interval,
    faded_affinities,
    session_fades_in_s,
    session_weight,
)
from ranking import rerank as rerank_by_affinity
from recengine.blend import SIGNALS, Signal
from recengine.catalog import Catalog, read_vector_type
from recengine.catalog_schema import ExtraField
from recengine.co_occurrence import CoOccurrence
from recengine.co_occurrence_rules import CoOccurrenceConfig
from recengine.errors import (
    DurabilityTimeoutError,
    IndexMissingError,
    NewUserRefusedError,
    PartlyAppliedError,
    ProductNotFoundError,
    RecommenderError,
    ReloadError,
    ReloadFailedError,
    ReloadInProgressError,
    ReplicationTimeoutError,
    WriteOutcomeUnknownError,
    WriteRefusedError,
    classify_response_error,
    is_missing_index_error,
)
from recengine.event_import import DEFAULT_BATCH, EventImporter, ImportReport, PastEvent
from recengine.event_types import EVENT_TYPES, EventType, EventWeights
from recengine.events import EventOptions, MayCreateUser, UserEvents
from recengine.feeds import Feeds, VocabularyCache
from recengine.layout import (
    AFFINITY_AT_FIELD,
    AFFINITY_PREFIX,
    CLICKS_FIELD,
    DEFAULT_SEEN_KEPT,
    DEFAULT_USER_TTL_S,
    DEFAULT_VECTOR_TYPE,
    EMBEDDING_FIELD,
    EVENT_IDS_KEPT,
    LAST_CLICKED_CATEGORY_FIELD,
    LAST_CLICKED_ID_FIELD,
    NEGATIVE_AT_FIELD,
    NEGATIVE_VEC_FIELD,
    PRODUCT_FIELDS,
    PRODUCT_NUMERIC_FIELDS,
    PRODUCT_TEXT_FIELDS,
    RECENT_CLICKS_KEPT,
    SCORE_FIELD,
    SESSION_AT_FIELD,
    SESSION_VEC_FIELD,
    VECTOR_DIM_DEFAULT,
    VECTOR_TYPES,
    KeyLayout,
    UserKeys,
    VectorFormat,
    VectorType,
    bytes_to_vector,
    check_vector_type,
    checked_vector,
    product_embedding_bytes,
    product_to_hash,
    vector_to_bytes,
)
from recengine.products import Embed, ProductWriter
from recengine.query import (
    DEFAULT_EF_RUNTIME,
    HYBRID_POLICIES,
    NO_FILTERS,
    SearchFilters,
    TextFusion,
    build_filter_clause,
    escape_tag_value,
    escape_text_phrase,
    hybrid_command_info,
    knn_query,
    knows_command,
)
from recengine.reload import DEFAULT_LOCK_WAIT_S, LOCK_TTL_MS, RELOAD_BATCH_SIZE, Reloads
from recengine.replies import (
    aggregate_rows,
    candidate_from_row,
    info_dict,
    product_display_fields,
    product_summary,
    search_rows,
)
from recengine.results import (
    ClickResult,
    DismissResult,
    EventResult,
    IndexInfo,
    ProductWrite,
    ReloadResult,
    Serving,
    UserState,
)
from recengine.retrieval import Retrieval
from recengine.scripts import FADED_COUNTS_LUA, REFRESH_EMBEDDING_LUA, USER_EVENT_LUA, Scripts
from recengine.store import Store
from recengine.users import UserReads
from recengine.validation import (
    MAX_K,
    TAG_SEPARATOR,
    check_count,
    check_event_id,
    check_k,
    check_optional_positive,
    check_product_id,
    check_user_id,
    field_problem,
)

# The API (docs/API.md), and the data layout, limits and defaults, checks, query text and reply
# parsing that tools, the server and tests import from here, with the error classification the
# server shares.
__all__ = [
    "AFFINITY_AT_FIELD",
    "AFFINITY_PREFIX",
    "CLICKS_FIELD",
    "DEFAULT_EF_RUNTIME",
    "DEFAULT_SEEN_KEPT",
    "DEFAULT_USER_TTL_S",
    "DEFAULT_VECTOR_TYPE",
    "EMBEDDING_FIELD",
    "EVENT_IDS_KEPT",
    "EVENT_TYPES",
    "FADED_COUNTS_LUA",
    "HYBRID_POLICIES",
    "LAST_CLICKED_CATEGORY_FIELD",
    "LAST_CLICKED_ID_FIELD",
    "MAX_K",
    "NEGATIVE_AT_FIELD",
    "NEGATIVE_VEC_FIELD",
    "NO_FILTERS",
    "POPULARITY_REBASE_HALF_LIVES",
    "PRODUCT_FIELDS",
    "PRODUCT_NUMERIC_FIELDS",
    "PRODUCT_TEXT_FIELDS",
    "RECENT_CLICKS_KEPT",
    "REFRESH_EMBEDDING_LUA",
    "SCORE_FIELD",
    "SESSION_AT_FIELD",
    "SESSION_VEC_FIELD",
    "SIGNALS",
    "TAG_SEPARATOR",
    "USER_EVENT_LUA",
    "VECTOR_DIM_DEFAULT",
    "VECTOR_TYPES",
    "Candidate",
    "ClickResult",
    "CoOccurrenceConfig",
    "DictResult",
    "DismissResult",
    "DurabilityTimeoutError",
    "EventResult",
    "EventType",
    "EventWeights",
    "ExtraField",
    "ImportReport",
    "IndexInfo",
    "IndexMissingError",
    "MayCreateUser",
    "NewUserRefusedError",
    "PartlyAppliedError",
    "PastEvent",
    "ProductNotFoundError",
    "ProductWrite",
    "RankingConfig",
    "Recommendation",
    "RecommenderError",
    "RedisRecommender",
    "ReloadError",
    "ReloadFailedError",
    "ReloadInProgressError",
    "ReloadResult",
    "ReplicationTimeoutError",
    "SearchFilters",
    "Serving",
    "Signal",
    "UserFeatures",
    "UserState",
    "VectorType",
    "Why",
    "WriteOutcomeUnknownError",
    "WriteRefusedError",
    "aggregate_rows",
    "build_filter_clause",
    "bytes_to_vector",
    "candidate_from_row",
    "check_event_id",
    "check_k",
    "check_product_id",
    "check_user_id",
    "classify_response_error",
    "escape_tag_value",
    "escape_text_phrase",
    "field_problem",
    "info_dict",
    "is_missing_index_error",
    "knn_query",
    "product_display_fields",
    "product_embedding_bytes",
    "product_summary",
    "product_to_hash",
    "search_rows",
    "vector_to_bytes",
]


class RedisRecommender:
    """Owns the product index, the per-user signals, popularity and the queries over them.

    The client must return bytes (decode_responses=False): vectors are binary. RESP2 and RESP3
    clients both work, and so does a `redis.cluster.RedisCluster` (every script touches the keys
    of one slot; FT.* needs a Redis whose Search spans shards).

    Arguments after vector_dim:

    config: the RankingConfig (weights, half-lives, over-fetch).
    hnsw_m, hnsw_ef_construction: the graph's shape, used by create_index (None keeps
    RediSearch's defaults, M 16 and EF_CONSTRUCTION 200, and the exact shared schema).
    ef_runtime: search breadth per query, more recall for more time (None: Redis' 10).
    hybrid_policy: force BATCHES or ADHOC_BF for filtered queries (None: Redis chooses).
    vector_type: the element type of the product vectors in an index create_index makes,
    "FLOAT32" (what every port writes) or "FLOAT16" (half the vectors' memory, a little less
    recall: bench/million.py). An existing index's own type always wins: it is read (FT.INFO)
    when first needed, and product vectors are written and searched in it, so a catalogue
    written as FLOAT32 keeps working. Users' vectors are FLOAT32 either way.
    user_ttl_s: every key of a user expires this long after their last click or dismissal
    (0: never), so abandoned users do not fill Redis.
    seen_kept: how many recent clicks and dismissals are remembered for exclude_clicked.
    read_clients: replicas for FT.SEARCH / FT.AGGREGATE, used in turn; writes and the user's
    own state always go to `redis_client`, so a click shows in the very next search.
    min_replicas_ack: after each write, WAIT for this many replicas (up to
    replica_ack_timeout_ms) and raise ReplicationTimeoutError when fewer acknowledge.
    durable: after each write, WAITAOF until Redis has fsynced it to its append-only file (and,
    with min_replicas_ack, that many replicas theirs), and raise DurabilityTimeoutError when it
    is not confirmed in time: a write that returns is on disk. Needs `appendonly yes`.
    clock: seconds since the epoch; inject one to test fading without sleeping.
    co_occurrence: how products bought (viewed, carted) together are counted, bounded and faded,
    and how much a look-alike weighs against a count in the blend (CoOccurrenceConfig).
    event_weights: what a view, click, cart and purchase weigh (EventWeights; click = 1).
    extra_fields: a shop's own TAG or NUMERIC filter fields (catalog_schema.ExtraField), indexed
    by create_index and reload_catalog and written by the product writes.

    The constructor raises ValueError for a setting out of range, or a client that decodes
    responses.
    """

    def __init__(
        self,
        redis_client: redis.Redis | redis.cluster.RedisCluster | None = None,
        index_name: str = "recommend:idx",
        key_prefix: str = "product:",
        user_key_prefix: str = "user:",
        vector_dim: int = VECTOR_DIM_DEFAULT,
        *,
        config: RankingConfig | None = None,
        hnsw_m: int | None = None,
        hnsw_ef_construction: int | None = None,
        ef_runtime: int | None = DEFAULT_EF_RUNTIME,
        hybrid_policy: str | None = None,
        vector_type: VectorType = DEFAULT_VECTOR_TYPE,
        user_ttl_s: int = DEFAULT_USER_TTL_S,
        seen_kept: int = DEFAULT_SEEN_KEPT,
        read_clients: Sequence[redis.Redis] = (),
        min_replicas_ack: int = 0,
        replica_ack_timeout_ms: int = 1000,
        durable: bool = False,
        clock: Callable[[], float] = time.time,
        co_occurrence: CoOccurrenceConfig | None = None,
        event_weights: EventWeights | None = None,
        extra_fields: Sequence[ExtraField] = (),
    ) -> None:
        check_optional_positive("hnsw_m", hnsw_m)
        check_optional_positive("hnsw_ef_construction", hnsw_ef_construction)
        check_optional_positive("ef_runtime", ef_runtime)
        if hybrid_policy not in HYBRID_POLICIES:
            raise ValueError(f"hybrid_policy must be one of {HYBRID_POLICIES}, got {hybrid_policy!r}")
        check_vector_type(vector_type)
        check_count("user_ttl_s", user_ttl_s)
        check_count("min_replicas_ack", min_replicas_ack)
        check_k(seen_kept, "seen_kept")
        store = Store(redis_client if redis_client is not None else redis.Redis(), read_clients, min_replicas_ack,
                      replica_ack_timeout_ms, durable)  # fmt: skip
        self.redis = store.primary
        self.is_cluster = store.is_cluster
        self.index_name = index_name
        self.key_prefix = key_prefix
        self.user_key_prefix = user_key_prefix
        self.vector_dim = vector_dim
        self.config = config if config is not None else RankingConfig()
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self.ef_runtime = ef_runtime
        self.hybrid_policy = hybrid_policy
        self.requested_vector_type = vector_type
        self.user_ttl_s = user_ttl_s
        self.seen_kept = seen_kept
        self.read_clients = store.read_clients
        self.min_replicas_ack = min_replicas_ack
        self.replica_ack_timeout_ms = replica_ack_timeout_ms
        self.durable = durable
        self.clock = clock
        self.co_occurrence_config = co_occurrence if co_occurrence is not None else CoOccurrenceConfig()
        self.event_weights = event_weights if event_weights is not None else EventWeights()
        self.extra_fields = tuple(extra_fields)
        # Asked once, here: FT.HYBRID (Redis 8.4+) fuses a typed query's searches on the server;
        # without it (the bundled 8.2, or no answer) they are pipelined. Never asked again.
        self.text_fusion: TextFusion = "ft.hybrid" if store.knows(hybrid_command_info(), knows_command) else "pipelined"
        self._wire(store)

    def with_config(self, config: RankingConfig) -> RedisRecommender:
        """This recommender (the same Redis, index, keys and settings) ranking with another
        RankingConfig: an experiment's arm ranks and records clicks this way."""
        other = copy.copy(self)
        other.config = config
        other._wire(self._store)
        return other

    def _wire(self, store: Store) -> None:
        """The parts, each given what it needs of the settings."""
        self._store = store
        self._keys = KeyLayout(self.index_name, self.key_prefix, self.user_key_prefix)
        scripts = Scripts(self.redis)
        self._vectors = VectorFormat(
            self.vector_dim, self.requested_vector_type, functools.partial(read_vector_type, store, self._keys)
        )
        self._catalog = Catalog(
            store, self._keys, scripts, self._vectors, self.hnsw_m, self.hnsw_ef_construction, self.extra_fields
        )
        self._writer = ProductWriter(store, self._keys, scripts, self._vectors, self.extra_fields)
        self._reloads = Reloads(store, self._keys, scripts, self._vectors, self._catalog.schema, self.extra_fields)
        self._users = UserReads(store, self._keys, self.vector_dim, self._catalog)
        self._co_occurrence = CoOccurrence(self._keys, scripts, self.co_occurrence_config, store.shard_of)
        self._events = UserEvents(
            store, self._keys, scripts, self._users, self._co_occurrence, self.config, self.event_weights,
            self.clock, vectors=self._vectors, seen_kept=self.seen_kept, user_ttl_s=self.user_ttl_s,
        )  # fmt: skip
        self._retrieval = Retrieval(
            store, self._keys, self._vectors, self.ef_runtime, self.hybrid_policy,
            self.config.popularity_half_life_s, self.text_fusion, self.config.text_weight,
        )  # fmt: skip
        self._importer = EventImporter(
            store, self._keys, scripts, self._co_occurrence, self.config, self.event_weights, self.seen_kept,
            self.user_ttl_s, self.clock,
        )  # fmt: skip
        self._feeds = Feeds(
            store, self._keys, self._retrieval, self._users, self._co_occurrence, self.config, self.clock,
            self._vectors, VocabularyCache(self._catalog.vocabulary),
        )  # fmt: skip

    # keys

    def product_key(self, product_id: str) -> str:
        """`product:<id>` (key_prefix + id), the product hash every port writes; after a reload,
        the serving generation's `product@<n>:<id>` (Redis is asked which serves, on every call)."""
        return self._catalog.keys_of([product_id])[0]

    def product_keys(self, product_ids: Iterable[str]) -> list[str]:
        """product_key of many products, with one question to Redis about which generation
        serves rather than one a product (a script touching thousands of hashes)."""
        return self._catalog.keys_of(product_ids)

    def features_key(self, user_id: str) -> str:
        """`user:<id>:features`, exactly as every port writes it."""
        return self._keys.features(user_id)

    def user_key(self, user_id: str) -> str:
        """The reference's name for features_key."""
        return self.features_key(user_id)

    def _user_keys(self, user_id: str) -> UserKeys:
        return self._keys.user(user_id)

    def _popularity_keys(self) -> tuple[str, str]:
        return self._keys.popularity()

    # index and catalogue

    def index_schema(self) -> list[str]:
        """FT.CREATE's SCHEMA arguments: the fields every port indexes, and the HNSW cosine vector
        field (with M and EF_CONSTRUCTION only when hnsw_m / hnsw_ef_construction are set)."""
        return self._catalog.schema()

    @property
    def vector_type(self) -> VectorType:
        """The element type product vectors are written and searched in: the index's own (read
        once, with FT.INFO), or vector_type as given while there is no index."""
        return self._vectors.vector_type

    def index_exists(self) -> bool:
        """Whether the index exists; other Redis errors are raised, not taken for "no"."""
        return self._catalog.exists()

    def create_index(self) -> bool:
        """Create the index if it is missing; True when this call created it."""
        return self._catalog.create()

    def drop_index(self, delete_documents: bool = False) -> bool:
        """Drop the index (and with delete_documents its product hashes); False if it was absent."""
        return self._catalog.drop(delete_documents)

    def index_products(self, products: Iterable[Mapping[str, Any]], batch_size: int = 500) -> int:
        """HSET every product in pipelined batches; returns how many were written.

        Each product needs an `id`, the PRODUCT_FIELDS and either `embedding` (array or list)
        or `embedding_b64`. All of a batch is validated (ValueError) before any of it is sent.
        """
        return self._catalog.index_products(products, batch_size)

    def _write_batch(self, batch: list[tuple[str, dict[str, bytes | str]]]) -> int:
        return self._store.write_hashes(batch)

    def index_info(self) -> IndexInfo:
        """The index's size and health (FT.INFO). Raises IndexMissingError when it is absent."""
        return self._catalog.info()

    def count_indexed(self) -> int:
        """How many products the index holds; 0 when there is no index, as in the reference
        (other errors of Redis are raised, not counted as 0)."""
        return self._catalog.count()

    def wait_until_indexed(self, timeout_s: float = 30.0) -> None:
        """HSETs into an existing index are indexed synchronously, but a new index over
        existing keys is built in the background; wait for that scan to finish."""
        self._catalog.wait_until_indexed(timeout_s)

    def refresh_embedding(self, product_id: str, new_vector: npt.ArrayLike) -> None:
        """Replace one item's vector in place; the index picks it up on write (no rebuild, no
        downtime). ValueError for a wrong shape, ProductNotFoundError (a KeyError) for an unknown id (never creates a
        key), ReplicationTimeoutError as record_click."""
        self._catalog.refresh_embedding(product_id, new_vector)

    # one product at a time, and the whole catalogue at once

    def upsert_products(
        self, products: Iterable[Mapping[str, Any]], *, embed: Embed | None = None, batch_size: int = 500
    ) -> list[ProductWrite]:
        """Create or update products, writing only the fields whose stored value changes (an
        unchanged product costs Redis no re-indexing) and storing a new vector only where the
        text (name, description) is new or changed: the product's own `embedding` /
        `embedding_b64` if it has one, else `embed(texts)` for all of those in one call.

        Each product needs an id, a name and a price; description, category (a path
        "A > B > C" is filterable at every level), brand, rating and in_stock default to "", "",
        "", 0 and true. Everything is checked, and every vector made, before anything is written:
        ValueError names the product. Returns what each write did, in order."""
        return self._writer.upsert(products, embed, batch_size)

    def update_product(self, product_id: str, **fields: Any) -> ProductWrite:
        """Set filter fields of an existing product (price, in_stock, rating, category, brand, an
        extra field) without re-embedding it; only changed values are written.

        ValueError for an unknown field, a text field (name, description: use upsert_products),
        no field, or a bad value (a price that is not a finite number of at least 0, a rating
        outside 0-5, ...); ProductNotFoundError (a KeyError) for an unknown product, which is
        never created."""
        return self._writer.update(check_product_id(product_id), fields)

    def delete_product(self, product_id: str) -> bool:
        """Remove a product and its popularity; False when there was none. Users' recent clicks,
        seen and dismissed lists keep its id until read (every reader leaves out ids that are no
        longer products)."""
        return self._writer.delete(check_product_id(product_id))

    def stored_products(self) -> dict[str, dict[str, str]]:
        """Every product's stored fields but its vector, by id (what a sync compares a file with)."""
        return self._writer.stored()

    def reload_catalog(
        self,
        products: Iterable[Mapping[str, Any]],
        *,
        model: str = "",
        lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
        batch_size: int = RELOAD_BATCH_SIZE,
        lock_ttl_ms: int = LOCK_TTL_MS,
        progress: Callable[[int, int], None] | None = None,
    ) -> ReloadResult:
        """Replace the whole catalogue with no moment where a search misses the index or sees a
        mixture: the products (each with a vector) go into a new generation beside the serving
        one, the index name switches to it in one step (FT.ALIASUPDATE), then the old keys go.
        For a full reload, a new embedding model, /reset-index; see recengine/reload.py.

        ValueError for a bad product (before anything is written); ReloadInProgressError when
        another reload holds the lock past `lock_wait_s`; ReloadFailedError, the old catalogue
        still serving, when building the new one fails (Redis at maxmemory, ...). The lock
        expires `lock_ttl_ms` after its holder last renewed it (a killed reloader's lock goes)."""
        return self._reloads.reload(
            products, model=model, lock_wait_s=lock_wait_s, batch_size=batch_size, lock_ttl_ms=lock_ttl_ms,
            progress=progress,
        )  # fmt: skip

    def serving(self) -> Serving | None:
        """Which generation of the catalogue the index name answers from (None: no index)."""
        return self._reloads.serving()

    def product_names(self, product_ids: Sequence[str]) -> dict[str, str]:
        """The names of the given products, in one pipelined round trip (none for no ids);
        unknown ids and products without a name are left out. Read as get_products reads them,
        so a garbled product the user clicked is logged even when the index refused it."""
        return self._catalog.product_names(product_ids)

    def get_products(self, product_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Display fields of the given products (no vectors); unknown ids are left out."""
        return self._catalog.get_products(product_ids)

    def list_products(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Up to `limit` indexed products (no vectors), sorted by price."""
        return self._catalog.list_products(limit)

    def list_categories(self) -> list[str]:
        """The distinct categories of the indexed products, as written, sorted."""
        return self._catalog.distinct_values("category")

    def list_brands(self) -> list[str]:
        """The distinct brands of the indexed products, as written, sorted."""
        return self._catalog.distinct_values("brand")

    # retrieval and ranking

    def candidate_retrieve(
        self,
        query_vec: npt.ArrayLike,
        category: str | None = None,
        brand: str | None = None,
        min_price: float | None = None,
        max_price: float | None = None,
        in_stock_only: bool = False,
        min_rating: float | None = None,
        text_match: str | None = None,
        text_field: str = "description",
        k: int = 10,
        session_vec: npt.ArrayLike | None = None,
        session_weight: float = 0.3,
    ) -> list[Candidate]:
        """The k nearest products that pass every filter, closest first, in one FT.SEARCH.

        The reference's call, argument for argument: the filters may be given by position.
        With `session_vec`, the query is first blended with it (normalize((1 − w)·q + w·s)).
        Raises ValueError for a bad vector, filter or k, IndexMissingError without an index.
        """
        filters = SearchFilters(
            category, brand, min_price, max_price, in_stock_only, min_rating, text_match, text_field
        )
        k = check_k(k)
        query = checked_vector(query_vec, self.vector_dim)
        session = checked_vector(session_vec, self.vector_dim) if session_vec is not None else None
        vector = blend_query(query, session, None, check_unit_interval("session_weight", session_weight), 0.0)
        pool = self._retrieval.nearest(vector, filters.clause(), k, frozenset(), with_vectors=False)
        return pool.candidates[:k]

    # The filter builder on the class, callable without an instance, as the reference offers it.
    build_filter_clause = staticmethod(build_filter_clause)

    @classmethod
    def _build_filter_clause(cls, **filters: Any) -> str:
        """The reference's spelling (its own server calls it on the class), with the reference's
        shape: the clause in parentheses, "(*)" when nothing filters, so that it can stand in
        front of `=>[KNN ...]` as it is (a bare multi-term clause there is a syntax error).
        Keyword arguments as build_filter_clause; raises ValueError as it does."""
        return f"({build_filter_clause(**filters)})"

    def rerank(
        self,
        candidates: list[Candidate],
        user_features: Mapping[str, Any] | None,
        affinity_weight: float | None = None,
        k: int | None = None,
    ) -> list[Candidate]:
        """Re-score candidates by the user's category affinities and re-sort (the reference's
        call): score = vector_distance − log1p(affinity)·weight for liked categories, + for
        dismissed ones. `user_features` is anything with an "affinities" mapping (a UserFeatures,
        the reference's dict); affinity_weight defaults to config.affinity_weight.

        Returns a new list, sorted by score (ties by distance, then id), cut to `k` when given.
        With affinities the candidates in it are re-scored copies (the inputs are untouched);
        without any (or with a weight of 0) they are the inputs, scores kept as the caller set
        them."""
        affinities = (user_features or {}).get("affinities") or {}
        weight = self.config.affinity_weight if affinity_weight is None else affinity_weight
        if not affinities or weight <= 0:
            # Nothing to apply: as in the reference, scores a caller has set are kept and only
            # the order follows them.
            ranked = sorted(candidates, key=lambda c: (c.score, c.vector_distance, c.id))
        else:
            ranked, _ = rerank_by_affinity(candidates, affinities, weight)
        return ranked if k is None else ranked[:k]

    def recommend(
        self,
        query_vec: npt.ArrayLike,
        *,
        user_id: str | None = None,
        k: int = 10,
        filters: SearchFilters | None = None,
        use_session: bool = True,
        use_rerank: bool = True,
        exclude_clicked: bool = False,
        diversity: float = 0.0,
        query_text: str | None = None,
        understand: bool = True,
    ) -> Recommendation:
        """A typed query, personalised: the query vector blended with the user's (faded) session
        and pushed away from what they dismissed, KNN with the filters over `k × overfetch`
        candidates, dismissed (and with exclude_clicked, clicked) products left out with k kept
        full, rerank by (faded) category affinity, then MMR when diversity > 0.

        With `query_text` (the words query_vec embeds) the query is also read: with `understand`
        the brand, price, stock and rating it names become filters where `filters` leave them open
        and a category it names a boost (Recommendation.understood says what was read and what
        was ignored); its words are matched by BM25 and fused with the KNN; and when the words
        name a kind of product, personalisation only re-orders within the query's relevance
        (RankingConfig.typed_query_tier).

        Raises ValueError for bad arguments, IndexMissingError without an index.
        """
        return self._feeds.recommend(
            query_vec, user_id, k, filters, use_session, use_rerank, exclude_clicked, diversity, query_text, understand
        )

    def for_you(
        self,
        user_id: str,
        *,
        k: int = 10,
        filters: SearchFilters | None = None,
        exclude_clicked: bool = True,
        diversity: float = 0.0,
        signal: Signal = "blend",
    ) -> Recommendation:
        """The feed, with no query, without what the user dismissed and (by default) what they
        clicked or bought. With signal "content", a user with a live session gets the KNN of their
        session vector (pushed away from what they dismissed), reranked by their affinities, and
        anyone else popular(); a session that has faded below 1/16 of its weight no longer counts
        as live. With "blend" (the default), what was bought together with the user's recent
        products is blended into that KNN, and leads the feed when the session has faded (topped
        up by popular()); "co_occurrence" is those products alone. Each result's why says
        which put it there."""
        return self._feeds.for_you(user_id, k, filters, exclude_clicked, diversity, signal)

    def similar(
        self,
        product_id: str,
        *,
        k: int = 10,
        filters: SearchFilters | None = None,
        same_category_boost: float | None = None,
        user_id: str | None = None,
        exclude_clicked: bool = False,
        diversity: float = 0.0,
        signal: Signal = "blend",
    ) -> Recommendation:
        """ "More like this", never the product itself, with the filters. signal "content": the
        neighbours of the product's own stored vector, with a preference for its own category
        (`same_category_boost` subtracted from their distance; 0 gives the plain KNN; default
        from the RankingConfig). "co_occurrence": the products most often bought (viewed,
        carted) together with it, counts faded to now; fewer than k when fewer were. "blend"
        (the default): both, mixed by the evidence the product has (recengine/blend.py); a
        product with no counts yet gets the content answer. Each result's why says which signal
        put it there and why.reason says it in words. With a user, what they dismissed (and
        with exclude_clicked, clicked) is left out. ProductNotFoundError (a KeyError) for an
        unknown product."""
        return self._feeds.similar(
            product_id, k, filters, same_category_boost, user_id, exclude_clicked, diversity, signal
        )

    def popular(
        self, *, k: int = 10, filters: SearchFilters | None = None, user_id: str | None = None
    ) -> Recommendation:
        """Products by time-decayed click count (a click one popularity half-life ago counts
        half), with the filters; what a given user dismissed is left out. Before any product has
        been clicked (or when too few clicked ones pass the filters) the highest rated fill the
        list, and source says "rating" when they are all of it."""
        return self._feeds.popular(k, filters, user_id)

    def popularity(self, limit: int = 5, user_id: str | None = None) -> list[tuple[str, float]]:
        """The `limit` most popular product ids with their decayed click counts, most first;
        with user_id, without what that user dismissed (one more round trip)."""
        limit = check_k(limit, "limit")
        dismissed = set(self._users.dismissed(user_id)) if user_id is not None else set()
        scores = self._retrieval.popularity_scores(limit + len(dismissed), float(self.clock()))[0]
        return [(pid, score) for pid, score in scores if pid not in dismissed][:limit]

    # users: reading

    def get_user_features(self, user_id: str) -> UserFeatures:
        """The user's signals as stored, unfaded (a dict too, like the reference's; see
        faded_affinities and session_weight_now for their weight now). An unknown user has
        empty features. ValueError for a malformed user id."""
        return self._users.context(user_id, exclude_clicked=False).features

    def faded_affinities(self, features: UserFeatures, now: float | None = None) -> dict[str, float]:
        """The affinities as rerank sees them now (or at `now`): faded by time since they were
        last updated."""
        return faded_affinities(features, self.config, self._now(now))

    def session_weight_now(self, features: UserFeatures, now: float | None = None) -> float:
        """The session's share of the query now: config.session_weight, halved per half-life
        since the session last moved; 0 without a session."""
        return session_weight(features, self.config, self._now(now))

    def session_fades_in_s(self, features: UserFeatures, now: float | None = None) -> float | None:
        """Seconds until the session stops steering the feed (its weight falls below 1/16 of a
        fresh one's) unless the user clicks again; None without a session, 0 when it already
        has."""
        return session_fades_in_s(features, self.config, self._now(now))

    def _now(self, now: float | None) -> float:
        return float(self.clock()) if now is None else now

    def recent_clicks(self, user_id: str) -> list[str]:
        """Product ids the user clicked, newest first (at most RECENT_CLICKS_KEPT)."""
        return self._users.recent_clicks(user_id)

    def seen(self, user_id: str) -> list[str]:
        """The user's last `seen_kept` clicked or dismissed product ids, newest first."""
        return self._users.seen(user_id)

    def dismissed(self, user_id: str) -> list[str]:
        """Every product the user dismissed ("not interested"), sorted."""
        return self._users.dismissed(user_id)

    def user_state(self, user_id: str) -> UserState:
        """The user's features, recent clicks, dismissed products and those products' names: two
        round trips (the lists, then the names they need). ValueError for a malformed user id."""
        return self._users.state_from(user_id, self._users.state_replies(user_id))

    def reset_user(self, user_id: str) -> None:
        """Forget the user: every key this library or another port keeps for them is deleted
        (one slot, one DEL)."""
        self._users.reset(user_id)

    # users: writing

    def record_click(
        self,
        user_id: str,
        product_id: str,
        ewma_alpha: float | None = None,
        affinity_step: float | None = None,
        *,
        event_id: str | None = None,
        may_create: MayCreateUser | None = None,
    ) -> ClickResult:
        """Fold one click into the user's signals atomically (one script on the user's key) and
        count it for popularity (once per user, product and config.popularity_window_s): the
        session vector moves towards the item (EWMA against the faded session), the category
        affinity rises, the item joins recent clicks and seen. It is record_event(user_id,
        product_id, "click"), co-occurrence included.

        ewma_alpha and affinity_step default to the RankingConfig's. event_id, an idempotency
        key: a click whose id is among the user's last EVENT_IDS_KEPT events changes nothing
        and comes back with already_applied. may_create is asked before a click would create a
        user (one with no state yet); False refuses it with NewUserRefusedError.

        Raises ProductNotFoundError (a KeyError) for an unknown product, ValueError for a bad
        id or alpha, WriteRefusedError when Redis refuses the whole click, PartlyAppliedError
        when it refused a part (`applied` says which), WriteOutcomeUnknownError when the click
        was sent and no reply came (retry with the same event_id), ReplicationTimeoutError or
        DurabilityTimeoutError when replicas or the disk did not confirm it in time.
        """
        options = EventOptions(event_id, may_create)
        return self._events.click(user_id, product_id, ewma_alpha, affinity_step, False, options)[0]

    def record_event(
        self,
        user_id: str,
        product_id: str,
        event: EventType,
        *,
        at: float | None = None,
        session_id: str | None = None,
        event_id: str | None = None,
        may_create: MayCreateUser | None = None,
    ) -> EventResult:
        """Record one typed event ("view", "click", "cart" or "purchase") at `at` (seconds since
        1970; default now), of the session `session_id` if the caller has sessions.

        It does what a click does, scaled by the type's weight (EventWeights; docs/API.md,
        "Events", has the table): the session vector and the category affinity move, the product
        joins recent and seen (excluded from the feed), and popularity counts it (once per
        user, product and config.popularity_window_s). And it is counted together with the other
        products of the same session (the same session_id; without one, the user's events at
        most co_occurrence.window_s apart), at most co_occurrence.partners_per_event of them:
        the very next similar() sees the counts. event_id and may_create as record_click.

        Raises ValueError for an unknown event type, a time before 1970 or in the future, or a
        bad id; ProductNotFoundError (a KeyError) for an unknown product: nothing is written.
        Then as record_click (PartlyAppliedError with "co_occurrence" when only the counts were
        refused)."""
        options = EventOptions(event_id, may_create)
        return self._events.record(user_id, product_id, event, at, session_id, False, options)[0]

    def record_event_with_state(
        self,
        user_id: str,
        product_id: str,
        event: EventType,
        *,
        session_id: str | None = None,
        event_id: str | None = None,
        may_create: MayCreateUser | None = None,
    ) -> tuple[EventResult, UserState]:
        """record_event now, and the user's state after it, read in the same round trip on a
        single Redis (what an answer to POST /event shows). Raises as record_event."""
        options = EventOptions(event_id, may_create)
        result, replies = self._events.record(user_id, product_id, event, None, session_id, True, options)
        return result, self._users.state_from(user_id, replies)

    def import_events(
        self,
        events: Iterable[PastEvent],
        import_id: str,
        *,
        batch_size: int = DEFAULT_BATCH,
        on_batch: Callable[[int], None] | None = None,
    ) -> ImportReport:
        """Import past events in bulk (recengine/event_import.py): their co-occurrence and
        popularity, each user's window, recent and seen products, as record_event would have
        left them; not the session vectors and affinities, which would have faded. Idempotent
        per import_id (e.g. the file's SHA-256): applied in batches that are each whole (one
        transaction on a single Redis), an interrupted import resumes after its last batch and a
        finished one is not applied again. Raises as record_event, before the batch of the
        offending event is written."""
        return self._importer.run(events, import_id, batch_size=check_k(batch_size, "batch_size"), on_batch=on_batch)

    def import_progress(self, import_id: str) -> tuple[int, bool]:
        """How many events of an import are applied, and whether it finished."""
        return self._importer.progress(import_id)

    def record_click_with_state(
        self, user_id: str, product_id: str, *, event_id: str | None = None, may_create: MayCreateUser | None = None
    ) -> tuple[ClickResult, UserState]:
        """record_click with the config's alpha and step, and the user's state after the click
        (as user_state gives it), read in the same round trip on a single Redis: what an answer
        to a click shows. Raises as record_click."""
        options = EventOptions(event_id, may_create)
        result, replies = self._events.click(user_id, product_id, None, None, True, options)
        return result, self._users.state_from(user_id, replies)

    def dismiss(
        self, user_id: str, product_id: str, *, event_id: str | None = None, may_create: MayCreateUser | None = None
    ) -> DismissResult:
        """ "Not interested": the product never comes back for this user (until reset_user), its
        category affinity goes down by config.dismiss_step (below zero, rerank then pushes the
        category down), and the user's negative vector (EWMA of dismissed items) moves towards
        it, so retrieval moves away. Atomic per user, like a click, and at most once per
        event_id. Raises as record_click."""
        return self._events.dismiss(user_id, product_id, False, EventOptions(event_id, may_create))[0]

    def dismiss_with_state(
        self, user_id: str, product_id: str, *, event_id: str | None = None, may_create: MayCreateUser | None = None
    ) -> tuple[DismissResult, UserState]:
        """dismiss, and the user's state after it, read in the same round trip on a single Redis
        (as record_click_with_state). Raises as dismiss."""
        result, replies = self._events.dismiss(user_id, product_id, True, EventOptions(event_id, may_create))
        return result, self._users.state_from(user_id, replies)
