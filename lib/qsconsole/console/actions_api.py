"""Actions on a quarantined message through the API: release (to all its recipients or one), delete, download, learn
as spam or ham.

Administrators only: a recipient gets 403 (the pages answer 404 for a message that is not theirs to see). Every
attempt on a message the user can see goes to the audit log with its result. The pages (views.py) call `act` too,
so a button does exactly what the API does. A copy deleted through the console answers 410 to every later action.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from qsconsole.actions import MAX_FETCH_BYTES, NotReleasable, Request, perform
from qsconsole.console.api import authenticated, error, visible
from qsconsole.console.models import AuditLog, Message, Profile

# The audit log's action name for each verb of actions.py; a release to one address is told apart.
AUDIT_ACTIONS = {"release": "release", "delete": "delete", "fetch": "download", "learn-spam": "learn-spam",
                 "learn-ham": "learn-ham"}
LEARN_KINDS = ("spam", "ham")
MAX_BODY = 4096
RELEASED = "released"
ONLY_ADMINISTRATORS = "only an administrator acts on quarantined mail"
DELETED = "deleted"


class BadBody(ValueError):
    """A request body this API does not take: a 400 with this text."""


@dataclass(frozen=True)
class Acted:
    """What came of an action: the HTTP status, its JSON answer, and for a download the stored bytes."""

    status: int
    answer: dict
    data: bytes = field(default=b"", repr=False)
    message: Message | None = None


def act(request: HttpRequest, profile: Profile, pk: int, verb: str, to: str = "") -> Acted:
    """Do `verb` (actions.VERBS) on message `pk`'s quarantined copy for this user; audited when the message exists."""
    message = visible(profile).filter(pk=pk).first()
    if message is None:
        # A recipient learns nothing of another's message, not even that it exists (the pages answer 404).
        status = 404 if profile.role == Profile.ADMIN else 403
        return Acted(status, {"error": "no such message" if status == 404 else ONLY_ADMINISTRATORS})
    action = "release-to" if verb == "release" and to else AUDIT_ACTIONS[verb]
    audit = AuditLog(user=request.user.get_username(), action=action, message=message, record_id=message.record_id,
                     client_ip=request.META.get("REMOTE_ADDR", ""))

    def refused(status: int, text: str) -> Acted:
        audit.result = "refused"
        audit.detail += text
        audit.save()
        return Acted(status, {"error": text}, message=message)

    if profile.role != Profile.ADMIN:
        return refused(403, ONLY_ADMINISTRATORS)
    if message.outcome != "quarantined" or not message.quarantine_id:
        return refused(409, "this message is not in quarantine")
    if message.state == DELETED:
        return refused(410, "the quarantined copy was deleted")
    if to:
        # qs-quarantine delivers --to only to one of the original envelope recipients; say so before asking it.
        if to.lower() not in [address.lower() for address in message.recipients]:
            return refused(400, "release to one of the message's original recipients only")
        audit.detail = f"to {to}: "
    if verb == "fetch" and message.size > MAX_FETCH_BYTES:
        return refused(413, f"the stored copy is larger than {MAX_FETCH_BYTES // (1024 * 1024)} MB: fetch it on the "
                            "host with qs-quarantine show --raw")
    try:
        done = perform(message.host, Request(verb, message.quarantine_id, to), request.user.get_username())
    except NotReleasable as refusal:
        return refused(refusal.status, str(refusal))
    audit.result = "ok" if done.ok else "failed"
    audit.detail += done.detail
    audit.save()
    if not done.ok:
        return Acted(502, {"error": f"the {action} failed", "detail": done.detail}, message=message)
    state = new_state(message, verb, to)
    if state:
        Message.objects.filter(pk=message.pk).update(state=state)
    answer = {"ok": True, "action": action, "detail": done.detail, "state": state or message.state}
    if verb == "release":
        answer["released"] = True
    return Acted(200, answer, data=done.data, message=message)


def new_state(message: Message, verb: str, to: str) -> str:
    """The copy's state after a successful `verb`: "" when it does not change.

    A release to one of several recipients leaves the copy held for the others (qs-quarantine marks it released only
    when it went to every recipient).
    """
    if verb == "delete":
        return DELETED
    if verb == "release" and (not to or len(message.recipients) == 1):
        return RELEASED
    return ""


def json_body(request: HttpRequest) -> dict:
    """The request's JSON object; an empty body is {}."""
    if not request.body:
        return {}
    if request.content_type != "application/json":
        raise BadBody("send the body as application/json")
    if len(request.body) > MAX_BODY:
        raise BadBody("the body is too long")
    try:
        body = json.loads(request.body)
    except ValueError:
        raise BadBody("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadBody("the body is not a JSON object")
    return body


def answered(acted: Acted) -> JsonResponse:
    """The JSON answer of an action."""
    return JsonResponse(acted.answer, status=acted.status)


@require_POST
@authenticated
def message_release(request: HttpRequest, profile: Profile, pk: int) -> JsonResponse:
    """Release to the original recipients, or with {"to": ADDR} to that one of them alone."""
    try:
        to = json_body(request).get("to", "")
    except BadBody as problem:
        return error(400, str(problem))
    if not isinstance(to, str):
        return error(400, '"to" is one address, a string')
    return answered(act(request, profile, pk, "release", to.strip()))


@require_POST
@authenticated
def message_delete(request: HttpRequest, profile: Profile, pk: int) -> JsonResponse:
    """Remove the quarantined copy from the host's quarantine for good."""
    return answered(act(request, profile, pk, "delete"))


@require_POST
@authenticated
def message_learn(request: HttpRequest, profile: Profile, pk: int) -> JsonResponse:
    """Teach spamd's Bayes the quarantined copy: {"as": "spam"} or {"as": "ham"}."""
    try:
        kind = json_body(request).get("as")
    except BadBody as problem:
        return error(400, str(problem))
    if kind not in LEARN_KINDS:
        return error(400, 'give {"as": "spam"} or {"as": "ham"}')
    return answered(act(request, profile, pk, f"learn-{kind}"))


@require_GET
@authenticated
def message_download(request: HttpRequest, profile: Profile, pk: int) -> HttpResponse:
    """The stored copy's bytes as they are in the quarantine, as a message/rfc822 attachment."""
    acted = act(request, profile, pk, "fetch")
    if acted.status != 200:
        return answered(acted)
    response = HttpResponse(acted.data, content_type="message/rfc822")
    # The id is a maildir file name (actions.QUARANTINE_ID): no quote, backslash or control character to escape.
    response["Content-Disposition"] = f'attachment; filename="{acted.message.quarantine_id}.eml"'
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "no-store"
    return response
