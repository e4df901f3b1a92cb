"""A recipient's release link from the digest: /r/<token>, no login; the token alone says which message to whom.

The token is Django's signing (HMAC with the console's secret key, a salt of its own, a timestamp) over the message's
primary key and one recipient address: it cannot be made or altered without the key, it expires after
release_link_days, and it releases to that address only (qs-quarantine release --to, which refuses an address that
was not a recipient). It is single-use: the first POST claims (message, address) in the audit log inside a
transaction that first writes the message's row (a write lock on SQLite and PostgreSQL alike), so a second use, even
of another digest's link for the same pair, is refused.
"""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.db.models import F
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from qsconsole.actions import NotReleasable, Released, Request, perform
from qsconsole.console.models import AuditLog, Message

SALT = "qsconsole.release-link"
ACTION = "release-link"
# A claim that stands: a release done or under way. A failed one frees the link for another try.
STANDING = ("claimed", "ok")
DAY = 86400

try:  # Django 4.0 and later
    _b62 = signing.b62_encode
except AttributeError:  # Django 3.2
    from django.utils import baseconv

    _b62 = baseconv.base62.encode


class BadLink(Exception):
    """A link that releases nothing: the text for the page, the HTTP status (400 tampered, 410 expired or used)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


class _Signer(signing.TimestampSigner):
    """Django's TimestampSigner, with the signing time given (for a token made as if at another time)."""

    def __init__(self, now: float | None = None) -> None:
        super().__init__(salt=SALT)
        self.now = now

    def timestamp(self) -> str:
        return super().timestamp() if self.now is None else _b62(int(self.now))


def make_token(pk: int, address: str, now: float | None = None) -> str:
    """The signed token for releasing message `pk` to `address`."""
    return _Signer(now).sign(signing.b64_encode(signing.JSONSerializer().dumps([pk, address])).decode())


def read_token(token: str) -> tuple[int, str]:
    """(message pk, address) of a token that is intact and unexpired; BadLink otherwise."""
    try:
        payload = _Signer().unsign(token, max_age=settings.CONSOLE.release_link_days * DAY)
    except signing.SignatureExpired:
        raise BadLink(410, "This release link has expired. Ask your postmaster, or wait for the next digest.") from None
    except signing.BadSignature:
        raise BadLink(400, "This release link is not valid (it may have been cut or changed).") from None
    try:
        pk, address = signing.JSONSerializer().loads(signing.b64_decode(payload.encode()))
    except (ValueError, TypeError):
        raise BadLink(400, "This release link is not valid.") from None
    if not isinstance(pk, int) or not isinstance(address, str):
        raise BadLink(400, "This release link is not valid.")
    return pk, address


def link_target(token: str) -> tuple[Message, str]:
    """The message and address a token names, if the message is still there, quarantined and addressed to it."""
    pk, address = read_token(token)
    message = Message.objects.filter(pk=pk, outcome="quarantined", recipient_rows__address_key=address).first()
    if message is None or not message.quarantine_id or message.state == "deleted":
        raise BadLink(410, "This message is no longer in quarantine.")
    if claimed(message, address):
        raise BadLink(410, "This release link has been used already.")
    return message, address


def claimed(message: Message, address: str) -> bool:
    """True when a link for (message, address) was used and its release succeeded or is under way."""
    return AuditLog.objects.filter(action=ACTION, message=message, detail__startswith=f"to {address}\n",
                                   result__in=STANDING).exists()


def page(request: HttpRequest, context: dict, status: int = 200) -> HttpResponse:
    """The link page, with the console's headers: its content security policy, no caching, no referrer."""
    from qsconsole.console.views import protected

    response = protected(render(request, "console/release_link.html", context, status=status))
    response["Referrer-Policy"] = "no-referrer"  # the token is in the URL
    return response


@require_http_methods(["GET", "POST"])
def release_link(request: HttpRequest, token: str) -> HttpResponse:
    """GET: the message's summary and a Release button; POST (with the CSRF token): release to that address once."""
    try:
        message, address = link_target(token)
    except BadLink as bad:
        return page(request, {"problem": str(bad)}, status=bad.status)
    if request.method == "GET":
        return page(request, {"message": message, "address": address})
    client_ip = request.META.get("REMOTE_ADDR", "")
    with transaction.atomic():
        # Write the message's row first: the transaction holds a write lock from here, so two POSTs of one link
        # cannot both find it unclaimed.
        Message.objects.filter(pk=message.pk).update(loaded=F("loaded"))
        if claimed(message, address):
            return page(request, {"problem": "This release link has been used already."}, status=410)
        audit = AuditLog.objects.create(user=address[:150], action=ACTION, message=message,
                                        record_id=message.record_id, detail=f"to {address}\n", result="claimed",
                                        client_ip=client_ip)
    try:
        done = perform(message.host, Request("release", message.quarantine_id, address), requested_by=address)
    except NotReleasable as refusal:
        done = Released(ok=False, detail=str(refusal))
    AuditLog.objects.filter(pk=audit.pk).update(result="ok" if done.ok else "failed",
                                                detail=f"to {address}\n{done.detail}")
    if not done.ok:
        return page(request, {"problem": "The release failed; the link can be tried again later.",
                              "message": message, "address": address}, status=502)
    from qsconsole.console.actions_api import new_state  # it imports the API, which the pages import first

    state = new_state(message, "release", address)
    if state:
        Message.objects.filter(pk=message.pk).update(state=state)
    return page(request, {"released": True, "message": message, "address": address})
