"""The sender lists page: the entries a user may see, a form to add one (prefilled from ?sender=&recipient=&kind=,
so a message's page can link here), a Remove button per entry. The changes are the API's (lists_api)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from qsconsole.console.lists_api import add_entry, delete_entry, visible_entries
from qsconsole.console.models import Profile
from qsconsole.console.views import page
from qsconsole.sender_lists import KINDS

NOTICE = "notice-lists"


@require_GET
@page
def lists_page(request: HttpRequest, profile: Profile) -> HttpResponse:
    """Every entry this user may see, and the add form."""
    kind = request.GET.get("kind", "")
    context = {
        "profile": profile, "admin": profile.role == Profile.ADMIN, "entries": list(visible_entries(profile)),
        "kinds": KINDS, "addresses": profile.address_list(),
        "form": {"kind": kind if kind in KINDS else "block", "sender": request.GET.get("sender", "").strip(),
                 "recipient": request.GET.get("recipient", "").strip().lower()},
        "notice": request.session.pop(NOTICE, ""),
    }
    return render(request, "console/lists.html", context)


@require_POST
@page
def add_page(request: HttpRequest, profile: Profile) -> HttpResponse:
    """The add form: the API's add, then back to the list with what came of it."""
    status, answer = add_entry(request, profile, request.POST.get("kind"), request.POST.get("sender", ""),
                               request.POST.get("recipient", ""))
    if status == 200:
        entry = answer["entry"]
        request.session[NOTICE] = (f"{entry['kind'].capitalize()}ed {entry['sender']} for "
                                   f"{entry['recipient'] or 'every recipient'}.")
    else:
        request.session[NOTICE] = f"Not added: {answer['error']}"
    return HttpResponseRedirect("/lists")


@require_POST
@page
def delete_page(request: HttpRequest, profile: Profile, pk: int) -> HttpResponse:
    """A Remove button: the API's delete, then back to the list."""
    status, answer = delete_entry(request, profile, pk)
    request.session[NOTICE] = "Removed." if status == 200 else f"Not removed: {answer['error']}"
    return HttpResponseRedirect("/lists")
