"""Alerts to detectives: who wants which, and the words they carry (pure; no I/O).

An alert says that something happened and where to look, never what: the agency, the tip's
reference and a console link. Not the tip's words, not the channel, not the alias, not a time to
the minute (an email's own Date header is cut to the minute too). Whoever reads the mailbox, or a
lock screen that shows notifications, learns that a tip exists and nothing a tipster said.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class AlertChoice(enum.StrEnum):
    """What a console account wants to be told about (users.alerts)."""

    URGENT = "urgent"  # tips flagged urgent (the default for detectives)
    NEW = "new"  # every new tip, urgent or not
    MINE = "mine"  # follow-ups from tipsters on tips assigned to me
    NONE = "none"  # nothing, not even escalations: the account said so

    @property
    def label(self) -> str:
        return CHOICE_LABELS[self]


CHOICE_LABELS = {
    AlertChoice.URGENT: "Urgent tips only",
    AlertChoice.NEW: "Every new tip",
    AlertChoice.MINE: "New messages on tips assigned to me",
    AlertChoice.NONE: "No alerts",
}


class AlertKind(enum.StrEnum):
    """What an alert is about (alerts.kind)."""

    URGENT = "urgent"  # a tip was flagged urgent
    NEW = "new"  # a tip was submitted
    FOLLOW_UP = "follow_up"  # the tipster wrote again on a tip assigned to the recipient
    ESCALATION = "escalation"  # an urgent tip nobody opened in time


class AlertMedium(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"  # the on-call number (TIPLINE_ALERT_SMS_TO)


# Who gets which kind. Escalation goes to every detective with an address except those who chose
# `none`: an explicit "never alert me" (someone on leave, a supervisor reading another way) is
# respected; the on-call SMS is the path that overrides nobody's choice and still reaches a person.
WANTS: dict[AlertKind, frozenset[AlertChoice]] = {
    AlertKind.URGENT: frozenset({AlertChoice.URGENT, AlertChoice.NEW}),
    AlertKind.NEW: frozenset({AlertChoice.NEW}),
    AlertKind.FOLLOW_UP: frozenset({AlertChoice.MINE}),
    AlertKind.ESCALATION: frozenset({AlertChoice.URGENT, AlertChoice.NEW, AlertChoice.MINE}),
}

HEADLINES = {
    AlertKind.URGENT: "Urgent tip",
    AlertKind.NEW: "New tip",
    AlertKind.FOLLOW_UP: "New message on your tip",
    AlertKind.ESCALATION: "Urgent tip not yet opened",
}

# A deliberately plain check (one @, a dot in the domain, no spaces or angle brackets): enough to
# catch a typo and to keep header injection out; the mail server is the judge of the rest.
_EMAIL = re.compile(r"^[^@\s<>,;\"]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$")


def valid_email(address: str) -> bool:
    return len(address) <= 254 and _EMAIL.match(address) is not None


@dataclass(frozen=True)
class AlertText:
    subject: str
    body: str
    sms: str


def compose(kind: AlertKind, agency: str, reference: str, link: str) -> AlertText:
    """The words of one alert: the agency, the reference and the link, and nothing about the tip."""
    headline = HEADLINES[kind]
    subject = f"{headline} {reference} · {agency}"
    extra = (
        "\nNobody has opened it yet. You get this because it is urgent and waited too long.\n"
        if kind is AlertKind.ESCALATION
        else ""
    )
    body = (
        f"{headline} for {agency}: {reference}.\n{extra}\n"
        f"Open it in the console (sign-in required):\n{link}\n\n"
        "This alert carries no tip content by design. Change your alerts on the console's Alerts page.\n"
    )
    # The on-call text comes from the tip line's own number: a reply would reach the tip line (which
    # ignores the on-call number, see intake), not a colleague.
    sms = f"{agency}: {headline.lower()} {reference}. {link} (Do not reply to this text.)"
    return AlertText(subject=subject, body=body, sms=sms)
