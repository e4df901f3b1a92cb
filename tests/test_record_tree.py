"""The message record's MIME tree ("parts") and what decided ("decision"), through the installed program.

Real messages, real clamd and spamd: the tree lists every part and archive member as the
unpacker read it (dotted path, declared and real type, name, size, encoding, archive), the
decision names the part, rule, scanner and reading behind the outcome, and the console's own
record reader stores both.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile

import pytest

from daemons import EICAR, clamd_server_fixture, spamd_server_fixture  # noqa: F401 - fixtures
from harness import envelope
from qsconsole.record_format import parse_line
from scanner_fixtures import headers
from test_message_records import PDF, one_record, read_records
from test_readings import EVASIONS

PART_KEYS = ["path", "depth", "type", "real_type", "name", "size", "encoding", "container", "readings", "finding"]
DECISION_KEYS = ["part", "rule", "scanner", "reading", "text"]


def multipart(boundary: str, *parts: bytes, head: bytes | None = None) -> bytes:
    """A multipart/mixed entity (with the message's headers when `head` is given) holding `parts`."""
    opening = f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n'.encode()
    start = (head + opening if head is not None else opening) + b"\r\n"
    return start + b"".join(f"--{boundary}\r\n".encode() + part for part in parts) + f"--{boundary}--\r\n".encode()


def text_part(text: str) -> bytes:
    return f"Content-Type: text/plain; charset=us-ascii\r\n\r\n{text}\r\n".encode()


def file_part(name: str, data: bytes, content_type: str = "application/octet-stream") -> bytes:
    return (
        f'Content-Type: {content_type}; name="{name}"\r\nContent-Transfer-Encoding: base64\r\n'
        f'Content-Disposition: attachment; filename="{name}"\r\n\r\n'
    ).encode() + base64.encodebytes(data).replace(b"\n", b"\r\n")


def zip_of(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def by_path(record: dict) -> dict[str, dict]:
    for part in record["parts"]:
        assert list(part) == PART_KEYS
    paths = [part["path"] for part in record["parts"]]
    assert len(set(paths)) == len(paths), paths  # one reading: every path once
    return {part["path"]: part for part in record["parts"]}


@pytest.fixture(scope="module")
def scanned(clamd_server, spamd_server, make_installation):
    """Real clamd and spamd; spam is delivered tagged, viruses and policy blocks are quarantined."""
    return make_installation(
        "--scanners", "clamd,spamd", "--clamd-servers", clamd_server.socket_path,
        "--spamd-servers", spamd_server.socket_path, fresh=True,
    )  # fmt: skip


DOCS_ZIP = zip_of([("report.pdf", PDF), ("notes/readme.txt", b"Plain words for the reader.\n" * 20)])


def test_a_clean_multipart_with_a_zip_lists_every_part_and_member_and_decides_nothing(scanned):
    message = multipart("outer", text_part("See the documents."), file_part("docs.zip", DOCS_ZIP), head=headers("docs"))
    record, result = one_record(scanned, message, envelope("alice@example.org", "bob@example.com"))
    assert result.exit_code == 0 and len(result.queued) == 1, result.stderr
    assert record["outcome"] == "delivered" and record["decision"] == {}
    parts = by_path(record)
    assert list(parts) == ["", "1", "2", "2.1", "2.2"]
    top, text, docs = parts[""], parts["1"], parts["2"]
    assert (top["type"], top["depth"], top["container"]) == ("multipart/mixed", 0, "")
    assert (text["type"], text["name"], text["depth"]) == ("text/plain", "", 1)
    assert (docs["type"], docs["real_type"]) == ("application/octet-stream", "application/zip")
    assert docs["name"] == "docs.zip"
    assert (docs["size"], docs["encoding"], docs["container"]) == (len(DOCS_ZIP), "base64", "")
    report, readme = parts["2.1"], parts["2.2"]
    assert (report["name"], report["real_type"], report["size"]) == ("report.pdf", "application/pdf", len(PDF))
    assert (report["container"], report["depth"], report["type"]) == ("zip", 2, "")
    assert (readme["name"], readme["container"], readme["size"]) == ("notes/readme.txt", "zip", 28 * 20)
    assert readme["real_type"].startswith("text/")
    assert all(part["finding"] == "" and part["readings"] == [] for part in record["parts"])


def test_eicar_in_a_nested_part_is_named_by_its_path_with_clamd_and_the_virus(scanned):
    inner = multipart("inner", text_part("Inner words."), file_part("tool.com", EICAR))
    message = multipart("outer", text_part("Forwarded."), inner, head=headers("nested"))
    record, result = one_record(scanned, message)
    assert result.exit_code == 0 and not result.queued
    assert record["outcome"] == "quarantined" and record["kind"] == "virus"
    decision = record["decision"]
    assert list(decision) == DECISION_KEYS
    assert decision["part"] == "2.2"
    assert (decision["scanner"], decision["rule"]) == ("clamd", record["rule"])
    assert "eicar" in decision["rule"].lower() and decision["rule"] in decision["text"]
    assert decision["reading"] == ""
    parts = by_path(record)
    assert (parts["2"]["type"], parts["2.2"]["name"], parts["2.2"]["finding"]) == (
        "multipart/mixed", "tool.com", record["rule"]
    )  # fmt: skip
    assert [path for path, part in parts.items() if part["finding"]] == ["2.2"]


def test_a_policy_block_names_the_part_and_the_rule(scanned):
    program = b"MZ\x90\x00" + b"\x00" * 200
    message = multipart("outer", text_part("Holiday pictures."), file_part("holiday.pif", program), head=headers("x"))
    record, result = one_record(scanned, message)
    assert result.exit_code == 0 and not result.queued
    assert (record["outcome"], record["kind"]) == ("quarantined", "policy")
    decision = record["decision"]
    assert decision["part"] == "2" and decision["rule"] == record["rule"] and "pif" in decision["rule"]
    assert (decision["scanner"], decision["reading"]) == ("", "")
    assert decision["text"] == record["reason"]
    part = by_path(record)["2"]
    assert (part["name"], part["real_type"]) == ("holiday.pif", "application/x-dosexec")
    assert part["finding"] == record["rule"]


def test_a_part_only_another_reading_extracts_names_that_reading(make_installation):
    message, ambiguity = EVASIONS["boundary doubled, quoted"]
    record, result = one_record(make_installation("--fix-mime", "1"), message)
    assert result.exit_code == 0 and not result.queued
    assert record["outcome"] == "quarantined" and record["kind"] == "policy"
    decision = record["decision"]
    assert decision["reading"] == ambiguity
    # The first reading shows the program only in what forgiving readers make of the epilogue; the
    # decision names the part the other reading makes of it, with that reading.
    decided = by_path(record)[decision["part"]]
    assert (decided["name"], decided["type"], decided["encoding"]) == ("x.exe", "application/octet-stream", "base64")
    assert decided["readings"] == [ambiguity] and decided["real_type"] == "application/x-dosexec"
    assert decided["finding"] == decision["rule"] == record["rule"] == ".exe"
    assert (record["parts"][0]["path"], record["parts"][1]["type"]) == ("", "text/plain")  # the first reading's text
    assert record["parts"][1]["readings"] == []


def test_a_record_over_the_limit_drops_the_tree_first_and_stays_one_line(installation):
    names = [f"attachment-with-a-rather-long-file-name-number-{n:04d}.txt" for n in range(450)]
    message = multipart("many", *(file_part(name, b"x") for name in names), head=headers("many parts"))
    record, result = one_record(installation, message)
    assert result.exit_code == 0 and len(result.queued) == 1, result.stderr
    line = (installation.spool / "records" / "current.jsonl").read_bytes()
    assert len(line) <= 65536 and line.count(b"\n") == 1
    assert 0 < len(record["parts"]) <= 50 and record["parts"][1]["name"] == names[0]
    assert record["subject"] == "many parts" and record["attachments"]


def test_the_console_reads_and_stores_the_tree_and_the_decision(scanned):
    inner = multipart("inner", file_part("tool.com", EICAR))
    one_record(scanned, multipart("outer", text_part("x"), inner, head=headers("stored")))
    line = (scanned.spool / "records" / "current.jsonl").read_bytes().rstrip(b"\n")
    record = json.loads(line)
    row = parse_line(line)
    assert row.columns["parts"] == record["parts"] and len(row.columns["parts"]) == 4
    assert row.columns["decision"] == record["decision"]
    assert row.columns["decision"]["part"] == "2.1" and row.columns["decision"]["scanner"] == "clamd"
    assert read_records(scanned)[0]["decision"]["rule"] == row.columns["rule"]
