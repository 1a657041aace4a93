"""The typed values the engine hands back (ClickResult, DismissResult, IndexInfo, UserState)
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
    """What one request needs of a user, read in one round trip."""

    features: UserFeatures
    excluded: frozenset[str]


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
