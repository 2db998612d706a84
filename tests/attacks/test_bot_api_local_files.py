"""Threat: the Bot API (or whoever answers in its place) makes the tip line read its own files.

python-telegram-bot's File.download_* read a *local* file when getFile's `file_path` names one that
exists on the tip line's disk (its "local mode"): a getFile answer of "/etc/hostname", or of a path
to the keys, made the media worker read that file, clean it if it was an image, and store it as a
tipster's photo. What must hold: `file_path` is never opened as a local path; a path that is
absolute or climbs out (`..`) is refused (the attachment fails, the file's bytes are nowhere in the
database), and a plain relative path is always fetched over HTTP from the configured file URL,
even when a file of that name exists locally.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import fake_telegram, samples
from tests.support.anonymity import scan_database
from tests.support.harness import Harness, photos
from tests.support.telegram_updates import message_update
from tipline.core.vocabulary import AttachmentStatus

FILE_ID = "AgACAgQAAx-hostile"


def send_photo(harness: Harness) -> None:
    photo = [{"file_id": FILE_ID, "file_unique_id": "h1", "width": 96, "height": 64}]
    assert harness.post_update(message_update(photo=photo, caption="CANARY-LOCAL look")).status_code == 200
    harness.dispatch()


@pytest.fixture
def secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local file worth stealing (an image, so that reading it would "work"), in the working directory."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "photos" / "file_7.jpg"
    path.parent.mkdir()
    path.write_bytes(samples.camera_jpeg(1, size=(40, 30)).data + b"CANARY-LOCAL-SECRET")
    return path


@pytest.mark.parametrize("form", ["absolute", "climbing", "dot segment", "url", "empty"])
def test_a_file_path_outside_the_file_url_is_refused_and_never_read(
    tg: tuple[Harness, fake_telegram.FakeTelegram], secret: Path, form: str
) -> None:
    harness, fake = tg
    fake.file_paths[FILE_ID] = {
        "absolute": str(secret),
        "climbing": f"documents/../{secret.relative_to(secret.parent.parent)}",
        "dot segment": "./photos/file_7.jpg",
        "url": f"file://{secret}",
        "empty": "",
    }[form]
    send_photo(harness)
    assert [(a.status, a.reason) for a in photos(harness)] == [(AttachmentStatus.FAILED, "file_path")]
    assert fake.called("download") == []
    assert scan_database(harness.runtime.engine, [b"CANARY-LOCAL-SECRET", samples.MAKE, str(secret)]) == []
    assert "could not receive a photo" in fake.called("sendMessage")[-1]["text"]


def test_a_relative_file_path_is_fetched_over_http_even_if_it_exists_locally(
    tg: tuple[Harness, fake_telegram.FakeTelegram], secret: Path
) -> None:
    harness, fake = tg
    fake.file_paths[FILE_ID] = "photos/file_7.jpg"  # Telegram's form, and a file of that name exists here
    fake.files["photos/file_7.jpg"] = samples.camera_jpeg(1).data  # what Telegram really holds: 96 x 64
    send_photo(harness)
    assert [(a.status, a.width, a.height) for a in photos(harness)] == [(AttachmentStatus.STORED, 96, 64)]
    assert fake.called("download") == [{"path": "photos/file_7.jpg"}]
