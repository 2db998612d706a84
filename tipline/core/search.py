"""What a search looks for: the words of a text, normalised, and tip references typed in part.

Pure and deterministic, so the words indexed when a tip is written and the words of a detective's
query are cut the same way (services/search.py keys and stores them; this module never sees a key).

The choices, and why:
- Unicode NFKD, combining marks dropped, then casefold: "José", "JOSE" and "josé" are one word, as
  are "CAFÉ" and "cafe"; tipsters on cheap phones often cannot type accents, detectives rarely do.
- Apostrophes (straight or curly) join a word instead of splitting it, and a possessive "'s" goes:
  "dealer's" is "dealer", "don't" is "dont", "O'Neil" is "oneil" (typed either way, it matches).
- Every other character that is not a letter or a digit separates words: "AK-47" is "ak" and "47".
  Words joined by "-", ".", "/" or "," with no space are also indexed joined, and a query asks for
  the joined form: plates, phone numbers and house numbers are typed every way ("ABC-1234" and
  "ABC1234", "555-867-5309" and "5558675309", "1,200" and "1200" find each other).
- Single letters are dropped (they match almost everything); single digits are kept ("apt 5").
- A short list of English and Spanish stop words is dropped on both sides: they match nearly every
  tip, and leaving them out of the index also removes its most frequent tokens, the easiest start
  for frequency analysis of the blind index (README, "Search and what it leaks").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

MIN_WORD = 2
MAX_WORD = 40  # longer runs are no words a detective would type (a pasted link, a hash)
MAX_QUERY_WORDS = 12

_STOP_WORDS = """
    a an and are as at be but by for from has have he her his i in is it its me my of on or our she
    so than that the their them then there they this to was we were what when where which who
    with you your
    con de del el en es la las lo los me mi por que se su sus un una uno unos unas y ya
"""
STOP_WORDS = frozenset(_STOP_WORDS.split())

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_JOINED = re.compile(r"[^\W_]+(?:[-./,][^\W_]+)+")  # "abc-1234", "555.867.5309", "1,200", "12/b"
_JOINERS = str.maketrans("", "", "-./,")

# References (records.new_reference): "T-" and six of these characters.
REFERENCE_ALPHABET = frozenset("23456789ABCDEFGHJKMNPQRSTWXYZ")
REFERENCE_LENGTH = 6
MIN_BARE_PREFIX = 3  # "7K3" finds T-7K3Q9X; shorter bare prefixes would match a word like "ok" by chance
_REFERENCE = re.compile(r"^(T-?)?([0-9A-Z]+)$")


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _clean(word: str) -> str:
    if word.endswith("'s"):
        word = word[:-2]
    return word.replace("'", "")


def _keep(word: str) -> bool:
    return (len(word) >= MIN_WORD or word.isdigit()) and len(word) <= MAX_WORD and word not in STOP_WORDS


def _words(folded: str) -> list[str]:
    return [word for match in _WORD.finditer(folded) if _keep(word := _clean(match.group()))]


def _joined(folded: str) -> list[tuple[str, str]]:
    """Each run of words joined by "-", ".", "/" or ",": (the run as written, joined)."""
    return [(match.group(), match.group().translate(_JOINERS)) for match in _JOINED.finditer(folded)]


def words(text: str) -> list[str]:
    """The searchable words of a text, in order, repeats kept (callers take the set): each word, and
    each joined run also as one word."""
    folded = _fold(text)
    return _words(folded) + [joined for _, joined in _joined(folded) if _keep(joined)]


def distinct_words(texts: Iterable[str]) -> set[str]:
    """Every searchable word of some texts, once."""
    found: set[str] = set()
    for text in texts:
        found.update(words(text))
    return found


def query_words(query: str) -> list[str]:
    """The words a query asks for (all must match), once each, at most MAX_QUERY_WORDS. A joined run
    ("ABC-1234") asks for its joined form only, which a text has however it wrote the run."""
    folded = _fold(query)
    for run, joined in _joined(folded):
        folded = folded.replace(run, joined, 1)
    return list(dict.fromkeys(_words(folded)))[:MAX_QUERY_WORDS]


def reference_prefix(query: str) -> str | None:
    """The reference a query may name, as "T-" and the characters typed, or None.

    "T-7K3Q9X", "t-7k3", "7K3Q9X" and "7k3" all qualify; without "T-" at least MIN_BARE_PREFIX
    characters are needed, one of them a digit: "bmw", "car" or "gas" are words a detective
    searches for, not references. Characters that never occur in a reference (0, 1, I, L, O, U, V)
    mean the query is not one.
    """
    found = _reference(query)
    return found[0] if found is not None else None


def names_one_tip(query: str) -> bool:
    """Whether a query is plainly a reference, so that a single match may open the tip at once:
    typed with "T-" (or "T" and six characters), or all six characters of one."""
    found = _reference(query)
    return found is not None and (found[1] or len(found[0]) == 2 + REFERENCE_LENGTH)


def _reference(query: str) -> tuple[str, bool] | None:
    """(the reference prefix "T-...", whether it was marked with "T"), or None."""
    match = _REFERENCE.match(query.strip().upper())
    if match is None:
        return None
    marked, body = match.groups()
    if marked == "T" and not (len(body) == REFERENCE_LENGTH and set(body) <= REFERENCE_ALPHABET):
        # "TRUCK" is a word; "T7K3Q9X" (a reference typed without its hyphen) is not.
        body, marked = "T" + body, None
    if len(body) > REFERENCE_LENGTH or not set(body) <= REFERENCE_ALPHABET:
        return None
    if not marked and (len(body) < MIN_BARE_PREFIX or not any(c.isdigit() for c in body)):
        return None
    return "T-" + body, bool(marked)


def is_full_reference(prefix: str | None) -> bool:
    return prefix is not None and len(prefix) == 2 + REFERENCE_LENGTH
