"""Every text the bot says, per language.

Texts are written for a scared person on a cheap phone: short, plain, and each fits in two SMS
segments (320 GSM-7 characters) once the settings are filled in (a test checks it). They never ask
who the tipster is. Placeholders: {agency}, {non_emergency}, {victim_services}, {ref}, {status},
{text}, {count}.
"""

from __future__ import annotations

from dataclasses import dataclass

ENGLISH, SPANISH = "en", "es"  # stored in each conversation; ISO 639-1 codes
LANGUAGES = (ENGLISH, SPANISH)
DEFAULT_LANGUAGE = ENGLISH

EN: dict[str, str] = {
    "greeting": (
        "Anonymous tip line of {agency}. You are anonymous: we never see your number. "
        "If anyone is in danger now, call 911. Tell us what you saw. "
        "HELP for help, STOP to opt out, ES para español."
    ),
    "ask_what": "Tell us what you saw or know. Please do not include your name.",
    "ask_where": "Thank you. Where did it happen? An address, place or landmark helps. Reply SKIP if you don't know.",
    "ask_when": "When did it happen? Reply SKIP if you don't know.",
    "what_required": "Please describe what you saw in words; that part is needed. Text DISCARD to drop this tip.",
    "submitted": (
        "Your tip {ref} has been received. Keep texting here to add details; a detective may reply here. "
        "Text NEW for another tip."
    ),
    "submitted_as_is": "Your unfinished tip {ref} was submitted as it stood.",
    "followup_added": "Added to tip {ref}. Thank you.",
    "urgent": "If anyone is in danger right now, call 911. Your tip is marked urgent.",
    "help": (
        "Anonymous tip line of {agency}: we never see your number or name. Emergency: call 911. "
        "Non-emergency: {non_emergency}. Victim help: {victim_services}. "
        "Text NEW, STATUS, DISCARD, FORGET or STOP."
    ),
    "opted_in": "You will get messages from this tip line again. Text HELP for help.",
    "language_set": "OK, we will write in English.",
    "status": "Tip {ref}: {status}.",
    "status_none": "You have no tip with us yet. Tell us what you saw.",
    "status_draft": "not sent yet, we are waiting for your answer",
    "status_received": "received",
    "status_review": "under review",
    "status_closed": "closed",
    "new_tip": "OK, a new tip. Tell us what you saw or know.",
    "discarded": "Your unfinished tip was dropped. Nothing was sent. Text us again any time.",
    "nothing_to_discard": "There is no unfinished tip to drop. Tips already sent stay with detectives.",
    "forgotten": (
        "Done: your number is erased. Your tip {ref} stays with detectives, but they can no longer reply, "
        "and new messages start a new tip."
    ),
    "forgotten_no_tip": "Done: your number is erased. New messages start a new tip.",
    "nothing_to_skip": "There is nothing to skip right now.",
    "media_received_one": (
        "Thank you, we got your photo. We remove its location and camera details before anyone sees it."
    ),
    "media_received_many": (
        "Thank you, we got your {count} photos. We remove their location and camera details before anyone sees them."
    ),
    "ask_what_photo": "What does it show, and what happened? Please do not include your name.",
    "media_refused_type": (
        "We can only accept photos (JPEG, PNG, HEIC, WebP or GIF), not videos, audio or documents. "
        "Nothing of that file was kept. You can send a photo or screenshot, or describe it in words."
    ),
    "media_refused_size": (
        "That file is too large for us, so nothing of it was kept. Please send a smaller photo or a "
        "screenshot, or describe it in words."
    ),
    "media_refused_pixels": (
        "That picture is too large for us to open, so nothing of it was kept. Please send a smaller photo "
        "or a screenshot."
    ),
    "media_refused_unreadable": (
        "We could not open the picture you sent, so nothing of it was kept. Please send it again, or "
        "describe in words what it shows."
    ),
    "media_failed": "We could not receive a photo you sent for tip {ref}. Please send it again.",
    "empty": "We got an empty message. Tell us what you saw or know.",
    "agency_reply": "{agency}: {text}",
    "erase_requested": (
        "We asked Telegram to delete this chat's messages from the last 48 hours. The bot cannot delete "
        "older ones: use Delete chat in your app for those. Your tip stays with the detectives."
    ),
}

ES: dict[str, str] = {
    "greeting": (
        "Línea anónima de denuncias de {agency}. Usted es anónimo: nunca vemos su número. "
        "Si alguien está en peligro ahora, llame al 911. Cuéntenos lo que vio. "
        "AYUDA para ayuda, STOP para darse de baja, EN for English."
    ),
    "ask_what": "Cuéntenos lo que vio o sabe. Por favor, no incluya su nombre.",
    "ask_where": (
        "Gracias. ¿Dónde ocurrió? Una dirección, lugar o punto de referencia ayuda. Responda SALTAR si no lo sabe."
    ),
    "ask_when": "¿Cuándo ocurrió? Responda SALTAR si no lo sabe.",
    "what_required": (
        "Por favor, describa con palabras lo que vio; esa parte es necesaria. Escriba DESCARTAR para anular."
    ),
    "submitted": (
        "Recibimos su denuncia {ref}. Siga escribiendo aquí para añadir detalles; un detective puede "
        "responderle aquí. Escriba NUEVO para otra denuncia."
    ),
    "submitted_as_is": "Su denuncia sin terminar {ref} fue enviada tal como estaba.",
    "followup_added": "Añadido a la denuncia {ref}. Gracias.",
    "urgent": "Si alguien está en peligro ahora mismo, llame al 911. Su denuncia está marcada como urgente.",
    "help": (
        "Línea anónima de {agency}: nunca vemos su número ni su nombre. Emergencias: 911. "
        "No urgente: {non_emergency}. Ayuda a víctimas: {victim_services}. "
        "Escriba NUEVO, ESTADO, DESCARTAR, OLVIDAR o STOP."
    ),
    "opted_in": "Volverá a recibir mensajes de esta línea. Escriba AYUDA para ayuda.",
    "language_set": "De acuerdo, le escribiremos en español.",
    "status": "Denuncia {ref}: {status}.",
    "status_none": "Todavía no tiene ninguna denuncia. Cuéntenos lo que vio.",
    "status_draft": "aún no enviada, esperamos su respuesta",
    "status_received": "recibida",
    "status_review": "en revisión",
    "status_closed": "cerrada",
    "new_tip": "De acuerdo, una nueva denuncia. Cuéntenos lo que vio o sabe.",
    "discarded": "Su denuncia sin terminar fue anulada. No se envió nada. Escríbanos cuando quiera.",
    "nothing_to_discard": "No hay ninguna denuncia sin terminar. Las denuncias enviadas siguen con los detectives.",
    "forgotten": (
        "Hecho: su número fue borrado. Su denuncia {ref} sigue con los detectives, pero ya no pueden "
        "responderle, y los mensajes nuevos empiezan una denuncia nueva."
    ),
    "forgotten_no_tip": "Hecho: su número fue borrado. Los mensajes nuevos empiezan una denuncia nueva.",
    "nothing_to_skip": "No hay nada que saltar ahora.",
    "media_received_one": (
        "Gracias, recibimos su foto. Le quitamos la ubicación y los datos de la cámara antes de que nadie la vea."
    ),
    "media_received_many": (
        "Gracias, recibimos sus {count} fotos. Les quitamos la ubicación y los datos de la cámara "
        "antes de que nadie las vea."
    ),
    "ask_what_photo": "¿Qué muestra y qué pasó? Por favor, no incluya su nombre.",
    "media_refused_type": (
        "Solo podemos aceptar fotos (JPEG, PNG, HEIC, WebP o GIF), no videos, audios ni documentos. "
        "No guardamos nada de ese archivo. Puede enviar una foto o captura de pantalla, o describirlo con palabras."
    ),
    "media_refused_size": (
        "Ese archivo es demasiado grande, así que no guardamos nada de él. Envíe una foto más pequeña o una "
        "captura de pantalla, o descríbalo con palabras."
    ),
    "media_refused_pixels": (
        "Esa imagen es demasiado grande para abrirla, así que no guardamos nada de ella. Envíe una foto más "
        "pequeña o una captura de pantalla."
    ),
    "media_refused_unreadable": (
        "No pudimos abrir la imagen que envió, así que no guardamos nada de ella. Envíela de nuevo, o "
        "describa con palabras lo que muestra."
    ),
    "media_failed": "No pudimos recibir una foto que envió para la denuncia {ref}. Por favor, envíela de nuevo.",
    "empty": "Recibimos un mensaje vacío. Cuéntenos lo que vio o sabe.",
    "agency_reply": "{agency}: {text}",
    "erase_requested": (
        "Pedimos a Telegram borrar los mensajes de este chat de las últimas 48 horas. El bot no puede borrar "
        "los anteriores: use Eliminar chat en su aplicación. Su denuncia sigue con los detectives."
    ),
}

CATALOGS: dict[str, dict[str, str]] = {ENGLISH: EN, SPANISH: ES}


@dataclass(frozen=True)
class Text:
    """A text to send, not yet rendered: a catalog key and its parameters."""

    key: str
    params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, key: str, **params: str) -> Text:
        return cls(key, tuple(sorted(params.items())))


def render(text: Text, language: str, defaults: dict[str, str]) -> str:
    """Render a Text in a language; `defaults` holds the agency settings.

    A parameter named `x_key` names another catalog entry, rendered in the same language as `x`.
    """
    catalog = CATALOGS.get(language, CATALOGS[DEFAULT_LANGUAGE])
    params = dict(defaults)
    for name, value in text.params:
        if name.endswith("_key"):
            params[name.removesuffix("_key")] = catalog[value]
        else:
            params[name] = value
    return catalog[text.key].format(**params)
