"""Rspamd's normal worker over HTTP (`POST /checkv2`), with the SMTP envelope as request headers.

A raw HTTP/1.0 exchange on a socket: unix sockets work the same as TCP, and http.client (which
pulls in the email package) stays off the per-message path.
"""

from __future__ import annotations

from ..records import Finding, ScanResult
from .common import (
    STREAM_CHUNK_BYTES,
    Deadline,
    ScannerFailure,
    connect,
    file_chunks,
    one_line,
    over_spam_size_limit,
    receive_until_closed,
    scan_deadline,
    send_all,
)

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from ..message import Message
    from ..settings import ScannerConfig

MAX_REPLY_BYTES = 4_000_000
# Rspamd actions and what they mean here (see spam_policy.decide_spam for the consequences).
ACTION_RULES = {
    "reject": "rspamd-reject",
    "soft reject": "rspamd-soft-reject",
    "greylist": "rspamd-greylist",
    "add header": "rspamd-add-header",
    "rewrite subject": "rspamd-rewrite-subject",
}
MAX_SYMBOLS_HEADER = 900


def scan(config: ScannerConfig, message: Message) -> ScanResult:
    """Post the message with its envelope; map the action to a finding, the symbols to a header."""
    settings = message.settings
    skipped = over_spam_size_limit(config, message, "X-Rspamd-Status")
    if skipped:
        return skipped
    deadline = scan_deadline(config, message, settings.sa_timeout)
    headers = envelope_headers(message)
    problems = []
    for address in config.addresses or ("127.0.0.1:11333",):
        try:
            status, _headers, body = post(
                address, "/checkv2", headers, message.message_fd, message.area.message_size,
                config.connect_timeout, deadline,
            )
            break
        except ScannerFailure as failure:
            text = str(failure)
            problems.append(text if text.startswith(address) else f"{address}: {text}")
    else:
        raise ScannerFailure("; ".join(problems))
    if status != 200:
        raise ScannerFailure(f"HTTP status {status}: {one_line(body)}")
    return result_from_reply(config.name, settings, body)


def envelope_headers(message: Message) -> list[tuple[str, str]]:
    """IP, Helo, Hostname, From, Rcpt (one per recipient), Queue-Id, User from the SMTP session."""
    environ = message.environ
    headers = [("Queue-Id", message.area.message_id)]
    if environ.get("TCPREMOTEIP"):
        headers.append(("IP", environ["TCPREMOTEIP"]))
    if environ.get("TCPREMOTEHOST"):
        headers.append(("Hostname", environ["TCPREMOTEHOST"]))
    helo = environ.get("SMTPHELO") or environ.get("HELOHOST")
    if helo:
        headers.append(("Helo", helo))
    user = environ.get("SMTPAUTHUSER") or environ.get("TCPREMOTEINFO")
    if user and "RELAYCLIENT" in environ:
        headers.append(("User", user))
    headers.append(("From", message.envelope.sender or "<>"))
    headers.extend(("Rcpt", recipient) for recipient in message.envelope.recipients)
    return [(name, value) for name, value in headers if _header_safe(value)]


def _header_safe(value: str) -> bool:
    return bool(value) and len(value) < 1024 and all(c.isprintable() for c in value)


def post(
    address: str,
    path: str,
    headers: list[tuple[str, str]],
    fd: int,
    size: int,
    connect_timeout: float,
    deadline: Deadline,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.0 POST with the file behind fd as body; returns status, headers, body."""
    sock = connect(address, connect_timeout, deadline)
    try:
        host = address if not address.startswith("/") else "localhost"
        head = f"POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: {size}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers)
        send_all(sock, (head + "\r\n").encode("utf-8", "surrogateescape"), deadline, "the request")
        for chunk in file_chunks(fd, STREAM_CHUNK_BYTES):
            send_all(sock, chunk, deadline, "the message")
        reply = receive_until_closed(sock, deadline, MAX_REPLY_BYTES)
    finally:
        sock.close()
    return parse_http(reply)


def get(address: str, path: str, connect_timeout: float, deadline: Deadline) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.0 GET (used for /ping and the version)."""
    sock = connect(address, connect_timeout, deadline)
    try:
        host = address if not address.startswith("/") else "localhost"
        send_all(sock, f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode(), deadline, "the request")
        reply = receive_until_closed(sock, deadline, 65536)
    finally:
        sock.close()
    return parse_http(reply)


def parse_http(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    """Split an HTTP reply; a body shorter than its Content-Length is a truncated reply."""
    head, sep, body = reply.partition(b"\r\n\r\n")
    if not sep:
        raise ScannerFailure("no reply" if not reply else "reply truncated in its header")
    lines = head.decode("latin-1").split("\r\n")
    status_words = lines[0].split(None, 2)
    if len(status_words) < 2 or not status_words[0].startswith("HTTP/") or not status_words[1].isdigit():
        raise ScannerFailure(f"reply not understood: {one_line(lines[0])}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length", "")
    if length.isdigit() and len(body) < int(length):
        raise ScannerFailure(f"reply truncated ({len(body)} of {length} bytes)")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise ScannerFailure("chunked reply to an HTTP/1.0 request")
    return int(status_words[1]), headers, body


def result_from_reply(name: str, settings, body: bytes) -> ScanResult:
    """Read action, score, required_score, symbols and subject from the JSON reply."""
    import json

    try:
        reply = json.loads(body)
        action = str(reply["action"])
        score = float(reply.get("score", 0.0))
        required = float(reply.get("required_score", 0.0))
        symbols = reply.get("symbols") or {}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ScannerFailure(f"reply not understood: {one_line(body)}") from None
    if action not in ACTION_RULES and action != "no action":
        raise ScannerFailure(f"unknown action {one_line(action)!r}")
    findings: tuple[Finding, ...] = ()
    subject_tag = ""
    if action in ACTION_RULES:
        smtp_message = ""
        messages = reply.get("messages")
        if isinstance(messages, dict):
            smtp_message = one_line(str(messages.get("smtp_message", "")))
        reason = f"Spam ({action}): score {score:.2f} / {required:.2f}"
        if smtp_message:
            reason += f": {smtp_message}"
        findings = (Finding("spam", ACTION_RULES[action], reason),)
        if action in ("add header", "rewrite subject"):
            subject_tag = settings.sa_subject
    header_symbols = symbols_text(symbols)
    flag = "Yes" if findings else "No"
    extra_headers = [("X-Rspamd-Status", f"{flag}, action={action} score={score:.2f} required={required:.2f}")]
    if header_symbols:
        extra_headers.append(("X-Rspamd-Symbols", header_symbols))
    return ScanResult(
        name,
        findings=findings,
        spam_score=score,
        spam_required=required,
        extra_headers=tuple(extra_headers),
        subject_tag=subject_tag,
    )


def symbols_text(symbols: object) -> str:
    """`GTUBE(0.00), RDNS_NONE(1.00)`, highest scores first, bounded for a header line."""
    if not isinstance(symbols, dict):
        return ""
    entries = []
    for symbol_name, detail in symbols.items():
        score = detail.get("score", 0.0) if isinstance(detail, dict) else 0.0
        try:
            entries.append((float(score), one_line(str(symbol_name), 64)))
        except (TypeError, ValueError):
            continue
    entries.sort(key=lambda entry: (-abs(entry[0]), entry[1]))
    text = ""
    for score, symbol_name in entries:
        piece = f"{symbol_name}({score:.2f})"
        if len(text) + len(piece) + 2 > MAX_SYMBOLS_HEADER:
            break
        text = f"{text}, {piece}" if text else piece
    return text


def ping(address: str, connect_timeout: float, deadline: Deadline) -> str:
    """GET /ping -> `pong`, else ScannerFailure; returns the server's version when it says it."""
    status, headers, body = get(address, "/ping", connect_timeout, deadline)
    if status != 200 or not body.strip().startswith(b"pong"):
        raise ScannerFailure(f"{address}: /ping answered {status} {one_line(body)!r}")
    return server_version(headers)


def server_version(headers: dict[str, str]) -> str:
    """`Server: rspamd/3.4` -> `3.4`."""
    server = headers.get("server", "")
    return one_line(server.split("/", 1)[1], 40) if server.startswith("rspamd/") else "unknown"


def version(config: ScannerConfig, timeout: float = 10.0) -> str:
    """The version of the first server answering /ping."""
    deadline = Deadline(timeout)
    problems = []
    for address in config.addresses or ("127.0.0.1:11333",):
        try:
            return ping(address, config.connect_timeout, deadline)
        except ScannerFailure as failure:
            problems.append(str(failure))
    raise ScannerFailure("; ".join(problems))

