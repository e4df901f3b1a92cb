"""The JSON API: log in and out, list and search messages, one message's record; roles enforced on every query.

Every view but login answers 401 to a request without a session. Login needs no CSRF token but only takes a JSON
body (a cross-site HTML form cannot send application/json without the browser asking this server first); every
other unsafe request carries the token login returned in the X-CSRFToken header (Django's CsrfViewMiddleware).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import wraps

from django.contrib.auth import authenticate, login, logout
from django.db import connection
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest, JsonResponse
from django.middleware.csrf import get_token
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from qsconsole.console.models import AuditLog, Message, Profile, Recipient
from qsconsole.record_format import address_key

PAGE = 50
PAGE_LIMIT = 500
SUBJECT_CANDIDATES = 5000
ADDRESS_CANDIDATES = 5000
LIST_FIELDS = ("id", "record_id", "time", "host", "queue_id", "sender", "recipients", "subject", "outcome", "reason",
               "quarantine_id")


class BadQuery(ValueError):
    """A query parameter that cannot be understood: a 400 with this text."""


def error(status: int, text: str) -> JsonResponse:
    """A JSON error answer."""
    return JsonResponse({"error": text}, status=status)


def authenticated(view):
    """401 without a session; the view gets the user's Profile (a user without one is refused)."""
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated:
            return error(401, "authentication required")
        try:
            profile = request.user.profile
        except Profile.DoesNotExist:
            return error(403, "this account has no console role")
        return view(request, profile, *args, **kwargs)
    return wrapper


@csrf_exempt
@require_POST
def login_view(request: HttpRequest) -> JsonResponse:
    """POST {"username","password"} as JSON: a session cookie and the CSRF token for later requests."""
    if request.content_type != "application/json":
        return error(415, "send the credentials as application/json")
    try:
        body = json.loads(request.body)
    except ValueError:
        return error(400, "the body is not JSON")
    if not isinstance(body, dict) or not isinstance(body.get("username"), str) \
            or not isinstance(body.get("password"), str):
        return error(400, "give username and password as strings")
    user = authenticate(request, username=body["username"], password=body["password"])
    client_ip = request.META.get("REMOTE_ADDR", "")
    if user is None:
        AuditLog.objects.create(user=body["username"][:150], action="login", result="refused", client_ip=client_ip)
        return error(401, "wrong username or password")
    login(request, user)
    AuditLog.objects.create(user=user.get_username(), action="login", result="ok", client_ip=client_ip)
    return JsonResponse({"username": user.get_username(), "role": role_of(user), "csrf_token": get_token(request)})


@require_POST
@authenticated
def logout_view(request: HttpRequest, profile: Profile) -> JsonResponse:
    """End the session."""
    logout(request)
    return JsonResponse({"logged_out": True})


@require_GET
@authenticated
def me_view(request: HttpRequest, profile: Profile) -> JsonResponse:
    """Who is logged in, their role and addresses."""
    return JsonResponse({"username": request.user.get_username(), "role": profile.role,
                         "addresses": profile.address_list()})


@require_GET
@authenticated
def message_list(request: HttpRequest, profile: Profile) -> JsonResponse:
    """Messages newest first, filtered by outcome, sender, recipient, q (subject), host, client_ip, since, until."""
    try:
        messages = search(visible(profile), request.GET)
        limit = bounded_int(request.GET.get("limit"), PAGE, 1, PAGE_LIMIT)
    except BadQuery as problem:
        return error(400, str(problem))
    page = list(messages.order_by("-time", "-id")[:limit])
    return JsonResponse({"messages": [summary(message) for message in page], "count": len(page), "limit": limit})


@require_GET
@authenticated
def message_detail(request: HttpRequest, profile: Profile, pk: int) -> JsonResponse:
    """One message's whole record; 404 when it does not exist or is not this user's to see."""
    message = visible(profile).filter(pk=pk).first()
    if message is None:
        return error(404, "no such message")
    record = summary(message)
    for name in ("client_ip", "helo", "auth_user", "message_id", "size", "rule", "kind", "scanners", "spam_score",
                 "spam_tagged", "attachments", "quarantine_dir", "readings", "skipped", "trace", "parts", "decision",
                 "state"):
        record[name] = getattr(message, name)
    return JsonResponse(record)


def visible(profile: Profile) -> QuerySet:
    """The messages this user may see: all for an administrator, else those addressed to one of their addresses."""
    if profile.role == Profile.ADMIN:
        return Message.objects.all()
    return addressed(Message.objects.all(), address_key__in=profile.address_list())


def addressed(messages: QuerySet, **lookup) -> QuerySet:
    """Messages with a recipient row matching `lookup` (an address, a domain, a recipient's own addresses).

    Few matches: IN (subquery) starts from the recipient index and sorts them by time. Many (a whole domain, a busy
    address): sorting them all costs more than walking the time index newest first until a page is full (EXISTS).
    """
    rows = Recipient.objects.filter(**lookup)
    if rows[:ADDRESS_CANDIDATES + 1].count() > ADDRESS_CANDIDATES:
        return messages.filter(Exists(rows.filter(message=OuterRef("pk"))))
    return messages.filter(pk__in=rows.values("message_id"))


def search(messages: QuerySet, query) -> QuerySet:
    """Apply the list's filters; an address filter starting with @ is a domain."""
    outcome = query.get("outcome")
    if outcome:
        messages = messages.filter(outcome__in=outcome.split(","))
    sender = query.get("sender")
    if sender:
        key, _ = address_key(sender)
        messages = messages.filter(sender_domain=key[1:]) if key.startswith("@") else messages.filter(sender_key=key)
    recipient = query.get("recipient")
    if recipient:
        key, _ = address_key(recipient)
        messages = addressed(messages, domain=key[1:]) if key.startswith("@") else addressed(messages, address_key=key)
    if query.get("q"):
        messages = subject_contains(messages, query["q"])
    for name in ("host", "client_ip"):
        if query.get(name):
            messages = messages.filter(**{name: query[name]})
    if query.get("since"):
        messages = messages.filter(time__gte=parse_time(query["since"], "since"))
    if query.get("until"):
        messages = messages.filter(time__lt=parse_time(query["until"], "until"))
    return messages


def subject_contains(messages: QuerySet, text: str) -> QuerySet:
    """Messages whose subject contains `text`, whatever its case.

    On SQLite the trigram index (migration 0002) names the candidates; when there are many, walking the time index
    with LIKE fills a page sooner than sorting them all. PostgreSQL's planner makes that choice itself, with its
    pg_trgm index on UPPER(subject). Fewer than 3 characters make no trigram: LIKE alone.
    """
    if connection.vendor == "sqlite" and len(text) >= 3:
        with connection.cursor() as cursor:
            cursor.execute("SELECT rowid FROM console_subject_search WHERE console_subject_search MATCH %s LIMIT %s",
                           ['"' + text.replace('"', '""') + '"', SUBJECT_CANDIDATES + 1])
            candidates = [row[0] for row in cursor.fetchall()]
        if len(candidates) <= SUBJECT_CANDIDATES:
            return messages.filter(pk__in=candidates)
    return messages.filter(subject__icontains=text)


def parse_time(text: str, name: str) -> datetime:
    """A unix time or an ISO 8601 date/time (UTC when it names no zone)."""
    try:
        return datetime.fromtimestamp(float(text), timezone.utc)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadQuery(f"{name}: give a unix time or an ISO 8601 date") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def bounded_int(text: str | None, default: int, low: int, high: int) -> int:
    """An integer parameter within bounds."""
    if not text:
        return default
    try:
        return min(max(int(text), low), high)
    except ValueError:
        raise BadQuery("limit: give a number") from None


def summary(message: Message) -> dict:
    """A message's list item."""
    item = {name: getattr(message, name) for name in LIST_FIELDS}
    item["time"] = message.time.timestamp()
    return item


def role_of(user) -> str:
    """The user's role, "" without a profile."""
    try:
        return user.profile.role
    except Profile.DoesNotExist:
        return ""
