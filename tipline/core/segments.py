"""How many SMS segments a text costs: the GSM-7 / UCS-2 rules carriers and Twilio apply.

A text made only of characters of the GSM 03.38 default alphabet travels as GSM-7: 7 bits a
character, 160 characters in a single SMS. The characters of the extension table (`^ { } \\ [ ~ ] |
€` and form feed) take an escape first, so they count 2. One character outside both tables (an
accented `á`, a curly quote, an emoji) makes the whole message UCS-2: 16-bit code units, 70 in a
single SMS, and a character beyond the Basic Multilingual Plane (most emoji) counts 2 units.

A longer message is split into parts that each carry a 6-byte header (UDH): 153 septets or 67 code
units per part. A character is never split between parts (neither an escape pair nor a surrogate
pair), which is why `split` packs whole characters. static/console.js counts exactly the same way
(tests/test_segments.py checks both against the same examples).

`to_gsm` replaces the typographic characters a word processor or phone keyboard slips in (curly
quotes, dashes, ellipsis, non-breaking spaces) with their plain GSM-7 equivalents, so that one
pasted quote does not halve the room of a detective's reply (Twilio's "Smart Encoding" does the same
on its side, when enabled; doing it here makes the console's count true either way).
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7 = "GSM-7"
UCS2 = "UCS-2"

# GSM 03.38 default alphabet (0x1B, the escape to the extension table, is not a character).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

SINGLE = {GSM7: 160, UCS2: 70}  # units in a message sent as one SMS
PART = {GSM7: 153, UCS2: 67}  # units in each part of a longer (concatenated) message

# Typographic characters and their plain equivalents (each replacement is GSM-7).
GSM_EQUIVALENTS: dict[str, str] = {
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u00b4\u0060", "'"),  # ‘ ’ ‚ ‛ ′ ´ `
    **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb", '"'),  # “ ” „ ‟ ″ « »
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"),  # hyphens, dashes, minus
    "\u2026": "...",  # …
    **dict.fromkeys("\u00a0\u2007\u202f\u2002\u2003\u2009\u200a", " "),  # no-break and thin spaces
    **dict.fromkeys("\u00ad\u200b\u200c\u200d\u2060\ufeff", ""),  # soft hyphen, zero-width characters
}
_TRANSLATION = str.maketrans(GSM_EQUIVALENTS)


@dataclass(frozen=True)
class Count:
    """What a text costs as an SMS."""

    encoding: str  # GSM7 or UCS2
    characters: int  # as a person counts them (code points)
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int  # 0 for an empty text


def is_gsm7(text: str) -> bool:
    """True if every character is in the GSM-7 default alphabet or its extension table."""
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def encoding(text: str) -> str:
    return GSM7 if is_gsm7(text) else UCS2


def _units(ch: str, enc: str) -> int:
    if enc == GSM7:
        return 2 if ch in GSM7_EXTENSION else 1
    return 2 if ord(ch) > 0xFFFF else 1  # a surrogate pair in UTF-16


def count(text: str) -> Count:
    """The encoding, length and number of segments of `text` sent as one SMS message."""
    enc = encoding(text)
    units = sum(_units(ch, enc) for ch in text)
    if not text:
        segments = 0
    elif units <= SINGLE[enc]:
        segments = 1
    else:
        segments = 0
        room = 0
        for ch in text:  # whole characters only: an escape or surrogate pair is never split
            need = _units(ch, enc)
            if need > room:
                segments += 1
                room = PART[enc]
            room -= need
    return Count(enc, len(text), units, segments)


def segments(text: str) -> int:
    """The number of SMS segments `text` costs."""
    return count(text).segments


def to_gsm(text: str) -> str:
    """Curly quotes, dashes, ellipsis and special spaces replaced by plain GSM-7 equivalents.

    Only those: an accented letter or an emoji is the writer's meaning and is kept (the text then
    travels as UCS-2).
    """
    return text.translate(_TRANSLATION)
