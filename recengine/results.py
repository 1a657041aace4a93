"""The typed values the engine hands back (ClickResult, EventResult, DismissResult, IndexInfo,
UserState, ProductWrite)
and passes between its parts (UserContext, CandidatePool). Recommendation, Candidate, Why and
UserFeatures belong to the ranking and live in ranking.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ranking import Candidate, DictResult, UserFeatures, Vector


@dataclass(frozen=True, eq=False, repr=False)
class ClickResult(DictResult):
    """What one click did: the item's category, that category's affinity after the click, the
    user's click count, the item clicked, whether the session vector moved (False when the
    item has no valid vector: the click still counts), and whether its event id had been applied
    before (then this call changed nothing and the figures are the user's current ones)."""

    category: str
    affinity: float
    clicks: int
    last_clicked_id: str
    session_updated: bool
    already_applied: bool = False


@dataclass(frozen=True, eq=False, repr=False)
class EventResult(DictResult):
    """What one typed event did: its type and product, the product's category and that
    category's affinity after it, the user's event count, whether the session vector moved, and
    how many products of the same session it was counted together with; already_applied when
    its event id had been applied before (then nothing changed)."""

    event: str
    product_id: str
    category: str
    affinity: float
    clicks: int
    session_updated: bool
    paired_with: int
    already_applied: bool = False


@dataclass(frozen=True, eq=False, repr=False)
class DismissResult(DictResult):
    """What one dismissal did: the item's category and its affinity after the step down, the
    item, whether the negative vector moved (False when the item has no valid vector), and
    whether its event id had been applied before (then this call changed nothing)."""

    category: str
    affinity: float
    product_id: str
    negative_updated: bool
    already_applied: bool = False


@dataclass(frozen=True, eq=False, repr=False)
class IndexInfo(DictResult):
    """The index's size and health from FT.INFO: documents indexed, hashes the index refused,
    the vector index's memory in MB, and the share of existing keys scanned (1.0 once a new
    index has caught up)."""

    num_docs: int
    indexing_failures: int
    vector_index_size_mb: float
    percent_indexed: float


@dataclass(frozen=True)
class UserState:
    """What a user's panel shows, read together: the stored features (unfaded), the recent clicks
    (newest first), the dismissed products (sorted), and the names of those products (ids of
    products that no longer exist, or have no name, are not in product_names)."""

    features: UserFeatures
    recent_clicks: list[str]
    dismissed: list[str]
    product_names: dict[str, str]


@dataclass(frozen=True)
class UserContext:
    """What one request needs of a user, read in one round trip: the features, the products the
    user dismissed, and the ones they clicked and did not dismiss when the request leaves those
    out (else empty)."""

    features: UserFeatures
    dismissed: frozenset[str] = frozenset()
    seen: frozenset[str] = frozenset()

    @property
    def excluded(self) -> frozenset[str]:
        """What a feed, popular and similar() leave out: every dismissed product and the seen
        ones. A typed query leaves out only the seen ones (dismissed ones are marked down)."""
        return self.dismissed | self.seen


@dataclass
class CandidatePool:
    """Candidates fetched for one answer, best first: their stored vectors by id (for MMR; None
    when not fetched or invalid), the excluded ids the search met and left out, and whether the
    index ran out of products passing the filters before the pool was full."""

    candidates: list[Candidate] = field(default_factory=list)
    vectors: dict[str, Vector | None] = field(default_factory=dict)
    left_out: set[str] = field(default_factory=set)
    exhausted: bool = False

    def extend(self, more: CandidatePool) -> None:
        """Append another pool's candidates (a top-up); its exhaustion is what counts now."""
        self.candidates += more.candidates
        self.vectors.update(more.vectors)
        self.left_out |= more.left_out
        self.exhausted = more.exhausted


@dataclass(frozen=True, eq=False, repr=False)
class ProductWrite(DictResult):
    """What one product write did: whether it created the product, whether a new vector was
    stored (its text was new or changed), and the fields whose stored value changed, in the
    schema's order (empty: the write changed nothing and Redis did not re-index it)."""

    product_id: str
    created: bool
    embedded: bool
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Serving:
    """What the index name answers from: its generation (0 for the real index create_index
    makes), the index and key prefix of that generation, and how many products it holds."""

    generation: int
    index: str
    key_prefix: str
    products: int

    def describe(self) -> str:
        return f"generation {self.generation} ({self.products:,} products under {self.key_prefix!r})"


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did: the generation now serving and the one it replaced (None: there was
    no index), products written, seconds spent building (writing and indexing), milliseconds
    switching, and the old keys removed afterwards, in seconds."""

    serving: Serving
    replaced: Serving | None
    written: int
    build_s: float
    switch_ms: float
    removed_keys: int
    cleanup_s: float
