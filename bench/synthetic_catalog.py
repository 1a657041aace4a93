"""A seeded synthetic product catalog and query set for the retrieval benchmark.

The catalog is kept as columns, so that what numpy filters on (the exact ground truth) and what
Redis receives (through RedisRecommender) are the same data: 12 categories, 30 brands with
Zipf-like popularity, log-normal prices around a per-category median, ratings skewed high, 10 %
out of stock, descriptions from a small vocabulary with "waterproof" in about 15 % of them, and
384-d unit vectors clustered by category and sub-cluster. The same size and seed always give the
same catalog, so runs compare.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from embeddings import normalize_rows

DIM = 384


# (category, median price, share of items whose description says "waterproof", nouns).
# The waterproof shares differ by category, as in a real store, and average about 15 %.
CATEGORIES: tuple[tuple[str, float, float, tuple[str, ...]], ...] = (
    ("outerwear", 140.0, 0.45, ("jacket", "parka", "shell", "vest", "coat", "anorak")),
    ("footwear", 95.0, 0.35, ("boot", "sneaker", "sandal", "trail shoe", "loafer")),
    ("tops", 35.0, 0.03, ("shirt", "tee", "sweater", "hoodie", "blouse")),
    ("bottoms", 55.0, 0.05, ("trousers", "jeans", "shorts", "leggings", "skirt")),
    ("bags", 70.0, 0.30, ("backpack", "duffel", "tote", "messenger bag", "daypack")),
    ("accessories", 25.0, 0.08, ("hat", "gloves", "scarf", "belt", "sunglasses")),
    ("camping", 120.0, 0.30, ("tent", "sleeping bag", "stove", "lantern", "hammock")),
    ("electronics", 180.0, 0.15, ("speaker", "headphones", "smartwatch", "action camera", "power bank")),
    ("kitchen", 40.0, 0.01, ("kettle", "pan", "knife set", "blender", "mug")),
    ("home", 60.0, 0.02, ("lamp", "throw blanket", "cushion", "rug", "planter")),
    ("beauty", 20.0, 0.03, ("moisturiser", "serum", "lip balm", "shampoo", "sunscreen")),
    ("sports", 45.0, 0.08, ("yoga mat", "dumbbell", "racket", "cycling jersey", "bottle")),
)
CATEGORY_WEIGHTS = np.array([1.4, 1.2, 1.5, 1.0, 0.8, 1.1, 0.7, 0.9, 1.0, 0.9, 0.6, 0.9])
BRANDS = (
    "Northpeak", "Urban Loom", "Tidewater", "Alder & Co", "Brightfield", "Cobalt Ridge",
    "Driftline", "Emberwood", "Fjordvik", "Granite Bay", "Harbor Lane", "Ironbark",
    "Juniper Row", "Kestrel", "Larkspur", "Meridian", "Nimbus", "Oakhollow", "Pinecrest",
    "Quarry", "Redtail", "Saltmarsh", "Thornbury", "Umber", "Valewood", "Westerly",
    "Yarrow", "Zephyr", "Ashgrove", "Bramble",
)  # fmt: skip
ADJECTIVES = (
    "lightweight", "durable", "insulated", "breathable", "compact", "classic", "modern",
    "recycled", "packable", "stretchy", "soft", "rugged", "minimalist", "premium", "everyday",
)  # fmt: skip
MATERIALS = ("cotton", "wool", "nylon", "leather", "polyester", "bamboo", "steel", "ceramic", "canvas", "merino")
PHRASES = (
    "for city commutes", "for weekend trips", "for cold mornings", "for the trail",
    "for everyday use", "with a lifetime warranty", "with reinforced seams", "with zip pockets",
)  # fmt: skip
SUBCLUSTERS_PER_CATEGORY = 8
PRICE_SIGMA = 0.6
# Weights of the parts of an item vector (each part a unit vector): a direction shared by the
# whole catalog (text embeddings all sit in one cone), the category, the sub-cluster (the kind
# of product), a "waterproof" direction for items that say so, and the item's own noise.
# Cosine similarity comes out near 0.6 within a sub-cluster, 0.35 within a category, 0.15
# across categories: close to what a sentence model gives for product texts.
W_GLOBAL, W_CATEGORY, W_SUBCLUSTER, W_WATERPROOF, W_NOISE = 0.35, 0.45, 0.45, 0.25, 0.6


@dataclass(frozen=True)
class Catalog:
    """A catalog as columns: what numpy filters on and what Redis receives are the same data."""

    vectors: np.ndarray  # (n, DIM) float32, unit rows
    category: np.ndarray  # (n,) int index into CATEGORIES
    subcluster: np.ndarray  # (n,) int, within the category
    brand: np.ndarray  # (n,) int index into BRANDS
    price: np.ndarray  # (n,) float64, 2 decimals
    rating: np.ndarray  # (n,) float64, 1 decimal
    in_stock: np.ndarray  # (n,) bool
    waterproof: np.ndarray  # (n,) bool: the description contains the word "waterproof"
    names: list[str]
    descriptions: list[str]
    centroids: np.ndarray  # (categories, subclusters, DIM) float32, before noise

    @property
    def size(self) -> int:
        return len(self.price)


def random_unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return normalize_rows(rng.standard_normal((*shape, DIM), dtype=np.float32))


def brand_popularity() -> np.ndarray:
    """Zipf-like: a few brands carry most of the catalog, as in real stores."""
    weights = 1.0 / np.arange(1, len(BRANDS) + 1) ** 0.9
    return weights / weights.sum()


def make_centroids(rng: np.random.Generator) -> np.ndarray:
    """One composite centre per (category, sub-cluster): global + category + sub-cluster parts."""
    shared = random_unit(rng, ())
    categories = random_unit(rng, (len(CATEGORIES),))
    subclusters = random_unit(rng, (len(CATEGORIES), SUBCLUSTERS_PER_CATEGORY))
    return (W_GLOBAL * shared + W_CATEGORY * categories[:, None, :] + W_SUBCLUSTER * subclusters).astype(np.float32)


def make_vectors(
    rng: np.random.Generator,
    centroids: np.ndarray,
    waterproof_direction: np.ndarray,
    category: np.ndarray,
    subcluster: np.ndarray,
    waterproof: np.ndarray,
    chunk: int = 20_000,
) -> np.ndarray:
    """Chunked so that 100k x 384 never needs float64 temporaries of the whole catalog."""
    out = np.empty((len(category), DIM), dtype=np.float32)
    for start in range(0, len(category), chunk):
        part = slice(start, start + chunk)
        base = centroids[category[part], subcluster[part]]
        base = base + W_WATERPROOF * waterproof[part, None] * waterproof_direction
        out[part] = normalize_rows(base + W_NOISE * random_unit(rng, (len(base),)))
    return out


def make_texts(
    rng: np.random.Generator, category: np.ndarray, subcluster: np.ndarray, brand: np.ndarray, waterproof: np.ndarray
) -> tuple[list[str], list[str]]:
    """Names and descriptions from a small vocabulary; the noun follows the sub-cluster, so
    text and vector agree. "waterproof" appears exactly where the flag says so."""
    n = len(category)
    adjectives = rng.integers(0, len(ADJECTIVES), (n, 2))
    materials = rng.integers(0, len(MATERIALS), n)
    phrases = rng.integers(0, len(PHRASES), n)
    names, descriptions = [], []
    for i in range(n):
        nouns = CATEGORIES[category[i]][3]
        noun = nouns[subcluster[i] % len(nouns)]
        first, second = ADJECTIVES[adjectives[i, 0]], ADJECTIVES[adjectives[i, 1]]
        names.append(f"{BRANDS[brand[i]]} {first.title()} {noun.title()}")
        words = [first, "waterproof"] if waterproof[i] else [first]
        descriptions.append(
            f"A {' '.join(words)} {MATERIALS[materials[i]]} {noun} {PHRASES[phrases[i]]}. "
            f"{second.capitalize()} and easy to care for."
        )
    return names, descriptions


def make_catalog(n: int, seed: int) -> Catalog:
    """Seeded: the same n and seed give the same catalog, so runs compare."""
    rng = np.random.default_rng(seed)
    centroids = make_centroids(rng)
    waterproof_direction = random_unit(rng, ())
    category = rng.choice(len(CATEGORIES), n, p=CATEGORY_WEIGHTS / CATEGORY_WEIGHTS.sum())
    subcluster = rng.integers(0, SUBCLUSTERS_PER_CATEGORY, n)
    brand = rng.choice(len(BRANDS), n, p=brand_popularity())
    medians = np.array([c[1] for c in CATEGORIES])
    price = np.maximum(1.0, np.round(rng.lognormal(np.log(medians[category]), PRICE_SIGMA), 2))
    # Ratings skew high: most products sit between 3.5 and 5.
    rating = np.round(np.clip(5.0 - rng.gamma(1.5, 0.5, n), 0.0, 5.0), 1)
    in_stock = rng.random(n) >= 0.10
    waterproof = rng.random(n) < np.array([c[2] for c in CATEGORIES])[category]
    vectors = make_vectors(rng, centroids, waterproof_direction, category, subcluster, waterproof)
    names, descriptions = make_texts(rng, category, subcluster, brand, waterproof)
    return Catalog(
        vectors, category, subcluster, brand, price, rating, in_stock, waterproof, names, descriptions, centroids
    )


def catalog_summary(catalog: Catalog) -> dict[str, Any]:
    return {
        "items": catalog.size,
        "categories": len(CATEGORIES),
        "brands": len(BRANDS),
        "in_stock_share": round(float(catalog.in_stock.mean()), 4),
        "waterproof_share": round(float(catalog.waterproof.mean()), 4),
        "price_median": round(float(np.median(catalog.price)), 2),
        "rating_mean": round(float(catalog.rating.mean()), 2),
    }


def product_dict(catalog: Catalog, i: int) -> dict[str, Any]:
    """One product in the shape RedisRecommender takes (see tests/integration/conftest.py make_products)."""
    return {
        "id": str(i),
        "name": catalog.names[i],
        "description": catalog.descriptions[i],
        "category": CATEGORIES[catalog.category[i]][0],
        "brand": BRANDS[catalog.brand[i]],
        "price": float(catalog.price[i]),
        "rating": float(catalog.rating[i]),
        "in_stock": bool(catalog.in_stock[i]),
        "embedding": catalog.vectors[i],
    }


# --- queries and filters --------------------------------------------------------------------


@dataclass(frozen=True)
class FilterSpec:
    """One query's filter, in a form both Redis (kwargs) and numpy (a mask) can apply."""

    category: int | None = None
    brand: int | None = None
    in_stock: bool = False
    price: tuple[float, float] | None = None
    waterproof: bool = False

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.category is not None:
            out["category"] = CATEGORIES[self.category][0]
        if self.brand is not None:
            out["brand"] = BRANDS[self.brand]
        if self.in_stock:
            out["in_stock_only"] = True
        if self.price is not None:
            out["min_price"], out["max_price"] = self.price
        if self.waterproof:
            out["text_match"] = "waterproof"
        return out

    def mask(self, catalog: Catalog) -> np.ndarray | None:
        """None when nothing filters (numpy then scores every row without a copy)."""
        mask = None
        for part in self._parts(catalog):
            mask = part if mask is None else mask & part
        return mask

    def _parts(self, catalog: Catalog) -> Iterator[np.ndarray]:
        if self.category is not None:
            yield catalog.category == self.category
        if self.brand is not None:
            yield catalog.brand == self.brand
        if self.in_stock:
            yield catalog.in_stock
        if self.price is not None:
            yield (catalog.price >= self.price[0]) & (catalog.price <= self.price[1])
        if self.waterproof:
            yield catalog.waterproof


@dataclass(frozen=True)
class Queries:
    vectors: np.ndarray  # (q, DIM) float32
    category: np.ndarray  # (q,) the category each query came from
    brand: np.ndarray  # (q,) a popular brand, for the selective filter


def make_queries(catalog: Catalog, count: int, seed: int) -> Queries:
    """Half are perturbed catalog items ("more like this"), half are fresh points around a
    sub-cluster centre ("a text query about this kind of product"): both near the data."""
    rng = np.random.default_rng(seed + 1)
    half = count // 2
    items = rng.integers(0, catalog.size, half)
    from_items = normalize_rows(catalog.vectors[items] + 0.5 * random_unit(rng, (half,)))
    cats = rng.choice(len(CATEGORIES), count - half, p=CATEGORY_WEIGHTS / CATEGORY_WEIGHTS.sum())
    subs = rng.integers(0, SUBCLUSTERS_PER_CATEGORY, count - half)
    from_centres = normalize_rows(catalog.centroids[cats, subs] + W_NOISE * random_unit(rng, (count - half,)))
    return Queries(
        vectors=np.concatenate([from_items, from_centres]),
        category=np.concatenate([catalog.category[items], cats]),
        brand=rng.integers(0, 8, count),
    )


def price_band(category: int, low: float, high: float) -> tuple[float, float]:
    median = CATEGORIES[category][1]
    return round(median * low, 2), round(median * high, 2)


# Each case turns a query's category (and brand) into a filter. Filtering on the category the
# query came from is what a shopper does (a query about jackets, filtered to outerwear).
FILTER_CASES: dict[str, Callable[[int, int], FilterSpec]] = {
    "none": lambda c, b: FilterSpec(),
    "category": lambda c, b: FilterSpec(category=c),
    "cat+stock+price": lambda c, b: FilterSpec(category=c, in_stock=True, price=price_band(c, 0.6, 1.6)),
    "cat+stock+price+text": lambda c, b: FilterSpec(
        category=c, in_stock=True, price=price_band(c, 0.6, 1.6), waterproof=True
    ),
}
HYBRID_CASES: dict[str, Callable[[int, int], FilterSpec]] = {
    "selective (cat+brand+narrow price)": lambda c, b: FilterSpec(category=c, brand=b, price=price_band(c, 0.8, 1.25)),
    "broad (in stock only)": lambda c, b: FilterSpec(in_stock=True),
}


def specs_for(case: Callable[[int, int], FilterSpec], queries: Queries) -> list[FilterSpec]:
    return [case(int(c), int(b)) for c, b in zip(queries.category, queries.brand, strict=True)]
