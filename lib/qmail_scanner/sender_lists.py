"""The console's sender allow/block lists, as the mail path reads them: SPOOLDIR/records/sender-lists.

Each host's console loader writes the file from its SenderList table (a temp file renamed in
place, 0644): UTF-8, one entry a line, tab separated, lower case:

    # qs-console sender lists, version 1
    allow<TAB>sender@example.com<TAB>rcpt@example.org
    block<TAB>@spam.example<TAB>@example.org
    allow<TAB>@partner.example<TAB>*

The lists only ever decide the spam verdict (viruses and policy are never skipped). For each
envelope recipient the most specific matching entry counts: the sender's address beats its
@domain, then the recipient's address beats its @domain beats `*`. "block" for any recipient
makes the message spam; "allow" for every recipient makes it not spam (no spam scanner runs).
Comments and malformed lines are ignored; a missing file is no lists.

The resident engine keeps what it read and looks again with one lstat per message: the file is
read again only when its inode, mtime or size changed (the loader's rename makes a new inode).
"""

from __future__ import annotations

import errno
import os
import stat

from .records import Finding, ScanResult
from .spool import RECORDS_DIR

TYPE_CHECKING = False  # typing costs milliseconds per message; only type checkers look here
if TYPE_CHECKING:
    from .settings import Settings

LISTS_FILE = "sender-lists"
SCANNER = "sender-lists"  # the name its answer goes by among the scanners' (trace, message record)
BLOCK_RULE = "sender-block"
SIZE_LIMIT = 16 << 20  # bytes; a bigger file is no file the console wrote
# O_NONBLOCK: records/ is writable by the console's account, so a FIFO planted there must not hang the open.
FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
ACTIONS = ("allow", "block")
ALLOW, BLOCK = ACTIONS

# sender key ("a@b" or "@b") -> recipient key ("a@b", "@b" or "*") -> "allow" | "block"
Lists = dict
_read: list = [None, {}]  # [(st_dev, st_ino, st_mtime_ns, st_size) of what was read, its lists]


def lists_path(spooldir: str) -> str:
    """<spooldir>/records/sender-lists."""
    return os.path.join(spooldir, RECORDS_DIR, LISTS_FILE)


def current_lists(spooldir: str) -> Lists:
    """The lists as the file says now: read again only when it changed; {} when it is missing or not a plain file."""
    path = lists_path(spooldir)
    try:
        info = os.lstat(path)
    except OSError:
        return {}
    if not stat.S_ISREG(info.st_mode):
        return {}  # a symlink, a FIFO, a device planted at the name: no lists, and never opened
    if _read[0] == _identity(info):
        return _read[1]
    try:
        identity, lists = _load(path)
    except OSError as error:
        from .stderr_log import say

        say(f"sender lists {path} not read: {error.strerror or error}")
        identity, lists = _identity(info), {}  # said once per version of the file, not once per message
    _read[0], _read[1] = identity, lists
    return lists


def _identity(info: os.stat_result) -> tuple[int, int, int, int]:
    return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)


def _load(path: str) -> tuple[tuple[int, int, int, int], Lists]:
    """(identity, lists) of the plain file at path, opened without following a link or waiting on a FIFO."""
    fd = os.open(path, FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a plain file")
        if info.st_size > SIZE_LIMIT:
            raise OSError(errno.EFBIG, f"over {SIZE_LIMIT} bytes")
        chunks = []
        left = SIZE_LIMIT + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > SIZE_LIMIT:
        raise OSError(errno.EFBIG, f"over {SIZE_LIMIT} bytes")
    return _identity(info), parse(data.decode("utf-8", "replace"))


def parse(text: str) -> Lists:
    """The entries of the file's text; comments, blank and malformed lines are left out (block wins a tie)."""
    lists: Lists = {}
    for line in text.split("\n"):
        if not line or line[0] == "#":
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) != 3:
            continue
        action, sender, recipient = (field.strip().lower() for field in fields)
        if action not in ACTIONS or not _address_or_domain(sender):
            continue
        if recipient != "*" and not _address_or_domain(recipient):
            continue
        by_recipient = lists.setdefault(sender, {})
        if by_recipient.get(recipient) != BLOCK:
            by_recipient[recipient] = action
    return lists


def _address_or_domain(text: str) -> bool:
    """`local@domain` or `@domain`, one @, no blanks or control characters (what the console accepts)."""
    local, at, domain = text.rpartition("@")
    return bool(at and domain and "@" not in local and not any(c.isspace() or not c.isprintable() for c in text))


def _keys(address: str) -> tuple[str, ...]:
    """The entries an address matches, most specific first: itself, then its @domain."""
    domain = address.rpartition("@")[2]
    return (address, "@" + domain) if "@" in address and domain else (address,)


def listed(lists: Lists, sender: str, recipients: tuple[str, ...] | list[str]) -> tuple[str, str]:
    """("block", entry) if blocked for any recipient, ("allow", entry) if allowed for every one, else ("", "")."""
    if not lists or not sender or not recipients:
        return "", ""
    held = [(key, lists[key]) for key in _keys(sender.lower()) if key in lists]
    if not held:
        return "", ""
    allowed, every = "", True
    for recipient in recipients:
        action, entry = _match(held, recipient.lower())
        if action == BLOCK:
            return BLOCK, entry
        every = every and action == ALLOW
        allowed = allowed or entry
    return (ALLOW, allowed) if every else ("", "")


def _match(held: list[tuple[str, dict]], recipient: str) -> tuple[str, str]:
    """The most specific entry for one recipient among the sender's entries: (action, "sender for recipient")."""
    wanted = (*_keys(recipient), "*")
    for sender_key, by_recipient in held:
        for key in wanted:
            action = by_recipient.get(key)
            if action is not None:
                return action, f"{sender_key} for {key}"
    return "", ""


def blocked_result(settings: Settings, entry: str) -> ScanResult:
    """A blocked sender as a spam scanner's answer: the site's spam action applies (spam_policy), tagged like spamd."""
    from .message_headers import header_safe

    reason = f"sender blocked by the console's list ({header_safe(entry, 600)})"
    return ScanResult(
        SCANNER,
        findings=(Finding("spam", BLOCK_RULE, reason),),
        extra_headers=(("X-Spam-Status", "Yes, sender blocked by the console's list"), ("X-Spam-Flag", "YES")),
        subject_tag=settings.sa_subject,
    )
