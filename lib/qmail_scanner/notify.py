"""Alerts about blocked messages, following --notify exactly as the original did.

Words of --notify: `none`; `sender`, `recips`, `admin`, `all` (= the three); `psender`,
`precips` (only for policy / internal-check blocks, never viruses, whose senders are almost
always forged); `nmladm` (admin alerts, except for mailing-list traffic) and `nmlvadm`
(admin alerts, except about viruses in mailing-list traffic). Spam is never alerted.

Never alerted: the sender of a `--silent-viruses` virus, the null sender, postmaster /
mailer-daemon style addresses, senders of mailing-list or auto-submitted mail, recipients
outside `--local-domains`, and nobody at all when the blocked message came from the alert
address itself (no loops). Alerts go through qmail-inject with QMAILQUEUE removed.
"""

from __future__ import annotations

import os
import time

from .message_headers import encode_words, header_safe, header_subject, header_values, rfc2822_date, split_header_block
from .queue_protocol import seal_inherited_fds

TYPE_CHECKING = False  # typing costs milliseconds per message; only type checkers look here
if TYPE_CHECKING:
    from .message import Message
    from .records import Verdict
    from .settings import Settings

# Viruses known to forge the sender (the original's maintained list, used for `--silent-viruses auto`).
SILENT_VIRUSES_AUTO = (
    "klez", "bugbear", "sobig", "mydoom", "netsky", "bagle", "beagle", "mimail", "yaha", "sober", "lovgate",
    "braid", "fizzer", "palyh", "swen", "dumaru", "zafi", "novarg", "mytob", "zotob", "lovelorn", "frethem",
    "winevar", "nimda", "magistr", "sircam", "badtrans", "elkern", "gibe", "tanatos", "ganda", "holar",
    "warezov", "stration", "nyxem", "bropia", "phish",
)  # fmt: skip
SYSTEM_LOCALPARTS = frozenset(
    {"postmaster", "mailer-daemon", "mailer_daemon", "maildaemon", "mail-daemon", "daemon", "nobody", "noreply",
     "no-reply", "bounce", "bounces", "abuse", "listserv", "majordomo"}
)  # fmt: skip
BULK_PRECEDENCE = (b"bulk", b"list", b"junk")
MAX_RECIPIENT_NOTICES = 50
MAX_HEADER_BYTES = 16384
INJECT_TIMEOUT = 15.0  # the SMTP client is still waiting for our answer
PLAIN_DOMAIN_EXCLUDED = frozenset(' \t()<>[]@,;:\\"')  # RFC 5322 specials and white space


def send_alerts(message: Message, verdict: Verdict) -> list[str]:
    """Send every alert the rules call for; return the addresses alerted."""
    settings = message.settings
    head = message.area.header_bytes
    headers = head[: split_header_block(head)]
    targets = alert_targets(settings, message.envelope.sender, message.envelope.recipients, verdict, headers)
    if not targets:
        return []
    facts = alert_facts(message, verdict, headers)
    sent, errors = [], []
    for role, address in targets:
        try:
            inject(settings, address, compose_alert(settings, role, address, verdict, facts))
            sent.append(address)
        except (OSError, ValueError, RuntimeError) as error:  # one failed alert must not stop the others
            errors.append(str(error))
    if errors:
        raise RuntimeError("; ".join(errors))
    return sent


def alert_kind(verdict: Verdict) -> str:
    """`virus`, `policy`, or `spam` (not alerted) for a blocked message."""
    if verdict.quarantine_kind == "viruses" or any(f.kind == "virus" for f in verdict.findings):
        return "virus"
    if verdict.quarantine_kind == "spam":
        return "spam"
    return "policy"


def alert_targets(
    settings: Settings, sender: str, recipients: tuple[str, ...], verdict: Verdict, headers: bytes
) -> list[tuple[str, str]]:
    """(role, address) pairs to alert; role is sender, recipient or admin."""
    words = set(settings.notify)
    if "all" in words:
        words |= {"sender", "recips", "admin"}
    kind = alert_kind(verdict)
    admin = settings.admin_address
    if "none" in words or kind == "spam" or sender.lower() == admin.lower():
        return []
    mailing_list = is_mailing_list(sender, headers)
    targets: list[tuple[str, str]] = []
    if (
        ("sender" in words or ("psender" in words and kind == "policy"))
        and is_one_plain_address(sender)
        and sender_may_be_alerted(settings, sender, verdict, headers, mailing_list)
    ):
        targets.append(("sender", sender))
    if ("recips" in words or ("precips" in words and kind == "policy")) and not mailing_list:
        local = tuple(d.lower() for d in (settings.local_domains or (settings.domain,)))
        for recipient in recipients:
            if (
                recipient.rpartition("@")[2].lower() in local
                and not is_system_address(recipient)
                and is_one_plain_address(recipient)
            ):
                targets.append(("recipient", recipient))
    wants_admin = "admin" in words
    wants_admin |= "nmladm" in words and not mailing_list
    wants_admin |= "nmlvadm" in words and not (mailing_list and kind == "virus")
    if wants_admin:
        targets.append(("admin", admin))
    unique: dict[str, tuple[str, str]] = {}
    for role, address in targets:
        if address.lower() != admin.lower() or role == "admin":
            unique.setdefault(address.lower(), (role, address))
    recipient_notices = [t for t in unique.values() if t[0] == "recipient"][:MAX_RECIPIENT_NOTICES]
    return [t for t in unique.values() if t[0] != "recipient"] + recipient_notices


def sender_may_be_alerted(
    settings: Settings, sender: str, verdict: Verdict, headers: bytes, mailing_list: bool
) -> bool:
    """False for the null sender, system addresses, lists, auto-replies and silent viruses."""
    if not sender or "@" not in sender or is_system_address(sender) or mailing_list:
        return False
    auto = header_values(headers, b"auto-submitted")
    if any(value.strip().lower() not in (b"", b"no") for value in auto):
        return False
    return not is_silent_virus(settings, verdict)


def is_silent_virus(settings: Settings, verdict: Verdict) -> bool:
    """The virus is one that forges senders (--silent-viruses, `auto` = the shipped list)."""
    names = [f.rule.lower() for f in verdict.findings if f.kind == "virus"]
    if alert_kind(verdict) == "virus":
        names.append(verdict.reason.lower())
    patterns: list[str] = []
    for entry in settings.silent_viruses:
        patterns += SILENT_VIRUSES_AUTO if entry.lower() == "auto" else [entry.lower()]
    return any(pattern and pattern in name for name in names for pattern in patterns)


def is_one_plain_address(address: str) -> bool:
    """An address qmail-inject reads back as itself: a local part of printable characters, a plain domain.

    qmail-inject parses its recipient arguments as RFC 822 addresses: it quotes the local part, but a
    domain with spaces, comments or other specials would be read as something else (`a@b.c (x)` is
    a@b.c), and an envelope address with a control character (a newline from a caller other than
    qmail-smtpd) has no place in a header or in qmail's logs. Such an address gets no alert.
    """
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or not address.isprintable():
        return False
    if domain.startswith("[") and domain.endswith("]"):  # an address literal: [192.0.2.1]
        domain = domain[1:-1]
    return not any(c in PLAIN_DOMAIN_EXCLUDED for c in domain)


def is_system_address(address: str) -> bool:
    """postmaster, mailer-daemon and their kind, list robots (-request, -owner, owner-)."""
    local = address.rpartition("@")[0].lower() if "@" in address else address.lower()
    return (
        local in SYSTEM_LOCALPARTS
        or local.endswith(("-request", "-owner", "-bounces"))
        or local.startswith(("owner-", "bounce-", "bounces+"))
    )


def is_mailing_list(sender: str, headers: bytes) -> bool:
    """List-* headers, Precedence: bulk/list/junk, or a list robot as sender."""
    for line in headers.split(b"\n"):
        name = line.split(b":", 1)[0].strip().lower()
        if name.startswith(b"list-") or name == b"mailing-list":
            return True
    if any(value.strip().lower().startswith(BULK_PRECEDENCE) for value in header_values(headers, b"precedence")):
        return True
    local = sender.rpartition("@")[0].lower()
    return local.endswith(("-request", "-owner")) or local.startswith("owner-")


def alert_facts(message: Message, verdict: Verdict, headers: bytes) -> dict[str, str]:
    """The per-message values texts may use, each sanitised and length-limited."""
    settings = message.settings
    recipients = ", ".join(header_safe(r, 200) for r in message.envelope.recipients[:20])
    if len(message.envelope.recipients) > 20:
        recipients += f", ... ({len(message.envelope.recipients)})"
    original = headers[:MAX_HEADER_BYTES].decode("utf-8", "replace")
    return {
        "sender": header_safe(message.envelope.sender or "<>", 200),
        "recipients": recipients,
        "subject": header_safe(header_subject(message), 200),
        "reason": header_safe(verdict.reason or "-", 300),
        "date": rfc2822_date(),
        "id": message.area.message_id,
        "host": header_safe(settings.hostname, 255),
        "admin_description": header_safe(settings.admin_description, 100),
        "action": verdict.action,
        "original_headers": "\n".join(header_safe(line, 998) for line in original.split("\n")),
    }


def compose_alert(settings: Settings, role: str, target: str, verdict: Verdict, facts: dict[str, str]) -> bytes:
    """The whole alert: headers, the text in --lang, the reason and the original headers (never the body)."""
    texts = settings.alert_texts
    if not texts:
        raise ValueError("no alert texts configured (re-run configure)")

    def text(field: str, limit: int = 2000) -> str:
        return texts[field].format_map(facts)[:limit]

    kind = alert_kind(verdict)
    subject = text("subject_virus" if kind == "virus" else "subject_policy", 250)
    intro = text({"sender": "to_sender", "recipient": "to_recipient"}.get(role, "to_admin"))
    action = text("action_dropped" if facts["action"] == "drop" else "action_quarantined")
    details = [
        (texts["label_reason"], facts["reason"]),
        (texts["label_sender"], facts["sender"]),
        (texts["label_recipients"], facts["recipients"]),
        (texts["label_subject"], facts["subject"]),
        (texts["label_date"], facts["date"]),
    ]
    if facts["action"] != "drop":
        details.append((texts["label_id"], facts["id"]))
    description = facts["admin_description"].replace("\\", "").replace('"', "'")
    lines = [
        f'From: "{encode_words(description)}" <{settings.admin_address}>',
        f"To: <{header_safe(target, 1003)}>",
        f"Subject: {encode_words(subject)}",
        "Auto-Submitted: auto-generated",
        "Precedence: bulk",
        f"X-Qmail-Scanner-Alert: {kind}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=UTF-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        intro,
        "",
        action,
        "",
        *(f"{label}: {value}" for label, value in details),
        "",
        f"{texts['label_headers']}:",
        "",
        facts["original_headers"].rstrip("\n"),
        "",
        "-- ",
        text("footer"),
        "",
    ]
    return "\n".join(lines).encode("utf-8", "replace")


def inject(settings: Settings, target: str, alert: bytes) -> None:
    """Run qmail-inject for one alert: QMAILQUEUE removed, no fd of ours inherited, bounded in time."""
    binary = settings.qmail_inject_binary
    environment = {k: v for k, v in os.environ.items() if k != "QMAILQUEUE"}
    # qmail-smtpd waits for EOF on the custom-error fd: no child may hold it, nor any other fd of ours.
    seal_inherited_fds(max(255, settings.custom_error_fd))
    read_end, write_end = os.pipe()
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(
            binary,
            # `--` ends qmail-inject's options (getopt "aAhHnNf:"): an address that starts with `-`
            # (`-fevil@x`, `-n@x`) is a recipient, never an option that changes the sender or the queueing.
            [binary, "-f", settings.admin_address, "--", target],
            environment,
            file_actions=[(os.POSIX_SPAWN_DUP2, read_end, 0), (os.POSIX_SPAWN_DUP2, devnull, 1)],
            setpgroup=0,  # its own process group: a timeout kills whatever it started too
        )
    finally:
        os.close(read_end)
        os.close(devnull)
    try:
        view = memoryview(alert)
        while view:
            view = view[os.write(write_end, view) :]
    except OSError:
        pass  # the exit code tells what went wrong
    finally:
        os.close(write_end)
    deadline = time.monotonic() + INJECT_TIMEOUT
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{binary} took longer than {INJECT_TIMEOUT:.0f}s")
            time.sleep(0.005)
    except BaseException:
        # Our own timeout, or the message deadline firing meanwhile: stop it and all it started.
        try:
            os.killpg(pid, 9)
            os.waitpid(pid, 0)
        except OSError:
            pass
        raise
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{binary} exited {code} for an alert to {target}")
