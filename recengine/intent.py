"""Query understanding: what a typed query says about facets (a brand, a category, a price, stock,
a rating) and which of its words are left for the text match. Pure: the vocabulary (the
catalogue's own brands and categories) is read from the index by the caller and passed in.

Each understood facet becomes a filter, except the category, which becomes a boost: category words
are ordinary English ("top rated", "gear"), and a wrong category filter would empty a list that a
boost only reorders (bench/quality.py's text-only configuration measures both).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any

# Words that carry no meaning for a lexical match (the index keeps every word: STOPWORDS 0).
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "i",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "so",
        "that",
        "the",
        "this",
        "to",
        "was",
        "we",
        "with",
        "you",
        "your",
        "some",
        "something",
        "any",
        "anything",
        "looking",
        "want",
        "need",
        "get",
        "please",
        "new",
        "ideas",
        "idea",
        "stuff",
        "things",
        "thing",
    ]
)
_CHEAP_WORDS = ("cheap", "cheapest", "budget", "inexpensive", "affordable", "bargain")
_NUMBER = r"(\d+(?:[.,]\d+)?(?:e[+-]?\d+)?)"
_MONEY = rf"\$?\s*{_NUMBER}\s*(?:\$|dollars?|usd|bucks)?"
_RATING = re.compile(
    rf"(?:(?:rated|rating)\s+(?:at\s+least\s+|of\s+)?{_NUMBER}\s*(?:\+|stars?|and\s+up|or\s+more|&\s*up)*"
    rf"|(?:at\s+least\s+)?{_NUMBER}\s*(?:\+\s*)?stars?(?:\s*(?:and\s+up|or\s+more|&\s*up|and\s+above|\+))?)"
)
_RANGE = re.compile(rf"(?:between\s+)?{_MONEY}\s*(?:-|–|to|and)\s*{_MONEY}")
_MAX = re.compile(rf"(?:under|below|less\s+than|cheaper\s+than|at\s+most|up\s+to|max(?:imum)?|<)\s*{_MONEY}")
_MIN = re.compile(rf"(?:over|above|more\s+than|at\s+least|from|min(?:imum)?|>)\s*{_MONEY}")
_IN_STOCK = re.compile(r"\b(?:in[\s-]stock|available\s+now|ships\s+today|available\s+today)\b")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# "Top rated" asks for good products, not for the category "tops" nor for a stated minimum.
_PRAISE = re.compile(r"\b(?:top|highly|best|well)[\s-]rated\b")


def normalize(text: str) -> str:
    """Lower case, `&` as "and", every other non-alphanumeric run as one space."""
    return " ".join(_WORD.findall(text.lower().replace("&", " and ")))


def singular(word: str) -> str:
    """The crude singular that matches a catalogue's labels: accessories → accessory, bags → bag."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance, stopping early once every path exceeds `limit` (returns limit + 1)."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


# The most typos _typo_limit allows, however long the name.
_MAX_TYPOS = 2


def _typo_limit(length: int) -> int:
    """How many typos a name of this length may carry and still be recognised: none below 5
    letters (too many real words lie one letter from a short name), one up to 8, then two."""
    return 0 if length < 5 else 1 if length < 9 else 2


@dataclass(frozen=True)
class Vocabulary:
    """The catalogue's facet values as written, and the price below which a third of its
    products lie (what "cheap" means here; None when unknown)."""

    brands: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    cheap_price: float | None = None


@dataclass(frozen=True)
class Ignored:
    """A part of the query that was read but not used, and why."""

    text: str
    reason: str


@dataclass
class Understood:
    """What a query said: facet values (None: not said), the words left for the text match, and
    what was ignored. `matched` holds each facet's words as typed, for the page's chips."""

    brand: str | None = None
    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    in_stock_only: bool = False
    min_rating: float | None = None
    terms: tuple[str, ...] = ()
    ignored: list[Ignored] = field(default_factory=list)
    matched: dict[str, str] = field(default_factory=dict)

    def facets(self) -> dict[str, Any]:
        """The understood facets only, JSON-ready (what `understood` shows)."""
        values: dict[str, Any] = {
            "brand": self.brand,
            "category": self.category,
            "min_price": self.min_price,
            "max_price": self.max_price,
            "in_stock_only": self.in_stock_only or None,
            "min_rating": self.min_rating,
        }
        return {name: value for name, value in values.items() if value is not None}

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.facets(),
            "terms": list(self.terms),
            "ignored": [{"text": i.text, "reason": i.reason} for i in self.ignored],
            "phrases": {name: self.matched[name] for name in self.facets() if name in self.matched},
        }


def _amount(text: str) -> float | None:
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class _Reader:
    """One query being read: the normalised text with each consumed span blanked out."""

    def __init__(self, text: str) -> None:
        self.text = " " + text.lower().replace("&", " and ") + " "
        self.understood = Understood()

    def take(self, pattern: re.Pattern[str]) -> list[re.Match[str]]:
        found = list(pattern.finditer(self.text))
        for match in found:
            self.blank(match.start(), match.end())
        return found

    def blank(self, start: int, end: int) -> None:
        self.text = self.text[:start] + " " * (end - start) + self.text[end:]

    def ignore(self, text: str, reason: str) -> None:
        self.understood.ignored.append(Ignored(text.strip(), reason))


def _read_rating(reader: _Reader) -> None:
    for match in reader.take(_RATING):
        value = _amount(next(g for g in match.groups() if g is not None))
        if value is None or not 0 <= value <= 5:
            reader.ignore(match.group(0), "a rating is a number from 0 to 5")
            continue
        reader.understood.min_rating = value
        reader.understood.matched["min_rating"] = match.group(0).strip()


def _read_prices(reader: _Reader, vocabulary: Vocabulary) -> None:
    u = reader.understood
    for match in reader.take(_RANGE):
        low, high = _amount(match.group(1)), _amount(match.group(2))
        if low is None or high is None:
            reader.ignore(match.group(0), "not a finite price")
        elif low > high:
            reader.ignore(match.group(0), f"the lower price ({low:g}) is above the upper one ({high:g})")
        else:
            u.min_price, u.max_price = low, high
            u.matched["min_price"] = u.matched["max_price"] = match.group(0).strip()
    for pattern, name in ((_MAX, "max_price"), (_MIN, "min_price")):
        for match in reader.take(pattern):
            value = _amount(match.group(1))
            if value is None:
                reader.ignore(match.group(0), "not a finite price")
                continue
            setattr(u, name, value)
            u.matched[name] = match.group(0).strip()
    if u.min_price is not None and u.max_price is not None and u.min_price > u.max_price:
        reader.ignore(
            f"{u.matched.pop('min_price')} / {u.matched.pop('max_price')}",
            f"the lower price ({u.min_price:g}) is above the upper one ({u.max_price:g})",
        )
        u.min_price = u.max_price = None
    for word in _CHEAP_WORDS:
        for match in reader.take(re.compile(rf"\b{word}\b")):
            if u.max_price is not None:
                reader.ignore(match.group(0), "a price limit is already stated")
            elif vocabulary.cheap_price is None:
                reader.ignore(match.group(0), "the catalogue's prices are unknown")
            else:
                u.max_price = vocabulary.cheap_price
                u.matched["max_price"] = match.group(0)


def _name_variants(name: str) -> set[str]:
    """The ways a facet value may be typed: normalised, singular and plural, joined up, and
    without a company suffix ("Ridgeline Co" → "ridgeline")."""
    base = normalize(name)
    words = base.split()
    variants = {base, "".join(words)}
    if words:
        variants |= {" ".join([*words[:-1], singular(words[-1])]), " ".join([*words[:-1], singular(words[-1]) + "s"])}
    if len(words) > 1 and words[-1] in ("co", "inc", "ltd", "company", "brand", "brands"):
        variants.add(" ".join(words[:-1]))
    return {v for v in variants if v}


def _deletions(word: str, depth: int) -> set[str]:
    """`word` with up to `depth` characters deleted. Two strings within Levenshtein distance d of
    each other share such a string at depth d (a substitution is a deletion from each, an
    insertion a deletion from the other): the index _ValueLookup finds typo candidates by."""
    found, frontier = {word}, {word}
    for _ in range(depth):
        frontier = {w[:i] + w[i + 1 :] for w in frontier for i in range(len(w))}
        found |= frontier
    return found


@dataclass(frozen=True)
class _ValueLookup:
    """A vocabulary's values ready for one query's windows of words: every way of typing a value
    (its _name_variants) to the first value, in vocabulary order, that it names; and, for the
    values a typo may reach, their normalised names with the typos each allows, indexed by their
    deletions so that a window is compared with a few names, not with all of them."""

    exact: dict[str, int]
    typo_targets: dict[int, tuple[str, int]]
    by_deletion: dict[str, tuple[int, ...]]
    # Typed lengths within reach of some name: a window of any other length has no candidate.
    reachable_lengths: frozenset[int]

    def first_value(self, window: list[str], fuzzy: bool) -> int | None:
        """The vocabulary position of the first value the window names, exactly or (fuzzy) with
        the typos its length allows."""
        typed = " ".join(window)
        exact = [self.exact[form] for form in (typed, "".join(window)) if form in self.exact]
        best = min(exact, default=None)
        if fuzzy and len(typed) in self.reachable_lengths:
            candidates = {index for form in _deletions(typed, _MAX_TYPOS) for index in self.by_deletion.get(form, ())}
            for index in sorted(candidates):
                if best is not None and index >= best:
                    break
                target, limit = self.typo_targets[index]
                if edit_distance(typed, target, limit) <= limit:
                    best = index
                    break
        return best


@functools.lru_cache(maxsize=16)
def _lookup(values: tuple[str, ...]) -> _ValueLookup:
    """Built once per vocabulary, not for every window of every query: building the variants of
    every brand for every window, and an edit distance to each, made understanding cost 0.5-2.8 ms
    a query on the bundled catalogue's 8 brands (bench/README.md), and 18 ms with 500."""
    exact: dict[str, int] = {}
    typo_targets: dict[int, tuple[str, int]] = {}
    by_deletion: dict[str, list[int]] = {}
    for index, value in enumerate(values):
        for variant in _name_variants(value):
            exact.setdefault(variant, index)
        target = normalize(value)
        limit = _typo_limit(len(target))
        if limit:
            typo_targets[index] = (target, limit)
            for form in _deletions(target, limit):
                by_deletion.setdefault(form, []).append(index)
    reachable = frozenset(
        length
        for target, limit in typo_targets.values()
        for length in range(len(target) - limit, len(target) + limit + 1)
    )
    return _ValueLookup(exact, typo_targets, {form: tuple(indexes) for form, indexes in by_deletion.items()}, reachable)


def _find_value(words: list[str], values: tuple[str, ...], fuzzy: bool) -> tuple[str, int, int] | None:
    """The first value named by a run of the query's words: (value, first word, end word). Longer
    runs first, then earlier ones; within a run, the value that comes first in the vocabulary,
    whether typed exactly or (fuzzy) with a few typos."""
    lookup = _lookup(values)
    for size in (3, 2, 1):
        for start in range(len(words) - size + 1):
            index = lookup.first_value(words[start : start + size], fuzzy)
            if index is not None:
                return values[index], start, start + size
    return None


def understand(text: str, vocabulary: Vocabulary) -> Understood:
    """Read a query: rating, prices, stock, then a brand (misspellings allowed) and a category
    (exact, singular or plural). What is left, minus stop words, are the text-match terms."""
    reader = _Reader(text)
    if not _WORD.search(text):
        reader.ignore(text, "no words to understand or match")
        return reader.understood
    for match in reader.take(_PRAISE):
        reader.ignore(match.group(0), "no minimum rating stated")
    _read_rating(reader)
    _read_prices(reader, vocabulary)
    for match in reader.take(_IN_STOCK):
        reader.understood.in_stock_only = True
        reader.understood.matched["in_stock_only"] = match.group(0)
    u = reader.understood
    words = _WORD.findall(reader.text)
    for name, values, fuzzy in (("brand", vocabulary.brands, True), ("category", vocabulary.categories, False)):
        found = _find_value(words, values, fuzzy)
        if found is not None:
            value, start, end = found
            setattr(u, name, value)
            u.matched[name] = " ".join(words[start:end])
            words = words[:start] + words[end:]
    u.terms = tuple(dict.fromkeys(w for w in words if w not in STOP_WORDS and not w.isdigit()))
    dropped = [w for w in words if w in STOP_WORDS]
    if dropped:
        u.ignored.append(Ignored(" ".join(dict.fromkeys(dropped)), "too common to match on"))
    return u


def words_of(text: str) -> tuple[str, ...]:
    """A query's words for the text match when understanding is off: lower case, no stop words,
    each once."""
    return tuple(dict.fromkeys(w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS and not w.isdigit()))


def names_a_product(terms: tuple[str, ...], names: list[str]) -> bool:
    """Whether one of the query's words names a kind of product: it (or its singular) is the last
    word of a matching product's name, the word that says what the product is ("boots" in
    "Summit hiking boots"). Such a query is specific, and personalisation may not override it. A
    word elsewhere in a name only describes ("weekend" in "Weekend stretch chinos"): the query
    "something nice for the weekend" stays vague, and is personalised freely (bench/quality.py's
    sessions: taking any word of a name made it specific, and its shoppers stalled)."""
    wanted = {singular(term) for term in terms if len(term) > 2}
    return any((words := _WORD.findall(name.lower())) and singular(words[-1]) in wanted for name in names)
