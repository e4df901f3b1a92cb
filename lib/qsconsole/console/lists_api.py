"""Sender allow/block lists in the JSON API: list, add (or change the kind of), delete; every change audited.

An administrator sees and changes every entry, for any recipient address, @domain, or "" (every recipient). A
recipient user sees and changes only the entries for one of their own addresses.
"""

from __future__ import annotations

import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_http_methods, require_POST

from qsconsole.console.api import authenticated, error
from qsconsole.console.models import AuditLog, Profile, SenderList
from qsconsole.sender_lists import EVERY_RECIPIENT, KINDS, BadEntry, entry_address

ENTRY_FIELDS = ("id", "kind", "sender", "recipient", "created_by")


def visible_entries(profile: Profile):
    """The entries this user may see and delete, sorted by sender then recipient."""
    entries = SenderList.objects.all()
    if profile.role != Profile.ADMIN:
        entries = entries.filter(recipient__in=profile.address_list())
    return entries.order_by("sender", "recipient", "id")


def entry_item(entry: SenderList) -> dict:
    """An entry as the API answers it."""
    item = {name: getattr(entry, name) for name in ENTRY_FIELDS}
    item["created"] = entry.created.timestamp()
    return item


def audit(request: HttpRequest, action: str, detail: str, result: str) -> None:
    """One line in the audit log for a list change or a refused one."""
    AuditLog.objects.create(user=request.user.get_username(), action=action, detail=detail, result=result,
                            client_ip=request.META.get("REMOTE_ADDR", ""))


def describe(kind: str, sender: str, recipient: str) -> str:
    """An entry in the audit log's words."""
    return f"{kind} {sender} for {recipient or 'every recipient'}"


def add_entry(request: HttpRequest, profile: Profile, kind, sender, recipient) -> tuple[int, dict]:
    """Add an entry, or change the kind of the one with the same sender and recipient: the status and answer."""
    if kind not in KINDS:
        return 400, {"error": "kind: give allow or block"}
    admin = profile.role == Profile.ADMIN
    try:
        sender = entry_address(sender, "sender")
        if recipient is None or (isinstance(recipient, str) and recipient.strip() in ("", EVERY_RECIPIENT)):
            if not admin:
                return 400, {"error": "recipient: give one of your own addresses"}
            recipient = ""
        else:
            recipient = entry_address(recipient, "recipient", domain_allowed=admin)
    except BadEntry as problem:
        return 400, {"error": str(problem)}
    if not admin and recipient not in profile.address_list():
        audit(request, "list-add", describe(kind, sender, recipient), "refused")
        return 403, {"error": "recipient: you may only add entries for your own addresses"}
    with transaction.atomic():
        entry = SenderList.objects.select_for_update().filter(sender=sender, recipient=recipient).first()
        before = entry.kind if entry is not None else ""
        if entry is None:
            entry = SenderList.objects.create(kind=kind, sender=sender, recipient=recipient,
                                              created_by=request.user.get_username())
        elif entry.kind != kind:
            entry.kind = kind
            entry.created_by = request.user.get_username()
            entry.save(update_fields=["kind", "created_by"])
        detail = describe(kind, sender, recipient) + (f" (was {before})" if before and before != kind else "")
        audit(request, "list-add", detail, "ok")
    return 200, {"entry": entry_item(entry), "replaced": before if before != kind else ""}


def delete_entry(request: HttpRequest, profile: Profile, pk: int) -> tuple[int, dict]:
    """Delete one entry this user may see: the status and answer (404 for one they may not)."""
    with transaction.atomic():
        entry = visible_entries(profile).select_for_update().filter(pk=pk).first()
        if entry is None:
            return 404, {"error": "no such entry"}
        entry.delete()
        audit(request, "list-delete", describe(entry.kind, entry.sender, entry.recipient), "ok")
    return 200, {"deleted": pk}


@require_http_methods(["GET", "POST"])
@authenticated
def list_or_add(request: HttpRequest, profile: Profile) -> JsonResponse:
    """GET: the entries this user may see. POST {"kind", "sender", "recipient"} as JSON: the entry as stored."""
    if request.method == "GET":
        return JsonResponse({"entries": [entry_item(entry) for entry in visible_entries(profile)]})
    if request.content_type != "application/json":
        return error(415, "send the entry as application/json")
    try:
        body = json.loads(request.body)
    except ValueError:
        return error(400, "the body is not JSON")
    if not isinstance(body, dict):
        return error(400, "give an object with kind, sender and recipient")
    status, answer = add_entry(request, profile, body.get("kind"), body.get("sender"), body.get("recipient"))
    return JsonResponse(answer, status=status)


@require_POST
@authenticated
def delete(request: HttpRequest, profile: Profile, pk: int) -> JsonResponse:
    """Delete one entry."""
    status, answer = delete_entry(request, profile, pk)
    return JsonResponse(answer, status=status)
