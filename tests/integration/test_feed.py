"""The recommender beyond typed queries, on the real catalogue and a real Redis: the "for you"
feed, "more like this", time-decayed popularity, "not interested", exclusion of what was seen
with k kept full, diversity, fading sessions, the `why` of every candidate, expiring users and
cluster-safe keys. Time is injected through the recommender's clock; nothing sleeps."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from conftest import distances_of
from redis.cluster import key_slot

from local_redis import LocalRedis
from ranking import intra_list_similarity
from recengine.catalog_file import catalog_vectors
from recommender import RankingConfig, RedisRecommender, SearchFilters

NOW = 1_790_000_000.0
DAY = 86400.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def loaded(local_redis: LocalRedis, catalog: dict) -> Iterator[redis.Redis]:
    """The bundled catalogue under its own index and prefixes, loaded once for the module."""
    client = local_redis.client()
    rec = RedisRecommender(client, index_name="feed:idx", key_prefix="feed:product:")
    rec.drop_index(delete_documents=True)
    rec.create_index()
    rec.index_products(catalog["products"])
    yield client
    rec.drop_index(delete_documents=True)
    client.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rec(loaded: redis.Redis, clock: Clock, request: pytest.FixtureRequest) -> Iterator[RedisRecommender]:
    """A recommender with its own user prefix and popularity (index name) per test, so tests
    never see each other's clicks; the products are shared and never changed."""
    name = request.node.name.replace("[", "-").replace("]", "")
    recommender = RedisRecommender(
        loaded, index_name="feed:idx", key_prefix="feed:product:", user_key_prefix=f"{name}:user:", clock=clock
    )
    yield recommender
    loaded.delete(*recommender._popularity_keys())
    # what this test's events counted together (every product's counts under the index's name)
    loaded.delete(*loaded.scan_iter(match="{feed:idx:co:*", count=1000), "{feed:idx:co:}")


def ids_in(catalog: dict, category: str) -> list[str]:
    return [p["id"] for p in catalog["products"] if p["category"] == category]


def vector_of(catalog: dict, product_id: str) -> np.ndarray:
    index = [p["id"] for p in catalog["products"]].index(product_id)
    return catalog_vectors(catalog)[index]


# --- the feed ---------------------------------------------------------------------------------


def test_feed_follows_three_footwear_clicks_and_leaves_them_out(rec: RedisRecommender, catalog: dict) -> None:
    clicked = ids_in(catalog, "footwear")[:3]
    for pid in clicked:
        rec.record_click("shopper", pid)
    feed = rec.for_you("shopper", k=10)
    assert feed.source == "session"
    shown = [c.id for c in feed.candidates]
    assert len(shown) == 10 and not set(shown) & set(clicked)
    assert sum(c.category == "footwear" for c in feed.candidates) >= 7
    assert feed.excluded_count >= 3 and all(c.why.excluded_count == feed.excluded_count for c in feed.candidates)


def test_a_new_users_feed_is_the_most_clicked_first(rec: RedisRecommender, catalog: dict) -> None:
    for pid, times in (("p010", 5), ("p020", 3), ("p030", 1)):
        for other in range(times):  # a user's clicks on a product count once: five users, five
            rec.record_click(f"other-{other}", pid)
    feed = rec.for_you("newcomer", k=5)
    assert feed.source == "popular"
    assert [c.id for c in feed.candidates[:3]] == ["p010", "p020", "p030"]
    assert feed.candidates[0].why.popularity == pytest.approx(5.0)
    # The rest of the list is filled with the highest rated, so k stays full.
    assert len(feed.candidates) == 5 and feed.excluded_count == 0
    rec.dismiss("newcomer", "p020")
    feed = rec.for_you("newcomer", k=5)
    assert [c.id for c in feed.candidates[:2]] == ["p010", "p030"] and feed.excluded_count == 1


def test_with_no_clicks_anywhere_the_feed_is_the_top_rated(rec: RedisRecommender, catalog: dict) -> None:
    feed = rec.for_you("newcomer", k=10)
    assert feed.source == "rating"
    ratings = [c.rating for c in feed.candidates]
    assert ratings == sorted(ratings, reverse=True)
    assert ratings[0] == max(p["rating"] for p in catalog["products"])


def test_popular_respects_filters(rec: RedisRecommender, catalog: dict) -> None:
    for pid in ids_in(catalog, "bags")[:2] + ids_in(catalog, "tops")[:2]:
        rec.record_click("others", pid)
    result = rec.popular(k=4, filters=SearchFilters(category="tops"))
    assert result.source == "popular" and len(result.candidates) == 4
    assert all(c.category == "tops" for c in result.candidates)
    assert [c.id for c in result.candidates[:2]] == sorted(ids_in(catalog, "tops")[:2])


def test_popularity_decays_with_its_half_life(rec: RedisRecommender, clock: Clock) -> None:
    """Ten clicks two half-lives ago weigh 2.5; three clicks now weigh 3: the recent one leads."""
    clock.now = NOW - 14 * DAY
    for other in range(10):
        rec.record_click(f"other-{other}", "p040")
    clock.now = NOW
    for other in range(3):
        rec.record_click(f"other-{other}", "p050")
    top = rec.popularity(2)
    assert [pid for pid, _ in top] == ["p050", "p040"]
    assert dict(top)["p040"] == pytest.approx(2.5) and dict(top)["p050"] == pytest.approx(3.0)


def test_popularity_stays_finite_over_thousands_of_half_lives(loaded: redis.Redis, clock: Clock) -> None:
    """The stored sums grow as 2^(t/h); the epoch is rebased before they can overflow."""
    rec = RedisRecommender(
        loaded, index_name="feed:idx", key_prefix="feed:product:", user_key_prefix="rebase:user:",
        config=RankingConfig(popularity_half_life_s=60.0), clock=clock,
    )  # fmt: skip
    try:
        for step in range(50):
            clock.now = NOW + step * 60 * 100.0  # a hundred half-lives per step
            rec.record_click(f"other-{step}", "p001" if step % 2 else "p002")
        scores = dict(rec.popularity(2))
        assert all(np.isfinite(v) for v in scores.values())
        assert scores["p001"] == pytest.approx(1.0) and scores["p002"] == pytest.approx(2.0**-100)  # last: step 49
    finally:
        loaded.delete(*rec._popularity_keys())


def test_concurrent_clicks_lose_no_popularity(rec: RedisRecommender) -> None:
    products = ["p011", "p012"]

    def click(worker: int) -> None:
        for i in range(50):
            rec.record_click(f"w{worker}-{i}", products[i % 2])

    threads = [threading.Thread(target=click, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert dict(rec.popularity(2)) == {"p011": pytest.approx(200.0), "p012": pytest.approx(200.0)}


# --- more like this ---------------------------------------------------------------------------


def test_similar_prefers_the_products_own_category(rec: RedisRecommender, catalog: dict) -> None:
    result = rec.similar("p001", k=10)
    ids = [c.id for c in result.candidates]
    assert len(ids) == 10 and "p001" not in ids
    assert sum(c.category == "outerwear" for c in result.candidates) >= 6
    assert all(c.why.category_boost for c in result.candidates if c.category == "outerwear")


def test_similar_without_boost_is_the_exact_knn_minus_itself(rec: RedisRecommender, catalog: dict) -> None:
    vectors = catalog_vectors(catalog)
    ids = [p["id"] for p in catalog["products"]]
    distances = 1 - vectors @ vector_of(catalog, "p001")
    exact = [ids[i] for i in np.argsort(distances, kind="stable") if ids[i] != "p001"][:10]
    result = rec.similar("p001", k=10, same_category_boost=0)
    assert [c.id for c in result.candidates] == exact


def test_similar_applies_filters_and_knows_unknown_products(rec: RedisRecommender) -> None:
    result = rec.similar("p001", k=10, filters=SearchFilters(max_price=60))
    assert result.candidates and all(c.price <= 60 for c in result.candidates)
    with pytest.raises(KeyError):
        rec.similar("nope")


# --- not interested ---------------------------------------------------------------------------


def test_a_dismissed_product_never_comes_back_until_reset(rec: RedisRecommender, catalog: dict) -> None:
    first = rec.similar("p001", k=5).candidates[0].id
    rec.dismiss("picky", first)
    query = vector_of(catalog, first)
    assert first not in [c.id for c in rec.recommend(query, user_id="picky", k=10).candidates]
    assert first not in [c.id for c in rec.similar("p001", k=10, user_id="picky").candidates]
    assert first not in [c.id for c in rec.for_you("picky", k=10).candidates]
    assert rec.dismissed("picky") == [first]
    rec.reset_user("picky")
    assert first in [c.id for c in rec.recommend(query, user_id="picky", k=10).candidates]


def test_dismissals_lower_the_affinity_and_rerank_pushes_the_category_down(
    rec: RedisRecommender, catalog: dict
) -> None:
    outerwear = ids_in(catalog, "outerwear")
    result = rec.dismiss("picky", outerwear[0])
    assert result.affinity == -1.0 and result.category == "outerwear"
    rec.dismiss("picky", outerwear[1])
    query = vector_of(catalog, outerwear[2])
    ranked = rec.recommend(query, user_id="picky", k=10, use_session=False)
    penalised = [c for c in ranked.candidates if c.category == "outerwear"]
    assert ranked.used_rerank and penalised and all(c.why.affinity_penalty for c in penalised)
    assert all(c.score > distance for c, distance in zip(penalised, distances_of(penalised), strict=True))


def test_dismissing_two_parkas_moves_the_feed_away_from_them(rec: RedisRecommender, catalog: dict) -> None:
    vectors = catalog_vectors(catalog)
    by_id = {p["id"]: vectors[i] for i, p in enumerate(catalog["products"])}
    for pid in ("p005", "p012", "p009"):  # an insulated vest, a thermal jacket, a ski jacket
        rec.record_click("warm", pid)
    parkas = ["p001", "p008"]  # the Alpine down parka and the Glacier down puffer

    def closeness() -> float:
        shown = [by_id[c.id] for c in rec.for_you("warm", k=10).candidates]
        return float(np.mean([[s @ by_id[p] for p in parkas] for s in shown]))

    before = closeness()
    for pid in parkas:
        rec.dismiss("warm", pid)
    assert closeness() < before
    assert rec.get_user_features("warm").negative_vec is not None


# --- exclusions keep k full --------------------------------------------------------------------


def test_excluding_what_was_clicked_keeps_k_full_and_says_when_the_catalogue_ran_out(
    rec: RedisRecommender, catalog: dict
) -> None:
    footwear = ids_in(catalog, "footwear")
    for pid in footwear[:-4]:
        rec.record_click("fan", pid)
    query = vector_of(catalog, footwear[0])
    result = rec.recommend(query, user_id="fan", k=10, filters=SearchFilters(category="footwear"), exclude_clicked=True)
    assert sorted(c.id for c in result.candidates) == sorted(footwear[-4:])
    assert result.exhausted and result.excluded_count == len(footwear) - 4
    unfiltered = rec.recommend(query, user_id="fan", k=10, exclude_clicked=True)
    assert len(unfiltered.candidates) == 10 and not unfiltered.exhausted
    assert not {c.id for c in unfiltered.candidates} & set(footwear[:-4])
    kept = rec.recommend(query, user_id="fan", k=10, filters=SearchFilters(category="footwear"))
    assert len(kept.candidates) == 10 and kept.excluded_count == 0


def test_seen_is_bounded(loaded: redis.Redis, clock: Clock, catalog: dict) -> None:
    rec = RedisRecommender(
        loaded, index_name="feed:idx", key_prefix="feed:product:", user_key_prefix="bounded:user:",
        seen_kept=5, clock=clock,
    )  # fmt: skip
    try:
        ids = [p["id"] for p in catalog["products"]][:8]
        for pid in ids:
            clock.now += 1
            rec.record_click("u", pid)
        assert rec.seen("u") == list(reversed(ids[-5:]))
    finally:
        rec.reset_user("u")
        loaded.delete(*rec._popularity_keys())


# --- diversity --------------------------------------------------------------------------------


def test_diversity_spreads_the_list(rec: RedisRecommender, catalog: dict) -> None:
    vectors = catalog_vectors(catalog)
    by_id = {p["id"]: vectors[i] for i, p in enumerate(catalog["products"])}
    query = vector_of(catalog, "p001")
    plain = rec.recommend(query, k=10)
    diverse = rec.recommend(query, k=10, diversity=0.7)
    assert plain.candidates[0].id == diverse.candidates[0].id  # the best match still leads
    assert intra_list_similarity([by_id[c.id] for c in diverse.candidates]) < intra_list_similarity(
        [by_id[c.id] for c in plain.candidates]
    )
    assert len({c.category for c in diverse.candidates}) >= len({c.category for c in plain.candidates})
    assert all(c.why.mmr_penalty is not None for c in diverse.candidates)
    assert [c.id for c in rec.recommend(query, k=10, diversity=0).candidates] == [c.id for c in plain.candidates]
    with pytest.raises(ValueError, match="diversity"):
        rec.recommend(query, k=10, diversity=1.5)


def test_diversity_works_on_every_list(rec: RedisRecommender) -> None:
    assert len(rec.similar("p001", k=8, diversity=0.5).candidates) == 8
    assert len(rec.for_you("new", k=8, diversity=0.5).candidates) == 8


# --- time --------------------------------------------------------------------------------------


def test_the_session_fades_with_its_half_life(rec: RedisRecommender, clock: Clock, catalog: dict) -> None:
    rec.record_click("u", ids_in(catalog, "bags")[0])
    fresh = rec.session_weight_now(rec.get_user_features("u"))
    assert fresh == pytest.approx(rec.config.session_weight)
    clock.now += 2 * rec.config.session_half_life_s
    assert rec.session_weight_now(rec.get_user_features("u")) == pytest.approx(fresh / 4)
    query = vector_of(catalog, ids_in(catalog, "tops")[0])
    assert rec.recommend(query, user_id="u", k=3).session_weight == pytest.approx(fresh / 4)


def test_a_faded_session_no_longer_drives_the_feed(rec: RedisRecommender, clock: Clock, catalog: dict) -> None:
    rec.record_click("u", ids_in(catalog, "bags")[0])
    assert rec.for_you("u").source == "session"
    clock.now += 5 * rec.config.session_half_life_s
    assert rec.for_you("u", signal="content").source in ("popular", "rating")


def test_the_click_blends_against_the_faded_session(rec: RedisRecommender, clock: Clock, catalog: dict) -> None:
    a, b = ids_in(catalog, "bags")[0], ids_in(catalog, "tops")[0]
    rec.record_click("u", a)
    clock.now += rec.config.session_half_life_s
    rec.record_click("u", b)
    alpha = rec.config.ewma_alpha
    expected = alpha * vector_of(catalog, b) + (1 - alpha) * 0.5 * vector_of(catalog, a)
    expected /= np.linalg.norm(expected)
    session = rec.get_user_features("u").session_vec
    assert session is not None and np.allclose(session, expected, atol=1e-5)


def test_affinities_fade_with_their_own_half_life(rec: RedisRecommender, clock: Clock, catalog: dict) -> None:
    rec.record_click("u", ids_in(catalog, "bags")[0])
    clock.now += rec.config.affinity_half_life_s
    assert rec.faded_affinities(rec.get_user_features("u")) == {"bags": pytest.approx(0.5)}
    rec.record_click("u", ids_in(catalog, "bags")[1])
    assert rec.get_user_features("u").affinities == {"bags": pytest.approx(1.5)}


# --- why ---------------------------------------------------------------------------------------


def test_every_candidate_says_why(rec: RedisRecommender, catalog: dict) -> None:
    rec.record_click("u", ids_in(catalog, "bags")[0])
    query = vector_of(catalog, ids_in(catalog, "bags")[1])
    result = rec.recommend(query, user_id="u", k=5)
    for candidate in result.candidates:
        why = candidate.to_dict()["why"]
        assert why["vector_distance"] == pytest.approx(candidate.vector_distance)
        assert why["session_weight"] == pytest.approx(rec.config.session_weight)
        assert why["excluded_count"] == 0
    assert any("affinity_bonus" in c.to_dict()["why"] for c in result.candidates)


# --- users: expiry, forgetting, one slot --------------------------------------------------------


def test_every_key_of_a_user_expires_and_reset_forgets_them(rec: RedisRecommender, loaded: redis.Redis) -> None:
    """A user is one key (so a memory cap evicts it whole): it expires, and reset deletes it."""
    rec.record_click("u", "p001")
    rec.dismiss("u", "p002")
    user, *older = rec._user_keys("u")
    assert 0 < loaded.ttl(user) <= rec.user_ttl_s and not loaded.exists(*older)
    rec.reset_user("u")
    assert not loaded.exists(user)


def test_a_user_ttl_of_zero_keeps_users(loaded: redis.Redis, clock: Clock) -> None:
    rec = RedisRecommender(
        loaded, index_name="feed:idx", key_prefix="feed:product:", user_key_prefix="keep:user:", user_ttl_s=0,
        clock=clock,
    )  # fmt: skip
    try:
        rec.record_click("u", "p001")
        assert loaded.ttl(rec.features_key("u")) == -1
    finally:
        rec.reset_user("u")
        loaded.delete(*rec._popularity_keys())


def test_a_users_keys_share_one_cluster_slot(rec: RedisRecommender) -> None:
    slots = {key_slot(key.encode()) for key in rec._user_keys("someone")}
    assert len(slots) == 1
    popularity_slots = {key_slot(key.encode()) for key in rec._popularity_keys()}
    assert len(popularity_slots) == 1
    with pytest.raises(ValueError, match="braces"):
        rec.record_click("a{b}", "p001")


def test_text_filters_may_hold_common_words(rec: RedisRecommender, catalog: dict) -> None:
    """The index is created with STOPWORDS 0: with RediSearch's default list, a phrase holding a
    stop word ("for") matched nothing, even word for word from a description."""
    query = vector_of(catalog, "p001")
    found = rec.recommend(query, k=10, filters=SearchFilters(text_match="down for bitter"))
    assert [c.id for c in found.candidates] == ["p001"]
    assert rec.recommend(query, k=5, filters=SearchFilters(text_match="and")).candidates


def test_a_click_after_redis_lost_its_scripts_counts_once(rec: RedisRecommender, loaded: redis.Redis) -> None:
    """A restarted or promoted Redis knows no scripts (NOSCRIPT): they are loaded and sent again,
    and no part of the click runs twice."""
    rec.record_click("u", "p003")
    loaded.script_flush()
    result = rec.record_click("u", "p005")
    assert result.clicks == 2 and dict(rec.popularity(2)) == {"p003": pytest.approx(1.0), "p005": pytest.approx(1.0)}
    loaded.script_flush()
    _, state = rec.dismiss_with_state("u", "p004")
    assert state.dismissed == ["p004"] and state.features.clicks == 2


def test_an_unknown_product_writes_nothing(rec: RedisRecommender, loaded: redis.Redis) -> None:
    with pytest.raises(KeyError):
        rec.record_click("u", "nope")
    with pytest.raises(KeyError):
        rec.dismiss("u", "nope")
    assert not loaded.exists(*rec._user_keys("u")) and rec.popularity(5) == []


def test_the_event_scripts_each_touch_one_slot(rec: RedisRecommender, catalog: dict) -> None:
    """Cluster-safe by construction: every script's keys hash to one slot (the product is read
    before, by the caller)."""
    script_keys = [list(rec._user_keys("someone")), list(rec._popularity_keys()), [rec.product_key("p001")]]
    for keys in script_keys:
        assert len({key_slot(key.encode()) for key in keys}) == 1
