"""Reference parser: Python's email package (policy.default), batch mode.

Reads a JSON list of message paths on stdin, prints JSON {path: [sha256 of every leaf payload]}
(each also as "n:" + the sha256 of its line-end-normalised text, for comparing real mail).
message/* parts are read as messages even when they carry a transfer encoding: the body is
decoded and parsed again, as a program built on this package would do to show them.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import hashlib
import json
import sys

IDENTITY = ("", "7bit", "8bit", "binary")
MAX_DEPTH = 60


def cte_of(part: email.message.Message) -> str:
    return str(part.get("content-transfer-encoding", "")).strip().lower()


def reparse_encoded(part: email.message.EmailMessage) -> email.message.EmailMessage | None:
    """A message/* part with a transfer encoding: its body decoded and parsed as a message."""
    inner = part.get_payload()
    if isinstance(inner, list):
        if not inner:
            return None
        body = inner[0].as_bytes(policy=email.policy.compat32)
        body = body.lstrip(b"\r\n")
    elif isinstance(inner, str):
        body = inner.encode("utf-8", "surrogateescape")
    else:
        return None
    carrier = email.message.Message()
    carrier["Content-Transfer-Encoding"] = cte_of(part)
    carrier.set_payload(body.decode("latin-1"))
    decoded = carrier.get_payload(decode=True)
    if not isinstance(decoded, bytes):
        return None
    return email.message_from_bytes(decoded, policy=email.policy.default)


def leaves(part: email.message.Message, depth: int = 0):
    if depth > MAX_DEPTH:
        return
    if part.get_content_maintype() == "message" and cte_of(part) not in IDENTITY:
        inner = reparse_encoded(part)
        if inner is not None:
            yield from leaves(inner, depth + 1)
            return
    if part.is_multipart():
        for sub in part.get_payload():
            if isinstance(sub, email.message.Message):
                yield from leaves(sub, depth + 1)
        return
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        yield payload


def hashes(payload: bytes) -> list[str]:
    """The payload's sha256, and that of its text with line ends made LF and the last ones cut ("n:")."""
    normal = payload.replace(b"\r\n", b"\n").rstrip(b"\r\n")
    return [hashlib.sha256(payload).hexdigest(), "n:" + hashlib.sha256(normal).hexdigest()]


def extract(path: str) -> list[str]:
    with open(path, "rb") as source:
        message = email.message_from_binary_file(source, policy=email.policy.default)
    return [digest for payload in leaves(message) for digest in hashes(payload)]


def main() -> None:
    sys.setrecursionlimit(10000)
    result = {}
    for path in json.load(sys.stdin):
        try:
            result[path] = extract(path)
        except Exception as error:  # a reference parser that gives up extracts nothing from that file
            result[path] = []
            sys.stderr.write(f"ref_python: {path}: {type(error).__name__}\n")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
