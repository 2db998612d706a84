"""Threat: a detective reads tips without leaving a trace.

The live-update API (`GET /console/api/tips/<ref>/thread?after=0`) returned a tip's whole decrypted
thread and wrote nothing, so anyone with a detective's session could read every tip unseen. What
must hold: every response that carries tip content (the thread API, the tip page, a photo) is sent
only after an audit entry naming the reader and the tip has committed. A poll that brings nothing
new carries no content and writes nothing.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from tests.support.console import Person
from tests.support.harness import Harness, photos
from tests.support.samples import camera_jpeg
from tipline.core.vocabulary import AttachmentStatus
from tipline.services import audit
from tipline.storage.models import AuditEntry, Tip

SECRET_WORDS = "CANARY-READ a red van parks behind the school at night"
FOLLOW_UP = "CANARY-FOLLOWUP the van has a dented left door"


def reads_of(tipline: Harness, reference: str) -> list[AuditEntry]:
    """Audit entries of dana reading tip `reference`, oldest first: of the tip itself, or of a list
    page that showed its excerpt (one `tips.list` entry names every tip shown, without "T-")."""
    with tipline.runtime.factory() as session:
        query = select(AuditEntry).where(AuditEntry.actor == "dana").order_by(AuditEntry.id)
        return [
            entry
            for entry in session.scalars(query)
            if entry.object_id == reference
            or (
                entry.action == "tips.list"
                and reference.removeprefix("T-") in json.loads(entry.detail)["excerpts"].split()
            )
        ]


def test_the_thread_api_is_audited_before_it_answers(tipline: Harness, dana: Person) -> None:
    # Given a tip the detective never opened in the console
    reference = tipline.submit_tip(SECRET_WORDS)
    # When she reads its whole thread through the live-update API alone
    response = dana.get(f"/console/api/tips/{reference}/thread?after=0")
    assert response.status_code == 200
    assert SECRET_WORDS in response.get_data(as_text=True)
    # Then the read is in the audit log, naming her and the tip, and which entries she got
    entries = response.get_json()["entries"]
    (read,) = reads_of(tipline, reference)
    assert (read.action, read.object_type, read.outcome) == ("tip.view", "tip", "ok")
    assert json.loads(read.detail) == {"entries": [entries[0]["seq"], entries[-1]["seq"]], "live": True}

    # A poll that brings nothing new carries no content and writes nothing
    last = entries[-1]["seq"]
    quiet = dana.get(f"/console/api/tips/{reference}/thread?after={last}")
    assert quiet.status_code == 200
    assert quiet.get_json()["entries"] == []
    assert len(reads_of(tipline, reference)) == 1

    # A later poll that carries the tipster's follow-up is audited too
    tipline.say(FOLLOW_UP)
    later = dana.get(f"/console/api/tips/{reference}/thread?after={last}")
    assert FOLLOW_UP in later.get_data(as_text=True)
    new = later.get_json()["entries"]
    assert [json.loads(r.detail) for r in reads_of(tipline, reference)][1:] == [
        {"entries": [new[0]["seq"], new[-1]["seq"]], "live": True}
    ]


def test_the_tip_page_is_audited(tipline: Harness, dana: Person) -> None:
    reference = tipline.submit_tip(SECRET_WORDS)
    page = dana.get(f"/console/tips/{reference}")
    assert SECRET_WORDS in page.get_data(as_text=True)
    assert [(r.action, r.object_type) for r in reads_of(tipline, reference)] == [("tip.view", "tip")]


def test_a_photo_is_audited_each_time_it_is_sent(tipline: Harness, dana: Person) -> None:
    # A photo from the sandbox, fetched and cleaned by the media worker
    tipster = tipline.app.test_client()
    tipster.get("/sandbox")
    tipster.post("/sandbox/messages", json={"text": SECRET_WORDS})
    sent = tipster.post("/sandbox/photos", data=camera_jpeg(6).data, content_type="image/jpeg")
    assert sent.status_code == 200
    tipline.dispatch()
    tipster.post("/sandbox/messages", json={"text": "skip"})
    tipster.post("/sandbox/messages", json={"text": "skip"})
    (photo,) = photos(tipline)
    assert photo.status == AttachmentStatus.STORED
    with tipline.runtime.factory() as session:
        reference = session.scalars(select(Tip.reference).where(Tip.id == photo.tip_id)).one()

    url = f"/console/tips/{reference}/photos/{photo.id}"
    assert dana.get(url).status_code == 200
    assert dana.get(url + "?download=1").status_code == 200
    assert [(r.action, json.loads(r.detail)) for r in reads_of(tipline, reference)] == [
        ("tip.photo_view", {"entry": photo.seq}),
        ("tip.photo_download", {"entry": photo.seq}),
    ]


def test_when_the_audit_entry_cannot_be_written_no_content_is_sent(
    tipline: Harness, dana: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tipline.submit_tip(SECRET_WORDS)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the audit log is unavailable")

    monkeypatch.setattr(audit, "record", broken)
    for path in (f"/console/api/tips/{reference}/thread?after=0", f"/console/tips/{reference}"):
        response = dana.client.get(path)
        assert response.status_code == 500, path
        assert "CANARY-READ" not in response.get_data(as_text=True), path


SIGN_IN_PAGES = ("console.login", "console.enrol", "console.password")  # the first one signs the browser out


def test_no_console_response_carries_tip_content_without_an_audit_entry(tipline: Harness, dana: Person) -> None:
    """A sweep: every GET route a detective can reach, with the tip's reference filled in."""
    reference = tipline.submit_tip(SECRET_WORDS)
    carried = []
    for rule in tipline.app.url_map.iter_rules():
        if not rule.rule.startswith("/console") or "GET" not in rule.methods or rule.endpoint in SIGN_IN_PAGES:
            continue
        path = rule.rule.replace("<reference>", reference)
        if "<" in path:
            continue  # photos: see above
        before = len(reads_of(tipline, reference))
        response = dana.get(path + ("?after=0" if path.endswith("/thread") else ""))
        assert response.status_code in (200, 302, 403), path
        if b"CANARY-READ" in response.get_data():  # bytes: a case file (PDF) is no text
            carried.append(rule.endpoint)
            assert len(reads_of(tipline, reference)) == before + 1, f"{path} sent tip content unaudited"
    assert sorted(carried) == ["console.api_thread", "console.tip", "console.tips"]  # the list: excerpts
