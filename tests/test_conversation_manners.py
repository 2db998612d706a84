"""The conversation as tipsters really write, by SMS through the webhook (issue 12, part 8).

Each test is one of the failures seen when people tried the tip line: greetings taken as the tip,
English answers to Spanish, "When did it happen?" after "right now", a false STATUS, a call for help
that got only "Added to tip".
"""

from __future__ import annotations

from typing import Any

from tests.support import fake_telegram
from tests.support.harness import TIPSTER, Harness, reference_of
from tests.support.telegram_updates import message_update
from tipline.core import segments
from tipline.services import review

OTHER = "+15555550177"
URGENT_ES = (
    "Si alguien está en peligro ahora mismo, llame al 911: esta línea no envía ayuda. "
    "Marcaremos su denuncia como urgente."
)


def test_a_greeting_in_spanish_is_answered_in_spanish_and_is_not_the_tip(tipline: Harness) -> None:
    greeting = tipline.say("Hola, quiero denunciar algo")
    assert greeting == [
        "Denuncie ante Example City Police sin dar su nombre: nunca vemos su teléfono. Si hay peligro ahora, "
        "llame al 911. Cuéntenos qué vio. AYUDA para ayuda, STOP para darse de baja, EN for English, "
        "PT para portugues, HT pou kreyòl."
    ]
    assert segments.count(greeting[0]).segments == 2
    assert "¿Dónde pasó?" in tipline.say("Venden drogas detrás de la escuela")[-1]
    assert "¿Cuándo pasó?" in tipline.say("Calle Maple")[-1]
    reference = reference_of(tipline.say("SALTAR")[0])
    assert review.read_tip(tipline.runtime.ctx, reference).what == "Venden drogas detrás de la escuela"


def test_good_evening_gets_the_welcome_in_english(tipline: Harness) -> None:
    assert "Tell us what you saw" in tipline.say("Good evening")[0]
    assert "Where did it happen?" in tipline.say("Someone sells stolen bikes from a garage")[-1]


def test_pistola_ahora_mismo_gets_the_911_line_in_spanish_and_no_when_question(tipline: Harness) -> None:
    first = tipline.say("pistola ahora mismo")
    assert first[0] == URGENT_ES
    assert "¿Dónde pasó?" in first[-1]
    receipt = tipline.say("Frente a la tienda de la calle 5")  # no "¿Cuándo pasó?": it is now
    reference = reference_of(receipt[0])
    assert receipt[0].startswith(f"Recibimos su denuncia {reference}.")
    detail = review.read_tip(tipline.runtime.ctx, reference)
    assert (detail.what, detail.where, detail.when, detail.summary.urgent) == (
        "pistola ahora mismo",
        "Frente a la tienda de la calle 5",
        "now",
        True,
    )
    thread = [e.text for e in detail.thread]
    assert "now" not in thread  # the time was understood, not said: no invented message


def test_status_after_new_and_discard_tells_the_truth(tipline: Harness) -> None:
    reference = tipline.submit_tip("Someone keeps breaking into cars on Pine St")
    assert tipline.say("NEW")[0].startswith("OK, a new tip.")
    assert tipline.say("STATUS") == [f"Tip {reference}: received."]
    tipline.say("DISCARD")
    assert tipline.say("STATUS") == [f"Tip {reference}: received."]
    assert tipline.say("STATUS", sender=OTHER) == ["You have no tip with us yet. Tell us what you saw."]


def test_help_me_after_an_urgent_tip_gets_the_911_line(tipline: Harness) -> None:
    tipline.say("A man has a gun outside the bar")
    tipline.say("skip")
    reference = reference_of(tipline.say("skip")[0])
    answer = tipline.say("help me")
    assert answer == [
        "If anyone is in danger right now, call 911: this text line cannot send help. We will mark your tip urgent.",
        f"Added to tip {reference}. Thank you.",
    ]


def test_after_olvidar_the_next_message_is_understood_in_spanish_again(tipline: Harness) -> None:
    tipline.submit_tip("Venden drogas en la esquina de la calle 5", sender=TIPSTER)
    assert tipline.say("OLVIDAR")[0].startswith("Hecho: borramos cómo contactarle.")
    assert tipline.say("Hola")[0].startswith("Denuncie ante Example City Police")


def test_portuguese_and_haitian_creole_tipsters_are_answered_in_their_language(tipline: Harness) -> None:
    assert tipline.say("Oi, boa noite")[0].startswith("Denuncie para Example City Police sem dar seu nome")
    assert tipline.say("Tem um homem vendendo drogas na esquina")[-1].startswith("Obrigado. Onde foi?")
    assert tipline.say("AJUDA")[0].startswith("Denuncie para Example City Police")
    creole = tipline.say("Bonswa, mwen vle fè yon denonsyasyon", sender=OTHER)
    assert creole[0].startswith("Liy denonsyasyon anonim Example City Police.")
    assert tipline.say("EDE", sender=OTHER)[0].startswith("Liy anonim Example City Police")


def test_on_telegram_spanish_words_win_over_an_app_set_to_english(
    tg: tuple[Harness, fake_telegram.FakeTelegram],
) -> None:
    harness, fake = tg

    def say(text: str) -> list[str]:
        before = len(fake.called("sendMessage"))
        update: dict[str, Any] = message_update(text)  # from a user whose app is set to English
        assert harness.post_update(update).status_code == 200
        harness.dispatch()
        return [m["text"] for m in fake.called("sendMessage")[before:]]

    first = say("Hay un hombre con una pistola ahora mismo en el parque")
    assert first[0] == URGENT_ES
    assert first[-1].startswith("Gracias. ¿Dónde pasó?")
    receipt = say("Parque Central, junto a la fuente")
    assert receipt[0].startswith("Recibimos su denuncia T-")
