"""The console's pages: log in and out, recent messages with search, a message's page with its MIME tree and actions.

Server-rendered with Django templates, autoescaping on: every string from mail (subjects, addresses, file names,
scanner answers, the trace) goes through it, none is marked safe. The queries and the release are the API's
(api.visible, api.search, actions_api.act), so a page shows exactly what the API would answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import wraps
from urllib.parse import urlencode

from django.contrib.auth import logout
from django.contrib.auth.views import LoginView, redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from qsconsole.console.actions_api import DELETED, act
from qsconsole.console.api import BadQuery, search, visible
from qsconsole.console.models import OUTCOMES, AuditLog, Profile

PAGE = 50
# The tree's indentation stops here (console.css has a rule per depth); its texts are cut to this length.
MAX_TREE_DEPTH = 8
MAX_TREE_TEXT = 300
REFRESH_SECONDS = 10
MIN_REFRESH_SECONDS = 2
SEARCH_FIELDS = ("sender", "recipient", "q", "client_ip", "outcome", "host", "since", "until")
# Scripts only from this server (console.js), no inline script or handler, no plugins, no framing: a string from mail
# that escaped the templates would still not run.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
                           "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SCRIPT = """\
// Recent messages, updating: on the first page, fetch the same page again every few seconds and swap in its rows
// (parsed by DOMParser, which runs no script; the server escaped every string in them).
(function () {
  var table = document.getElementById("messages");
  if (!table || table.dataset.refresh === "0") { return; }
  var seconds = Math.max(2, parseInt(table.dataset.refresh, 10) || 10);
  function update() {
    fetch(window.location.href, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (answer) { return answer.ok ? answer.text() : null; })
      .then(function (text) {
        if (text === null) { return; }
        var page = new DOMParser().parseFromString(text, "text/html");
        var rows = page.getElementById("messages");
        var count = page.getElementById("count");
        if (rows) { table.replaceChildren.apply(table, Array.from(rows.childNodes)); }
        if (count) { document.getElementById("count").textContent = count.textContent; }
        document.getElementById("updated").textContent = new Date().toISOString().slice(11, 19) + " UTC";
      })
      .catch(function () {});
  }
  window.setInterval(update, seconds * 1000);
})();
"""
STYLE = """\
body { font: 14px sans-serif; margin: 1em 2em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid #ddd; vertical-align: top; }
td.subject, td.wrap { word-break: break-all; }
header { display: flex; justify-content: space-between; align-items: center; }
form.search input, form.search select { margin-right: .5em; }
.outcome-quarantined { color: #a60; } .outcome-rejected { color: #a00; } .outcome-delivered { color: #060; }
pre { white-space: pre-wrap; word-break: break-all; background: #f6f6f6; padding: .5em; }
.notice { background: #eef; padding: .5em; }
.actions form { display: inline-block; margin: .3em 1em .3em 0; }
tr.decided td { background: #fdd; font-weight: bold; }
tr.depth-1 td.path { padding-left: 1.5em; }
tr.depth-2 td.path { padding-left: 2.7em; }
tr.depth-3 td.path { padding-left: 3.9em; }
tr.depth-4 td.path { padding-left: 5.1em; }
tr.depth-5 td.path { padding-left: 6.3em; }
tr.depth-6 td.path { padding-left: 7.5em; }
tr.depth-7 td.path { padding-left: 8.7em; }
tr.depth-8 td.path { padding-left: 9.9em; }
"""


def protected(response: HttpResponse) -> HttpResponse:
    """The headers every page carries: the content security policy, and no caching of mail data."""
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Cache-Control"] = "no-store"
    return response


def page(view):
    """Pages need a session (else the login page, then back) and a console role (else 403)."""
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        try:
            profile = request.user.profile
        except Profile.DoesNotExist:
            return protected(HttpResponse("This account has no console role.", status=403, content_type="text/plain"))
        return protected(view(request, profile, *args, **kwargs))
    return wrapper


class ConsoleLogin(LoginView):
    """Django's login view; each attempt goes to the audit log as the API's do."""

    template_name = "console/login.html"
    redirect_authenticated_user = True

    def form_valid(self, form):
        AuditLog.objects.create(user=form.get_user().get_username(), action="login", result="ok",
                                client_ip=self.request.META.get("REMOTE_ADDR", ""))
        return super().form_valid(form)

    def form_invalid(self, form):
        AuditLog.objects.create(user=self.request.POST.get("username", "")[:150], action="login", result="refused",
                                client_ip=self.request.META.get("REMOTE_ADDR", ""))
        return super().form_invalid(form)

    def render_to_response(self, context, **kwargs):
        return protected(super().render_to_response(context, **kwargs))


login_page = ConsoleLogin.as_view()


@require_POST
def logout_page(request: HttpRequest) -> HttpResponse:
    """End the session (a POST with the CSRF token: a link elsewhere cannot log anyone out)."""
    logout(request)
    return HttpResponseRedirect("/login")


@require_GET
def script(request: HttpRequest) -> HttpResponse:
    """The pages' only script (served from here so the policy can forbid inline script)."""
    response = HttpResponse(SCRIPT, content_type="text/javascript; charset=utf-8")
    response["Cache-Control"] = "max-age=300"
    return response


@require_GET
def style(request: HttpRequest) -> HttpResponse:
    """The pages' style sheet."""
    response = HttpResponse(STYLE, content_type="text/css; charset=utf-8")
    response["Cache-Control"] = "max-age=300"
    return response


@require_GET
@page
def message_list(request: HttpRequest, profile: Profile) -> HttpResponse:
    """Recent messages newest first, a page at a time, filtered by the search form."""
    query = {name: request.GET.get(name, "").strip() for name in SEARCH_FIELDS}
    number = positive_int(request.GET.get("page"), 1)
    refresh = positive_int(request.GET.get("refresh"), REFRESH_SECONDS)
    problem = ""
    rows: list = []
    try:
        messages = search(visible(profile), api_query(query)).order_by("-time", "-id")
        rows = list(messages[(number - 1) * PAGE:number * PAGE + 1])
    except BadQuery as refusal:
        problem = str(refusal)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    shown = {name: value for name, value in query.items() if value}
    context = {
        "profile": profile, "messages": rows, "query": query, "outcomes": OUTCOMES, "problem": problem,
        "page": number, "first": (number - 1) * PAGE + 1, "last": (number - 1) * PAGE + len(rows),
        "previous": urlencode({**shown, "page": number - 1}) if number > 1 else "",
        "next": urlencode({**shown, "page": number + 1}) if more else "",
        # Updating only on the first page: a later page would shift under the reader.
        "refresh": max(MIN_REFRESH_SECONDS, refresh) if number == 1 else 0,
    }
    return render(request, "console/messages.html", context, status=400 if problem else 200)


@require_GET
@page
def message_page(request: HttpRequest, profile: Profile, pk: int) -> HttpResponse:
    """One message's record and MIME tree; 404 when it does not exist or is not this user's to see."""
    message = visible(profile).filter(pk=pk).first()
    if message is None:
        raise Http404("no such message")
    admin = profile.role == Profile.ADMIN
    audit = list(AuditLog.objects.filter(message=message).order_by("time", "id")) if admin else []
    released = next((line for line in audit if line.action == "release" and line.result == "ok"), None)
    held = admin and message.outcome == "quarantined" and bool(message.quarantine_id) and message.state != DELETED
    context = {
        "profile": profile, "message": message, "admin": admin, "audit": audit, "released": released,
        "deleted": message.state == DELETED, "can_act": held, "can_release": held and released is None,
        "tree": mime_tree(message.parts, message.decision), "decided_by": decided_by(message.decision),
        "notice": request.session.pop(f"notice-{pk}", ""),
        "list_recipient": list_recipient(profile, message),
    }
    return render(request, "console/message.html", context)


def list_recipient(profile: Profile, message) -> str:
    """The recipient an allow/block entry made from this message is for: "" (all) for an administrator, else the
    user's own address among the message's recipients (a recipient may list senders for their own addresses only)."""
    if profile.role == Profile.ADMIN:
        return ""
    own = set(profile.address_list())
    return next((address.lower() for address in message.recipients if address.lower() in own), "")


@require_POST
@page
def release_page(request: HttpRequest, profile: Profile, pk: int) -> HttpResponse:
    """The Release buttons: to the original recipients, or with the form's `to` to that one of them."""
    if "to" in request.POST and not request.POST["to"].strip():
        return noticed(request, profile, pk, "Not released: give one of the message's recipients' addresses.")
    acted = act(request, profile, pk, "release", request.POST.get("to", "").strip())
    return after_action(request, profile, pk, acted, "Released", "Not released")


@require_POST
@page
def delete_page(request: HttpRequest, profile: Profile, pk: int) -> HttpResponse:
    """The Delete button: only with its confirmation box ticked (the policy forbids the inline script of a dialog)."""
    if request.POST.get("confirm") != "yes":
        return noticed(request, profile, pk, "Not deleted: tick “yes, delete the stored copy” first.")
    return after_action(request, profile, pk, act(request, profile, pk, "delete"), "Deleted", "Not deleted")


@require_POST
@page
def learn_page(request: HttpRequest, profile: Profile, pk: int) -> HttpResponse:
    """The Learn as spam / Learn as ham buttons."""
    kind = request.POST.get("as")
    if kind not in ("spam", "ham"):
        return noticed(request, profile, pk, "Not learned: choose spam or ham.")
    return after_action(request, profile, pk, act(request, profile, pk, f"learn-{kind}"), f"Learned as {kind}",
                        "Not learned")


def after_action(request: HttpRequest, profile: Profile, pk: int, acted, done: str, not_done: str) -> HttpResponse:
    """Back to the message's page with what came of an action (404 for a message this user may not see)."""
    if acted.status == 200:
        return noticed(request, profile, pk, f"{done}: {acted.answer['detail']}")
    return noticed(request, profile, pk, f"{not_done}: {acted.answer['error']} {acted.answer.get('detail', '')}")


def noticed(request: HttpRequest, profile: Profile, pk: int, notice: str) -> HttpResponse:
    """The message's page again, saying `notice` once; 404 when the message is not this user's to see."""
    if not visible(profile).filter(pk=pk).exists():
        raise Http404("no such message")
    request.session[f"notice-{pk}"] = notice.strip()
    return HttpResponseRedirect(f"/messages/{pk}")


@dataclass(frozen=True)
class TreeRow:
    """One part of the MIME tree as the page shows it."""

    path: str
    depth: int
    type: str
    real_type: str
    name: str
    size: str
    encoding: str
    container: str
    readings: str
    finding: str
    decided: bool


def mime_tree(parts: list, decision: dict) -> list[TreeRow]:
    """The record's parts as rows, the one that decided the outcome marked; items that are not objects are skipped."""
    decided_part = decision.get("part") if isinstance(decision, dict) and decided_by(decision) else None
    rows = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict):
            continue
        depth = part.get("depth")
        depth = depth if isinstance(depth, int) and not isinstance(depth, bool) else 0
        readings = part.get("readings")
        path = text_of(part.get("path"))
        rows.append(TreeRow(
            path=path, depth=min(max(depth, 0), MAX_TREE_DEPTH), type=text_of(part.get("type")),
            real_type=text_of(part.get("real_type")), name=text_of(part.get("name")), size=text_of(part.get("size")),
            encoding=text_of(part.get("encoding")), container=text_of(part.get("container")),
            readings=", ".join(text_of(item) for item in readings) if isinstance(readings, list) else "",
            finding=text_of(part.get("finding")), decided=decided_part is not None and path == text_of(decided_part),
        ))
    return rows


def decided_by(decision: dict) -> str:
    """The decision line: "part 1.2, rule X, scanner clamd, reading Y" and its one-line why; "" for none."""
    if not isinstance(decision, dict):
        return ""
    pieces = [f"{label} {text_of(decision[key])}" for key, label in (("rule", "rule"), ("scanner", "scanner"),
                                                                     ("reading", "reading")) if decision.get(key)]
    if not pieces and not decision.get("text"):
        return ""
    if "part" in decision:
        pieces.insert(0, f"part {text_of(decision['part'])}" if decision["part"] else "the message as a whole")
    line = ", ".join(pieces)
    if decision.get("text"):
        line += f" ({text_of(decision['text'])})" if line else text_of(decision["text"])
    return line


def text_of(value) -> str:
    """A value of the record as page text, bounded (the template escapes it)."""
    text = value if isinstance(value, str) else "" if value is None else str(value)
    return text if len(text) <= MAX_TREE_TEXT else text[:MAX_TREE_TEXT - 1] + "…"


def api_query(query: dict[str, str]) -> dict[str, str]:
    """The form's fields as the API's search takes them; an "until" date includes that whole day."""
    wanted = {name: value for name, value in query.items() if value}
    until = wanted.get("until", "")
    if len(until) == 10:
        try:
            wanted["until"] = (date.fromisoformat(until) + timedelta(days=1)).isoformat()
        except ValueError:
            pass  # search() says what is wrong with it
    return wanted


def positive_int(text: str | None, default: int) -> int:
    """A page number or a number of seconds: the default when absent or not a positive number."""
    try:
        return max(1, int(text)) if text else default
    except ValueError:
        return default

