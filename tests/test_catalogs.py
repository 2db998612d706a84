"""The gettext catalogs (en, es, pt, ht) and an agency's own texts, checked at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from tests.support.harness import Harness, make_harness
from tests.support.processes import run
from tipline.config import ConfigError, load_settings
from tipline.core.catalog import CATALOGS, LANGUAGES, Text, placeholders, render

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "tipline" / "locale"


def test_every_language_has_a_po_file_with_every_key_and_the_same_placeholders() -> None:
    english = CATALOGS["en"]
    for language in LANGUAGES:
        path = LOCALE / language / "LC_MESSAGES" / "tipline.po"
        with path.open("rb") as handle:
            po = read_po(handle)
        entries = {m.context: m for m in po if m.id}
        assert set(entries) == set(english), language
        for key, message in entries.items():
            assert message.id == english[key], f"{language}.{key}: the msgid is the English text"
            assert message.string, f"{language}.{key} is not translated"
            assert placeholders(message.string) == placeholders(english[key]), f"{language}.{key}"
            assert not message.fuzzy, f"{language}.{key} is fuzzy"


def test_texts_without_an_agency_name_read_in_their_own_language() -> None:
    unnamed = {"agency": "the police department", "non_emergency": "311", "victim_services": "1-855-484-2846"}
    assert "the police department" in render(Text.of("greeting"), "en", unnamed)
    for language in ("es", "pt", "ht"):
        text = render(Text.of("greeting"), language, unnamed)
        assert "the police department" not in text, language
        assert CATALOGS[language]["agency_default"] in text
    named = render(Text.of("greeting"), "es", {**unnamed, "agency": "Example City Police"})
    assert named.startswith("Denuncie ante Example City Police ")


def test_an_unknown_language_falls_back_to_english() -> None:
    assert render(Text.of("ask_when"), "xx", {}) == CATALOGS["en"]["ask_when"]


# An agency's own texts --------------------------------------------------------------------------------


def texts_file(tmp_path: Path, content: str) -> dict[str, str]:
    path = tmp_path / "texts.toml"
    path.write_text(content, encoding="utf-8")
    return {"TIPLINE_TEXTS_FILE": str(path), "TIPLINE_AGENCY_NAME": "Example City Police"}


def test_an_agencys_texts_replace_the_defaults(  # type: ignore[no-untyped-def]
    env: dict[str, str], tmp_path: Path, twilio_server, log_file: Path
) -> None:
    custom = texts_file(
        tmp_path,
        '[en]\nask_where = "Where was it? A street or a shop name helps. SKIP if you do not know."\n'
        '[es]\nask_when = "¿Cuándo fue? SALTAR si no sabe."\n',
    )
    harness: Harness = make_harness({**env, **custom}, twilio_server, log_file)
    try:
        assert harness.say("Someone is selling stolen phones at the market") == [
            "Where was it? A street or a shop name helps. SKIP if you do not know."
        ]
        spanish = "+15555550155"
        harness.say("ES", sender=spanish)
        harness.say("Venden teléfonos robados en el mercado", sender=spanish)
        assert harness.say("En la calle 5", sender=spanish) == ["¿Cuándo fue? SALTAR si no sabe."]
    finally:
        harness.runtime.close()


@pytest.mark.parametrize(
    "content,message",
    [
        ('[fr]\ngreeting = "Bonjour"\n', "unknown language 'fr'"),
        ('[en]\ngreetings = "Hello"\n', "en.greetings: unknown text key"),
        ('[en]\nsubmitted = "Thank you, we got your tip."\n', "en.submitted: placeholders must be ['ref']"),
        ('[es]\nfollowup_added = "Añadido a {ref} por {agent}."\n', "es.followup_added: placeholders must be"),
        ('[pt]\nask_when = "Quando foi? {"\n', "pt.ask_when: malformed placeholder"),
        ('[en]\ngreeting = "Hi {} from {agency}"\n', "en.greeting: placeholders are plain names"),
        ('[en]\nsubmitted = "Tip {ref:>99999}"\n', "en.submitted: placeholders are plain names"),
        ('[en]\nsubmitted = "Tip {ref!r}"\n', "en.submitted: placeholders are plain names"),
        ('[en]\nsubmitted = "Tip {ref.real}"\n', "en.submitted: placeholders"),
        ('[en]\nask_what = ""\n', "en.ask_what: the text must be a non-empty string"),
        ("[ht]\nempty = " + '"' + "Nou resevwa yon mesaj vid. " * 12 + '"\n', "ht.empty: 3 SMS segments"),
        ("[es]\nempty = " + '"' + "Recibimos un mensaje vacío. " * 5 + '"\n', "es.empty: 3 SMS segments"),
        ("[en\n", "cannot read"),
    ],
)
def test_a_bad_text_is_refused_at_load_naming_its_key(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({"TIPLINE_DATA_DIR": str(tmp_path), **texts_file(tmp_path, content)})
    assert str(error.value).startswith("TIPLINE_TEXTS_FILE: ")
    assert message in str(error.value)


def test_the_segment_check_uses_the_agencys_own_settings(tmp_path: Path) -> None:
    help_text = '[en]\nhelp = "' + "Call us. " * 28 + '{agency} {non_emergency} {victim_services}"\n'
    short = {"TIPLINE_DATA_DIR": str(tmp_path), **texts_file(tmp_path, help_text)}
    assert load_settings({**short, "TIPLINE_VICTIM_SERVICES": "311"}).texts
    with pytest.raises(ConfigError, match="en.help: 3 SMS segments"):
        load_settings(short)  # the default victim-services contact is 57 characters


def test_init_stops_early_on_a_bad_texts_file(cli_env: dict[str, str], tmp_path: Path) -> None:
    custom = texts_file(tmp_path, '[es]\nsubmitted = "Recibimos su denuncia. Gracias."\n')
    result = run({**cli_env, **custom}, "init")
    assert result.returncode == 2
    expected = "TIPLINE_TEXTS_FILE: es.submitted: placeholders must be ['ref'] (missing ['ref'], unknown [])"
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (Path(cli_env["TIPLINE_DATA_DIR"]) / "tipline.db").exists()
