"""What the bot says about itself in Telegram's apps: its command menu, description and short
description, per language (set by `tipline telegram set-webhook`), and how the webhook stands
(read by `tipline telegram status`).

Commands are the English words the conversation understands in every language (`/help` works for
a Spanish speaker too), so the menu never offers a command the bot would not recognise; only the
explanations are translated. The descriptions promise only what the tip line does: it keeps no
name, username or phone number, and it is not for emergencies. The agency's name comes from
settings; a text that would pass Telegram's length limits with a long name is used without it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

# Telegram's limits (Bot API: BotCommand, setMyDescription, setMyShortDescription).
COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")
MAX_COMMAND_DESCRIPTION = 256
MAX_DESCRIPTION = 512
MAX_SHORT_DESCRIPTION = 120

DEFAULT = ""  # Telegram's language_code for "everyone without a list of their own language"
# (language_code as Telegram gives it: ISO 639-1) -> command -> explanation. English is the default.
COMMANDS: dict[str, dict[str, str]] = {
    "en": {
        "start": "Start: how this anonymous tip line works",
        "help": "Help, emergency and other numbers",
        "new": "Start a new tip",
        "status": "Where your tip stands",
        "discard": "Drop the tip you have not sent yet",
        "forget": "Erase how we reach you (your tip stays)",
        "erase": "Delete this chat's recent messages",
    },
    "es": {
        "start": "Empezar: cómo funciona esta línea anónima",
        "help": "Ayuda, emergencias y otros números",
        "new": "Empezar una nueva denuncia",
        "status": "En qué estado está su denuncia",
        "discard": "Descartar la denuncia que aún no envió",
        "forget": "Borrar cómo le contactamos (la denuncia se queda)",
        "erase": "Borrar los mensajes recientes de este chat",
    },
    "pt": {
        "start": "Começar: como funciona esta linha anônima",
        "help": "Ajuda, emergências e outros números",
        "new": "Começar uma nova denúncia",
        "status": "Situação da sua denúncia",
        "discard": "Descartar a denúncia ainda não enviada",
        "forget": "Apagar como falamos com você (a denúncia fica)",
        "erase": "Apagar as mensagens recentes deste chat",
    },
    "ht": {
        "start": "Kòmanse: kijan liy anonim sa a mache",
        "help": "Èd, ijans ak lòt nimewo",
        "new": "Kòmanse yon nouvo denonsyasyon",
        "status": "Ki kote denonsyasyon ou a ye",
        "discard": "Jete denonsyasyon ou poko voye a",
        "forget": "Efase fason nou jwenn ou (denonsyasyon an rete)",
        "erase": "Efase dènye mesaj nan chat sa a",
    },
}

# {agency} is the agency's name from settings. Each language has a text without it too.
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "en": (
        "Anonymous tip line of {agency}. Tell us what you saw or know. We do not keep your name, "
        "username or phone number, and we never ask who you are. "
        "This is not an emergency line: if anyone is in danger now, call 911.",
        "Anonymous tip line. Tell us what you saw or know. We do not keep your name, username or "
        "phone number, and we never ask who you are. "
        "This is not an emergency line: if anyone is in danger now, call 911.",
    ),
    "es": (
        "Línea anónima de denuncias de {agency}. Cuéntenos lo que vio o sabe. No guardamos su nombre, "
        "usuario ni número de teléfono, y nunca le preguntamos quién es. "
        "No es una línea de emergencias: si alguien está en peligro ahora, llame al 911.",
        "Línea anónima de denuncias. Cuéntenos lo que vio o sabe. No guardamos su nombre, usuario ni "
        "número de teléfono, y nunca le preguntamos quién es. "
        "No es una línea de emergencias: si alguien está en peligro ahora, llame al 911.",
    ),
    "pt": (
        "Linha anônima de denúncias de {agency}. Conte o que você viu ou sabe. Não guardamos seu nome, "
        "usuário nem número de telefone, e nunca perguntamos quem você é. "
        "Não é uma linha de emergência: se alguém está em perigo agora, ligue 911.",
        "Linha anônima de denúncias. Conte o que você viu ou sabe. Não guardamos seu nome, usuário nem "
        "número de telefone, e nunca perguntamos quem você é. "
        "Não é uma linha de emergência: se alguém está em perigo agora, ligue 911.",
    ),
    "ht": (
        "Liy anonim pou bay enfòmasyon bay {agency}. Di nou sa ou wè oswa sa ou konnen. Nou pa kenbe "
        "non ou, non itilizatè ou oswa nimewo telefòn ou, epi nou pap janm mande ki moun ou ye. "
        "Se pa yon liy ijans: si yon moun an danje kounye a, rele 911.",
        "Liy anonim pou bay enfòmasyon. Di nou sa ou wè oswa sa ou konnen. Nou pa kenbe non ou, non "
        "itilizatè ou oswa nimewo telefòn ou, epi nou pap janm mande ki moun ou ye. "
        "Se pa yon liy ijans: si yon moun an danje kounye a, rele 911.",
    ),
}
SHORT_DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "en": ("Anonymous tips for {agency}. Emergency? Call 911.", "Anonymous tip line. Emergency? Call 911."),
    "es": (
        "Denuncias anónimas para {agency}. ¿Emergencia? Llame al 911.",
        "Denuncias anónimas. ¿Emergencia? Llame al 911.",
    ),
    "pt": ("Denúncias anônimas para {agency}. Emergência? Ligue 911.", "Denúncias anônimas. Emergência? Ligue 911."),
    "ht": ("Enfòmasyon anonim pou {agency}. Ijans? Rele 911.", "Enfòmasyon anonim. Ijans? Rele 911."),
}


@dataclass(frozen=True)
class LanguageProfile:
    """What the bot shows to people whose app is set to one language (`language_code` "" = everyone else)."""

    language_code: str
    commands: tuple[tuple[str, str], ...]
    description: str
    short_description: str


def _fitting(texts: tuple[str, str], agency: str, limit: int) -> str:
    """The text naming the agency if it fits Telegram's limit, else the one without the name."""
    named = texts[0].format(agency=agency)
    return named if len(named) <= limit else texts[1]


def profiles(agency: str) -> tuple[LanguageProfile, ...]:
    """The default profile (English) and one per other language, checked against Telegram's limits."""
    found = []
    for language in COMMANDS:
        commands = tuple(COMMANDS[language].items())
        for name, explanation in commands:
            assert COMMAND_NAME.fullmatch(name) and 1 <= len(explanation) <= MAX_COMMAND_DESCRIPTION, name
        found.append(
            LanguageProfile(
                language_code=DEFAULT if language == "en" else language,
                commands=commands,
                description=_fitting(DESCRIPTIONS[language], agency, MAX_DESCRIPTION),
                short_description=_fitting(SHORT_DESCRIPTIONS[language], agency, MAX_SHORT_DESCRIPTION),
            )
        )
    return tuple(found)


# The webhook, as `tipline telegram status` shows it -------------------------------------------------


@dataclass(frozen=True)
class WebhookStatus:
    """getWebhookInfo, as an operator needs it. `url` is the raw URL (may hold a secret): show `shown_url`."""

    url: str
    pending_update_count: int
    last_error_message: str | None
    last_error_date: dt.datetime | None  # UTC, to the minute
    max_connections: int | None
    allowed_updates: tuple[str, ...] | None

    @property
    def shown_url(self) -> str:
        return redact_url(self.url)


def redact_url(url: str) -> str:
    """A URL without what could be a secret: credentials, query values and fragment are replaced."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    if parts.username is not None or parts.password is not None:
        host = f"REDACTED@{host}"
    query = "&".join(f"{pair.split('=', 1)[0]}=REDACTED" for pair in parts.query.split("&") if pair)
    return urlunsplit((parts.scheme, host, parts.path, query, "REDACTED" if parts.fragment else ""))


def to_minute(moment: dt.datetime | None) -> dt.datetime | None:
    """A time from Telegram (aware or naive UTC) as naive UTC to the minute."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment.replace(second=0, microsecond=0)


def updates_tuple(value: Sequence[str] | None) -> tuple[str, ...] | None:
    return tuple(value) if value is not None else None
