"""Threat: a timeline to match against carrier records.

Whoever reads the database (an insider, a stolen backup) or the service's log learns when each
tipster's messages arrived. Times to the second or microsecond can be matched one-to-one with the
carrier's call-detail records, which name the phone. What must hold: once work has settled, no
stored time linked to a tipster is finer than the minute (a row still waiting, an outbox send or a
photo due for a retry, may keep a precise due time until it settles), and the log at the default
level (INFO) has no per-message line, so no line times a tipster's message.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import DateTime, Engine, MetaData, Table, select

from tests.support import samples
from tests.support.fake_twilio import FakeTwilio
from tests.support.harness import TIPSTER, Harness, inbound_form, new_sid, reference_of, sign
from tests.support.processes import free_port, run, spawn, wait_until_serving, workdir
from tipline.core.vocabulary import AttachmentStatus, OutboxStatus
from tipline.services import review
from tipline.storage.models import Attachment, OutboxItem

# Tables whose rows a tipster causes: these, and every table that refers to one of them.
TIPSTER_ROOTS = {"contacts", "tips", "processed_deliveries"}
PRECISE_TIME = re.compile(r"\d{2}:\d{2}:\d{2}|\d{2}:\d{2}[.,]\d")  # hh:mm:ss, or a fraction of a minute


def tipster_tables(engine: Engine) -> list[Table]:
    """Every table holding rows a tipster caused, found by following foreign keys (new ones included)."""
    metadata = MetaData()
    metadata.reflect(engine)
    linked = set(TIPSTER_ROOTS)
    grew = True
    while grew:
        grew = False
        for table in metadata.sorted_tables:
            if table.name not in linked and any(fk.column.table.name in linked for fk in table.foreign_keys):
                linked.add(table.name)
                grew = True
    return [table for table in metadata.sorted_tables if table.name in linked]


def precise_times(engine: Engine) -> list[tuple[str, object]]:
    """(table.column, value) for every stored time in a tipster's rows that is finer than the minute."""
    found = []
    with engine.connect() as connection:
        for table in tipster_tables(engine):
            columns = [c for c in table.columns if isinstance(c.type, DateTime)]
            if not columns:
                continue
            for row in connection.execute(select(*columns)):
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, dt.datetime) and (value.second or value.microsecond):
                        found.append((f"{table.name}.{column.name}", value))
    return found


def test_every_stored_time_of_a_settled_conversation_is_to_the_minute(tipline: Harness) -> None:
    # Given a tipster who sends words with a photo, answers the questions, adds a video (refused at
    # once), and gets a detective's reply that Twilio reports delivered
    sid = new_sid("MM")
    photo = tipline.twilio.add_media(sid, samples.camera_jpeg(6).data, "image/jpeg")
    tipline.sms("a van unloads crates at night", sid=sid, NumMedia="1", MediaUrl0=photo, MediaContentType0="image/jpeg")
    tipline.say("behind the depot on Elm Row")
    reference = reference_of(tipline.say("skip")[0])
    video = new_sid("MM")
    clip = tipline.twilio.add_media(video, b"\x00\x00\x00\x18ftypmp42", "video/mp4")
    tipline.sms("and this clip", sid=video, NumMedia="1", MediaUrl0=clip, MediaContentType0="video/mp4")
    review.reply(tipline.runtime.ctx, reference, "Which depot?")
    tipline.dispatch()
    tipline.status_callback(tipline.twilio.sent[-1]["_sid"], "delivered")
    # When everything has settled
    tipline.dispatch()
    with tipline.runtime.factory() as session:
        files = {a.status for a in session.scalars(select(Attachment))}
        actions = {o.status for o in session.scalars(select(OutboxItem))}
    assert files == {AttachmentStatus.STORED, AttachmentStatus.REFUSED}
    assert actions <= {OutboxStatus.SENT, OutboxStatus.DONE}, actions
    # Then no time linked to the tipster says more than the minute
    assert precise_times(tipline.runtime.engine) == []


@pytest.fixture
def served(env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    """`tipline serve` at the default log level, with Twilio pointed at the stand-in."""
    settings = {k: v for k, v in env.items() if k != "TIPLINE_SANDBOX"}
    assert run(settings, "init").returncode == 0
    port = free_port()
    log = workdir(settings) / "serve.log"
    with log.open("w") as out:
        process = spawn(settings, "serve", "--port", str(port), output=out)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base)
        yield base, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def test_the_default_log_has_no_line_that_times_a_message(served: tuple[str, Path], twilio_server: FakeTwilio) -> None:
    base, log = served

    def text(body: str, **extra: str) -> None:
        form = inbound_form(body, TIPSTER, extra.pop("sid", None), **extra)
        path = "/webhooks/twilio/sms"
        response = requests.post(base + path, data=form, headers={"X-Twilio-Signature": sign(path, form)}, timeout=10)
        assert response.status_code == 200, response.text

    sid = new_sid("MM")
    photo = twilio_server.add_media(sid, samples.camera_jpeg(1).data, "image/jpeg")
    text("a van unloads crates at night", sid=sid, NumMedia="1", MediaUrl0=photo, MediaContentType0="image/jpeg")
    text("skip")
    text("skip")
    text("skip")  # a follow-up
    for _ in range(100):  # the server's dispatcher cleans the photo and deletes the copies at Twilio
        if len(twilio_server.deleted) >= 5:
            break
        time.sleep(0.1)
    assert len(twilio_server.deleted) >= 5
    lines = log.read_text().splitlines()
    assert any("tipline serving on" in line for line in lines)  # the log is the server's
    assert [line for line in lines if PRECISE_TIME.search(line)] == []
    per_message = re.compile(r"message processed|delivery already processed|outbox \w+ |attachment \w+ ")
    assert [line for line in lines if per_message.search(line)] == []
