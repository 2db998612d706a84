"""Telegram's per-chat pacing never holds the dispatcher for one chat (issue 12).

A burst of 40 replies to one Telegram chat, then one SMS reply: the SMS goes out within two
dispatcher passes, and the burst still arrives in order, never faster than the per-chat interval
(measured at the stand-in Bot API). The interval is shortened to 0.2 s here so that the test takes
seconds rather than the 40 it would at Telegram's one message a second.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from adapters.telegram import _Limiter
from tests.support import fake_telegram
from tests.support.harness import REFERENCE, Harness
from tests.support.telegram_updates import callback_update, message_update
from tipline.services import review

INTERVAL = 0.2  # seconds between two messages to one chat, for this test
# The interval while the SMS reply overtakes the burst: longer than one send takes on a loaded machine,
# so that the burst is held from its second message on (at 0.1 s, slow sends let 4 through in CI).
HOLD = 2.0
# The pacing is taken before the HTTP request, so a request may reach the stand-in later than its turn
# while the next one is on time: tens of milliseconds on a loaded machine (CI saw 41 ms, then 100 ms).
# One late arrival shortens one gap by as much, so a single gap says little; five sends in a row say
# more (a late arrival is spread over four intervals), and unpaced sends are milliseconds apart.
JITTER = 0.15
WINDOW = 5


class _Stamped(list[tuple[str, dict[str, Any]]]):
    """The stand-in's call list, with the monotonic time each call arrived."""

    def __init__(self, calls: list[tuple[str, dict[str, Any]]]) -> None:
        super().__init__(calls)
        self.times: list[float] = [0.0] * len(calls)

    def append(self, call: tuple[str, dict[str, Any]]) -> None:
        self.times.append(time.monotonic())
        super().append(call)


def telegram_tip(harness: Harness, fake: fake_telegram.FakeTelegram) -> str:
    for update in (message_update("Someone deals from the blue house on Elm St"), callback_update("done")):
        assert harness.post_update(update).status_code == 200
        harness.dispatch()
    found = REFERENCE.search(fake.called("sendMessage")[-1]["text"])
    assert found is not None
    return found.group(0)


def test_a_burst_to_one_chat_does_not_hold_an_sms_reply_and_keeps_its_order(
    tg: tuple[Harness, fake_telegram.FakeTelegram], monkeypatch: pytest.MonkeyPatch
) -> None:
    harness, fake = tg
    telegram = harness.runtime.channels["telegram"]
    monkeypatch.setattr(telegram, "_limiter", _Limiter(per_chat=HOLD))
    tg_reference = telegram_tip(harness, fake)
    sms_reference = harness.submit_tip("Stolen bikes being sold from a garage on Birch Rd")
    harness.dispatch()
    harness.twilio.requests.clear()
    stamped = _Stamped(fake.calls)
    monkeypatch.setattr(fake, "calls", stamped)
    start = len(stamped)

    ctx = harness.runtime.ctx
    for n in range(40):
        review.reply(ctx, tg_reference, f"burst {n:02d}")
    review.reply(ctx, sms_reference, "Are you safe to talk?")

    dispatcher = harness.runtime.dispatcher
    passes = 0
    while not harness.twilio.sent:
        dispatcher.run_once()
        passes += 1
        assert passes <= 2, "the SMS reply waited behind the Telegram burst"
    burst_before_sms = [p for m, p in stamped[start:] if m == "sendMessage"]
    assert len(burst_before_sms) <= 2  # the SMS overtook (at least) 38 of the 40
    assert harness.twilio.sent[0]["Body"].endswith("Are you safe to talk?")

    monkeypatch.setattr(telegram, "_limiter", _Limiter(per_chat=INTERVAL))
    harness.dispatch()  # the rest of the burst, paced (after the first message's HOLD)
    burst = [(stamped.times[start + i], p) for i, (m, p) in enumerate(stamped[start:]) if m == "sendMessage"]
    assert [p["text"] for _, p in burst] == [f"Example City Police: burst {n:02d}" for n in range(40)]
    times = [at for at, _ in burst]
    spans = [b - a for a, b in zip(times, times[WINDOW - 1 :], strict=False)]
    assert min(spans) >= (WINDOW - 1) * INTERVAL - JITTER, min(spans)  # paced everywhere in the burst
    assert times[-1] - times[0] >= (len(times) - 1) * INTERVAL - JITTER  # and on the whole
    assert len(harness.twilio.sent) == 1


def test_pacing_puts_later_messages_to_the_chat_back_in_order_and_never_counts_an_attempt(
    tg: tuple[Harness, fake_telegram.FakeTelegram],
) -> None:
    """With Telegram's own interval (1 s): the second and third replies wait, in order, as pending
    rows; a pass sends nothing more to that chat before they are due, and no attempt is counted."""
    from sqlalchemy import select

    from tipline.core.vocabulary import OutboxKind, OutboxStatus
    from tipline.storage.models import OutboxItem

    harness, fake = tg
    reference = telegram_tip(harness, fake)
    for n in range(3):
        review.reply(harness.runtime.ctx, reference, f"question {n}")
    dispatcher = harness.runtime.dispatcher
    dispatcher.run_once()
    dispatcher.run_once()
    with harness.runtime.factory() as session:
        rows = session.scalars(
            select(OutboxItem)
            .where(OutboxItem.kind == OutboxKind.SEND, OutboxItem.status == OutboxStatus.PENDING)
            .order_by(OutboxItem.next_attempt_at)
        ).all()
    assert len(rows) >= 2
    assert all(r.attempts == 0 and r.last_error is None and r.attempt_started_at is None for r in rows)
    assert rows[0].next_attempt_at < rows[1].next_attempt_at
    wait = dispatcher.pacing_wait()
    assert wait is not None and 0 < wait <= 1.0
    harness.dispatch()
    assert [m["text"] for m in fake.called("sendMessage")[-3:]] == [
        f"Example City Police: question {n}" for n in range(3)
    ]
    assert dispatcher.pacing_wait() is None


def test_the_global_limit_of_thirty_a_second_is_kept() -> None:
    limiter = _Limiter(per_chat=1.0, per_second=30)
    assert [limiter.reserve(str(chat)) for chat in range(30)] == [0.0] * 30
    wait = limiter.reserve("another chat")
    assert 0 < wait <= 1.0
    assert limiter.reserve("0") > 0  # and one chat still waits its own second
