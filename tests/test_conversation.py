"""The intake conversation as a pure function: every keyword, in every state it matters."""

from __future__ import annotations

import re
import string

import pytest

from tipline.core import conversation as c
from tipline.core.catalog import CATALOGS, Text, render
from tipline.core.conversation import Context, ConversationState, Inbound, Intent, State
from tipline.core.vocabulary import TipStatus

REF = "T-ABCDEF"
NEXT = "T-NEWREF"
SETTINGS = {
    "agency": "Example City Police",
    "non_emergency": "555-0199",
    "victim_services": "the National Center for Victims of Crime, 1-855-484-2846",
}


def run(
    state: State,
    text: str,
    tip_ref: str | None = REF,
    opted_out: bool = False,
    tip_status: TipStatus | None = None,
    language: str = "en",
    **inbound: object,
) -> c.Outcome:
    conv = ConversationState(state, language, tip_ref if state not in (State.NEW, State.AWAIT_WHAT) else None)
    context = Context(opted_out=opted_out, tip_status=tip_status, new_reference=NEXT)
    return c.step(conv, Inbound(text=text, **inbound), context)


def keys(outcome: c.Outcome) -> list[str]:
    return [t.key for t in outcome.replies]


@pytest.mark.parametrize("text", ["hi", "Hi!", "TIP", "start", "/start", "hello", "?", "👋"])
def test_a_greeting_from_a_new_sender_gets_the_welcome(text: str) -> None:
    outcome = run(State.NEW, text)
    assert keys(outcome) == ["greeting"]
    assert outcome.conversation.state is State.AWAIT_WHAT
    assert outcome.effects == ()


def test_a_substantive_first_message_becomes_the_description() -> None:
    outcome = run(State.NEW, "Drug dealing at the corner of 5th and Main")
    assert outcome.effects == (c.CreateDraft(NEXT, "Drug dealing at the corner of 5th and Main"),)
    assert outcome.conversation == ConversationState(State.AWAIT_WHERE, "en", NEXT)
    assert keys(outcome) == ["ask_where"]


def test_the_full_path_what_where_when() -> None:
    where = run(State.AWAIT_WHERE, "Behind the school")
    assert where.effects == (c.SetField("where", "Behind the school"),)
    assert where.conversation.state is State.AWAIT_WHEN
    when = run(State.AWAIT_WHEN, "Last night around 11")
    assert when.effects == (c.SetField("when", "Last night around 11"), c.Submit(REF))
    assert when.conversation.state is State.SUBMITTED
    assert when.replies == (Text.of("submitted", ref=REF),)


@pytest.mark.parametrize(
    "state,expected_state,expected_key,effects",
    [
        (State.AWAIT_WHERE, State.AWAIT_WHEN, "ask_when", ()),
        (State.AWAIT_WHEN, State.SUBMITTED, "submitted", (c.Submit(REF),)),
        (State.AWAIT_WHAT, State.AWAIT_WHAT, "what_required", ()),
        (State.NEW, State.AWAIT_WHAT, "what_required", ()),
        (State.SUBMITTED, State.SUBMITTED, "followup_added", (c.FollowUp(REF, "SKIP"),)),  # nothing is asked
    ],
)
def test_skip(state: State, expected_state: State, expected_key: str, effects: tuple[c.Effect, ...]) -> None:
    outcome = run(state, "SKIP")
    assert outcome.conversation.state is expected_state
    assert keys(outcome) == [expected_key]
    assert outcome.effects == effects


def test_done_submits_a_draft_at_once() -> None:
    outcome = run(State.AWAIT_WHERE, "done")
    assert outcome.effects == (c.Submit(REF),)
    assert outcome.conversation.state is State.SUBMITTED


def test_after_submission_every_message_is_a_follow_up() -> None:
    outcome = run(State.SUBMITTED, "The car is a grey sedan")
    assert outcome.effects == (c.FollowUp(REF, "The car is a grey sedan"),)
    assert outcome.replies == (Text.of("followup_added", ref=REF),)


def test_hi_after_submission_is_a_follow_up_not_a_new_conversation() -> None:
    assert run(State.SUBMITTED, "hi").effects == (c.FollowUp(REF, "hi"),)


@pytest.mark.parametrize(
    "text", ["STOP", "stop", "Stop.", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"]
)
def test_every_carrier_opt_out_word_opts_out_and_says_nothing(text: str) -> None:
    outcome = run(State.SUBMITTED, text)
    assert outcome.effects == (c.OptOut(),)
    assert outcome.replies == ()


def test_stop_in_the_middle_of_a_draft_keeps_the_tip() -> None:
    outcome = run(State.AWAIT_WHEN, "STOP")
    assert outcome.effects == (c.Submit(REF), c.OptOut())
    assert outcome.replies == ()


def test_the_provider_classification_wins() -> None:
    # Twilio's Advanced Opt-Out may have custom keywords we do not know: OptOutType decides.
    outcome = run(State.SUBMITTED, "arrêtez", provider_intent=Intent.STOP)
    assert outcome.effects == (c.OptOut(),)


def test_stop_is_only_a_keyword_as_the_whole_message() -> None:
    outcome = run(State.SUBMITTED, "please stop the dealers")
    assert outcome.effects == (c.FollowUp(REF, "please stop the dealers"),)


def test_start_opts_back_in_and_reprompts() -> None:
    outcome = run(State.AWAIT_WHERE, "START", opted_out=True)
    assert outcome.effects == (c.OptIn(),)
    assert keys(outcome) == ["opted_in", "ask_where"]


def test_yes_from_someone_not_opted_out_is_just_a_word() -> None:
    assert run(State.AWAIT_WHERE, "yes").effects == (c.SetField("where", "yes"),)


@pytest.mark.parametrize("state", list(State))
def test_help_works_everywhere_and_changes_nothing(state: State) -> None:
    outcome = run(state, "HELP")
    assert keys(outcome) == ["help"]
    assert outcome.effects == ()
    assert outcome.conversation.state is state


def test_new_submits_the_open_draft_then_starts_over() -> None:
    outcome = run(State.AWAIT_WHERE, "NEW")
    assert outcome.effects == (c.Submit(REF),)
    assert keys(outcome) == ["submitted_as_is", "new_tip"]
    assert outcome.conversation == ConversationState(State.AWAIT_WHAT, "en", None)


def test_discard_drops_an_unsubmitted_draft() -> None:
    outcome = run(State.AWAIT_WHEN, "DISCARD")
    assert outcome.effects == (c.DiscardDraft(REF),)
    assert outcome.conversation.state is State.NEW


def test_discard_never_touches_a_submitted_tip() -> None:
    outcome = run(State.SUBMITTED, "discard")
    assert outcome.effects == ()
    assert keys(outcome) == ["nothing_to_discard"]


@pytest.mark.parametrize(
    "status,word",
    [
        (TipStatus.DRAFT, "not sent yet, we are waiting for your answer"),
        (TipStatus.NEW, "received"),
        (TipStatus.IN_REVIEW, "under review"),
        (TipStatus.ACTIONABLE, "under review"),
        (TipStatus.CLOSED, "closed"),
    ],
)
def test_status_says_received_under_review_or_closed_and_nothing_more(status: TipStatus, word: str) -> None:
    outcome = run(State.SUBMITTED, "STATUS", tip_status=status)
    assert render(outcome.replies[0], "en", SETTINGS) == f"Tip {REF}: {word}."


def test_status_has_a_word_for_every_tip_status() -> None:
    assert set(c.STATUS_KEYS) == set(TipStatus)


def test_status_without_a_tip() -> None:
    assert keys(run(State.NEW, "status")) == ["status_none"]


def test_forget_erases_and_says_the_tip_stays() -> None:
    outcome = run(State.SUBMITTED, "FORGET")
    assert outcome.effects == (c.Forget(),)
    assert outcome.replies == (Text.of("forgotten", ref=REF),)
    assert outcome.conversation == ConversationState(State.NEW, "en", None)


def test_forget_during_a_draft_submits_it_first() -> None:
    outcome = run(State.AWAIT_WHERE, "forget")
    assert outcome.effects == (c.Submit(REF), c.Forget())


@pytest.mark.parametrize(
    "text",
    [
        "A man has a gun outside the bar",
        "someone was stabbed",
        "he is bleeding",
        "it is happening RIGHT NOW",
        "hay un hombre con una pistola",
        "están disparando ahora mismo",
        "mi vecina está en peligro",
        "Tiroteo en la calle",
    ],
)
def test_danger_words_flag_urgent_and_remind_911_first(text: str) -> None:
    outcome = run(State.NEW, text)
    assert outcome.effects[:2] == (c.CreateDraft(NEXT, text), c.FlagUrgent(NEXT))
    assert outcome.effects[2:] == ((c.NOW,) if "now" in text.lower() or "ahora" in text else ())
    assert keys(outcome)[0] == "urgent"


@pytest.mark.parametrize("text", ["graffiti on the wall", "my neighbor's dog barks", "the gunnery club is loud"])
def test_ordinary_tips_are_not_urgent(text: str) -> None:
    assert not any(isinstance(e, c.FlagUrgent) for e in run(State.NEW, text).effects)


def test_a_follow_up_can_make_a_tip_urgent() -> None:
    outcome = run(State.SUBMITTED, "now he has a knife")
    assert c.FlagUrgent(REF) in outcome.effects
    assert keys(outcome)[0] == "urgent"


def test_an_urgent_answer_is_flagged_before_the_draft_is_submitted() -> None:
    outcome = run(State.AWAIT_WHEN, "right now")
    assert outcome.effects == (c.SetField("when", "right now"), c.FlagUrgent(REF), c.Submit(REF))
    assert keys(outcome) == ["urgent", "submitted"]


def test_language_switch_and_spanish_greeting() -> None:
    outcome = run(State.AWAIT_WHERE, "ES")
    assert outcome.conversation.language == "es"
    assert keys(outcome) == ["language_set", "ask_where"]
    assert run(State.NEW, "Hola").conversation.language == "es"
    assert run(State.AWAIT_WHERE, "en", language="es").conversation.language == "en"


def test_a_language_hint_sets_the_first_language_only() -> None:
    assert run(State.NEW, "hi", language_hint="es").conversation.language == "es"
    assert run(State.SUBMITTED, "hi", language_hint="es").conversation.language == "en"


def test_every_intent_has_a_handler() -> None:
    assert set(c.HANDLERS) == set(Intent)


# Photos -----------------------------------------------------------------------------------------

PHOTO_DRAFT = ConversationState(State.AWAIT_WHAT, "en", NEXT)  # a draft begun with a photo alone


def step(conv: ConversationState, text: str = "", **inbound: object) -> c.Outcome:
    return c.step(conv, Inbound(text=text, **inbound), Context(new_reference="T-OTHER2"))


def test_a_photo_alone_starts_a_draft_and_asks_what_it_shows() -> None:
    outcome = run(State.NEW, "", media=1)
    assert outcome.effects == (c.CreateDraft(NEXT, ""), c.Attach(1))
    assert outcome.conversation == PHOTO_DRAFT
    assert keys(outcome) == ["media_received_one", "ask_what_photo"]


def test_the_words_after_a_photo_become_the_description() -> None:
    outcome = step(PHOTO_DRAFT, "The blue van that hit the cyclist")
    assert outcome.effects == (c.SetField("what", "The blue van that hit the cyclist"),)
    assert outcome.conversation.state is State.AWAIT_WHERE
    assert keys(outcome) == ["ask_where"]


def test_a_photo_draft_can_be_skipped_ahead_finished_discarded_or_left_idle() -> None:
    assert step(PHOTO_DRAFT, "skip").conversation.state is State.AWAIT_WHERE
    assert step(PHOTO_DRAFT, "done").effects == (c.Submit(NEXT),)
    assert step(PHOTO_DRAFT, "discard").effects == (c.DiscardDraft(NEXT),)
    assert step(PHOTO_DRAFT, "hi").effects == (c.SetField("what", "hi"),)  # not a greeting any more
    idle = c.expire(PHOTO_DRAFT)
    assert idle is not None
    assert idle.effects == (c.Submit(NEXT),)
    again = step(PHOTO_DRAFT, "new")  # a new tip first submits the photo draft as it stands
    assert again.effects == (c.Submit(NEXT),)
    assert keys(again) == ["submitted_as_is", "new_tip"]


@pytest.mark.parametrize(
    "state,prompt",
    [
        (State.AWAIT_WHERE, "ask_where"),
        (State.AWAIT_WHEN, "ask_when"),
        (State.SUBMITTED, "followup_added"),
    ],
)
def test_photos_join_the_tip_in_any_later_state(state: State, prompt: str) -> None:
    outcome = run(state, "", media=3)
    assert outcome.effects == (c.Attach(3),)
    assert outcome.conversation.state is state
    assert keys(outcome) == ["media_received_many", prompt]
    assert outcome.replies[0] == Text.of("media_received_many", count="3")


def test_a_caption_is_content_even_when_it_looks_like_a_keyword() -> None:
    outcome = run(State.NEW, "photo of the car", media=1)
    assert outcome.effects == (c.CreateDraft(NEXT, "photo of the car"), c.Attach(1))
    assert keys(outcome) == ["media_received_one", "ask_where"]
    helped = run(State.SUBMITTED, "help", media=1)
    assert helped.effects == (c.FollowUp(REF, "help"), c.Attach(1))


def test_refused_files_get_a_kind_word_and_the_words_are_kept() -> None:
    alone = run(State.SUBMITTED, "", refused="type")
    assert keys(alone) == ["media_refused_type"]
    assert alone.effects == ()
    with_text = run(State.AWAIT_WHERE, "behind the school", refused="size")
    assert keys(with_text) == ["media_refused_size", "ask_when"]
    assert with_text.effects == (c.SetField("where", "behind the school"),)


def test_stop_with_a_photo_opts_out_without_attaching() -> None:
    outcome = run(State.SUBMITTED, "", media=1, refused="type", provider_intent=Intent.STOP)
    assert outcome.effects == (c.OptOut(),)
    assert outcome.replies == ()


def test_an_empty_message_asks_again() -> None:
    assert keys(run(State.AWAIT_WHERE, "   ")) == ["empty"]


# Idle conversations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state,tip_ref,submits",
    [
        (State.AWAIT_WHERE, REF, True),
        (State.AWAIT_WHEN, REF, True),
        (State.AWAIT_WHAT, REF, True),  # a draft begun with a photo alone
        (State.AWAIT_WHAT, None, False),  # greeted, nothing written yet: back to new, nothing said
    ],
)
def test_an_idle_draft_is_submitted_as_it_stands(state: State, tip_ref: str | None, submits: bool) -> None:
    outcome = c.expire(ConversationState(state, "en", tip_ref))
    assert outcome is not None
    assert outcome.effects == ((c.Submit(REF),) if submits else ())
    assert outcome.replies == ((Text.of("submitted_as_is", ref=REF),) if submits else ())
    assert outcome.conversation.state is (State.SUBMITTED if submits else State.NEW)


@pytest.mark.parametrize("state,tip_ref", [(State.NEW, None), (State.SUBMITTED, REF)])
def test_a_settled_conversation_has_nothing_to_expire(state: State, tip_ref: str | None) -> None:
    assert c.expire(ConversationState(state, "en", tip_ref)) is None


# The state table ----------------------------------------------------------------------------------
# Each transition README.md draws (conversation.TRANSITIONS), produced by examples: the conversation
# before, and a message (None: it lies idle). A transition without an example fails the test below.

FRESH = ConversationState()
GREETED = ConversationState(State.AWAIT_WHAT)
AT_WHERE = ConversationState(State.AWAIT_WHERE, "en", REF)
AT_WHEN = ConversationState(State.AWAIT_WHEN, "en", REF)
SENT = ConversationState(State.SUBMITTED, "en", REF)
IDLE = None

# An example may carry the facts the shell looked up (a Context); by default none.
Example = tuple[ConversationState, Inbound | None] | tuple[ConversationState, Inbound, Context]
TRANSITION_EXAMPLES: dict[c.Transition, list[Example]] = {
    (State.NEW, State.AWAIT_WHAT, "greeting"): [(FRESH, Inbound("hi")), (FRESH, Inbound("/start"))],
    (State.NEW, State.AWAIT_WHERE, "description"): [(FRESH, Inbound("A robbery at the store"))],
    (State.NEW, State.AWAIT_WHAT, "photo only (a draft with no description yet)"): [(FRESH, Inbound("", media=1))],
    (State.AWAIT_WHAT, State.AWAIT_WHERE, "description"): [
        (GREETED, Inbound("A robbery at the store")),
        (PHOTO_DRAFT, Inbound("The van in the photo")),
    ],
    (State.AWAIT_WHERE, State.AWAIT_WHEN, "place / SKIP"): [
        (AT_WHERE, Inbound("Behind the school")),
        (AT_WHERE, Inbound("skip")),
    ],
    (State.AWAIT_WHEN, State.SUBMITTED, "time / SKIP"): [(AT_WHEN, Inbound("Last night")), (AT_WHEN, Inbound("skip"))],
    (State.AWAIT_WHERE, State.SUBMITTED, "place / SKIP, the time already said (right now)"): [
        (AT_WHERE, Inbound("Behind the school, right now")),
        (AT_WHERE, Inbound("skip"), Context(when_known=True)),
    ],
    (State.SUBMITTED, State.SUBMITTED, "follow-up"): [(SENT, Inbound("more details")), (SENT, Inbound("", media=2))],
    (State.SUBMITTED, State.AWAIT_WHAT, "NEW"): [(SENT, Inbound("NEW"))],
    (State.AWAIT_WHERE, State.NEW, "DISCARD"): [(AT_WHERE, Inbound("DISCARD"))],
    (State.AWAIT_WHEN, State.NEW, "DISCARD"): [(AT_WHEN, Inbound("DISCARD"))],
    (State.AWAIT_WHAT, State.NEW, "DISCARD"): [(GREETED, Inbound("DISCARD")), (PHOTO_DRAFT, Inbound("discard"))],
    (State.AWAIT_WHERE, State.SUBMITTED, "idle (submitted as it stands)"): [(AT_WHERE, IDLE)],
    (State.AWAIT_WHEN, State.SUBMITTED, "idle (submitted as it stands)"): [(AT_WHEN, IDLE)],
    (State.AWAIT_WHAT, State.NEW, "idle (no draft)"): [(GREETED, IDLE)],
    (State.AWAIT_WHAT, State.SUBMITTED, "idle (photo draft submitted as it stands)"): [(PHOTO_DRAFT, IDLE)],
}


def test_every_transition_of_the_state_table_has_examples() -> None:
    assert list(TRANSITION_EXAMPLES) == list(c.TRANSITIONS)


def test_the_state_table_names_every_state() -> None:
    assert {state for source, target, _ in c.TRANSITIONS for state in (source, target)} == set(State)


@pytest.mark.parametrize(
    "transition,example",
    [
        pytest.param(transition, example, id=f"{transition[0]}->{transition[1]}: {transition[2]} #{n}")
        for transition, examples in TRANSITION_EXAMPLES.items()
        for n, example in enumerate(examples)
    ],
)
def test_the_code_makes_each_transition_of_the_state_table(transition: c.Transition, example: Example) -> None:
    source, target, _ = transition
    before, message, *looked_up = example
    assert before.state is source
    context = looked_up[0] if looked_up else Context(new_reference=NEXT)
    outcome = c.expire(before) if message is IDLE else c.step(before, message, context)
    assert outcome is not None, "expire left the conversation as it was"
    assert outcome.conversation.state is target


# The catalog ------------------------------------------------------------------------------------


def test_every_catalog_has_the_texts_and_placeholders_of_english() -> None:
    # Their length in SMS segments: tests/test_segments.py; the .po files: tests/test_catalogs.py.
    def fields(template: str) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name}

    english = CATALOGS["en"]
    for language, catalog in CATALOGS.items():
        assert catalog.keys() == english.keys(), language
        for key in english:
            assert fields(catalog[key]) == fields(english[key]), (language, key)


def test_the_greeting_says_anonymous_911_help_stop_and_spanish() -> None:
    greeting = render(Text.of("greeting"), "en", SETTINGS)
    for must in ("anonymous", "never see your number", "911", "HELP", "STOP", "ES para español"):
        assert must in greeting, must


# Understanding people (issue 12, part 8): each case as a tipster wrote it -------------------------


@pytest.mark.parametrize(
    "text,language",
    [
        ("Hi, I want to report something", "en"),
        ("Good evening", "en"),
        ("hello? anyone there?", "en"),
        ("Buenas tardes", "es"),
        ("Hola, quiero denunciar algo", "es"),
        ("Bom dia, quero fazer uma denúncia", "pt"),
        ("Bonswa, mwen vle fè yon denonsyasyon", "ht"),
    ],
)
def test_a_greeting_or_an_announcement_gets_the_welcome_and_is_no_description(text: str, language: str) -> None:
    outcome = run(State.NEW, text)
    assert keys(outcome) == ["greeting"]
    assert outcome.effects == ()
    assert outcome.conversation == ConversationState(State.AWAIT_WHAT, language, None)


@pytest.mark.parametrize(
    "text,language",
    [
        ("pistola ahora mismo", "es"),
        ("Hay un hombre vendiendo drogas en la esquina", "es"),
        ("Tem um homem vendendo drogas na esquina", "pt"),
        ("Gen yon nonm k ap vann dwòg nan kwen an", "ht"),
        ("A man sells drugs at the corner", "en"),
        ("T-7K3Q9X 5th and Main", "en"),  # nothing to go on: the default
    ],
)
def test_the_first_message_sets_the_language_of_the_conversation(text: str, language: str) -> None:
    assert run(State.NEW, text).conversation.language == language


def test_pistola_ahora_mismo_gets_the_911_line_in_spanish() -> None:
    outcome = run(State.NEW, "pistola ahora mismo")
    assert keys(outcome)[0] == "urgent"
    assert render(outcome.replies[0], outcome.conversation.language, SETTINGS).startswith("Si alguien")


def test_the_language_is_kept_after_the_first_message() -> None:
    assert run(State.AWAIT_WHERE, "Behind the school", language="es").conversation.language == "es"
    assert run(State.SUBMITTED, "hola", language="en").conversation.language == "en"
    # a language chosen with ES is not undone by an English-looking greeting
    chose = c.step(ConversationState(language="es"), Inbound("hi"), Context(new_reference=NEXT))
    assert chose.conversation.language == "es"


def test_after_forget_the_language_stays_and_a_new_sender_is_understood_again() -> None:
    forgot = run(State.SUBMITTED, "OLVIDAR", language="es")
    assert forgot.conversation == ConversationState(State.NEW, "es", None)
    # The tip line keeps nothing that links the next message to this sender (FORGET erases the
    # pseudonym), so the next message is a first message: its words set the language again.
    again = c.step(ConversationState(), Inbound("Hola"), Context(new_reference=NEXT))
    assert again.conversation.language == "es"


@pytest.mark.parametrize("language", ["es", "pt", "ht"])
def test_texts_do_not_say_the_police_department_in_another_language(language: str) -> None:
    unnamed = {**SETTINGS, "agency": "the police department"}
    for key in ("greeting", "help"):
        assert "the police department" not in render(Text.of(key), language, unnamed)


@pytest.mark.parametrize(
    "text,language",
    [
        ("Someone is breaking into a car right now", "en"),
        ("Están robando una casa ahora mismo", "es"),
        ("Estão assaltando uma loja agora", "pt"),
        ("Gen moun k ap kase yon machin kounye a", "ht"),
    ],
)
def test_right_now_records_the_time_and_the_when_question_is_not_asked(text: str, language: str) -> None:
    described = run(State.NEW, text)
    assert described.conversation.language == language
    assert described.effects == (c.CreateDraft(NEXT, text), c.FlagUrgent(NEXT), c.SetField("when", "now", said=False))
    assert keys(described) == ["urgent", "ask_where"]
    placed = c.step(
        described.conversation, Inbound("Behind the school"), Context(new_reference="T-UNUSED", when_known=True)
    )
    assert placed.effects == (c.SetField("where", "Behind the school"), c.Submit(NEXT))
    assert keys(placed) == ["submitted"]


def test_a_place_said_with_right_now_submits_without_asking_when() -> None:
    outcome = run(State.AWAIT_WHERE, "Behind the school, happening right now")
    assert outcome.effects == (
        c.SetField("where", "Behind the school, happening right now"),
        c.FlagUrgent(REF),
        c.SetField("when", "now", said=False),
        c.Submit(REF),
    )
    assert keys(outcome) == ["urgent", "submitted"]


@pytest.mark.parametrize("before", [State.AWAIT_WHAT, State.NEW])
def test_status_after_new_or_discard_tells_of_the_last_submitted_tip(before: State) -> None:
    outcome = c.step(ConversationState(before), Inbound("STATUS"), Context(last_tip=(REF, TipStatus.IN_REVIEW)))
    assert render(outcome.replies[0], "en", SETTINGS) == f"Tip {REF}: under review."
    assert keys(c.step(ConversationState(before), Inbound("STATUS"), Context())) == ["status_none"]


@pytest.mark.parametrize("text", ["help me", "Please help!", "ayúdenme", "socorro", "me ajuda", "anmwe", "ede m"])
def test_a_call_for_help_after_a_tip_gets_the_911_line(text: str) -> None:
    outcome = run(State.SUBMITTED, text)
    assert outcome.effects == (c.FollowUp(REF, text), c.FlagUrgent(REF))
    assert keys(outcome) == ["urgent", "followup_added"]


@pytest.mark.parametrize(
    "text,intent",
    [
        ("AJUDA", Intent.HELP),
        ("NOVO", Intent.NEW),
        ("ESQUECER", Intent.FORGET),
        ("PULAR", Intent.SKIP),
        ("ÈD", Intent.HELP),
        ("EDE", Intent.HELP),
        ("NOUVO", Intent.NEW),
        ("BLIYE", Intent.FORGET),
        ("SOTE", Intent.SKIP),
        ("JETE", Intent.DISCARD),
        ("PT", Intent.PORTUGUESE),
        ("HT", Intent.HAITIAN_CREOLE),
        ("kreyòl", Intent.HAITIAN_CREOLE),
    ],
)
def test_keywords_in_portuguese_and_haitian_creole(text: str, intent: Intent) -> None:
    assert c.classify(text) is intent


# Tried as tipsters would write, after the first review of issue 12's conversation ----------------------


@pytest.mark.parametrize(
    "text", ["socorro", "Anmwe", "ayúdenme por favor", "me ajuda", "Mwen bezwen èd", "Mwen nan danje", "estão atirando"]
)
def test_a_first_message_calling_for_help_gets_the_911_line_and_is_kept(text: str) -> None:
    outcome = run(State.NEW, text)
    assert keys(outcome)[0] == "urgent"
    assert outcome.effects[:2] == (c.CreateDraft(NEXT, text), c.FlagUrgent(NEXT))


@pytest.mark.parametrize(
    "text", ["someone is here", "there is someone here", "gen yon moun la", "someone is here i need help please"]
)
def test_a_few_ordinary_words_that_say_someone_is_there_are_the_tip(text: str) -> None:
    assert c.classify(text) is Intent.TEXT
    assert run(State.NEW, text).effects[0] == c.CreateDraft(NEXT, text)


@pytest.mark.parametrize(
    "text",
    ["Hi, is this anonymous?", "Good morning, I'd like to report something", "Quiero hacer un reporte", "Bonjour"],
)
def test_more_greetings_and_announcements_are_not_the_tip(text: str) -> None:
    assert c.classify(text) is Intent.GREETING


@pytest.mark.parametrize("text", ["Ed", "Nova", "Pronto", "Listo", "Done"])
def test_after_a_tip_a_one_word_answer_to_a_detective_is_kept_as_a_follow_up(text: str) -> None:
    outcome = run(State.SUBMITTED, text)
    assert outcome.effects == (c.FollowUp(REF, text),)
    assert keys(outcome) == ["followup_added"]


@pytest.mark.parametrize(
    "text,language",
    [("Me robaron el celular", "es"), ("Me están siguiendo", "es"), ("Pode me ajudar", "pt"), ("Sak pase", "ht")],
)
def test_short_first_messages_are_answered_in_their_language(text: str, language: str) -> None:
    assert run(State.NEW, text).conversation.language == language


@pytest.mark.parametrize(
    "text", ["Meu vizinho agora vende drogas", "Mwen pa konnen kote li ye kounye a", "He sells drugs there now"]
)
def test_now_in_a_story_does_not_answer_when_it_happened(text: str) -> None:
    assert not c.says_now(text)
    assert c.SetField("when", "now", said=False) not in run(State.NEW, text).effects


def test_every_keyword_a_text_names_is_a_keyword() -> None:
    # "Text NEW, STATUS, DISCARD ...": every upper-case word a text offers works as a keyword.
    offered = {
        word
        for language in CATALOGS
        for key in ("greeting", "help", "submitted", "ask_where", "ask_when", "what_required", "opted_in")
        for word in re.findall(r"\b[A-ZÈ]{2,}\b", CATALOGS[language][key])
    }
    assert offered - {"SMS", "JPEG", "PNG", "HEIC", "GIF"}
    for word in offered - {"SMS", "JPEG", "PNG", "HEIC", "GIF"}:
        assert c.classify(word) is not Intent.TEXT, word


def test_a_second_greeting_asks_for_the_tip_without_the_whole_welcome_again() -> None:
    outcome = run(State.AWAIT_WHAT, "Hello, I want to report something")
    assert keys(outcome) == ["ask_what"]
    assert outcome.effects == ()
    assert outcome.conversation.state is State.AWAIT_WHAT


@pytest.mark.parametrize(
    "text,hint,language",
    [
        ("hi", "es", "es"),  # a word shared by many: the app's language
        ("Hola", "en", "en"),
        ("Hola, quiero denunciar algo", "en", "es"),  # the words clearly say another language
        ("pistola ahora mismo", "en", "es"),
        ("Bonswa, mwen vle fè yon denonsyasyon", "fr", "ht"),  # no catalog for the app's language
    ],
)
def test_the_words_win_over_the_apps_language_only_when_they_are_clear(text: str, hint: str, language: str) -> None:
    assert run(State.NEW, text, language_hint=hint).conversation.language == language


def test_a_language_chosen_with_a_keyword_is_not_undone_by_the_apps_language() -> None:
    chose = c.step(ConversationState(language="pt"), Inbound("hi", language_hint="en"), Context(new_reference=NEXT))
    assert chose.conversation.language == "pt"
