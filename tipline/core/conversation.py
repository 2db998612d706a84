"""The tip-intake conversation: a pure state machine shared by every channel.

`step(conversation, inbound, context)` returns the next conversation, the texts to send and the
effects for the shell (services/intake.py) to apply. It reads no clock, no database and no randomness:
the shell passes in what it needs (the tip's status, a fresh reference), so every path is a table test.

`HANDLERS` holds one handler per intent of a message. `TRANSITIONS` lists the state changes they and
`expire` make, and `mermaid()` draws them: README.md shows that drawing, and the tests produce every
transition from an example message, so the drawing, the table and the code cannot drift apart.

Keywords work in every state and only as a whole message (case-insensitive), like carriers'.
A message made only of greeting words ("Good evening", "Hi, I want to report something") greets;
it is never taken as the tip. Before a tip is begun, the words of a message also set the language
(`guess_language`, a word-list guesser over en/es/pt/ht); after that only ES/EN/PT/HT change it.
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

from tipline.core.catalog import DEFAULT_LANGUAGE, ENGLISH, HAITIAN_CREOLE, LANGUAGES, PORTUGUESE, SPANISH, Text
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
    (State.AWAIT_WHERE, State.SUBMITTED, "place / SKIP, the time already said (right now)"),
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
    PORTUGUESE = "pt"
    HAITIAN_CREOLE = "ht"
    GREETING = "greeting"
    TEXT = "text"


# Carriers' opt-out words (Twilio's list, including Advanced Opt-Out's REVOKE/OPTOUT). CANCEL is one
# of them, which is why dropping a draft is DISCARD.
STOP_WORDS = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout"})
START_WORDS = frozenset({"start", "unstop", "yes"})
KEYWORDS: dict[str, Intent] = {
    **dict.fromkeys(STOP_WORDS, Intent.STOP),
    **dict.fromkeys(START_WORDS, Intent.START),
    # The keywords each language's texts offer (en, es, pt, ht), folded: "ÈD" is "ed".
    **dict.fromkeys(("help", "info", "ayuda", "ajuda", "ede"), Intent.HELP),
    **dict.fromkeys(("new", "nuevo", "nueva", "novo", "nouvo"), Intent.NEW),
    **dict.fromkeys(("discard", "descartar", "jete"), Intent.DISCARD),
    **dict.fromkeys(("status", "estado", "eta"), Intent.STATUS),
    **dict.fromkeys(("forget", "olvidar", "esquecer", "bliye"), Intent.FORGET),
    **dict.fromkeys(("skip", "saltar", "omitir", "pular", "sote"), Intent.SKIP),
    **dict.fromkeys(("done", "listo", "pronto", "fini"), Intent.DONE),
    **dict.fromkeys(("en", "english", "ingles"), Intent.ENGLISH),
    **dict.fromkeys(("es", "espanol", "spanish"), Intent.SPANISH),
    **dict.fromkeys(("pt", "portugues", "portuguese"), Intent.PORTUGUESE),
    **dict.fromkeys(("ht", "kreyol", "creole", "haitian"), Intent.HAITIAN_CREOLE),
    **dict.fromkeys(
        ("hi", "hello", "hey", "tip", "hola", "buenas", "denuncia", "oi", "ola", "bonjou"), Intent.GREETING
    ),
}


def _wordlist(text: str) -> frozenset[str]:
    return frozenset(text.split())


# A message made only of these words greets or announces a tip without telling it yet ("Hi, I want
# to report something", "Buenas tardes", "Bonswa, mwen vle fè yon denonsyasyon"): it gets the
# welcome, and does not become the tip's description. Folded (no accents), per language.
GREETING_WORDS = _wordlist(
    """
    hi hello hey hiya yo good morning afternoon evening night day there anyone anybody someone is this
    the tip line i im m want wanna would like to report make give a an something crime please can could
    you need help have got here ok okay
    hola buenas buenos buen tardes noches dias dia alo oiga quiero quisiera queria necesito denunciar
    reportar hacer poner una un algo denuncia por favor hay alguien ahi me puede pueden ayudar ayuda con
    oi ola bom boa tarde noite quero preciso fazer uma um alguma coisa alguem ai tem
    bonjou bonswa mwen vle fe yon denonsyasyon denonse rapote bagay tanpri gen moun la ou ka ede sak pase
    d ll for anonymous anonymously confidential info information whats up sup police
    disculpe disculpa oye saludos dar informacion tengo reporte esto es anonimo anonima anonimamente
    policia gustaria
    gostaria de tudo bem e isso informacao pode podem voce voces ajudar
    bonjour bonsoir salut eske sa anonim ta renmen rapo enfomasyon lapolis bay
    """
)
MAX_GREETING_WORDS = 12
HINT_MARGIN = 2  # more words of another language than of the app's, for the words to win over it

# Words that tell a language, for guessing it from a first message: greetings and the most common
# short words. Folded. A word of two languages counts for both; ties go to the first of LANGUAGES.
LANGUAGE_WORDS: dict[str, frozenset[str]] = {
    ENGLISH: _wordlist(
        """
        the a an is are was were i im you he she it its there theres they we with and at in on my his her
        what where when who hi hello hey good morning evening afternoon night want report something
        someone somebody man woman guy has have gun now right help me near house car street of to this
        that selling sells drugs corner behind school anyone please can happening into breaking outside
        yo knife shooting shot shots stabbed bleeding whats up sup hiya d ll scared anonymous
        """
    ),
    SPANISH: _wordlist(
        """
        el la los las un una es esta estan hay con y en mi su que donde cuando hola buenas buenos tardes
        noches dias quiero queria denunciar reportar algo alguien hombre mujer tiene pistola ahora mismo
        ayuda calle del por para pero muy vecino esquina vendiendo drogas robando casa al se lo le esto eso
        ayudenme ayudame gracias carro frente detras escuela armado
        me te yo tu ya no si vi fue quien son estoy tengo tienen ahi aqui alo buen oye saludos disculpe
        necesito hacer gustaria pueden puede ayudar robo robaron disparando tiroteo pelea amenaza
        siguiendo informacion anonimo policia reporte
        """
    ),
    PORTUGUESE: _wordlist(
        """
        o os as um uma e esta estao tem com em no na nos nas meu minha que onde quando oi ola bom boa dia
        tarde noite quero queria denunciar fazer denuncia alguma coisa alguem homem mulher arma agora
        ajuda rua do da dos das nao voce ele ela eles perto vendendo esquina drogas assaltando loja
        obrigado obrigada isso isto aqui mesmo ajude socorro carro frente escola armado
        me eu vi sei quem foi tudo bem ai ta tao voces pode podem ajudar ajudem gostaria tenho preciso gente
        cara vizinho roubo roubaram assalto furto trafico ladrao policia atirando tiroteio faca informacao
        anonimo violencia domestica
        """
    ),
    HAITIAN_CREOLE: _wordlist(
        """
        mwen m ou li nou yo gen ki se pa nan ak yon sa kote kile bonjou bonswa alo vle fe denonse
        denonsyasyon kounye kounyea zam kouto moun kay machin lari ede te ap k pou sou tanpri mesi nonm
        fanm vann dwog kwen kase an la anmwe sekou lekol bo
        sak pase yap kap map lap nap wi ed bezwen vole vol bandi zon katye danje lapolis konnen konn
        enfomasyon timoun vwazen madanm pale tire fizi revolve kadejak eske anonim bonjour bonsoir rapo
        """
    ),
}

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
URGENT_WORDS |= {
    # Portuguese and Haitian Creole
    "pistola",
    "faca",
    "tiro",
    "tiros",
    "tiroteio",
    "esfaqueado",
    "sangrando",
    "refem",
    "sequestro",
    "sequestrado",
    "morrendo",
    "estupro",
    "zam",
    "fizi",
    "revolve",
    "kouto",
    "tire",
    "senyen",
    "kidnape",
    "bonm",
    "kadejak",
    "atirando",
    "atiraram",
    "baleado",
    "baleada",
    "facada",
    "esfaquearam",
    "disparando",
    "dispararon",
    "balearon",
    "apunalaron",
    "apunalada",
    "stab",
    "blese",
}
# Words that say it is happening now: urgent, and the answer to "When did it happen?" (not asked then).
# Bare "agora" and "kounye a" also mean "now" in a story ("he sells drugs now"): they say the time
# only with a verb in progress (see `says_now`), but are urgent words all the same.
NOW_PHRASES = (
    "right now",
    "happening now",
    "going on now",
    "ahora mismo",
    "en este momento",
    "agora mesmo",
    "neste momento",
    "nesse momento",
    "kounye a menm",
    "kounyea menm",
    "kounya a menm",
)
NOW_WORDS = ("agora", "kounye a", "kounyea", "kounya a")
# Creole's progressive markers ("k ap kase": breaking), which with "kounye a" say it happens now.
PROGRESSIVE_MARKERS = frozenset({"ap", "yap", "kap", "map", "lap", "nap"})
URGENT_PHRASES = (
    *NOW_PHRASES,
    *NOW_WORDS,
    "nan danje",
    "corre perigo",
    "correndo perigo",
    "in danger",
    "going to kill",
    "gonna kill",
    "will kill",
    "en peligro",
    "va a matar",
    "van a matar",
    "em perigo",
    "vai matar",
    "an danje",
    "pral touye",
    "ap touye",
)
# A call for help means someone needs help now: it gets the 911 line too, whenever it comes.
HELP_PHRASES = (
    "help me",
    "help us",
    "please help",
    "need help",
    "ayudame",
    "ayudenme",
    "auxilio",
    "socorro",
    "me ajuda",
    "me ajude",
    "ajudem",
    "anmwe",
    "sekou",
    "ede m",
    "ede mwen",
    "ede nou",
    "bezwen ed",
    "preciso de ajuda",
    "precisamos de ajuda",
    "necesito ayuda",
    "necesitamos ayuda",
    "ayuda por favor",
)
# A message that says someone is there is a tip, however few its words ("someone is here").
PRESENCE_PHRASES = (
    "someone is",
    "somebody is",
    "someone here",
    "somebody here",
    "there is someone",
    "there s someone",
    "gen yon moun",
)
# Keywords told apart by their accent: "ÈD" asks for help in Creole, "Ed" is a name.
ACCENTED_KEYWORDS = {"èd": Intent.HELP}


def fold(text: str) -> str:
    """Case- and accent-insensitive form used for matching keywords and urgency words."""
    if text.isascii():
        return text.lower()  # no accents to take off, and ASCII's case folding is lower()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def words(text: str) -> list[str]:
    """The folded words of a text."""
    return re.findall(r"\w+", fold(text))


def _says(text: str, phrases: tuple[str, ...]) -> bool:
    """Whether the text holds one of the phrases as whole words."""
    padded = f" {' '.join(words(text))} "
    return any(f" {phrase} " in padded for phrase in phrases)


def classify(text: str) -> Intent:
    """Which intent a whole message expresses. Telegram-style `/command` forms count too."""
    accented = ACCENTED_KEYWORDS.get(text.strip().strip(".!¡¿?").strip().casefold())
    if accented is not None:
        return accented
    word = fold(text).strip().strip(".!¡¿?").strip()
    word = word.removeprefix("/").split("@", 1)[0]  # "/start@SomeBot" in groups
    intent = KEYWORDS.get(word)
    if intent is not None:
        return intent
    if not any(ch.isalnum() for ch in text):
        return Intent.GREETING  # "?" or an emoji is not a description yet
    if is_greeting(text):
        return Intent.GREETING
    return Intent.TEXT


def is_greeting(text: str) -> bool:
    """A greeting or an announcement of a tip with nothing of the tip in it yet."""
    found = words(text)
    if not 0 < len(found) <= MAX_GREETING_WORDS or not all(w in GREETING_WORDS for w in found):
        return False
    # Few and ordinary words can still be the tip: someone is there, someone needs help.
    return not (_says(text, PRESENCE_PHRASES) or is_urgent(text) or calls_for_help(text))


def language_scores(text: str) -> dict[str, int]:
    """How many of a message's words belong to each language."""
    found = set(words(text))
    return {language: len(found & LANGUAGE_WORDS[language]) for language in LANGUAGES}


def guess_language(text: str) -> str | None:
    """The language a message is most likely written in, from its words; None if nothing tells."""
    scores = language_scores(text)
    best = max(scores.values())
    return next(language for language, score in scores.items() if score == best) if best else None


def is_urgent(text: str) -> bool:
    return bool(set(words(text)) & URGENT_WORDS) or _says(text, URGENT_PHRASES)


def says_now(text: str) -> bool:
    """The message says it is happening now: "right now", "ahora mismo", "agora mesmo", "kounye a
    menm", or "agora" with a verb in progress ("estão assaltando agora"), or "kounye a" with a
    progressive marker ("k ap kase ... kounye a"); a bare "agora" may only mean "these days"."""
    if _says(text, NOW_PHRASES):
        return True
    if not _says(text, NOW_WORDS):
        return False
    found = words(text)
    in_progress = any(w.endswith(("ando", "endo", "indo")) and w != "quando" for w in found)
    return in_progress or bool(PROGRESSIVE_MARKERS.intersection(found))


def calls_for_help(text: str) -> bool:
    return _says(text, HELP_PHRASES)


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
    when_known: bool = False  # the draft's time is set already (the tipster said "right now")
    # The sender's latest submitted tip (reference, status), when the conversation holds none any more
    # (after NEW or DISCARD): what STATUS tells of. The shell looks it up for STATUS only.
    last_tip: tuple[str, TipStatus] | None = None


# Effects: what the shell must do, in order.
@dataclass(frozen=True)
class CreateDraft:
    reference: str
    what: str


@dataclass(frozen=True)
class SetField:
    name: str  # "what", "where" or "when"
    text: str
    said: bool = True  # the tipster's own words, shown in the thread; False: understood from other words


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


NOW = SetField("when", "now", said=False)  # the time, when the tipster said it is happening now


def _describe(conv: ConversationState, text: str, ctx: Context) -> Outcome:
    """The description: it starts a draft, or completes one begun with a photo alone."""
    now = (NOW,) if says_now(text) else ()
    if conv.state is State.AWAIT_WHAT and conv.tip_ref is not None:
        return Outcome(replace(conv, state=State.AWAIT_WHERE), (Text.of("ask_where"),), (SetField("what", text), *now))
    ref = ctx.new_reference
    return Outcome(
        replace(conv, state=State.AWAIT_WHERE, tip_ref=ref), (Text.of("ask_where"),), (CreateDraft(ref, text), *now)
    )


def _place(conv: ConversationState, text: str, ctx: Context) -> Outcome:
    """The place; the time is asked next unless the tipster said already that it is happening now."""
    assert conv.tip_ref is not None
    if says_now(text) or ctx.when_known:
        submitted = _submit(conv)
        now = (NOW,) if not ctx.when_known else ()
        return replace(submitted, effects=(SetField("where", text), *now, *submitted.effects))
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
    if not (is_urgent(text) or calls_for_help(text)):
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
    if conv.state is State.AWAIT_WHAT:  # welcomed already: ask for the tip, not the whole welcome again
        return Outcome(conv, (Text.of("ask_what"),))
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
    """The status of the tip being written or followed, else of the sender's last submitted tip."""
    if conv.tip_ref is not None and ctx.tip_status is not None:
        ref, status = conv.tip_ref, ctx.tip_status
    elif ctx.last_tip is not None:
        ref, status = ctx.last_tip
    else:
        return Outcome(conv, (Text.of("status_none"),))
    key = STATUS_KEYS.get(status, "status_received")
    return Outcome(conv, (Text.of("status", ref=ref, status_key=key),))


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
        if ctx.when_known:  # the tipster said it is happening now: nothing left to ask
            return _submit(conv)
        return Outcome(replace(conv, state=State.AWAIT_WHEN), (Text.of("ask_when"),))
    if conv.state is State.AWAIT_WHEN:
        return _submit(conv)
    if has_draft(conv):  # await_what after a photo: the description may wait
        return Outcome(replace(conv, state=State.AWAIT_WHERE), (Text.of("ask_where"),))
    if conv.state in (State.NEW, State.AWAIT_WHAT):
        return Outcome(replace(conv, state=State.AWAIT_WHAT), (Text.of("what_required"),))
    # After a tip is sent nothing is asked: "Pronto", "Listo" or "Done" answer a detective.
    return _text(conv, msg, ctx)


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
    Intent.PORTUGUESE: _switch_language(PORTUGUESE),
    Intent.HAITIAN_CREOLE: _switch_language(HAITIAN_CREOLE),
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
    return HANDLERS[intent](_first_language(conv, msg), msg, ctx)


def _first_language(conv: ConversationState, msg: Inbound) -> ConversationState:
    """Before a tip is begun, the language: the app's (Telegram's hint), else the message's words.

    A language chosen with ES/PT/HT is kept; after that first message the language changes only
    with a keyword.
    """
    if conv.tip_ref is not None or conv.state not in (State.NEW, State.AWAIT_WHAT):
        return conv
    if conv.language != DEFAULT_LANGUAGE:  # chosen already (ES, PT, HT, or a first message's words)
        return conv
    guessed = guess_language(msg.text)
    hint = msg.language_hint
    if conv.state is State.NEW and hint is not None and hint in LANGUAGES:
        # The app's language, unless the words clearly say another ("Hola, quiero denunciar algo"
        # from a phone set to English), not a word or two shared by many ("hi", "ok").
        scores = language_scores(msg.text)
        if guessed is not None and scores[guessed] - scores[hint] >= HINT_MARGIN:
            return replace(conv, language=guessed)
        return replace(conv, language=hint)
    return replace(conv, language=guessed) if guessed else conv


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
