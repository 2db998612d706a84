"""An SMS reply's latency while a burst of replies goes to one Telegram chat (issue 12).

Starts the stand-in Twilio and Telegram servers (tests/support), a tip line on a scratch database
(SQLite, or a fresh PostgreSQL schema with --database-url), one tip by Telegram and one by SMS.
With the real dispatcher loop running (`run_forever`, as in `tipline serve`), it queues 40
detective replies to the Telegram chat, then, 0.2 s later, one reply to the SMS tipster, and times
that SMS until the stand-in Twilio receives it. Telegram's pacing is the real one (one message a
second per chat), so the burst itself takes about 40 s either way.

--blocking puts back the limiter of before issue 12, which slept in the dispatcher's thread until
the chat could receive again: the "before" figure.

    python bench/pacing.py [--burst 40] [--blocking] [--database-url URL]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.telegram import _Limiter  # noqa: E402
from tests.support import fake_twilio  # noqa: E402
from tests.support.harness import ACCOUNT_SID, AUTH_TOKEN, LINE_NUMBER, PUBLIC_URL, REFERENCE, telegram_harness  # noqa: E402
from tests.support.scratch import scratch_database  # noqa: E402
from tests.support.telegram_updates import callback_update, message_update  # noqa: E402
from tipline.services import review  # noqa: E402


class _Sleeping(_Limiter):
    """The limiter as it was before issue 12: it waits, in the dispatcher's one thread."""

    def reserve(self, chat: str) -> float:
        while (wait := super().reserve(chat)) > 0:
            time.sleep(wait)
        return 0.0


def wait_for(condition, timeout: float) -> float:  # type: ignore[no-untyped-def]
    """Poll `condition` every millisecond; the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the stand-in never saw it")
        time.sleep(0.001)
    return time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=40)
    parser.add_argument("--blocking", action="store_true", help="the sleeping limiter of before issue 12")
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    twilio, server = fake_twilio.start(ACCOUNT_SID, AUTH_TOKEN)
    with tempfile.TemporaryDirectory() as tmp, scratch_database(args.database_url) as database_url:
        env = {
            "TIPLINE_DATA_DIR": str(Path(tmp) / "var"),
            "TIPLINE_PUBLIC_URL": PUBLIC_URL,
            "TIPLINE_AGENCY_NAME": "Example City Police",
            "TIPLINE_PROVIDER_DELETE_DELAY_SECONDS": "0",
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_FROM_NUMBER": LINE_NUMBER,
            "TWILIO_API_BASE_URL": twilio.url,
        }
        if database_url:
            env["TIPLINE_DATABASE_URL"] = database_url
        with telegram_harness(env, twilio, Path(tmp) / "bench.log") as (harness, telegram):
            if args.blocking:
                harness.runtime.channels["telegram"]._limiter = _Sleeping()  # type: ignore[attr-defined]
            for update in (message_update("Someone deals from the blue house on Elm St"), callback_update("done")):
                harness.post_update(update)
                harness.dispatch()
            found = REFERENCE.search(telegram.called("sendMessage")[-1]["text"])
            assert found is not None
            sms_reference = harness.submit_tip("Stolen bikes being sold from a garage on Birch Rd")
            harness.dispatch()
            twilio.requests.clear()
            before = len(telegram.called("sendMessage"))
            time.sleep(1.1)  # the chat may receive again: the burst starts at once

            thread, stop = harness.runtime.start_dispatcher()
            ctx = harness.runtime.ctx
            for n in range(args.burst):
                review.reply(ctx, found.group(0), f"burst {n:02d}")
            burst_start = time.monotonic()
            harness.runtime.wake_dispatcher()
            time.sleep(0.2)
            queued = time.monotonic()
            review.reply(ctx, sms_reference, "Are you safe to talk?")
            harness.runtime.wake_dispatcher()
            arrived = wait_for(lambda: bool(twilio.sent), timeout=600)
            burst_sent = len(telegram.called("sendMessage")) - before
            done = wait_for(lambda: len(telegram.called("sendMessage")) - before >= args.burst, timeout=600)
            stop.set()
            harness.runtime.wake_dispatcher()
            thread.join(10)
    server.shutdown()
    server.server_close()
    mode = "blocking limiter (before)" if args.blocking else "paced rows (after)"
    print(f"{mode}, {'PostgreSQL' if args.database_url else 'SQLite'}, burst of {args.burst} to one Telegram chat")
    print(f"  SMS reply latency:             {arrived - queued:7.3f} s")
    print(f"  burst messages sent before it: {burst_sent:7d}")
    print(f"  whole burst sent in:           {done - burst_start:7.3f} s")


if __name__ == "__main__":
    main()
