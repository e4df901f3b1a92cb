"""qs-console digest: one mail per recipient address listing its quarantined mail, each with a signed release link.

Who gets one: the addresses of the console's recipient accounts (createuser --recipient), nobody else. Mailing every
local recipient would send links to addresses nobody asked for (list robots, aliases, former staff); an address is
added by creating its account. The digest's Subject is fixed text; everything from mail (sender, subject, reason) is
in the text/plain UTF-8 body, with control, format and separator characters shown as escapes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.policy import SMTP

from django.conf import settings
from django.utils import timezone

from qsconsole.console.models import Message, Profile
from qsconsole.console.release_links import make_token

SUBJECT = "Quarantined mail held for you"
INJECT_SECONDS = 60
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"})  # as contrib/qs-quarantine shows them
FIELD_LIMIT = 200


class DigestError(Exception):
    """The digest cannot be made or sent: the text says what to fix."""


@dataclass(frozen=True)
class Digest:
    """One recipient address's mail: the address, how many messages it lists, the message bytes."""

    address: str
    count: int
    mail: bytes


def shown(text: str, limit: int = FIELD_LIMIT) -> str:
    """Mail-derived text on one line: control, format and separator characters as escapes, cut to `limit`."""
    text = "".join(ch if unicodedata.category(ch) not in HIDDEN_CATEGORIES
                   else f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}" if ord(ch) < 0x10000
                   else f"\\U{ord(ch):08x}" for ch in text)
    return text if len(text) <= limit else text[:limit] + "..."


def recipient_addresses() -> list[str]:
    """Every address of a recipient account, once, sorted."""
    addresses = set()
    for profile in Profile.objects.filter(role=Profile.RECIPIENT):
        addresses.update(profile.address_list())
    return sorted(addresses)


def sender_address() -> str:
    """The digest's envelope sender and From: digest_sender, else postmaster@ this host."""
    return settings.CONSOLE.digest_sender or f"postmaster@{socket.getfqdn()}"


def compose(address: str, messages: list[Message], hours: float) -> bytes:
    """The digest mail for one address."""
    base = settings.CONSOLE.base_url.rstrip("/")
    days = settings.CONSOLE.release_link_days
    lines = [f"{len(messages)} message(s) addressed to {address} were held in quarantine in the last {hours:g} hours.",
             f"Each link below releases one message to {address} only; it works once, for {days:g} days.",
             "Release only mail you expected: quarantined mail may carry a virus or a forged sender.", ""]
    for message in messages:
        lines += [f"Time:    {message.time:%Y-%m-%d %H:%M} UTC",
                  f"From:    {shown(message.sender)}",
                  f"Subject: {shown(message.subject)}",
                  f"Reason:  {shown(message.reason)}",
                  f"Release: {base}/r/{make_token(message.pk, address)}", ""]
    mail = EmailMessage(policy=SMTP.clone(linesep="\n"))
    mail["From"] = sender_address()
    mail["To"] = address
    mail["Subject"] = SUBJECT
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content("\n".join(lines), charset="utf-8", cte="quoted-printable")
    return mail.as_bytes()


def digests(hours: float) -> list[Digest]:
    """The digest of every recipient address with quarantined mail in the last `hours`."""
    if not settings.CONSOLE.base_url.startswith(("https://", "http://")):
        raise DigestError("base_url is not set in console.json (the console's address as recipients reach it, "
                          "https://console.example.org): the release links need it")
    since = timezone.now() - timedelta(hours=hours)
    made = []
    for address in recipient_addresses():
        messages = list(Message.objects.filter(outcome="quarantined", time__gte=since,
                                               recipient_rows__address_key=address)
                        .exclude(quarantine_id="").order_by("time", "id").distinct())
        if messages:
            made.append(Digest(address=address, count=len(messages), mail=compose(address, messages, hours)))
    return made


def send(digest: Digest) -> None:
    """Hand one digest to qmail-inject; DigestError when it fails."""
    binary = settings.CONSOLE.qmail_inject
    environment = {name: value for name, value in os.environ.items() if name != "QMAILQUEUE"}
    try:
        # `--` ends qmail-inject's options: an address starting with `-` stays a recipient (as notify.py does).
        done = subprocess.run([binary, "-f", sender_address(), "--", digest.address], input=digest.mail,
                              capture_output=True, timeout=INJECT_SECONDS, env=environment)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise DigestError(f"{binary}: {error}") from None
    if done.returncode != 0:
        raise DigestError(f"{binary} exited {done.returncode}: {shown(done.stderr.decode('utf-8', 'replace'), 500)}")


def run(hours: float, dry_run: bool) -> int:
    """Make and send (or with dry_run print) every digest; 1 when one could not be sent."""
    try:
        made = digests(hours)
    except DigestError as problem:
        print(f"qs-console digest: {problem}", file=sys.stderr)
        return 1
    status = 0
    for digest in made:
        if dry_run:
            sys.stdout.write(f"--- to {digest.address}: {digest.count} message(s)\n")
            sys.stdout.write(digest.mail.decode("ascii", "replace"))
            continue
        try:
            send(digest)
        except DigestError as problem:
            print(f"qs-console digest: {digest.address}: {problem}", file=sys.stderr)
            status = 1
            continue
        print(f"qs-console digest: {digest.address}: {digest.count} message(s)")
    return status
