"""The tip-intake conversation: a pure state machine shared by every channel.

`step(conversation, inbound, context)` returns the next conversation, the texts to send and the
effects for the shell (services/intake.py) to apply. It reads no clock, no database and no randomness:
the shell passes in what it needs (the tip's status, a fresh reference), so every path is a table test.

`HANDLERS` holds one handler per intent of a message. `TRANSITIONS` lists the state changes they and
`expire` make, and `mermaid()` draws them: README.md shows that drawing, and the tests produce every
transition from an example message, so the drawing, the table and the code cannot drift apart.

Keywords work in every state and only as a whole message (case-insensitive), like carriers'.
A photo's caption is content, never a keyword (except STOP and START as the carrier reports them).
A photo is content too: sent alone, it starts a draft (in await_what, which then holds a draft) or
joins the current one; the files themselves are fetched and cleaned later (attachments.py).
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from tipline.core.catalog import DEFAULT_LANGUAGE, ENGLISH, LANGUAGES, SPANISH, Text
from tipline.core.vocabulary import TipStatus


class State(enum.StrEnum):
    NEW = "new"
    AWAIT_WHAT = "await_what"
    AWAIT_WHERE = "await_where"
    AWAIT_WHEN = "await_when"
    SUBMITTED = "submitted"


Transition = tuple[State, State, str]  # from, to, what makes it happen

# Every state change of a conversation, as README.md draws it (see `mermaid`). A conversation starts
# in State.NEW (ConversationState's default).
TRANSITIONS: tuple[Transition, ...] = (
    (State.NEW, State.AWAIT_WHAT, "greeting"),
    (State.NEW, State.AWAIT_WHERE, "description"),
    (State.NEW, State.AWAIT_WHAT, "photo only (a draft with no description yet)"),
    (State.AWAIT_WHAT, State.AWAIT_WHERE, "description"),
    (State.AWAIT_WHERE, State.AWAIT_WHEN, "place / SKIP"),
    (State.AWAIT_WHEN, State.SUBMITTED, "time / SKIP"),
    (State.SUBMITTED, State.SUBMITTED, "follow-up"),
    (State.SUBMITTED, State.AWAIT_WHAT, "NEW"),
    (State.AWAIT_WHERE, State.NEW, "DISCARD"),
    (State.AWAIT_WHEN, State.NEW, "DISCARD"),
    (State.AWAIT_WHAT, State.NEW, "DISCARD"),
    (State.AWAIT_WHERE, State.SUBMITTED, "idle (submitted as it stands)"),
    (State.AWAIT_WHEN, State.SUBMITTED, "idle (submitted as it stands)"),
    (State.AWAIT_WHAT, State.NEW, "idle (no draft)"),
    (State.AWAIT_WHAT, State.SUBMITTED, "idle (photo draft submitted as it stands)"),
)


def mermaid() -> str:
    """TRANSITIONS as a Mermaid `stateDiagram-v2`, the text of README.md's diagram."""
    edges = (f"    {source} --> {target}: {label}" for source, target, label in TRANSITIONS)
    return "\n".join(("stateDiagram-v2", f"    [*] --> {State.NEW}", *edges)) + "\n"


class Intent(enum.StrEnum):
    HELP = "help"
    STOP = "stop"
    START = "start"
    NEW = "new"
    DISCARD = "discard"
    STATUS = "status"
    FORGET = "forget"
    SKIP = "skip"
    DONE = "done"
    ENGLISH = "en"
    SPANISH = "es"
    GREETING = "greeting"
    TEXT = "text"


# Carriers' opt-out words (Twilio's list, including Advanced Opt-Out's REVOKE/OPTOUT). CANCEL is one
# of them, which is why dropping a draft is DISCARD.
STOP_WORDS = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout"})
START_WORDS = frozenset({"start", "unstop", "yes"})
KEYWORDS: dict[str, Intent] = {
    **dict.fromkeys(STOP_WORDS, Intent.STOP),
    **dict.fromkeys(START_WORDS, Intent.START),
    "help": Intent.HELP,
    "info": Intent.HELP,
    "ayuda": Intent.HELP,
    "new": Intent.NEW,
    "nuevo": Intent.NEW,
    "nueva": Intent.NEW,
    "discard": Intent.DISCARD,
    "descartar": Intent.DISCARD,
    "status": Intent.STATUS,
    "estado": Intent.STATUS,
    "forget": Intent.FORGET,
    "olvidar": Intent.FORGET,
    "skip": Intent.SKIP,
    "saltar": Intent.SKIP,
    "omitir": Intent.SKIP,
    "done": Intent.DONE,
    "listo": Intent.DONE,
    "en": Intent.ENGLISH,
    "english": Intent.ENGLISH,
    "ingles": Intent.ENGLISH,
    "es": Intent.SPANISH,
    "espanol": Intent.SPANISH,
    "spanish": Intent.SPANISH,
    "hi": Intent.GREETING,
    "hello": Intent.GREETING,
    "hey": Intent.GREETING,
    "tip": Intent.GREETING,
    "hola": Intent.GREETING,
    "buenas": Intent.GREETING,
    "denuncia": Intent.GREETING,
}
SPANISH_GREETINGS = frozenset({"hola", "buenas", "denuncia", "ayuda"})

# Words that suggest someone is in danger now. Matched on whole words, accents ignored.
URGENT_WORDS = frozenset(
    {
        "weapon",
        "weapons",
        "gun",
        "guns",
        "knife",
        "shooting",
        "shot",
        "shots",
        "shooter",
        "stabbing",
        "stabbed",
        "bleeding",
        "hostage",
        "kidnapped",
        "kidnapping",
        "bomb",
        "overdose",
        "dying",
        "rape",
        "arma",
        "armas",
        "pistola",
        "cuchillo",
        "disparo",
        "disparos",
        "tiroteo",
        "balacera",
        "sangrando",
        "apunalado",
        "rehen",
        "secuestro",
        "secuestrado",
        "bomba",
        "muriendo",
        "violacion",
    }
)
URGENT_PHRASES = (
    "right now",
    "happening now",
    "in danger",
    "going to kill",
    "gonna kill",
    "will kill",
    "ahora mismo",
    "en peligro",
    "va a matar",
    "van a matar",
)


def fold(text: str) -> str:
    """Case- and accent-insensitive form used for matching keywords and urgency words."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def classify(text: str) -> Intent:
    """Which intent a whole message expresses. Telegram-style `/command` forms count too."""
    word = fold(text).strip().strip(".!¡¿?").strip()
    word = word.removeprefix("/").split("@", 1)[0]  # "/start@SomeBot" in groups
    intent = KEYWORDS.get(word)
    if intent is not None:
        return intent
    if not any(ch.isalnum() for ch in text):
        return Intent.GREETING  # "?" or an emoji is not a description yet
    return Intent.TEXT


def is_urgent(text: str) -> bool:
    folded = fold(text)
    words = set(re.findall(r"\w+", folded))
    return bool(words & URGENT_WORDS) or any(p in folded for p in URGENT_PHRASES)


@dataclass(frozen=True)
class ConversationState:
    """What the tip line remembers of one sender's conversation."""

    state: State = State.NEW
    language: str = DEFAULT_LANGUAGE
    tip_ref: str | None = None  # the draft being filled in, or the submitted tip follow-ups join


@dataclass(frozen=True)
class Inbound:
    """A tipster's message after the adapter removed everything identifying."""

    text: str
    media: int = 0  # attached files that may be photos (fetched and checked later)
    refused: str | None = None  # why attached files were refused at once (media.REASONS), if any were
    # The provider already classified the message (Twilio's OptOutType): trust it over our parse.
    provider_intent: Intent | None = None
    language_hint: str | None = None


@dataclass(frozen=True)
class Context:
    """Facts the shell looked up for this step."""

    opted_out: bool = False
    tip_status: TipStatus | None = None  # status of conversation.tip_ref, if any
    new_reference: str = ""  # a fresh, unused tip reference, in case this step creates a draft


# Effects: what the shell must do, in order.
@dataclass(frozen=True)
class CreateDraft:
    reference: str
    what: str


@dataclass(frozen=True)
class SetField:
    name: str  # "where" or "when"
    text: str


@dataclass(frozen=True)
class Submit:
    reference: str


@dataclass(frozen=True)
class FollowUp:
    reference: str
    text: str


@dataclass(frozen=True)
class Attach:
    """Attach the message's files to the conversation's tip (after the other effects)."""

    count: int


@dataclass(frozen=True)
class FlagUrgent:
    reference: str


@dataclass(frozen=True)
class DiscardDraft:
    reference: str


@dataclass(frozen=True)
class OptOut:
    pass


@dataclass(frozen=True)
class OptIn:
    pass


@dataclass(frozen=True)
class Forget:
    pass


Effect = CreateDraft | SetField | Submit | FollowUp | Attach | FlagUrgent | DiscardDraft | OptOut | OptIn | Forget


@dataclass(frozen=True)
class Outcome:
    conversation: ConversationState
    replies: tuple[Text, ...] = ()
    effects: tuple[Effect, ...] = field(default_factory=tuple)


DRAFT_STATES = (State.AWAIT_WHERE, State.AWAIT_WHEN)
PROMPTS = {
    State.NEW: Text.of("ask_what"),
    State.AWAIT_WHAT: Text.of("ask_what"),
    State.AWAIT_WHERE: Text.of("ask_where"),
    State.AWAIT_WHEN: Text.of("ask_when"),
}
# Tipsters learn whether their tip is received, under review or closed, never more.
STATUS_KEYS: dict[TipStatus, str] = {
    TipStatus.DRAFT: "status_draft",
    TipStatus.NEW: "status_received",
    TipStatus.IN_REVIEW: "status_review",
    TipStatus.ACTIONABLE: "status_review",
    TipStatus.CLOSED: "status_closed",
}


def has_draft(conv: ConversationState) -> bool:
    """A draft tip is open: always in await_where/await_when, in await_what after a photo alone."""
    return conv.tip_ref is not None and (conv.state in DRAFT_STATES or conv.state is State.AWAIT_WHAT)


def _submit(conv: ConversationState) -> Outcome:
    assert conv.tip_ref is not None
    return Outcome(
        replace(conv, state=State.SUBMITTED),
        (Text.of("submitted", ref=conv.tip_ref),),
        (Submit(conv.tip_ref),),
    )


def _flush_draft(conv: ConversationState) -> tuple[tuple[Effect, ...], tuple[Text, ...]]:
    """Before leaving a draft behind (NEW, STOP, FORGET), submit it: a tip is never lost."""
    if has_draft(conv):
        assert conv.tip_ref is not None
        return (Submit(conv.tip_ref),), (Text.of("submitted_as_is", ref=conv.tip_ref),)
    return (), ()


def _reprompt(conv: ConversationState) -> tuple[Text, ...]:
    """The question the conversation waits on, asked again (none once the tip is submitted)."""
    return (PROMPTS[conv.state],) if conv.state in PROMPTS else ()


def _received(count: int) -> Text:
    return Text.of("media_received_one") if count == 1 else Text.of("media_received_many", count=str(count))


# Content: what a message that is no keyword means depends only on the state. ------------------------


def _describe(conv: ConversationState, text: str, ctx: Context) -> Outcome:
    """The description: it starts a draft, or completes one begun with a photo alone."""
    if conv.state is State.AWAIT_WHAT and conv.tip_ref is not None:
        return Outcome(replace(conv, state=State.AWAIT_WHERE), (Text.of("ask_where"),), (SetField("what", text),))
    ref = ctx.new_reference
    return Outcome(
        replace(conv, state=State.AWAIT_WHERE, tip_ref=ref), (Text.of("ask_where"),), (CreateDraft(ref, text),)
    )


def _place(conv: ConversationState, text: str, ctx: Context) -> Outcome:
    assert conv.tip_ref is not None
    return Outcome(replace(conv, state=State.AWAIT_WHEN), (Text.of("ask_when"),), (SetField("where", text),))


def _time(conv: ConversationState, text: str, ctx: Context) -> Outcome:
    submitted = _submit(conv)
    return replace(submitted, effects=(SetField("when", text), *submitted.effects))


def _follow_up(conv: ConversationState, text: str, ctx: Context) -> Outcome:
    assert conv.tip_ref is not None
    return Outcome(conv, (Text.of("followup_added", ref=conv.tip_ref),), (FollowUp(conv.tip_ref, text),))


CONTENT: dict[State, Callable[[ConversationState, str, Context], Outcome]] = {
    State.NEW: _describe,
    State.AWAIT_WHAT: _describe,
    State.AWAIT_WHERE: _place,
    State.AWAIT_WHEN: _time,
    State.SUBMITTED: _follow_up,
}


def _content(conv: ConversationState, text: str, ctx: Context) -> Outcome:
    """A message that carries content: the description, the place, the time or a follow-up."""
    outcome = CONTENT[conv.state](conv, text, ctx)
    if not is_urgent(text):
        return outcome
    # Danger changes no step: the 911 reminder comes first, the flag right after the words are stored.
    ref = outcome.conversation.tip_ref
    assert ref is not None
    stored, *rest = outcome.effects
    return replace(outcome, replies=(Text.of("urgent"), *outcome.replies), effects=(stored, FlagUrgent(ref), *rest))


# Messages without words. ------------------------------------------------------------------------------


def _photos_only(conv: ConversationState, count: int, ctx: Context) -> Outcome:
    """Photos without words: they start a draft or join the tip being written or already sent."""
    received = _received(count)
    if conv.state in (State.NEW, State.AWAIT_WHAT) and conv.tip_ref is None:
        ref = ctx.new_reference
        return Outcome(
            replace(conv, state=State.AWAIT_WHAT, tip_ref=ref),
            (received, Text.of("ask_what_photo")),
            (CreateDraft(ref, ""), Attach(count)),
        )
    if conv.state is State.SUBMITTED and conv.tip_ref is not None:
        return Outcome(conv, (received, Text.of("followup_added", ref=conv.tip_ref)), (Attach(count),))
    prompt = Text.of("ask_what_photo") if conv.state is State.AWAIT_WHAT else PROMPTS[conv.state]
    return Outcome(conv, (received, prompt), (Attach(count),))


def _empty(conv: ConversationState, msg: Inbound) -> Outcome:
    """No words and no photo: a refused file (its refusal says it all), or an empty text."""
    if msg.refused:
        return Outcome(conv)
    if conv.state is State.NEW:
        return Outcome(replace(conv, state=State.AWAIT_WHAT), (Text.of("greeting"),))
    return Outcome(conv, (Text.of("empty"),))


# One handler per intent. --------------------------------------------------------------------------------

Handler = Callable[[ConversationState, Inbound, Context], Outcome]


def _text(conv: ConversationState, msg: Inbound, ctx: Context) -> Outcome:
    """Content, with the photos that came with it."""
    outcome = _content(conv, msg.text.strip(), ctx)
    if not msg.media:
        return outcome
    return replace(
        outcome, replies=(_received(msg.media), *outcome.replies), effects=(*outcome.effects, Attach(msg.media))
    )


def _greeting(conv: ConversationState, msg: Inbound, ctx: Context) -> Outcome:
    """Welcome a sender who has not begun a tip; once one is begun, "hi" is content."""
    if conv.state not in (State.NEW, State.AWAIT_WHAT) or has_draft(conv):
        return _text(conv, msg, ctx)
    if fold(msg.text).strip().strip("!.?¡¿") in SPANISH_GREETINGS and msg.language_hint is None:
        conv = replace(conv, language=SPANISH)
    return Outcome(replace(conv, state=State.AWAIT_WHAT), (Text.of("greeting"),))


def _stop(conv: ConversationState, msg: Inbound, ctx: Context) -> Outcome:
    """Opt out. Nothing more is sent (the carrier confirms the opt-out itself); an open draft is kept."""
    effects, _ = _flush_draft(conv)
    new_state = State.SUBMITTED if effects else conv.state
    return Outcome(replace(conv, state=new_state), (), (*effects, OptOut()))


def _start(conv: ConversationState, msg: Inbound, ctx: Context) -> Outcome:
    """Opt back in; from someone not opted out, "start" is a greeting and "yes" is just a word."""
    if ctx.opted_out:
        return Outcome(conv, (Text.of("opted_in"), *_reprompt(conv)), (OptIn(),))
    if fold(msg.text).strip().removeprefix("/") == "start":
        return _greeting(conv, msg, ctx)
    return _text(conv, msg, ctx)


def _help(conv: ConversationState, msg: Inbound, ctx: Context) -> Outcome:
    return Outcome(conv, (Text.of("help"),))


def _switch_language(language: str) -> Handler:
    def switch(conv: ConversationState, msg: Inbound, ctx: Context) -> Outcome:
        conv = replace(conv, language=language)
        prompt = _reprompt(conv) if conv.state is not State.NEW else ()
        return Outcome(conv, (Text.of("language_set"), *prompt))

    return switch


def _status(conv: ConversationState, msg: Inbound, ctx: Context) -> Outcome:
    if conv.tip_ref is None or ctx.tip_status is None:
        return Outcome(conv, (Text.of("status_none"),))
    key = STATUS_KEYS.get(ctx.tip_status, "status_received")
    return Outcome(conv, (Text.of("status", ref=conv.tip_ref, status_key=key),))


def _forget(conv: ConversationState, msg: Inbound, ctx: Context) -> Outcome:
    """Erase the return address; an open draft is submitted first and the tip stays with detectives."""
    effects, notes = _flush_draft(conv)
    if conv.tip_ref and (effects or conv.state is State.SUBMITTED):
        reply = Text.of("forgotten", ref=conv.tip_ref)
    else:
        reply = Text.of("forgotten_no_tip")
    return Outcome(ConversationState(language=conv.language), (*notes, reply), (*effects, Forget()))


def _new(conv: ConversationState, msg: Inbound, ctx: Context) -> Outcome:
    effects, notes = _flush_draft(conv)
    return Outcome(replace(conv, state=State.AWAIT_WHAT, tip_ref=None), (*notes, Text.of("new_tip")), effects)


def _discard(conv: ConversationState, msg: Inbound, ctx: Context) -> Outcome:
    """Drop an unsubmitted draft; a submitted tip is never touched."""
    if has_draft(conv) and conv.tip_ref:
        return Outcome(
            replace(conv, state=State.NEW, tip_ref=None), (Text.of("discarded"),), (DiscardDraft(conv.tip_ref),)
        )
    if conv.state is State.AWAIT_WHAT:
        return Outcome(replace(conv, state=State.NEW, tip_ref=None), (Text.of("discarded"),))
    return Outcome(conv, (Text.of("nothing_to_discard"),))


def _skip(conv: ConversationState, msg: Inbound, ctx: Context) -> Outcome:
    """Skip an optional question; the description is the one answer that cannot be skipped."""
    if conv.state is State.AWAIT_WHERE:
        return Outcome(replace(conv, state=State.AWAIT_WHEN), (Text.of("ask_when"),))
    if conv.state is State.AWAIT_WHEN:
        return _submit(conv)
    if has_draft(conv):  # await_what after a photo: the description may wait
        return Outcome(replace(conv, state=State.AWAIT_WHERE), (Text.of("ask_where"),))
    if conv.state in (State.NEW, State.AWAIT_WHAT):
        return Outcome(replace(conv, state=State.AWAIT_WHAT), (Text.of("what_required"),))
    return Outcome(conv, (Text.of("nothing_to_skip"),))


def _done(conv: ConversationState, msg: Inbound, ctx: Context) -> Outcome:
    """Submit a draft now; without one, DONE means SKIP."""
    return _submit(conv) if has_draft(conv) else _skip(conv, msg, ctx)


HANDLERS: dict[Intent, Handler] = {
    Intent.HELP: _help,
    Intent.STOP: _stop,
    Intent.START: _start,
    Intent.NEW: _new,
    Intent.DISCARD: _discard,
    Intent.STATUS: _status,
    Intent.FORGET: _forget,
    Intent.SKIP: _skip,
    Intent.DONE: _done,
    Intent.ENGLISH: _switch_language(ENGLISH),
    Intent.SPANISH: _switch_language(SPANISH),
    Intent.GREETING: _greeting,
    Intent.TEXT: _text,
}


def step(conv: ConversationState, msg: Inbound, ctx: Context) -> Outcome:
    """Advance one sender's conversation by one inbound message."""
    outcome = _step(conv, msg, ctx)
    if msg.refused and not (outcome.effects and isinstance(outcome.effects[-1], OptOut)):
        outcome = replace(outcome, replies=(Text.of(f"media_refused_{msg.refused}"), *outcome.replies))
    return outcome


def _step(conv: ConversationState, msg: Inbound, ctx: Context) -> Outcome:
    if msg.provider_intent is None and not msg.text.strip():
        return _photos_only(conv, msg.media, ctx) if msg.media else _empty(conv, msg)
    # A caption is content: "help" under a photo describes the photo, it does not ask for help.
    intent = msg.provider_intent or (Intent.TEXT if msg.media else classify(msg.text))
    if conv.state is State.NEW and conv.tip_ref is None and msg.language_hint in LANGUAGES:
        conv = replace(conv, language=msg.language_hint)
    return HANDLERS[intent](conv, msg, ctx)


def expire(conv: ConversationState) -> Outcome | None:
    """An idle conversation: submit a draft as it stands, drop an empty one. None if nothing to do."""
    if has_draft(conv) and conv.tip_ref:
        return Outcome(
            replace(conv, state=State.SUBMITTED),
            (Text.of("submitted_as_is", ref=conv.tip_ref),),
            (Submit(conv.tip_ref),),
        )
    if conv.state is State.AWAIT_WHAT:
        return Outcome(replace(conv, state=State.NEW, tip_ref=None))
    return None
