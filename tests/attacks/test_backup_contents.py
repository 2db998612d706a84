"""Threat: the backup file walks away.

Backups are copied off the machine, kept on shelves and in other people's storage for months:
whoever gets one must find nothing a tipster sent and nothing that opens it. What must hold: the
file `tipline backup` writes holds no number in any format, no carrier location, no word of a tip,
a photo, a detective's reply or a note, no EXIF of a photo, and none of the keys that live outside
the database (the master key, the console's cookie key); a console session in the database is not
in it either. Only ciphertext, keyed hashes and wrapped keys.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from sqlalchemy import select

from tests.support import samples
from tests.support.anonymity import phone_formats, scan_files
from tests.support.harness import CARRIER_CITY, CARRIER_ZIP, TIPSTER, Harness, new_sid
from tests.support.processes import run
from tipline.services import accounts, review
from tipline.storage.models import ConsoleSession, User, utcnow


def test_a_backup_holds_nothing_a_tipster_sent_nor_what_opens_it(
    tipline: Harness, cli_env: dict[str, str], tmp_path: Path
) -> None:
    # Given a worked tip: words, a photo from a camera, a detective's reply and note, a signed-in console
    reference = tipline.submit_tip("CANARY-SHELF a man sells pills from the laundromat on Birch Road")
    sid = new_sid("MM")
    url = tipline.twilio.add_media(sid, samples.camera_jpeg(6).data)
    tipline.sms("", sid=sid, NumMedia="1", MediaUrl0=url, MediaContentType0="image/jpeg")
    tipline.dispatch()
    review.reply(tipline.runtime.ctx, reference, "CANARY-REPLY which laundromat door?")
    review.add_note(tipline.runtime.ctx, reference, "CANARY-NOTE matches the Birch Road complaints")
    tipline.say("CANARY-FOLLOWUP the back door, after midnight")
    session_id = signed_in_session(tipline)
    # When the operator backs up
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    result = run(cli_env, "backup", str(shelf / "tipline.db"))
    assert result.returncode == 0, result.stderr
    # Then the file holds none of it
    data_dir = tipline.data_dir
    master = (data_dir / "master.key").read_text().strip()
    cookie_key = (data_dir / "secret.key").read_text().strip()
    needles: list[str | bytes] = [
        *phone_formats(TIPSTER),
        CARRIER_CITY,
        CARRIER_ZIP,
        "CANARY-SHELF",
        "laundromat",
        "Birch Road",
        "CANARY-REPLY",
        "CANARY-NOTE",
        "CANARY-FOLLOWUP",
        samples.MAKE,
        samples.SERIAL,
        samples.OWNER,
        samples.XMP_GPS,
        samples.MAKER_NOTE,
        master,
        base64.b64decode(master),
        cookie_key,
        session_id,
    ]
    assert scan_files(shelf, needles) == []
    # And nothing but the file was written there (no journal, no partial)
    assert [p.name for p in shelf.iterdir()] == ["tipline.db"]


def signed_in_session(tipline: Harness) -> str:
    """A detective's console session, as signing in leaves it in the database; its id."""
    accounts.add_user(tipline.runtime.ctx, "dana", ["detective"], "a long enough passphrase", must_change=False)
    session_id = secrets.token_hex(32)
    with tipline.runtime.factory.begin() as session:
        user = session.scalars(select(User).where(User.username == "dana")).one()
        now = utcnow()
        session.add(
            ConsoleSession(
                id=session_id,
                user_id=user.id,
                stage="full",
                csrf_token=secrets.token_hex(16),
                created_at=now,
                last_seen_at=now,
            )
        )
    return session_id
