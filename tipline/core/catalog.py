"""Every text the bot says, per language: gettext catalogs read with Babel.

The texts live in `tipline/locale/<language>/LC_MESSAGES/tipline.po`, one entry per text: `msgctxt` is
the text's key (what the code names), `msgid` the English text and `msgstr` the language's text. A
translator thus works from the English sentence in any PO editor (Poedit, Weblate), two texts that
read the same in English stay distinct by their key, and a changed English text shows up as such.
The files are read at start-up with `babel.messages.pofile.read_po` (no compiled .mo files, so
nothing to build at install time). A language must have every key with the same placeholders as
English (tests/test_catalogs.py checks it).

Texts are written for a scared person on a cheap phone: short, plain, and each fits in two SMS
segments once the settings are filled in (tests/test_segments.py checks every text in every
language, counted by the GSM-7/UCS-2 rules of core/segments.py). They never ask who the tipster is.
Placeholders: {agency}, {non_emergency}, {victim_services}, {ref}, {status}, {text}, {count}.

An agency may replace texts with its own (`TIPLINE_TEXTS_FILE`, see `load_overrides`): they are
checked at start-up and travel to `render` inside the agency's settings (`defaults`).
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from babel.messages.pofile import read_po

from tipline.core import segments

ENGLISH, SPANISH, PORTUGUESE, HAITIAN_CREOLE = "en", "es", "pt", "ht"  # stored per conversation; ISO 639-1
LANGUAGES = (ENGLISH, SPANISH, PORTUGUESE, HAITIAN_CREOLE)
DEFAULT_LANGUAGE = ENGLISH
# The agency name when none is configured. Each language has its own words for it ("agency_default"),
# so that a Spanish text never says "de the police department".
UNNAMED_AGENCY = "the police department"
MAX_SEGMENTS = 2  # every text the bot sends fits in this many SMS segments
DOMAIN = "tipline"
# Worst-case values for the placeholders the conversation fills in (a reference is always 8 characters;
# a count of photos is at most 10, Twilio's limit per message).
SAMPLE_PARAMS = {"ref": "T-7K3Q9X", "count": "10", "text": ""}


def _read_catalog(language: str) -> dict[str, str]:
    """One language's texts, by key, from its .po file."""
    po = resources.files("tipline").joinpath("locale", language, "LC_MESSAGES", f"{DOMAIN}.po")
    with po.open("rb") as handle:
        catalog = read_po(handle, locale=language, domain=DOMAIN)
    texts: dict[str, str] = {}
    for message in catalog:
        if not message.id or not isinstance(message.id, str) or not isinstance(message.string, str):
            continue  # the header, or a plural entry (the catalog has none)
        if message.context is None:
            raise ValueError(f"{language}: every entry needs a msgctxt (its key): {message.id[:40]!r}")
        texts[message.context] = message.string or message.id
    return texts


CATALOGS: dict[str, dict[str, str]] = {language: _read_catalog(language) for language in LANGUAGES}


def placeholders(template: str) -> set[str]:
    """The `{names}` a text uses."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@dataclass(frozen=True)
class Text:
    """A text to send, not yet rendered: a catalog key and its parameters."""

    key: str
    params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, key: str, **params: str) -> Text:
        return cls(key, tuple(sorted(params.items())))


def override_key(language: str, key: str) -> str:
    """Where an agency's own text for `key` sits in the `defaults` passed to `render`."""
    return f"{language}.{key}"


def _template(key: str, language: str, defaults: Mapping[str, str]) -> str:
    return defaults.get(override_key(language, key)) or CATALOGS[language][key]


def render(text: Text, language: str, defaults: Mapping[str, str]) -> str:
    """Render a Text in a language; `defaults` holds the agency settings (and its own texts).

    A parameter named `x_key` names another catalog entry, rendered in the same language as `x`.
    Without a configured agency name, {agency} is the language's own words for "the police".
    """
    language = language if language in CATALOGS else DEFAULT_LANGUAGE
    params = dict(defaults)
    if params.get("agency", "") in ("", UNNAMED_AGENCY):
        params["agency"] = _template("agency_default", language, defaults)
    for name, value in text.params:
        if name.endswith("_key"):
            params[name.removesuffix("_key")] = _template(value, language, defaults)
        else:
            params[name] = value
    return _template(text.key, language, defaults).format(**params)


def worst_case(key: str, language: str, defaults: Mapping[str, str]) -> str:
    """A text rendered with the longest values its placeholders take, to count its SMS segments.

    {status} is the longest status word of the language; {text} (a detective's reply) is left empty,
    since the console counts the reply itself.
    """
    statuses = [k for k in CATALOGS[language] if k.startswith("status_")]
    longest = max(statuses, key=lambda k: segments.count(_template(k, language, defaults)).units)
    params = {name: value for name, value in SAMPLE_PARAMS.items() if name != "status"}
    return render(Text.of(key, status_key=longest, **params), language, defaults)


def check_overrides(texts: Mapping[str, Mapping[str, str]], settings: Mapping[str, str]) -> dict[str, str]:
    """Validate an agency's texts ({language: {key: text}}); return them as `render` defaults.

    Raises ValueError naming the language and key of the first text that is unknown, uses other
    placeholders than the default text, or needs more than two SMS segments with these settings.
    """
    flat: dict[str, str] = {}
    for language, entries in texts.items():
        if language not in CATALOGS:
            raise ValueError(f"unknown language {language!r} (known: {', '.join(LANGUAGES)})")
        if not isinstance(entries, Mapping):
            raise ValueError(f"{language}: expected a table of key = text")
        for key, text in entries.items():
            name = override_key(language, key)
            if key not in CATALOGS[language]:
                raise ValueError(f"{name}: unknown text key")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{name}: the text must be a non-empty string")
            try:
                wanted, used = placeholders(CATALOGS[language][key]), placeholders(text)
                fields = list(string.Formatter().parse(text))
            except ValueError as error:
                raise ValueError(f"{name}: malformed placeholder ({error})") from None
            for _, field, spec, conversion in fields:
                # Plain {name} only: no {}, {0}, {agency.attr}, {agency[0]}, {agency:>999} or {agency!r}.
                if field is not None and (not field.isidentifier() or spec or conversion):
                    raise ValueError(f"{name}: placeholders are plain names in braces, such as {{agency}}")
            if used != wanted:
                missing, extra = sorted(wanted - used), sorted(used - wanted)
                raise ValueError(f"{name}: placeholders must be {sorted(wanted)} (missing {missing}, unknown {extra})")
            flat[name] = text
    rendered_with = {**settings, **flat}
    for name in flat:
        language, key = name.split(".", 1)
        count = segments.count(worst_case(key, language, rendered_with))
        if count.segments > MAX_SEGMENTS:
            raise ValueError(
                f"{name}: {count.segments} SMS segments ({count.units} {count.encoding} units) once filled in; "
                f"at most {MAX_SEGMENTS} are allowed"
            )
    return flat


def load_overrides(path: Path, settings: Mapping[str, str]) -> dict[str, str]:
    """Read and check an agency's texts file: TOML, one table per language, `key = "text"`."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    return check_overrides(data, settings)
