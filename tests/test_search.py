"""Search by what tips say (issue 13, part 3), through the console as a detective uses it.

The index is blind: keyed hashes of normalised words, so the database holds no searchable word in
plaintext; the list shows one-line excerpts, and showing them is audited.
"""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import delete, func, select

from tests.support import fake_telegram
from tests.support.anonymity import phone_formats, scan_database, scan_files
from tests.support.console import Person, person
from tests.support.harness import TIPSTER, Harness
from tests.support.processes import run
from tests.support.samples import camera_jpeg
from tests.support.telegram_updates import message_update
from tipline.core import search as words
from tipline.core.vocabulary import KeyPurpose
from tipline.services import rotation, search
from tipline.storage.db import checkpoint
from tipline.storage.models import AuditEntry, DataUpgrade, SearchTerm

ROW = re.compile(r'data-reference="(T-[0-9A-Z]{6})"')
JOSE = "José Álvarez sells heroin from the CAFÉ on Élm Street, every night after ten"
VAN = "A white van with no plates parks behind the school at night"
BIKES = "A man sells stolen bikes from a blue garage on Birch Rd"


@pytest.fixture
def detective(tipline: Harness) -> Person:
    dana = person(tipline.app, tipline.runtime.ctx, "dana")
    assert dana.sign_in().location.endswith("/console/")
    return dana


def listed(detective: Person, query: str, **filters: str) -> list[str]:
    """The references a search lists (or opens, when it names exactly one tip)."""
    response = detective.client.get("/console/", query_string={"q": query, **filters})
    if response.status_code == 302:
        return [response.location.rsplit("/", 1)[-1]]
    assert response.status_code == 200
    return ROW.findall(response.get_data(as_text=True))


def tips(tipline: Harness, *texts: str) -> list[str]:
    """Submit one tip per text, each from its own number; their references."""
    return [tipline.submit_tip(text, sender=f"+1603555{n:04d}") for n, text in enumerate(texts, start=100)]


def test_words_are_found_whatever_their_case_and_accents(tipline: Harness, detective: Person) -> None:
    jose, van, bikes = tips(tipline, JOSE, VAN, BIKES)
    assert listed(detective, "jose") == [jose]
    assert listed(detective, "JOSÉ") == [jose]
    assert listed(detective, "cafe") == [jose]
    assert listed(detective, "Café elm") == [jose]
    assert sorted(listed(detective, "sells")) == sorted([jose, bikes])
    # Every word must match: "sells" alone finds two tips, "sells bikes" one of them.
    assert listed(detective, "sells bikes") == [bikes]
    assert listed(detective, "sells van") == []
    assert listed(detective, "the") == []  # a stop word alone asks for nothing


def test_follow_ups_captions_and_notes_are_found(tipline: Harness, detective: Person) -> None:
    (van,) = tips(tipline, VAN)
    tipline.say("The driver has a tattoo of a scorpion", sender="+16035550100")
    # A photo's caption is the text of the message that carries it.
    tipline.sms(
        "the licence plate is XJ-4471",
        sender="+16035550100",
        NumMedia="1",
        MediaContentType0="image/jpeg",
        MediaUrl0=tipline.twilio.cdn_url + "/photo.jpg",
    )
    page = detective.get(f"/console/tips/{van}")
    detective.post(f"/console/tips/{van}/note", {"text": "Matches the Riverside burglaries"}, csrf=True)
    assert page.status_code == 200
    assert listed(detective, "scorpion tattoo") == [van]
    assert listed(detective, "xj 4471") == [van]
    assert listed(detective, "XJ-4471") == [van]
    assert listed(detective, "riverside") == [van]
    assert listed(detective, "burglaries scorpion") == [van]


def test_references_are_found_with_or_without_t_and_by_prefix(tipline: Harness, detective: Person) -> None:
    first, second = tips(tipline, VAN, BIKES)
    body = first.removeprefix("T-")
    for query in (first, first.lower(), body, body.lower(), f"T-{body[:3]}", f"t-{body[:1]}", body[:4]):
        prefix = words.reference_prefix(query)
        # Without "T-", only a run with a digit is taken for a reference ("bmw" is a word)
        assert (prefix is None) == (not query.upper().startswith("T-") and not any(c.isdigit() for c in query)), query
        expected = sorted(r for r in (first, second) if prefix and r.startswith(prefix))
        # Found with or without "T-", in full or by its start; a unique match opens the tip at once.
        assert sorted(listed(detective, query)) == expected, query
    opened = detective.client.get("/console/", query_string={"q": first})
    assert opened.location.endswith(f"/console/tips/{first}")
    # Words that happen to be made of reference characters do not open a tip that merely says them.
    assert listed(detective, "garage") == [second]


def test_search_combines_with_the_other_filters(tipline: Harness, detective: Person) -> None:
    jose, bikes = tips(tipline, JOSE, BIKES)
    detective.get(f"/console/tips/{bikes}")
    detective.post(f"/console/tips/{bikes}/triage", {"status": "in_review", "category": "", "assignee": ""})
    assert sorted(listed(detective, "sells")) == sorted([jose, bikes])
    assert listed(detective, "sells", status="in_review") == [bikes]
    assert listed(detective, "sells", status="new") == [jose]
    assert listed(detective, "heroin", status="in_review") == []


def test_each_row_shows_an_excerpt_and_showing_it_is_audited(tipline: Harness, detective: Person) -> None:
    long = "Two men unload boxes of stolen phones " + "from a grey truck behind the old mill " * 5
    van, truck = tips(tipline, VAN, long)
    page = detective.client.get("/console/").get_data(as_text=True)
    assert VAN in page
    excerpt = re.search(r'data-reference="' + truck + r'".*?<div class="excerpt">([^<]*)</div>', page, re.S)
    assert excerpt is not None
    assert excerpt.group(1).startswith("Two men unload boxes") and excerpt.group(1).endswith("…")
    assert len(excerpt.group(1)) <= 91
    with tipline.runtime.ctx.factory() as session:
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "tips.list").order_by(AuditEntry.id.desc())
        ).first()
    assert entry is not None and entry.actor == "dana"
    assert sorted(json.loads(entry.detail)["excerpts"].split()) == sorted(r.removeprefix("T-") for r in (van, truck))
    # The search words are never written to the audit log (they may be tip content too).
    detective.client.get("/console/", query_string={"q": "stolen phones"})
    with tipline.runtime.ctx.factory() as session:
        details = " ".join(session.scalars(select(AuditEntry.detail)).all())
    assert "stolen" not in details and "phones" not in details


def test_no_searchable_word_is_stored_in_plaintext(tipline: Harness, detective: Person) -> None:
    secret_words = ["CANARYWORD", "scorpion", "Birchwood"]
    (van,) = tips(tipline, f"The {secret_words[0]} gang meets at night")
    tipline.say(f"One has a {secret_words[1]} tattoo", sender="+16035550100")
    detective.get(f"/console/tips/{van}")
    detective.post(f"/console/tips/{van}/note", {"text": f"Seen near {secret_words[2]} park"})
    assert listed(detective, "canaryword scorpion birchwood") == [van]
    needles = [w for word in secret_words for w in {word, *words.words(word)}]
    # Every column of every row (ciphertexts are random bytes: a word cannot show in them) ...
    assert scan_database(tipline.runtime.engine, needles) == []
    # ... and every byte of the data directory, SQLite's WAL included.
    checkpoint(tipline.runtime.ctx.factory)
    assert scan_files(tipline.data_dir, needles) == []
    with tipline.runtime.ctx.factory() as session:
        assert (session.scalar(select(func.count()).select_from(SearchTerm)) or 0) > 0


def test_nothing_in_the_index_derives_from_the_senders_number(tipline: Harness, detective: Person) -> None:
    tips(tipline, VAN)
    keyring = tipline.runtime.ctx.keyring
    version = keyring.primary_version(KeyPurpose.SEARCH)
    forms = {w for form in phone_formats("+16035550100") for w in words.words(form)}
    forms |= {w for form in phone_formats(TIPSTER) for w in words.words(form)}
    derived = {search.token(keyring, w, version) for w in forms}
    with tipline.runtime.ctx.factory() as session:
        stored = set(session.scalars(select(SearchTerm.token)).all())
    assert stored and not stored & derived
    assert listed(detective, "6035550100") == []


def test_search_works_before_during_and_after_a_search_key_rotation(
    tipline: Harness, detective: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    jose, van, bikes = tips(tipline, JOSE, VAN, BIKES)
    ctx = tipline.runtime.ctx
    assert listed(detective, "white van") == [van]
    monkeypatch.setattr(rotation, "REENCRYPT_BATCH", 1)  # one tip per step, so that "during" is a real state
    rotation_id = rotation.start(ctx, tipline.master_key(), KeyPurpose.SEARCH, actor="alex")
    first = rotation.step(ctx, rotation_id)
    assert first.moved == 1 and not first.finished
    with ctx.factory() as session:
        assert set(session.scalars(select(SearchTerm.key_version).distinct()).all()) == {1, 2}  # half moved
    with pytest.raises(rotation.RotationError):
        rotation.retire(ctx, KeyPurpose.SEARCH, 1, actor="alex")  # rows still need v1
    # A tip written mid-rotation is indexed under the new key; every tip is still found.
    late = tipline.submit_tip("Scorpion tattoo man deals behind the mall", sender="+16035550999")
    assert listed(detective, "white van") == [van]
    assert listed(detective, "josé") == [jose]
    assert listed(detective, "stolen bikes") == [bikes]
    assert listed(detective, "scorpion") == [late]
    assert rotation.run(ctx, rotation_id)
    with ctx.factory() as session:
        assert set(session.scalars(select(SearchTerm.key_version).distinct()).all()) == {2}  # no row left under v1
        assert rotation.remaining(session, KeyPurpose.SEARCH, 2) == 0
    rotation.retire(ctx, KeyPurpose.SEARCH, 1, actor="alex")  # the old key is destroyed
    assert listed(detective, "white van") == [van]
    assert sorted(listed(detective, "sells")) == sorted([jose, bikes])


def test_init_indexes_tips_written_before_the_index_existed(tipline: Harness, detective: Person) -> None:
    (van,) = tips(tipline, VAN)
    ctx = tipline.runtime.ctx
    with ctx.factory.begin() as session:  # as a database upgraded from 0.2 is: tips, and no index
        session.execute(delete(SearchTerm))
        session.execute(delete(DataUpgrade).where(DataUpgrade.name == search.SEARCH_INDEX_UPGRADE))
    assert listed(detective, "white van") == []
    with ctx.factory.begin() as session:
        assert search.index_existing_tips(session, ctx.keyring, ctx.now()) >= 1
    assert listed(detective, "white van") == [van]


def test_every_search_is_audited_with_blind_tokens_matches_or_not(
    tipline: Harness, detective: Person, cli_env: dict[str, str]
) -> None:
    tips(tipline, VAN)
    listed(detective, "Delgado", page="999")  # no match, and a page past the end
    listed(detective, "white van")
    with tipline.runtime.factory() as session:
        entries = session.scalars(select(AuditEntry).where(AuditEntry.action == "tips.search")).all()
        details = [json.loads(e.detail) for e in entries]
    assert [(e.actor, d["results"]) for e, d in zip(entries, details, strict=True)] == [("dana", 0), ("dana", 1)]
    # The words are not in the log; their tokens are, as `tipline audit search-token` prints them
    assert "delgado" not in json.dumps(details).lower()
    assert details[0]["tokens"] == search.query_tokens(tipline.runtime.ctx.keyring, "delgado")
    assert details[1]["tokens"] == search.query_tokens(tipline.runtime.ctx.keyring, "van WHITE")
    # An auditor who suspects a name asks the command line for its token
    printed = run(cli_env, "audit", "search-token", "DELGADO")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == details[0]["tokens"]


def test_plates_phone_and_house_numbers_are_found_however_they_are_typed(tipline: Harness, detective: Person) -> None:
    plate, phone, house, flat = tips(
        tipline,
        "The getaway car had plate ABC-1234",
        "They sell from a flip phone, number 555-867-5309",
        "Stolen goods stored at 1,200 Oak Avenue",
        "Drugs are sold out of apt 5 on the third floor",
    )
    for query in ("ABC1234", "abc-1234", "ABC 1234"):
        assert listed(detective, query) == [plate], query
    for query in ("5558675309", "555-867-5309", "555.867.5309"):
        assert listed(detective, query) == [phone], query
    assert listed(detective, "1200 oak") == [house]
    assert listed(detective, "apt 5") == [flat]
    assert listed(detective, "apt 4") == []


def test_a_word_never_opens_a_tip_whose_reference_starts_with_it(
    tipline: Harness, detective: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tipline.storage import records

    monkeypatch.setattr(records, "new_reference", lambda: "T-BMW7XY")
    (bmw,) = tips(tipline, VAN)
    # A detective searching for a car make finds no tip that says it, and is not taken to T-BMW7XY
    response = detective.client.get("/console/", query_string={"q": "bmw"})
    assert response.status_code == 200
    assert ROW.findall(response.get_data(as_text=True)) == []
    # while "T-BMW" still names it
    assert listed(detective, "T-BMW") == [bmw]


def test_normalisation_choices() -> None:
    assert words.words("José's CAFÉ, AK-47 don’t O'Neil a 3") == [
        "jose",
        "cafe",
        "ak",
        "47",
        "dont",
        "oneil",
        "3",
        "ak47",
    ]
    assert words.query_words("AK-47 van") == ["ak47", "van"]
    assert words.reference_prefix("t-7k3") == "T-7K3"
    assert words.reference_prefix("7K3Q9X") == "T-7K3Q9X"
    assert words.reference_prefix("T7K3Q9X") == "T-7K3Q9X"
    assert words.reference_prefix("truck") is None  # U is never in a reference
    assert words.reference_prefix("ok") is None  # too short without "T-"


def test_a_telegram_photo_caption_is_found(tg: tuple[Harness, fake_telegram.FakeTelegram]) -> None:
    harness, fake = tg
    fake.files["documents/AgCaption.bin"] = camera_jpeg(8).data
    photo = [{"file_id": "AgCaption", "file_unique_id": "c1", "width": 96, "height": 64, "file_size": 4265}]
    # A photo whose caption is all the tipster says, then SKIP twice: the tip is submitted.
    for update in (message_update(photo=photo, caption="the Ñandú bar's bouncer"), message_update("skip")):
        assert harness.post_update(update).status_code == 200
    assert harness.post_update(message_update("skip")).status_code == 200
    dana = person(harness.app, harness.runtime.ctx, "dana")
    dana.sign_in()
    found = listed(dana, "nandu bouncer")
    assert len(found) == 1 and found[0].startswith("T-")
