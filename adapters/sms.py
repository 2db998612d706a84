"""SMS through Twilio: verify inbound webhooks, parse them and status callbacks channel-neutrally,
answer in TwiML, send and delete. Only this module knows Twilio's fields and error codes.

Of an inbound message we keep exactly: `MessageSid` (for dedupe and deletion, never in clear),
`From` (the return address, handed to intake which pseudonymises and encrypts it), `Body`,
`OptOutType`, and for an MMS each `MediaUrl{N}` (encrypted until the file is fetched) with its
declared `MediaContentType{N}` (to refuse videos and documents at once; the bytes decide the rest).
Everything else Twilio sends, notably the carrier's guess of the sender's location (`FromCity`,
`FromState`, `FromZip`, `FromCountry`), is dropped here, so the core never sees it. Nothing here
logs a number, a body, an id or a media URL.

MMS media are downloaded with Basic auth from the API host only, after checking that the URL is
exactly this account's media of this message: a forged URL never receives our credentials. Twilio
answers with a redirect to its CDN; `requests` drops the credentials when the host changes.

A signed message keeps its words whatever its media fields say: Twilio retries neither a 4xx nor a
5xx, so an attachment we cannot take (a video, a media URL of another form, host, account or
message) becomes a refusal the detective sees, never an error that loses the message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import re
import unicodedata
from collections.abc import Iterable, Mapping
from xml.sax.saxutils import escape, quoteattr

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.rest.api.v2010.account.message import MessageInstance

from tipline.config import TwilioSettings
from tipline.core import images as media_mod
from tipline.core.channels import (
    ChannelError,
    InboundMessage,
    LoggedInbound,
    LoggedOutbound,
    MalformedWebhook,
    MediaRef,
    Sent,
    StatusReport,
)
from tipline.core.conversation import Intent, classify
from tipline.core.vocabulary import DeliveryStatus, ErasedReason

CHANNEL = "sms"
MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")
PHONE = re.compile(r"^\+?[0-9]{3,15}$")  # E.164, or a short code
OPT_OUT_TYPES = {"STOP": Intent.STOP, "START": Intent.START, "HELP": Intent.HELP}
# Twilio error codes that mean "this number will never get our messages", and why.
RECIPIENT_GONE = {
    21610: ErasedReason.STOP,  # the number opted out at the carrier (replied STOP to our line)
    21614: ErasedReason.UNREACHABLE,  # not a mobile number
    21211: ErasedReason.UNREACHABLE,  # not a valid phone number
}
RETRYABLE = {20009, 20429, 30001}
NOT_FOUND = 20404  # the resource (a message or media to delete) does not exist
MEDIA_URL = re.compile(
    r"https?://[^/?#]+/2010-04-01/Accounts/AC[0-9a-fA-F]{32}/Messages/(?P<message>(?:SM|MM)[0-9a-fA-F]{32})"
    r"/Media/ME[0-9a-fA-F]{32}"
)
NUM_MEDIA = re.compile(r"[0-9]{1,2}")
MAX_MEDIA = 10  # Twilio sends at most ten files with one MMS
# Declared types worth downloading; the content is checked again. Anything else (video/3gpp,
# audio/amr, text/vcard, application/pdf, image/tiff...) is refused without being fetched.
PHOTO_TYPES = {
    "image/jpeg",
    "image/jpg",
    "image/pjpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/heic",
    "image/heif",
}


def clean_text(text: str) -> str:
    """Normalise a message body: NFC, no control characters except newlines and tabs."""
    text = unicodedata.normalize("NFC", text)
    if text.isprintable():
        return text  # no character of category C (nor a separator other than the space) to look at
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C" or ch == "\u200d")


def verify(auth_token: str, url: str, params: Mapping[str, str], signature: str | None) -> bool:
    """Check `X-Twilio-Signature` with the twilio package's own validator.

    Its `validate` computes the signature twice (the URL as given and with its default port, as
    Twilio signs either), on every request; the first one is the one Twilio sends for a URL
    without a port, so it is tried alone first, and only a mismatch asks for the full check."""
    if not signature:
        return False
    validator = RequestValidator(auth_token)
    if hmac.compare_digest(validator.compute_signature(url, params).encode(), signature.encode()):
        return True
    return bool(validator.validate(url, params, signature))


def parse_inbound(form: Mapping[str, str], media_prefix: str = "") -> InboundMessage:
    """An inbound SMS or MMS webhook, channel-neutral; MalformedWebhook names the field that is wrong.

    Only a message that cannot be processed at all (no MessageSid to process it once, no From to
    answer) is malformed; media are taken only if their URL starts with `media_prefix` (this
    account's messages at the configured API host), and refused otherwise."""
    sid = form.get("MessageSid", "")
    if not MESSAGE_SID.fullmatch(sid):
        raise MalformedWebhook("MessageSid is missing or malformed")
    sender = form.get("From", "")
    if not PHONE.fullmatch(sender):
        raise MalformedWebhook("From is missing or not a phone number")
    files, refused = _media(form, sid, media_prefix)
    return InboundMessage(
        channel=CHANNEL,
        address=sender,
        delivery_id=sid,
        text=clean_text(form.get("Body", "")),
        media=files,
        refused_media=refused,
        provider_intent=OPT_OUT_TYPES.get(form.get("OptOutType", "").upper()),
        provider_message_id=sid,
    )


def _media(form: Mapping[str, str], sid: str, prefix: str) -> tuple[tuple[MediaRef, ...], tuple[str, ...]]:
    """An MMS's photos worth fetching, and one refusal per other attachment (video, vCard...)."""
    announced = form.get("NumMedia", "0") or "0"
    if not NUM_MEDIA.fullmatch(announced) or int(announced) > MAX_MEDIA:
        return (), (media_mod.UNREADABLE,)  # files were sent, but which cannot be told
    files: list[MediaRef] = []
    refused: list[str] = []
    for n in range(int(announced)):
        url = form.get(f"MediaUrl{n}", "")
        declared = form.get(f"MediaContentType{n}", "").split(";")[0].strip().lower()
        if declared not in PHOTO_TYPES:
            refused.append(media_mod.TYPE)
        elif not _media_of(url, sid, prefix):
            refused.append(media_mod.UNREADABLE)  # never fetched: it is not where our credentials may go
        else:
            files.append(MediaRef(url, declared, provider_copy=f"{sid}/{url.rsplit('/', 1)[1]}"))
    return tuple(files), tuple(refused)


def _media_of(url: str, sid: str, prefix: str) -> bool:
    """Whether `url` is exactly a media file of message `sid` under `prefix`."""
    match = MEDIA_URL.fullmatch(url)
    return match is not None and match.group("message") == sid and url.startswith(prefix)


def parse_status(form: Mapping[str, str]) -> StatusReport:
    """A delivery status callback: which message, its status (any Twilio reports) and error code."""
    sid = form.get("MessageSid", "")
    if not MESSAGE_SID.fullmatch(sid):
        raise MalformedWebhook("MessageSid is missing or malformed")
    try:
        status = DeliveryStatus(form.get("MessageStatus", "").lower())
    except ValueError:
        raise MalformedWebhook("MessageStatus is missing or unknown") from None
    error_code = form.get("ErrorCode") or None
    if error_code is not None and not (error_code.isascii() and error_code.isdigit()):  # not "²"
        raise MalformedWebhook("ErrorCode is malformed")
    gone = RECIPIENT_GONE.get(int(error_code)) if error_code is not None else None
    return StatusReport(sid, status, error_code, recipient_gone=gone)


def parse_reply_status(form: Mapping[str, str]) -> tuple[StatusReport, str]:
    """A status callback for one of the bot's TwiML replies (its `<Message action>`), and its recipient.

    Twilio posts the same fields as to a REST message's status callback: the reply's own
    `MessageSid` (which we never saw before: Twilio made the message from our TwiML),
    `MessageStatus`, `ErrorCode`, and `To`, the tipster's number, which only intake may see (it
    finds the sender by keyed pseudonym, as for an inbound message). Older callbacks name the first
    two `SmsSid` and `SmsStatus`."""
    fields = dict(form)
    fields.setdefault("MessageSid", form.get("SmsSid", ""))
    fields.setdefault("MessageStatus", form.get("SmsStatus", ""))
    report = parse_status(fields)
    recipient = form.get("To", "")
    if not PHONE.fullmatch(recipient):
        raise MalformedWebhook("To is missing or not a phone number")
    return report, recipient


def twiml(replies: Iterable[str], action: str | None = None) -> str:
    """The TwiML answer: one <Message> per reply, or an empty <Response/>.

    With `action`, each <Message> asks Twilio to post that reply's delivery status there (the
    reply's MessageSid, MessageStatus...), so that its copy at Twilio can be deleted like any other."""
    attributes = f' action={quoteattr(action)} method="POST"' if action else ""
    body = "".join(f"<Message{attributes}>{escape(r)}</Message>" for r in replies)
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>'


class TwilioSms:
    """The SMS channel: sends and deletes through Twilio's REST API with the real `twilio` client."""

    name = CHANNEL
    deletes_provider_copies = True
    replies_inline = True  # TwiML in the webhook response
    answer_type = "text/xml; charset=utf-8"  # the content type of `answer`

    def __init__(self, settings: TwilioSettings, status_callback: str | None = None, reply_callback: str | None = None):
        self.settings = settings
        self.status_callback = status_callback  # where REST sends report their status
        self.reply_callback = reply_callback  # where the webhook's TwiML replies report theirs (`action`)
        # environment= non-empty so TWILIO_REGION/TWILIO_EDGE in the process environment cannot
        # silently rewrite the host (the client reads os.environ when given a falsy mapping).
        # REST calls authenticate with the API key when one is set (settings.rest_auth), always
        # on behalf of our account; the auth token still verifies webhook signatures.
        username, password = settings.rest_auth
        self.client = Client(
            username,
            password,
            account_sid=settings.account_sid,
            http_client=TwilioHttpClient(timeout=15),
            environment={"TIPLINE": "1"},
        )
        self.client.api.base_url = settings.api_base_url

    def authenticate(self, url: str, form: Mapping[str, str], signature: str | None) -> bool:
        """Whether Twilio signed this webhook: `url` is the public URL it called, query included."""
        return verify(self.settings.auth_token, url, form, signature)

    def parse_inbound(self, form: Mapping[str, str]) -> InboundMessage:
        return parse_inbound(form, self.media_prefix)

    @property
    def media_prefix(self) -> str:
        """Where this account's MMS media live: the only URLs that get our credentials."""
        return f"{self.settings.api_base_url}/2010-04-01/Accounts/{self.settings.account_sid}/Messages/"

    def parse_status(self, form: Mapping[str, str]) -> StatusReport:
        return parse_status(form)

    def answer(self, replies: Iterable[str]) -> str:
        """The webhook's answer carrying the bot's replies (TwiML), each reporting its status to
        `reply_callback` so that Twilio's copy of it is deleted too."""
        return twiml(replies, self.reply_callback)

    def parse_reply_status(self, form: Mapping[str, str]) -> tuple[StatusReport, str]:
        return parse_reply_status(form)

    def send(self, address: str, text: str, keyboard: str | None = None) -> Sent:
        kwargs: dict[str, str] = {"to": address, "body": text}
        if self.settings.messaging_service_sid:
            kwargs["messaging_service_sid"] = self.settings.messaging_service_sid
        else:
            assert self.settings.from_number
            kwargs["from_"] = self.settings.from_number
        if self.status_callback:
            kwargs["status_callback"] = self.status_callback
        try:
            message = self.client.messages.create(**kwargs)
        except TwilioRestException as error:
            raise _channel_error(error) from None
        except requests.RequestException as error:  # no answer: Twilio may have taken it
            raise ChannelError(type(error).__name__, permanent=False, uncertain=True) from None
        return Sent(message.sid)

    def delete(self, provider_message_id: str) -> None:
        """Delete a message (and with it its media), or one media file given as 'MM…/ME…'."""
        message_sid, _, media_sid = provider_message_id.partition("/")
        try:
            if media_sid:
                self.client.messages(message_sid).media(media_sid).delete()
            else:
                self.client.messages(message_sid).delete()
        except TwilioRestException as error:
            raise _channel_error(error, deleting=True) from None
        except requests.RequestException as error:
            raise ChannelError(type(error).__name__, permanent=False) from None

    # Sent exactly once: was this message already sent? (outbox.Dispatcher, channels.SentLog) ------

    def find_sent(self, address: str, text: str, since: dt.datetime) -> list[Sent]:
        """The messages we sent by REST to `address` whose body is exactly `text`, created since
        `since` (naive UTC, inclusive), oldest first: for a send whose previous attempt began but
        recorded no result, so that a message Twilio already took is adopted, not sent twice.

        Listed with the real client's `messages.stream(to=..., from_=...)`, newest first, read
        until the first one created before `since`. Not filtered by `date_sent_after`: Twilio sets
        DateSent only once a message left its queue, so a message still queued (a Messaging
        Service throttles) would be missed and sent again. With a Messaging Service the sender is
        one of its numbers, so the service's sid is matched instead of `From`. A body Twilio
        rewrote (Smart Encoding, an appended opt-out notice) does not match: the message is then
        sent again (at least once rather than lost). Nothing here logs the number or the text."""
        since = since.replace(tzinfo=dt.UTC) if since.tzinfo is None else since.astimezone(dt.UTC)
        query: dict[str, object] = {"to": address, "page_size": 50, "limit": 1000}
        service = self.settings.messaging_service_sid
        if not service and self.settings.from_number:
            query["from_"] = self.settings.from_number
        found: list[Sent] = []
        try:
            for message in self.client.messages.stream(**query):
                created = message.date_created or message.date_sent
                if created is not None and created < since:
                    break  # newest first: everything after this is older still
                if (
                    (message.direction or "") == "outbound-api"
                    and message.body == text
                    and (not service or message.messaging_service_sid == service)
                ):
                    found.append(Sent(message.sid))
        except (TwilioException, requests.RequestException) as error:
            raise _listing_error(error) from None
        found.reverse()
        return found

    # Reconciliation: Twilio's Messages log -------------------------------------------------------

    def inbound_since(self, since: dt.datetime, until: dt.datetime | None = None) -> list[LoggedInbound]:
        """The inbound messages to our line in Twilio's Messages log, sent from `since` to `until`
        (both inclusive, to the second, UTC), oldest first (in Twilio's order within one second).

        Each is shaped by `parse_inbound` exactly as if Twilio had posted it to the webhook (its
        media listed from the log), and marked `answer_inline=False`: nobody waits for a TwiML
        answer. The listing uses the `twilio` client's own paging (`messages.stream`), filtered by
        `To` (our number); with a Messaging Service alone, the account's inbound messages are kept
        only if they came in through that service: texts to the agency's other numbers and apps
        never become tips, and are never answered or deleted here.
        Raises ChannelError when Twilio fails; nothing here logs a number, a body or an id."""
        query: dict[str, object] = {"date_sent_after": since.astimezone(dt.UTC), "page_size": 1000}
        if until is not None:
            query["date_sent_before"] = until.astimezone(dt.UTC)
        if self.settings.from_number:
            query["to"] = self.settings.from_number
        try:
            service = None if self.settings.from_number else self.settings.messaging_service_sid
            listed = [
                m
                for m in self.client.messages.stream(**query)
                if m.direction == "inbound" and (service is None or m.messaging_service_sid == service)
            ]
            listed.reverse()  # Twilio lists newest first
            listed.sort(key=lambda m: m.date_sent or m.date_created or since)  # stable: keeps Twilio's order
            return [self._logged(m) for m in listed]
        except (TwilioException, requests.RequestException) as error:
            raise _listing_error(error) from None

    def outbound_between(self, since: dt.datetime, until: dt.datetime) -> list[LoggedOutbound]:
        """The messages our line sent (REST sends and TwiML replies) that are still in Twilio's
        Messages log, sent from `since` to `until` (inclusive, to the second; naive times are UTC).

        Ours are what `send` sends (through the Messaging Service when one is set, else from our
        number, with no service) and the TwiML replies to texts to our line (from our number, or
        through our service). A message another number or service of the agency sent, or one sent
        during a call, is never listed. Another application sending by REST from our very number
        with no service cannot be told apart here: such messages are listed as not `certain`.
        Each message's own send time is checked against the window too: Twilio documents its
        DateSent filters by the date, and a reply minutes old must not be taken for a day old.
        Messages not sent yet (queued, scheduled: no send time) are never listed. Raises
        ChannelError when Twilio fails; nothing here logs a number, a body or an id."""
        number, service = self.settings.from_number, self.settings.messaging_service_sid
        since, until = (t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC) for t in (since, until))
        query: dict[str, object] = {
            "date_sent_after": since,
            "date_sent_before": until,
            "page_size": 1000,
        }
        if number and not service:
            query["from_"] = number  # a service sends from any number of its pool

        def ours(message: MessageInstance) -> LoggedOutbound | None:
            sent = message.date_sent
            if not message.sid or sent is None or not since <= sent <= until:
                return None
            by_service = bool(service) and message.messaging_service_sid == service
            if message.direction == "outbound-api" and service:
                return LoggedOutbound(message.sid, certain=True) if by_service else None
            if message.direction == "outbound-api":
                return LoggedOutbound(message.sid, certain=False) if message.messaging_service_sid is None else None
            if message.direction == "outbound-reply" and (by_service or (bool(number) and message.from_ == number)):
                return LoggedOutbound(message.sid, certain=True)
            return None

        try:
            return [found for m in self.client.messages.stream(**query) if (found := ours(m)) is not None]
        except (TwilioException, requests.RequestException) as error:
            raise _listing_error(error) from None

    def _logged(self, message: MessageInstance) -> LoggedInbound:
        """One listed inbound message as the webhook form Twilio would have posted, parsed."""
        sent_at = message.date_sent or message.date_created or dt.datetime.now(dt.UTC)
        form = {
            "MessageSid": message.sid or "",
            "From": message.from_ or "",
            "To": message.to or "",
            "Body": message.body or "",
            "NumMedia": "0",
        }
        # Twilio answers STOP and START itself (its default opt-out handling, or Advanced Opt-Out) and
        # the log carries no OptOutType: say so, so that the effect applies without a second answer.
        keyword = classify(form["Body"])
        if keyword in (Intent.STOP, Intent.START):
            form["OptOutType"] = keyword.value.upper()
        if message.sid and (message.num_media or "0") != "0":
            files = self.client.messages(message.sid).media.list()
            form["NumMedia"] = str(len(files))
            for n, media in enumerate(files):
                form[f"MediaUrl{n}"] = self.settings.api_base_url + (media.uri or "").removesuffix(".json")
                form[f"MediaContentType{n}"] = media.content_type or ""
        try:
            parsed = dataclasses.replace(parse_inbound(form, self.media_prefix), answer_inline=False)
        except MalformedWebhook:
            return LoggedInbound(sent_at, None)  # e.g. an alphanumeric sender: nobody to answer
        return LoggedInbound(sent_at, parsed)

    def fetch_media(self, source: str, max_bytes: int) -> bytes:
        """Download one MMS media file, streamed and capped at max_bytes (images.Refused past it)."""
        if not source.startswith(self.media_prefix) or not MEDIA_URL.fullmatch(source):
            # Never send our credentials anywhere else, whatever the webhook said.
            raise ChannelError("media_url", permanent=True)
        auth = self.settings.rest_auth
        try:
            with requests.get(source, auth=auth, timeout=(5, 30), stream=True, allow_redirects=True) as response:
                if response.status_code != 200:
                    status = response.status_code
                    raise ChannelError(str(status), permanent=status in (404, 410))
                declared = response.headers.get("Content-Length", "")
                if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
                    raise media_mod.Refused(media_mod.SIZE)
                data = bytearray()
                for chunk in response.iter_content(64 * 1024):
                    data += chunk
                    if len(data) > max_bytes:
                        raise media_mod.Refused(media_mod.SIZE)
                return bytes(data)
        except requests.RequestException as error:
            raise ChannelError(type(error).__name__, permanent=False) from None


def _listing_error(error: TwilioException | requests.RequestException) -> ChannelError:
    """A failure while reading Twilio's Messages log, channel-neutral (nothing of the page is kept)."""
    # `uncertain`: the log could not tell whether a message went, so a send checked against it keeps
    # its "attempt begun" mark and is checked again next time, never sent blind (outbox.py).
    if isinstance(error, TwilioRestException):
        code = str(error.code or error.status)
    elif isinstance(error, TwilioException):  # a page that failed: the client keeps only the response
        response = error.args[1] if len(error.args) > 1 else None
        code = str(getattr(response, "status_code", "list"))
    else:
        code = type(error).__name__
    return ChannelError(code, permanent=False, uncertain=True)


def _channel_error(error: TwilioRestException, deleting: bool = False) -> ChannelError:
    """What a Twilio failure means for the core; `deleting`: a 404 then means the copy is already gone."""
    # Only the numeric code and HTTP status leave this function: str(error) holds the request URI.
    status = int(error.status)
    code = int(error.code or status)
    permanent = not (status >= 500 or status == 429 or code in RETRYABLE)
    missing = deleting and (status == 404 or code == NOT_FOUND)
    return ChannelError(str(code), permanent=permanent, recipient_gone=RECIPIENT_GONE.get(code), missing=missing)
