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

import re
import unicodedata
from collections.abc import Iterable, Mapping
from xml.sax.saxutils import escape

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from tipline.config import TwilioSettings
from tipline.core import images as media_mod
from tipline.core.channels import ChannelError, InboundMessage, MalformedWebhook, MediaRef, Sent, StatusReport
from tipline.core.conversation import Intent
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
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C" or ch == "\u200d")


def verify(auth_token: str, url: str, params: Mapping[str, str], signature: str | None) -> bool:
    """Check `X-Twilio-Signature` with the twilio package's own validator."""
    if not signature:
        return False
    return bool(RequestValidator(auth_token).validate(url, params, signature))


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


def twiml(replies: Iterable[str]) -> str:
    """The TwiML answer: one <Message> per reply, or an empty <Response/>."""
    body = "".join(f"<Message>{escape(r)}</Message>" for r in replies)
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>'


class TwilioSms:
    """The SMS channel: sends and deletes through Twilio's REST API with the real `twilio` client."""

    name = CHANNEL
    deletes_provider_copies = True
    replies_inline = True  # TwiML in the webhook response
    answer_type = "text/xml; charset=utf-8"  # the content type of `answer`

    def __init__(self, settings: TwilioSettings, status_callback: str | None = None):
        self.settings = settings
        self.status_callback = status_callback
        # environment= non-empty so TWILIO_REGION/TWILIO_EDGE in the process environment cannot
        # silently rewrite the host (the client reads os.environ when given a falsy mapping).
        self.client = Client(
            settings.account_sid,
            settings.auth_token,
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
        """The webhook's answer carrying the bot's replies (TwiML)."""
        return twiml(replies)

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
        except requests.RequestException as error:
            raise ChannelError(type(error).__name__, permanent=False) from None
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

    def fetch_media(self, source: str, max_bytes: int) -> bytes:
        """Download one MMS media file, streamed and capped at max_bytes (images.Refused past it)."""
        if not source.startswith(self.media_prefix) or not MEDIA_URL.fullmatch(source):
            # Never send our credentials anywhere else, whatever the webhook said.
            raise ChannelError("media_url", permanent=True)
        auth = (self.settings.account_sid, self.settings.auth_token)
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


def _channel_error(error: TwilioRestException, deleting: bool = False) -> ChannelError:
    """What a Twilio failure means for the core; `deleting`: a 404 then means the copy is already gone."""
    # Only the numeric code and HTTP status leave this function: str(error) holds the request URI.
    status = int(error.status)
    code = int(error.code or status)
    permanent = not (status >= 500 or status == 429 or code in RETRYABLE)
    missing = deleting and (status == 404 or code == NOT_FOUND)
    return ChannelError(str(code), permanent=permanent, recipient_gone=RECIPIENT_GONE.get(code), missing=missing)
