"""An attribute-labelled product catalogue, with shopper queries whose graded relevance follows
from the attributes, for bench/quality.py.

Every product is drawn from attributes (category, sub-type, material, use, season, price band,
brand, waterproof or not) and written out as varied natural text. Queries are drawn from the same
attributes but phrased with the shopper's words ("puffy jacket", "trackies", "freezing weather")
rather than the catalogue's ("quilted puffer", "joggers", "sub-zero days"), so a query matches a
product by meaning, not by copying its words. The grade of a product for a query is computed from
the attributes alone (see `grade`), never from any search engine's output.

Everything is drawn from one `random.Random(seed)`: the same seed and size always give the same
products, texts and queries, byte for byte.

Run `.venv/bin/python -m bench.catalog_gen --products 5 --queries 5` to read a sample.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_SEED = 13
DEFAULT_PRODUCTS = 3000
DEFAULT_QUERIES = 240
STOCK_SHARE = 0.9


@dataclass(frozen=True)
class Phrasing:
    """How the catalogue writes an attribute value, and how a shopper asks for it."""

    product: tuple[str, ...]
    query: tuple[str, ...]


@dataclass(frozen=True)
class SubType:
    """One kind of product. `family` groups near substitutes (a parka for a puffer jacket)."""

    key: str
    category: str
    family: str
    nouns: Phrasing
    materials: tuple[str, ...]
    uses: tuple[str, ...]
    seasons: tuple[str, ...]
    price_range: tuple[float, float]
    waterproof_share: float = 0.0


MATERIALS: dict[str, Phrasing] = {
    "down": Phrasing(("goose down", "800-fill down", "responsibly sourced duck down"), ("down",)),
    "synthetic": Phrasing(("synthetic insulation", "recycled synthetic fill"), ("synthetic fill", "synthetic")),
    "nylon": Phrasing(("ripstop nylon", "tough nylon", "lightweight nylon"), ("nylon",)),
    "polyester": Phrasing(("recycled polyester", "technical polyester", "quick-dry polyester"), ("polyester",)),
    "fleece": Phrasing(("brushed fleece", "recycled fleece", "plush fleece"), ("fleece",)),
    "wool": Phrasing(("boiled wool", "lambswool", "heavy wool"), ("wool",)),
    "merino": Phrasing(("fine merino wool", "soft merino"), ("merino",)),
    "cashmere": Phrasing(("pure cashmere", "a cashmere blend"), ("cashmere",)),
    "cotton": Phrasing(("organic cotton", "brushed cotton", "heavyweight cotton"), ("cotton",)),
    "linen": Phrasing(("washed linen", "breezy linen"), ("linen",)),
    "denim": Phrasing(("selvedge denim", "rigid denim", "stretch denim"), ("denim",)),
    "leather": Phrasing(("full-grain leather", "vegetable-tanned leather", "smooth leather"), ("leather",)),
    "suede": Phrasing(("soft suede", "brushed suede"), ("suede",)),
    "canvas": Phrasing(("waxed canvas", "heavy canvas", "cotton canvas"), ("canvas",)),
    "mesh": Phrasing(("engineered mesh", "breathable mesh"), ("mesh",)),
    "rubber": Phrasing(("natural rubber", "vulcanised rubber"), ("rubber",)),
    "foam": Phrasing(("closed-cell foam", "dense foam"), ("foam",)),
    "steel": Phrasing(("stainless steel", "double-wall stainless steel"), ("steel", "stainless steel")),
    "aluminium": Phrasing(("anodised aluminium", "lightweight aluminium"), ("aluminum", "aluminium")),
    "titanium": Phrasing(("titanium", "ultralight titanium"), ("titanium",)),
    "polycarbonate": Phrasing(("impact-resistant polycarbonate", "tough polycarbonate"), ("plastic",)),
    "acetate": Phrasing(("hand-polished acetate", "plant-based acetate"), ("acetate",)),
}

USES: dict[str, Phrasing] = {
    "hiking": Phrasing(
        ("long day hikes", "weekend walks in the hills", "rocky mountain trails"), ("hiking", "going for hikes")
    ),
    "running": Phrasing(("tempo runs", "daily training miles", "early morning runs"), ("running", "jogging")),
    "commuting": Phrasing(
        ("the daily commute", "train rides into town", "the walk to the office"), ("commuting", "getting to work")
    ),
    "office": Phrasing(("meetings and client dinners", "a day at the desk"), ("work", "the office")),
    "skiing": Phrasing(("days on the slopes", "chairlift rides and powder runs"), ("skiing", "a ski trip")),
    "camping": Phrasing(("nights at the campsite", "car camping weekends"), ("camping", "a camping trip")),
    "travel": Phrasing(("long flights and city breaks", "weekend getaways"), ("travel", "traveling")),
    "lounging": Phrasing(("slow Sundays at home", "lazy evenings on the sofa"), ("lounging at home", "chilling out")),
    "climbing": Phrasing(("bouldering sessions", "days at the crag"), ("climbing", "rock climbing")),
    "cycling": Phrasing(("bike rides", "long rides on the road bike"), ("cycling", "biking")),
    "beach": Phrasing(("beach days", "afternoons by the sea"), ("the beach", "a beach holiday")),
    "gym": Phrasing(("gym sessions", "yoga classes and workouts"), ("the gym", "working out")),
}

# Query-side season phrases carry their own preposition ("in winter", "all year round").
SEASONS: dict[str, Phrasing] = {
    "winter": Phrasing(("frosty mornings", "sub-zero days", "snowy weeks"), ("in winter", "for freezing weather")),
    "summer": Phrasing(("heatwaves", "long sunny days", "hot afternoons"), ("in summer", "for hot weather")),
    "rainy": Phrasing(("wet spring days", "drizzly weeks", "sudden downpours"), ("on rainy days", "in wet weather")),
    "shoulder": Phrasing(("crisp autumn days", "cool spring evenings"), ("in autumn", "in the fall")),
    "all": Phrasing(("any time of year", "every season"), ("all year round", "for every season")),
}

CATEGORY_QUERY_NOUNS: dict[str, tuple[str, ...]] = {
    "outerwear": ("a jacket", "a coat"),
    "footwear": ("shoes", "footwear"),
    "tops": ("a top", "a shirt"),
    "bottoms": ("pants", "trousers"),
    "bags": ("a bag", "a pack"),
    "headwear": ("a hat", "headgear"),
    "accessories": ("accessories", "an accessory"),
    "camping": ("camping gear", "camp kit"),
}

CATEGORY_FEATURES: dict[str, tuple[str, ...]] = {
    "outerwear": ("an adjustable hood", "two zip hand pockets", "a dropped back hem", "elastic cuffs"),
    "footwear": ("a cushioned midsole", "a grippy outsole", "a padded collar", "a removable insole"),
    "tops": ("flatlock seams", "a relaxed fit", "a tailored fit", "ribbed cuffs"),
    "bottoms": ("a gusseted crotch", "zip pockets", "an elastic waist", "articulated knees"),
    "bags": ("padded shoulder straps", "a zip front pocket", "a grab handle", "compression straps"),
    "headwear": ("a soft sweatband", "an adjustable strap", "a packable shape"),
    "accessories": ("a snug fit", "reinforced seams", "a slim profile"),
    "camping": ("a carry sack", "a compact packed size", "a one-handed setup"),
}

BRANDS = (
    "Alder & Pine", "Bramblecote", "Cairnwell", "Duneline", "Elmstead", "Foxglove", "Greywether",
    "Hollowmere", "Ironleaf", "Juniper Field", "Kestrel Peak", "Larchmont", "Moorgate", "Nettlebed",
    "Oxbow", "Pennant", "Quarry Hill", "Rowan & Co", "Saltmarsh", "Thistledown",
)  # fmt: skip
MODEL_NAMES = (
    "Arden", "Basalt", "Cinder", "Delta", "Ember", "Fell", "Gale", "Heron", "Isle", "Jetty", "Kite",
    "Loch", "Marram", "Norther", "Orca", "Pike", "Quill", "Rook", "Skerry", "Tor", "Umber", "Vale",
    "Wren", "Yarrow", "Zephyr",
)  # fmt: skip

SUBTYPES: tuple[SubType, ...] = (
    # outerwear
    SubType("parka", "outerwear", "insulated jacket", Phrasing(("parka", "hooded parka", "long parka"), ("warm long coat", "parka")),
            ("down", "synthetic"), ("commuting", "hiking", "travel"), ("winter",), (180, 450), 0.3),
    SubType("puffer", "outerwear", "insulated jacket", Phrasing(("puffer jacket", "quilted puffer"), ("puffy jacket", "puffer coat")),
            ("down", "synthetic"), ("hiking", "travel", "commuting", "skiing"), ("winter",), (120, 380), 0.1),
    SubType("rain_jacket", "outerwear", "shell", Phrasing(("rain jacket", "rain shell", "storm shell"), ("raincoat", "rain mac")),
            ("nylon", "polyester"), ("hiking", "commuting", "travel", "cycling"), ("rainy",), (80, 320), 1.0),
    SubType("softshell", "outerwear", "shell", Phrasing(("softshell jacket", "stretch softshell"), ("soft shell", "stretchy jacket")),
            ("polyester", "nylon"), ("climbing", "hiking", "skiing"), ("shoulder", "all"), (90, 260)),
    SubType("windbreaker", "outerwear", "shell", Phrasing(("windbreaker", "wind shell", "packable wind jacket"), ("windcheater", "wind-resistant jacket")),
            ("nylon", "polyester"), ("running", "cycling", "hiking"), ("summer", "shoulder"), (45, 160)),
    SubType("fleece_jacket", "outerwear", "midlayer", Phrasing(("fleece jacket", "full-zip fleece"), ("fuzzy zip-up", "fleece")),
            ("fleece",), ("hiking", "camping", "lounging"), ("shoulder", "winter"), (40, 150)),
    SubType("overcoat", "outerwear", "coat", Phrasing(("overcoat", "topcoat", "tailored coat"), ("smart coat", "dress coat")),
            ("wool", "cashmere"), ("commuting", "office"), ("winter", "shoulder"), (150, 600)),
    # footwear
    SubType("hiking_boot", "footwear", "boots", Phrasing(("hiking boot", "backpacking boot", "trekking boot"), ("trail boots", "walking boots")),
            ("leather", "suede", "nylon"), ("hiking", "camping"), ("all", "shoulder"), (110, 320), 0.6),
    SubType("snow_boot", "footwear", "boots", Phrasing(("snow boot", "insulated winter boot"), ("winter boots", "snowy-weather boots")),
            ("rubber", "leather", "nylon"), ("commuting", "hiking"), ("winter",), (80, 260), 0.8),
    SubType("trail_shoe", "footwear", "running shoes", Phrasing(("trail running shoe", "trail runner"), ("off-road running shoes", "trail sneakers")),
            ("mesh", "nylon"), ("running", "hiking"), ("all", "summer", "rainy"), (90, 200), 0.3),
    SubType("road_shoe", "footwear", "running shoes", Phrasing(("road running shoe", "daily trainer"), ("running shoes", "jogging shoes")),
            ("mesh",), ("running", "gym"), ("all", "summer"), (70, 220)),
    SubType("sneaker", "footwear", "casual shoes", Phrasing(("low-top sneaker", "court sneaker", "lace-up sneaker"), ("casual shoes", "everyday kicks")),
            ("leather", "canvas", "suede"), ("commuting", "travel", "office"), ("all", "summer"), (50, 180)),
    SubType("sandal", "footwear", "summer shoes", Phrasing(("sport sandal", "strap sandal", "slide sandal"), ("sandals", "flip flops")),
            ("leather", "rubber", "nylon"), ("beach", "travel", "hiking"), ("summer",), (25, 120)),
    SubType("slipper", "footwear", "indoor shoes", Phrasing(("slipper", "house slipper", "moccasin slipper"), ("house shoes", "slippers")),
            ("wool", "suede", "fleece"), ("lounging",), ("winter", "all"), (20, 90)),
    SubType("loafer", "footwear", "dress shoes", Phrasing(("penny loafer", "loafer", "derby shoe"), ("dress shoes", "smart shoes")),
            ("leather", "suede"), ("office", "travel"), ("all",), (80, 280)),
    # tops
    SubType("tee", "tops", "tees", Phrasing(("t-shirt", "crew-neck tee", "pocket tee"), ("tshirt", "basic tee")),
            ("cotton", "merino", "polyester", "linen"), ("travel", "running", "lounging", "gym"), ("summer", "all"), (15, 70)),
    SubType("base_layer", "tops", "thermals", Phrasing(("base layer", "thermal top", "long-sleeve base layer"), ("thermals", "thermal underwear")),
            ("merino", "polyester"), ("skiing", "hiking", "running"), ("winter",), (30, 130)),
    SubType("sweater", "tops", "knits", Phrasing(("sweater", "crewneck jumper", "cable-knit sweater"), ("jumper", "knitted pullover")),
            ("wool", "cashmere", "cotton", "merino"), ("office", "lounging", "travel"), ("winter", "shoulder"), (45, 320)),
    SubType("hoodie", "tops", "sweats", Phrasing(("hoodie", "pullover hoodie", "zip hoodie"), ("hooded sweatshirt", "hoody")),
            ("cotton", "fleece"), ("lounging", "gym", "travel"), ("shoulder", "all"), (35, 120)),
    SubType("shirt", "tops", "shirts", Phrasing(("button-down shirt", "oxford shirt", "collared shirt"), ("dress shirt", "work shirt")),
            ("cotton", "linen"), ("office", "travel"), ("all", "summer"), (35, 140)),
    SubType("tank", "tops", "tees", Phrasing(("tank top", "sleeveless training top", "racerback tank"), ("vest top", "singlet")),
            ("polyester", "cotton"), ("running", "gym", "beach"), ("summer",), (12, 55)),
    # bottoms
    SubType("hiking_pants", "bottoms", "outdoor pants", Phrasing(("hiking pants", "trekking trousers", "trail pants"), ("walking trousers", "outdoor trousers")),
            ("nylon", "polyester", "canvas"), ("hiking", "climbing", "travel"), ("all", "summer", "shoulder"), (45, 150), 0.1),
    SubType("rain_pants", "bottoms", "outdoor pants", Phrasing(("rain pants", "overtrousers", "storm pants"), ("rain trousers", "wet-weather pants")),
            ("nylon", "polyester"), ("hiking", "cycling", "commuting"), ("rainy",), (40, 180), 1.0),
    SubType("ski_pants", "bottoms", "snow pants", Phrasing(("ski pants", "snow pants", "insulated bibs"), ("salopettes", "snowboard trousers")),
            ("polyester", "nylon"), ("skiing",), ("winter",), (90, 350), 0.9),
    SubType("jeans", "bottoms", "casual pants", Phrasing(("jeans", "five-pocket jeans", "slim jeans"), ("denims", "pair of jeans")),
            ("denim",), ("commuting", "travel", "lounging"), ("all",), (40, 220)),
    SubType("chinos", "bottoms", "casual pants", Phrasing(("chinos", "twill trousers"), ("khakis", "smart trousers")),
            ("cotton", "linen"), ("office", "travel"), ("all", "summer"), (40, 140)),
    SubType("shorts", "bottoms", "shorts", Phrasing(("shorts", "cargo shorts", "walk shorts"), ("short trousers", "pair of shorts")),
            ("cotton", "nylon", "polyester", "linen"), ("beach", "hiking", "running", "travel"), ("summer",), (20, 90)),
    SubType("leggings", "bottoms", "active pants", Phrasing(("leggings", "high-rise tights"), ("yoga pants", "gym tights")),
            ("polyester", "merino"), ("gym", "running"), ("all", "winter"), (25, 110)),
    SubType("joggers", "bottoms", "sweats", Phrasing(("joggers", "sweatpants", "track pants"), ("trackies", "sweats")),
            ("cotton", "fleece"), ("lounging", "gym", "travel"), ("all", "shoulder"), (25, 100)),
    # bags
    SubType("daypack", "bags", "backpacks", Phrasing(("daypack", "small backpack", "24-liter pack"), ("day bag", "rucksack for the day")),
            ("nylon", "polyester", "canvas"), ("hiking", "travel", "commuting"), ("all",), (35, 160), 0.3),
    SubType("backpacking_pack", "bags", "backpacks", Phrasing(("backpacking pack", "65-liter pack", "expedition pack"), ("big rucksack", "multi-day backpack")),
            ("nylon", "polyester"), ("hiking", "camping"), ("all",), (130, 380), 0.2),
    SubType("laptop_bag", "bags", "work bags", Phrasing(("laptop backpack", "laptop messenger", "work bag"), ("computer bag", "laptop case")),
            ("canvas", "leather", "nylon", "polyester"), ("commuting", "office", "travel"), ("all",), (45, 260), 0.3),
    SubType("duffel", "bags", "travel bags", Phrasing(("duffel bag", "holdall", "weekender"), ("gym bag", "overnight bag")),
            ("canvas", "nylon", "leather", "polyester"), ("travel", "gym", "camping"), ("all",), (40, 300), 0.3),
    SubType("tote", "bags", "everyday bags", Phrasing(("tote bag", "shopper tote", "market tote"), ("shopping bag", "carryall")),
            ("canvas", "cotton", "leather"), ("commuting", "beach", "travel"), ("all", "summer"), (15, 180)),
    SubType("dry_bag", "bags", "travel bags", Phrasing(("dry bag", "roll-top dry sack"), ("kayak bag", "paddling bag")),
            ("polyester", "nylon"), ("beach", "camping", "travel"), ("summer", "all"), (12, 60), 1.0),
    SubType("hip_pack", "bags", "everyday bags", Phrasing(("hip pack", "waist pack", "sling bag"), ("bum bag", "fanny pack")),
            ("nylon", "polyester", "canvas"), ("running", "travel", "hiking"), ("all", "summer"), (18, 80), 0.2),
    # headwear
    SubType("beanie", "headwear", "warm hats", Phrasing(("beanie", "knit hat", "cuffed beanie"), ("woolly hat", "toque")),
            ("wool", "merino", "cashmere", "fleece"), ("skiing", "commuting", "hiking"), ("winter",), (12, 90)),
    SubType("sun_hat", "headwear", "sun hats", Phrasing(("sun hat", "wide-brim hat", "bucket hat"), ("hat for the sun", "brimmed hat")),
            ("cotton", "nylon", "linen"), ("beach", "hiking", "travel"), ("summer",), (15, 80)),
    SubType("cap", "headwear", "sun hats", Phrasing(("baseball cap", "six-panel cap", "peaked cap"), ("ball cap", "snapback")),
            ("cotton", "polyester", "mesh"), ("running", "travel", "beach"), ("summer", "all"), (12, 50), 0.1),
    # accessories
    SubType("gloves", "accessories", "handwear", Phrasing(("gloves", "insulated gloves", "touchscreen gloves"), ("winter gloves", "warm mitts")),
            ("leather", "wool", "fleece", "nylon"), ("skiing", "commuting", "cycling"), ("winter",), (15, 120), 0.4),
    SubType("scarf", "accessories", "neckwear", Phrasing(("scarf", "knitted scarf", "wrap scarf"), ("neck warmer", "muffler")),
            ("wool", "cashmere", "merino", "cotton"), ("commuting", "travel"), ("winter", "shoulder"), (15, 200)),
    SubType("sunglasses", "accessories", "eyewear", Phrasing(("sunglasses", "polarized sunglasses", "sport sunglasses"), ("shades", "sunnies")),
            ("polycarbonate", "acetate", "titanium"), ("running", "cycling", "beach", "skiing"), ("summer", "all"), (20, 250)),
    SubType("socks", "accessories", "socks", Phrasing(("socks", "crew socks", "cushioned socks"), ("pair of socks", "sock pack")),
            ("merino", "wool", "cotton", "polyester"), ("hiking", "running", "skiing", "lounging"), ("all", "winter"), (8, 35)),
    # camping
    SubType("tent", "camping", "shelter", Phrasing(("tent", "two-person tent", "dome tent"), ("camping shelter", "tent")),
            ("nylon", "polyester"), ("camping", "hiking"), ("all", "summer", "shoulder"), (90, 600), 0.8),
    SubType("sleeping_bag", "camping", "sleep system", Phrasing(("sleeping bag", "mummy bag", "camp quilt"), ("sleeping sack", "sleep sack")),
            ("down", "synthetic"), ("camping", "hiking"), ("winter", "summer", "shoulder"), (50, 450), 0.2),
    SubType("sleeping_pad", "camping", "sleep system", Phrasing(("sleeping pad", "sleeping mat", "air mattress"), ("camping mattress", "roll mat")),
            ("nylon", "foam"), ("camping", "hiking"), ("all",), (25, 200)),
    SubType("stove", "camping", "cooking", Phrasing(("camp stove", "canister stove", "backpacking stove"), ("camping cooker", "portable burner")),
            ("steel", "titanium", "aluminium"), ("camping", "hiking"), ("all",), (25, 180)),
    SubType("headlamp", "camping", "lighting", Phrasing(("headlamp", "head torch"), ("head light", "head-mounted flashlight")),
            ("aluminium", "polycarbonate"), ("camping", "running", "hiking"), ("all",), (15, 110), 0.5),
    SubType("lantern", "camping", "lighting", Phrasing(("lantern", "camp lantern", "LED lantern"), ("camp light", "tent light")),
            ("aluminium", "polycarbonate", "steel"), ("camping",), ("all",), (15, 90), 0.3),
    SubType("bottle", "camping", "hydration", Phrasing(("water bottle", "insulated bottle", "flask"), ("drinks bottle", "thermos")),
            ("steel", "aluminium", "polycarbonate"), ("hiking", "gym", "commuting", "travel"), ("all",), (10, 55)),
    SubType("camp_chair", "camping", "furniture", Phrasing(("camp chair", "folding chair"), ("portable seat", "camping seat")),
            ("aluminium", "steel", "polyester"), ("camping", "beach"), ("summer", "all"), (25, 160)),
)  # fmt: skip
SUBTYPES_BY_KEY = {subtype.key: subtype for subtype in SUBTYPES}
CATEGORIES = tuple(dict.fromkeys(subtype.category for subtype in SUBTYPES))
PRICE_BANDS = ("budget", "mid", "premium")

OPENERS = (
    "{Article} {noun} made from {material}, with {feature}.",
    "This {noun} is built from {material} and finished with {feature}.",
    "{Material} {noun} with {feature}.",
    "Cut from {material}, this {noun} comes with {feature}.",
    "Our {noun} in {material}, with {feature} for everyday comfort.",
)
USE_SENTENCES = (
    "Made for {use}.",
    "A solid pick for {use}.",
    "It comes into its own on {use}.",
    "Designed with {use} in mind.",
)
SEASON_SENTENCES = (
    "Ideal for {season}.",
    "Comfortable through {season}.",
    "A good companion for {season}.",
    "Ready for {season}.",
)
WATERPROOF_SENTENCES = (
    "Fully waterproof, with sealed seams.",
    "A waterproof build keeps the wet out.",
    "It is waterproof, so a soaking is no problem.",
)
BAND_SENTENCES = {
    "budget": ("Great value for the price.", "An easy-on-the-wallet option.", "Simple and affordable."),
    "mid": ("",),
    "premium": ("Premium construction throughout.", "Finished to a high standard and built to last for years."),
}
BAND_QUERY_WORDS = {"budget": ("cheap", "affordable", "budget"), "premium": ("high-end", "premium", "top-quality")}
GENERIC_VAGUE_QUERIES = (
    "gift ideas",
    "something nice for the weekend",
    "what should I get next",
    "stuff for my next trip",
    "I need some new things",
    "treat myself",
)


def price_band_edges(subtype: SubType) -> tuple[float, float]:
    """The budget/mid and mid/premium prices: thirds of the sub-type's range on a log scale,
    as shoppers think of price in ratios ("twice as much"), not in dollars."""
    low, high = subtype.price_range
    ratio = high / low
    return round(low * ratio ** (1 / 3), 2), round(low * ratio ** (2 / 3), 2)


def price_band(subtype: SubType, price: float) -> str:
    budget_edge, premium_edge = price_band_edges(subtype)
    if price <= budget_edge:
        return "budget"
    return "premium" if price > premium_edge else "mid"


def _shop_price(rng: random.Random, low: float, high: float) -> float:
    """Log-uniform in the range, then a shop price: whole dollars ending in 9 (or .99 under 20)."""
    raw = math.exp(rng.uniform(math.log(low), math.log(high)))
    if raw < 20:
        return max(round(math.floor(raw) + 0.99, 2), 1.99)
    return float(max(int(raw // 10) * 10 + 9, 19))


def _article(word: str) -> str:
    return "An" if word[0].lower() in "aeiou" else "A"


def _describe(rng: random.Random, subtype: SubType, attributes: dict[str, Any]) -> tuple[str, str]:
    """(name, description) from the attributes: the words vary, the attributes always show."""
    noun = rng.choice(subtype.nouns.product)
    material = rng.choice(MATERIALS[attributes["material"]].product)
    opener = rng.choice(OPENERS).format(
        Article=_article(noun),
        noun=noun,
        material=material,
        Material=material[0].upper() + material[1:],
        feature=rng.choice(CATEGORY_FEATURES[subtype.category]),
    )
    middle = [
        rng.choice(USE_SENTENCES).format(use=rng.choice(USES[attributes["use"]].product)),
        rng.choice(SEASON_SENTENCES).format(season=rng.choice(SEASONS[attributes["season"]].product)),
    ]
    rng.shuffle(middle)
    sentences = [opener, *middle]
    if attributes["waterproof"]:
        sentences.insert(rng.randint(1, len(sentences)), rng.choice(WATERPROOF_SENTENCES))
    band_sentence = rng.choice(BAND_SENTENCES[attributes["price_band"]])
    if band_sentence and rng.random() < 0.5:
        sentences.append(band_sentence)
    short_material = MATERIALS[attributes["material"]].query[0]
    with_material = rng.random() < 0.5 and short_material not in noun
    name = f"{rng.choice(MODEL_NAMES)} {short_material + ' ' if with_material else ''}{noun}"
    return name, " ".join(sentences)


def generate_catalog(n: int = DEFAULT_PRODUCTS, seed: int = DEFAULT_SEED) -> list[dict[str, Any]]:
    """n products, each with the usual product fields plus `attributes` (the ground truth)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = random.Random(seed)
    products = []
    for i in range(n):
        subtype = SUBTYPES[i % len(SUBTYPES)] if i < len(SUBTYPES) else rng.choice(SUBTYPES)
        price = _shop_price(rng, *subtype.price_range)
        attributes = {
            "category": subtype.category,
            "subtype": subtype.key,
            "family": subtype.family,
            "material": rng.choice(subtype.materials),
            "use": rng.choice(subtype.uses),
            "season": rng.choice(subtype.seasons),
            "price_band": price_band(subtype, price),
            "brand": rng.choice(BRANDS),
            "waterproof": rng.random() < subtype.waterproof_share,
        }
        name, description = _describe(rng, subtype, attributes)
        products.append(
            {
                "id": f"g{i:05d}",
                "name": name,
                "description": description,
                "category": subtype.category,
                "brand": attributes["brand"],
                "price": price,
                "rating": round(min(5.0, max(1.0, rng.gauss(4.2, 0.45))), 1),
                "in_stock": rng.random() < STOCK_SHARE,
                "attributes": attributes,
            }
        )
    return products


def grade(attributes: dict[str, Any], price: float, query: dict[str, Any]) -> int:
    """The graded relevance of one product for one derived query, from attributes alone.

    - Hard limits the shopper stated (category, brand, a price limit) must hold, or 0.
    - 2: the product is of the asked-for kind (the query's head: a sub-type, a category or a use)
      and has every other attribute asked for (material, use, season, waterproof).
    - 1: an acceptable substitute: the right sub-type missing exactly one other attribute, or a
      sub-type of the same family with every other attribute (a parka for a puffy jacket).
    - 0 otherwise.
    """
    want = query["attributes"]
    limits = query["filters"]
    if "category" in limits and attributes["category"] != limits["category"]:
        return 0
    if "brand" in limits and attributes["brand"] != limits["brand"]:
        return 0
    if "max_price" in limits and price > limits["max_price"]:
        return 0
    if "min_price" in limits and price < limits["min_price"]:
        return 0
    head_kind = query["head"]
    soft = {name: value for name, value in want.items() if name != head_kind}
    misses = sum(1 for name, value in soft.items() if attributes[name] != value)
    if attributes[head_kind] == want[head_kind]:
        if misses == 0:
            return 2
        if misses == 1 and head_kind == "subtype":
            return 1
        return 0
    if head_kind == "subtype" and attributes["family"] == SUBTYPES_BY_KEY[want["subtype"]].family and misses == 0:
        return 1
    return 0


def _round_up(value: float, step: int = 5) -> int:
    return int(math.ceil(value / step) * step)


def _draw_query(rng: random.Random, template: str, products: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One query of the given template, built around a product drawn from the catalogue, so
    that at least that product fully matches."""
    anchor = rng.choice(products)["attributes"]
    subtype = SUBTYPES_BY_KEY[anchor["subtype"]]
    noun = rng.choice(subtype.nouns.query)
    use_words = rng.choice(USES[anchor["use"]].query)
    season_words = rng.choice(SEASONS[anchor["season"]].query)
    material_words = rng.choice(MATERIALS[anchor["material"]].query)
    head, want, filters, must_have = "subtype", {"subtype": anchor["subtype"]}, {"category": anchor["category"]}, None
    if template == "type":
        text = noun
    elif template == "type+season":
        text = rng.choice(("{n} {s}", "looking for {n} {s}", "{n}, {s}")).format(n=noun, s=season_words)
        want["season"] = anchor["season"]
    elif template == "type+material":
        text = rng.choice(("{m} {n}", "{n} made of {m}")).format(n=noun, m=material_words)
        want["material"] = anchor["material"]
    elif template == "type+use":
        text = rng.choice(("{n} for {u}", "{n} that work for {u}", "need {n} for {u}")).format(n=noun, u=use_words)
        want["use"] = anchor["use"]
    elif template == "type+waterproof":
        text = rng.choice(("waterproof {n}", "{n}, must be waterproof", "a waterproof {n} please")).format(n=noun)
        want["waterproof"] = True
        must_have = "waterproof"
    elif template == "type+price":
        band = rng.choice(("budget", "premium"))
        budget_edge, premium_edge = price_band_edges(subtype)
        if band == "budget" and rng.random() < 0.5:
            limit = _round_up(budget_edge)
            text = rng.choice(("{n} under ${p}", "{n} for less than ${p}")).format(n=noun, p=limit)
            filters["max_price"] = limit
        elif band == "budget":
            text = f"{rng.choice(BAND_QUERY_WORDS['budget'])} {noun}"
            filters["max_price"] = _round_up(budget_edge)
        else:
            text = f"{rng.choice(BAND_QUERY_WORDS['premium'])} {noun}"
            filters["min_price"] = int(premium_edge // 5 * 5)
    elif template == "type+brand":
        text = rng.choice(("{b} {n}", "{n} by {b}")).format(n=noun, b=anchor["brand"])
        filters["brand"] = anchor["brand"]
    elif template == "category+use":
        head, want = "category", {"category": anchor["category"], "use": anchor["use"]}
        category_words = rng.choice(CATEGORY_QUERY_NOUNS[anchor["category"]])
        text = rng.choice(("{c} for {u}", "looking for {c} for {u}")).format(c=category_words, u=use_words)
    elif template == "use+season":
        head, want, filters = "use", {"use": anchor["use"], "season": anchor["season"]}, {}
        text = rng.choice(("stuff for {u} {s}", "what do I need for {u} {s}", "kit for {u} {s}")).format(
            u=use_words, s=season_words
        )
    else:
        raise ValueError(f"unknown query template {template!r}")
    return {
        "query": text,
        "kind": template,
        "head": head,
        "attributes": want,
        "filters": filters,
        "must_have": must_have,
    }


QUERY_TEMPLATES = (
    "type",
    "type+season",
    "type+material",
    "type+use",
    "type+waterproof",
    "type+price",
    "type+brand",
    "category+use",
    "use+season",
)


def derive_queries(
    products: Sequence[dict[str, Any]], n: int = DEFAULT_QUERIES, seed: int = DEFAULT_SEED
) -> list[dict[str, Any]]:
    """n distinct queries with graded relevance over `products` (only grades above 0 are kept).

    Templates take turns, so every kind is equally represented; a drawn query whose text repeats
    an earlier one is drawn again.
    """
    rng = random.Random(seed + 1)
    queries: list[dict[str, Any]] = []
    seen: set[str] = set()
    waterproof_subtypes = {s.key for s in SUBTYPES if 0 < s.waterproof_share < 1}
    pool = {
        # "waterproof" means something only for sub-types that come both ways.
        "type+waterproof": [p for p in products if p["attributes"]["subtype"] in waterproof_subtypes],
    }
    attempts = 0
    while len(queries) < n:
        attempts += 1
        if attempts > 50 * n:
            raise ValueError(f"could not draw {n} distinct queries from {len(products)} products")
        template = QUERY_TEMPLATES[len(queries) % len(QUERY_TEMPLATES)]
        query = _draw_query(rng, template, pool.get(template) or products)
        if query["query"] in seen:
            continue
        relevance = {p["id"]: g for p in products if (g := grade(p["attributes"], p["price"], query))}
        if not any(g == 2 for g in relevance.values()):
            continue
        seen.add(query["query"])
        queries.append({"id": f"gq{len(queries):04d}", **query, "relevance": relevance})
    return queries


def catalog_checksum(products: Sequence[dict[str, Any]]) -> str:
    """sha256 over the canonical JSON of the products (attributes included)."""
    digest = hashlib.sha256()
    for product in products:
        digest.update(json.dumps(product, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print a sample of the generated catalogue and queries.")
    parser.add_argument("--products", type=int, default=5, help="products to print (from a catalogue of --size)")
    parser.add_argument("--queries", type=int, default=5, help="queries to print")
    parser.add_argument("--size", type=int, default=DEFAULT_PRODUCTS, help="catalogue size")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    if args.size < 1 or args.products < 0 or args.queries < 0:
        parser.error("--size must be at least 1 and --products/--queries not negative")
    products = generate_catalog(args.size, args.seed)
    for product in products[: args.products]:
        print(json.dumps(product, ensure_ascii=False))
    for query in derive_queries(products, args.queries, args.seed):
        grades = list(query["relevance"].values())
        print(f"{query['kind']:16} {query['query']!r}: {grades.count(2)} wanted, {grades.count(1)} acceptable")
    print(f"checksum {catalog_checksum(products)}")


if __name__ == "__main__":
    main()
