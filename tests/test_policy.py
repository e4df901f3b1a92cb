"""Policy rules: file syntax, the compiled form, -g/-r, every rule type, DLP monitor mode."""

from __future__ import annotations

import base64
import io
import os
import zipfile
from pathlib import Path

import pytest

from mime_fixtures import FakeMessage, blocking_rules, install_rules, make_settings, unpack_bytes
from qmail_scanner import policy
from qmail_scanner.records import Envelope

EXE = b"MZ\x90\x00" + b"\x00" * 100


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    directory = tmp_path / "spool"
    directory.mkdir()
    return directory


def message_with(*attachments: tuple[str, bytes], subject: str = "hello", extra: str = "") -> bytes:
    out = f"From: a@example.org\nSubject: {subject}\n{extra}MIME-Version: 1.0\n"
    out += "Content-Type: multipart/mixed; boundary=B\n\n"
    body = out.encode() + b"--B\nContent-Type: text/plain\n\nhi\n"
    for name, data in attachments:
        body += (
            f'--B\nContent-Type: application/octet-stream; name="{name}"\nContent-Transfer-Encoding: base64\n\n'
        ).encode() + base64.encodebytes(data)
    return body + b"--B--\n"


def evaluate(spool: Path, rules: str, data: bytes, **message_fields: object) -> list:
    install_rules(spool, rules)
    settings = make_settings(spool, **message_fields.pop("settings", {}))
    work = spool.parent / "work"
    work.mkdir(exist_ok=True)
    unpacked = unpack_bytes(data, work, settings)
    message = FakeMessage(settings, unpacked=unpacked, **message_fields)
    return policy.check(message)


def test_extension_rule_any_size_and_case(spool: Path) -> None:
    found = evaluate(spool, ".pif\tSIZE=-1\tPIF files blocked\n", message_with(("HOLIDAY.PIF", b"x")))
    assert [(f.rule, f.reason, f.part_name) for f in found] == [(".pif", "PIF files blocked", "HOLIDAY.PIF")]
    assert evaluate(spool, ".pif\tSIZE=-1\tPIF\n", message_with(("notes.pdf", b"x"))) == []


def test_trailing_dots_and_blanks_do_not_hide_an_extension(spool: Path) -> None:
    assert evaluate(spool, ".exe\tSIZE=-1\tx\n", message_with(("run.exe . .", b"x")))


def test_exact_size_rule(spool: Path) -> None:
    rules = "happy99.exe\tSIZE=10000\tHappy99 by name and size\n"
    assert evaluate(spool, rules, message_with(("Happy99.exe", b"x" * 10000)))
    assert not evaluate(spool, rules, message_with(("Happy99.exe", b"x" * 9999)))


def test_regex_name_rule(spool: Path) -> None:
    rules = r"^invoice_\d+\.zip	SIZE=-1	invoice campaign" + "\n"
    assert evaluate(spool, rules, message_with(("invoice_123.zip", b"not a zip")))
    assert not evaluate(spool, rules, message_with(("my_invoice_123.zip", b"not a zip")))


def test_names_inside_archives(spool: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("music/song.mp3", b"ID3")
    found = evaluate(spool, ".mp3\tSIZE=-1\tno MP3\n", message_with(("music.zip", buffer.getvalue())))
    assert [f.part_name for f in found] == ["music.zip/music/song.mp3"]


def test_header_rules_any_header_and_normalize(spool: Path) -> None:
    rules = "You are 0wNed\tSubject:\tworm subject\n^evil-mailer\tX-Mailer:\tbad mailer\n"
    assert [f.rule for f in evaluate(spool, rules, message_with(subject="you ARE 0wned now"))] == ["Subject:"]
    assert [f.rule for f in evaluate(spool, rules, message_with(extra="X-Mailer: Evil-Mailer 1.0\n"))] == ["X-Mailer:"]
    encoded = "=?utf-8?B?WW91IGFyZSAwd05lZA==?="
    assert evaluate(spool, rules, message_with(subject=encoded))
    assert not evaluate(spool, rules, message_with(subject=encoded), settings={"normalize": False})


def test_virtual_headers(spool: Path) -> None:
    rules = (
        "^spammer@example\\.com$\tMAILFROM\tsender blocked\n"
        "^victim@\tRCPTTO:\trecipient protected\n"
        "^192\\.0\\.2\\.\tREMOTEIPADDR\tnetwork blocked\n"
    )
    data = message_with()
    envelope = Envelope("spammer@example.com", ("ok@example.net", "victim@example.net"), b"")
    found = evaluate(spool, rules, data, envelope=envelope, environ={"TCPREMOTEIP": "192.0.2.9"})
    assert [f.rule for f in found] == ["MAILFROM", "RCPTTO", "REMOTEIPADDR"]
    assert not evaluate(spool, rules, data, environ={"TCPREMOTEIP": "198.51.100.1"})


def test_virtual_headers_from_the_unpacker(spool: Path) -> None:
    rules = (
        ".\tFILEDOUBLEBARRELED\tdouble\n.\tFILECLSID\tclsid\n.\tFILELENGTHTOOLONG\tlong\n"
        "SMIME\\(encrypted\\)\tCRYPTODETAILS\tencrypted mail\n.\tZIPPASSWORDPROTECTED\tzip password\n"
    )
    assert [f.rule for f in evaluate(spool, rules, message_with(("a.doc.exe", b"x")))] == ["FILEDOUBLEBARRELED"]
    assert [f.rule for f in evaluate(spool, rules, message_with(("x" * 300 + ".txt", b"x")))] == ["FILELENGTHTOOLONG"]
    clsid = "readme.{3050F4D8-98B5-11CF-BB82-00AA00BDCE0B}"
    assert [f.rule for f in evaluate(spool, rules, message_with((clsid, b"x")))] == ["FILECLSID"]
    smime = (
        b"Subject: s\nMIME-Version: 1.0\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data;"
        b' name="smime.p7m"\nContent-Transfer-Encoding: base64\n\nMIIB\n'
    )
    assert [f.rule for f in evaluate(spool, rules, smime)] == ["CRYPTODETAILS"]
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "corpus"))
    import make_corpus

    locked = make_corpus.make_zip([("a.doc", b"secret")], password_flag=True)
    found = evaluate(spool, rules, message_with(("locked.zip", locked)))
    assert [f.rule for f in found] == ["ZIPPASSWORDPROTECTED"]


def test_type_rules(spool: Path) -> None:
    rules = "application/x-dosexec\tTYPE\tprograms by content\n"
    found = evaluate(spool, rules, message_with(("harmless.txt", EXE)))
    assert [(f.rule, f.part_name) for f in found] == [("application/x-dosexec", "harmless.txt")]
    only_dat = ".dat\tTYPE=application/x-dosexec\tprograms posing as data\n"
    assert not evaluate(spool, only_dat, message_with(("harmless.txt", EXE)))
    assert evaluate(
        spool, "\\.dat\tTYPE=application/x-dosexec\tprograms posing as data\n", message_with(("x.dat", EXE))
    )


def test_dlp_monitor_marks_matching_events_monitor_only(spool: Path) -> None:
    rules = ".mp3\tSIZE=-1\tMP3 files\n.exe\tSIZE=-1\tprograms\n"
    found = evaluate(spool, rules, message_with(("a.mp3", b"x"), ("b.exe", b"x")), settings={"dlp_monitor": "mp3"})
    assert {(f.rule, f.monitor_only) for f in found} == {(".mp3", True), (".exe", False)}
    assert blocking_rules(found) == {".exe"}


# ---------------------------------------------------------------- file handling, -g, -r


def test_compile_reports_every_bad_line_by_number(spool: Path, capsys: pytest.CaptureFixture[str]) -> None:
    install_rules(
        spool,
        "# comment\n.exe\tSIZE=-1\tok\nonly two\tfields\n(\tSubject:\tbad regex\n"
        ".x\tSIZE=big\tbad size\nfoo\tNOSUCH\tbad type\n",
    )
    assert policy.compile_rules(make_settings(spool)) == 1
    err = capsys.readouterr().err
    for number in (3, 4, 5, 6):
        assert f"quarantine-events.txt:{number}:" in err
    assert "quarantine-events.txt:2:" not in err
    assert not (spool / policy.COMPILED_FILE).exists()


def test_compile_and_print(spool: Path, capsys: pytest.CaptureFixture[str]) -> None:
    install_rules(spool)
    settings = make_settings(spool)
    assert policy.compile_rules(settings) == 0
    assert (spool / policy.COMPILED_FILE).exists()
    capsys.readouterr()
    assert policy.print_rules(settings) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.split("\t")[1:3] == [".exe", "SIZE=-1"] for line in out)
    assert any(line.split("\t")[1:3] == [".", "FILEDOUBLEBARRELED"] for line in out)
    assert any(line.split("\t")[1:3] == ["application/x-dosexec", "TYPE"] for line in out)


def test_hot_path_uses_compiled_form_and_recompiles_a_newer_source(spool: Path) -> None:
    source = install_rules(spool, ".exe\tSIZE=-1\tprograms\n")
    settings = make_settings(spool)
    assert policy.compile_rules(settings) == 0
    compiled = spool / policy.COMPILED_FILE
    assert [r[2] for r in policy.load_rules(settings)] == [".exe"]
    source.write_text(".exe\tSIZE=-1\tprograms\n.bat\tSIZE=-1\tbatch\n")
    os.utime(source, ns=(compiled.stat().st_mtime_ns + 10**9,) * 2)
    assert [r[2] for r in policy.load_rules(settings)] == [".exe", ".bat"]
    source.unlink()  # the compiled form alone keeps working
    assert [r[2] for r in policy.load_rules(settings)] == [".exe", ".bat"]


def test_broken_source_keeps_last_good_rules_and_complains(spool: Path, capfd: pytest.CaptureFixture[str]) -> None:
    source = install_rules(spool, ".exe\tSIZE=-1\tprograms\n")
    settings = make_settings(spool)
    assert policy.compile_rules(settings) == 0
    source.write_text(".exe\tSIZE=-1\tprograms\n[broken\tSubject:\tbad\n.bat\tSIZE=-1\tbatch\n")
    found = evaluate(spool.parent / "spool", source.read_text(), message_with(("a.bat", b"x"), ("b.exe", b"x")))
    assert [f.rule for f in found] == [".exe"]  # the last good compiled form
    err = capfd.readouterr().err
    assert "line 2" in err and "last good" in err


def test_broken_source_without_compiled_form_uses_its_good_lines(
    spool: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    found = evaluate(spool, "[broken\tSubject:\tbad\n.bat\tSIZE=-1\tbatch\n", message_with(("a.bat", b"x")))
    assert [f.rule for f in found] == [".bat"]
    assert "line 1" in capfd.readouterr().err


def test_no_rules_file_means_no_policy_findings(spool: Path) -> None:
    settings = make_settings(spool)
    message = FakeMessage(settings, unpacked=None)
    assert policy.check(message) == []


def test_shipped_default_policy_compiles_and_blocks_the_prudent_set(spool: Path) -> None:
    install_rules(spool)
    settings = make_settings(spool)
    assert policy.compile_rules(settings) == 0
    values = {r[2] for r in policy.load_rules(settings)}
    assert {
        ".vbs",
        ".lnk",
        ".scr",
        ".wsh",
        ".hta",
        ".pif",
        ".cpl",
        ".exe",
        ".com",
        ".bat",
        ".cmd",
        ".shs",
        ".js",
        ".jse",
        ".vbe",
        ".wsf",
        ".msi",
        ".reg",
    } <= values
