"""Urgent at once (issue 13 part 1): a message flagged urgent is in the console the moment it arrives,
draft or not; it stays pinned above the rest until closed; detectives set or clear "urgent" by hand."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select

from tests.support.console import Person, person
from tests.support.harness import Harness
from tipline.core.vocabulary import TipStatus
from tipline.services import review
from tipline.storage.models import AuditEntry, Tip, utcnow

BLEEDING = "Someone is bleeding in the parking lot of the Shell station on 5th right now"
CARS = "Someone keeps breaking into cars on Pine St"


@pytest.fixture
def detective(tipline: Harness) -> Person:
    dana = person(tipline.app, tipline.runtime.ctx, "dana")
    assert dana.sign_in().location.endswith("/console/")
    return dana


def at(tipline: Harness, minutes_ago: int) -> None:
    """What the tipsters send next arrives `minutes_ago` minutes before now (intake's clock)."""
    moment = utcnow() - dt.timedelta(minutes=minutes_ago)
    tipline.runtime.intake.clock = lambda: moment


def rows(detective: Person) -> list[str]:
    """The references in the console's list page, top to bottom, as the detective sees them."""
    page = detective.get("/console/").get_data(as_text=True)
    body = page.split("<tbody>")[1].split("</tbody>")[0]
    return [chunk.split('"')[0] for chunk in body.split('data-reference="')[1:]]


def the_draft(tipline: Harness) -> Tip:
    with tipline.runtime.factory() as session:
        return session.scalars(select(Tip).where(Tip.status == TipStatus.DRAFT)).one()


def audited(tipline: Harness, action: str) -> list[tuple[str | None, str | None, dict[str, object]]]:
    with tipline.runtime.factory() as session:
        entries = session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id))
        return [(e.actor, e.object_id, json.loads(e.detail or "{}")) for e in entries]


def test_an_urgent_first_message_is_listed_at_the_top_at_once_and_its_thread_grows(
    tipline: Harness, detective: Person
) -> None:
    # Given an older tip in the console
    at(tipline, 10)
    older = tipline.submit_tip(CARS, sender="+15550001111")
    fingerprint = detective.client.get("/console/api/changes").get_json()

    # When a tipster's first message says someone is bleeding right now
    at(tipline, 5)
    replies = tipline.say(BLEEDING)
    draft = the_draft(tipline)
    assert draft.urgent and "911" in " ".join(replies)

    # Then, in the same request cycle, it is listed at the top, as still being written
    assert rows(detective) == [draft.reference, older]
    page = detective.pages[-1]
    assert "Still being written" in page and "URGENT" in page
    assert detective.client.get("/console/api/changes").get_json() != fingerprint
    tip_page = detective.get(f"/console/tips/{draft.reference}")
    assert tip_page.status_code == 200
    text = tip_page.get_data(as_text=True)
    assert "bleeding in the parking lot" in text and 'id="draft-note"' in text
    last_seq = int(text.split('data-last-seq="')[1].split('"')[0])

    # And the thread grows as the tipster answers, live (and the list's fingerprint changes with it)
    before = detective.client.get("/console/api/changes").get_json()
    at(tipline, 4)
    tipline.say("Behind the car wash, he is on the ground")
    assert detective.client.get("/console/api/changes").get_json() != before
    live = detective.client.get(f"/console/api/tips/{draft.reference}/thread?after={last_seq}").get_json()
    said = [e for e in live["entries"] if e["kind"] == "tipster"]
    assert [e["text"] for e in said] == ["Behind the car wash, he is on the ground"]
    assert said[0]["who"].startswith("Tipster ") and said[0]["age"] and said[0]["local"]

    # And a later tip does not push it down
    at(tipline, 1)
    later = tipline.submit_tip("A dog has been left in a hot car on Elm St", sender="+15550002222")
    assert rows(detective) == [draft.reference, later, older]


def test_detectives_work_an_urgent_draft_and_its_submission_keeps_their_work(
    tipline: Harness, detective: Person
) -> None:
    tipline.say(BLEEDING)
    reference = the_draft(tipline).reference
    detective.get(f"/console/tips/{reference}")

    # A reply reaches the tipster, and a note is kept
    assert detective.post(f"/console/tips/{reference}/reply", {"text": "Are you safe?"}).status_code == 302
    tipline.dispatch()
    assert tipline.twilio.sent[-1]["Body"].endswith("Are you safe?")
    assert detective.post(f"/console/tips/{reference}/note", {"text": "Patrol sent"}).status_code == 302

    # Its status is the tipster's until they submit it; category and assignee may be set now
    refused = detective.post(f"/console/tips/{reference}/triage", {"status": "closed"})
    assert "still writing this tip" in detective.get(refused.location).get_data(as_text=True)
    assert the_draft(tipline).status == TipStatus.DRAFT
    dana_id = review.detectives(tipline.runtime.ctx)[0][0]
    detective.post(f"/console/tips/{reference}/triage", {"category": "violence", "assignee": str(dana_id)})

    # The tipster's conversation is unchanged: their next answers fill the draft and submit it
    tipline.say("skip")
    receipt = tipline.say("skip")
    assert reference in " ".join(receipt)
    summary = review.read_tip(tipline.runtime.ctx, reference).summary
    assert (summary.status, summary.category, summary.assignee, summary.urgent) == (
        TipStatus.NEW,
        "violence",
        "dana",
        True,
    )

    # Closing it unpins it: it falls back to its place by latest activity
    at(tipline, -1)
    newer = tipline.submit_tip(CARS, sender="+15550003333")
    assert rows(detective)[0] == reference
    detective.post(f"/console/tips/{reference}/triage", {"status": "closed"})
    assert rows(detective) == [newer, reference]


def test_discard_keeps_an_urgent_draft_detectives_already_have_and_says_so(tipline: Harness, detective: Person) -> None:
    # Given an urgent first message, already in the console, with a detective's note on it
    tipline.say(BLEEDING)
    reference = the_draft(tipline).reference
    assert detective.post(f"/console/tips/{reference}/note", {"text": "Patrol sent"}).status_code == 302

    # When the tipster sends DISCARD
    answer = " ".join(tipline.say("DISCARD"))

    # Then the tip and the detective's work stay, submitted, and the tipster is not told "nothing was sent"
    assert f"Your urgent message {reference} already went to detectives" in answer
    assert "Nothing was sent" not in answer
    detail = review.read_tip(tipline.runtime.ctx, reference)
    assert detail.summary.status == TipStatus.NEW
    assert [e.text for e in detail.thread if e.kind == "note"] == ["Patrol sent"]
    assert rows(detective)[0] == reference

    # and the tipster's next words still reach that tip, not a new hidden draft
    tipline.say("yes he is still there behind the car wash")
    detail = review.read_tip(tipline.runtime.ctx, reference)
    assert [e.text for e in detail.thread if e.kind == "tipster"][-1] == "yes he is still there behind the car wash"
    with tipline.runtime.factory() as session:
        assert session.scalars(select(Tip).where(Tip.status == TipStatus.DRAFT)).all() == []

    # while a draft that is not urgent is still dropped as before
    tipline.say("NEW")
    tipline.say("A man sells stolen bikes behind the library")
    assert "Nothing was sent" in " ".join(tipline.say("DISCARD"))
    with tipline.runtime.factory() as session:
        assert session.scalars(select(Tip).where(Tip.status == TipStatus.DRAFT)).all() == []


def test_urgent_by_hand_is_audited_and_a_draft_cleared_of_it_leaves_the_list(
    tipline: Harness, detective: Person
) -> None:
    at(tipline, 5)
    quiet = tipline.submit_tip(CARS, sender="+15550004444")
    at(tipline, 1)
    newer = tipline.submit_tip("Loud music every night at 12 Oak St", sender="+15550005555")
    assert rows(detective) == [newer, quiet]

    # Marked urgent by hand: pinned, and audited as its own action with the old and new value
    detective.get(f"/console/tips/{quiet}")
    done = detective.post(f"/console/tips/{quiet}/urgent", {"urgent": "1"})
    assert "Marked urgent" in detective.get(done.location).get_data(as_text=True)
    assert rows(detective) == [quiet, newer]
    detective.post(f"/console/tips/{quiet}/urgent", {"urgent": "0"})
    assert rows(detective) == [newer, quiet]
    assert audited(tipline, "tip.urgent") == [
        ("dana", quiet, {"urgent": ["False", "True"]}),
        ("dana", quiet, {"urgent": ["True", "False"]}),
    ]

    # An urgent draft: the page says what clearing does, and cleared, it leaves the list
    at(tipline, 0)
    tipline.say(BLEEDING, sender="+15550006666")
    draft = the_draft(tipline).reference
    page = detective.get(f"/console/tips/{draft}").get_data(as_text=True)
    assert 'id="urgent-draft-warning"' in page and "leaves the list until they submit it" in page
    cleared = detective.post(f"/console/tips/{draft}/urgent", {"urgent": "0"})
    assert cleared.location.endswith("/console/?notice=draft-hidden")
    assert "left the list until they submit it" in detective.get(cleared.location).get_data(as_text=True)
    assert draft not in rows(detective)
    assert detective.get(f"/console/tips/{draft}").status_code == 404
    assert audited(tipline, "tip.urgent")[-1] == ("dana", draft, {"urgent": ["True", "False"]})


def test_a_draft_that_is_not_urgent_stays_the_tipsters(tipline: Harness, detective: Person) -> None:
    tipline.say("A grey pickup unloads boxes behind Lincoln school every night")
    reference = the_draft(tipline).reference
    assert reference not in rows(detective)
    assert detective.get(f"/console/tips/{reference}").status_code == 404
    assert detective.post(f"/console/tips/{reference}/urgent", {"urgent": "1"}).status_code == 404
    assert audited(tipline, "tip.urgent") == []
