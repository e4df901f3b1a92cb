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
from qmail_scanner.policy_legacy import convert_attachments_file
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
    rules = "You are 0wNed\tSubject:\tworm subject\nevil-mailer.*\tX-Mailer:\tbad mailer\n"
    assert [f.rule for f in evaluate(spool, rules, message_with(subject="you ARE 0wned"))] == ["Subject:"]
    assert [f.rule for f in evaluate(spool, rules, message_with(extra="X-Mailer: Evil-Mailer 1.0\n"))] == ["X-Mailer:"]
    encoded = "=?utf-8?B?WW91IGFyZSAwd05lZA==?="
    assert evaluate(spool, rules, message_with(subject=encoded))
    assert not evaluate(spool, rules, message_with(subject=encoded), settings={"normalize": False})


def test_virtual_headers(spool: Path) -> None:
    rules = (
        "^spammer@example\\.com$\tMAILFROM\tsender blocked\n"
        "victim@.*\tRCPTTO:\trecipient protected\n"
        "192\\.0\\.2\\..*\tREMOTEIPADDR\tnetwork blocked\n"
    )
    data = message_with()
    envelope = Envelope("spammer@example.com", ("ok@example.net", "victim@example.net"), b"")
    found = evaluate(spool, rules, data, envelope=envelope, environ={"TCPREMOTEIP": "192.0.2.9"})
    assert [f.rule for f in found] == ["MAILFROM", "RCPTTO", "REMOTEIPADDR"]
    assert not evaluate(spool, rules, data, environ={"TCPREMOTEIP": "198.51.100.1"})


def test_virtual_headers_from_the_unpacker(spool: Path) -> None:
    rules = (
        ".*\tFILEDOUBLEBARRELED\tdouble\n.*\tFILECLSID\tclsid\n.*\tFILELENGTHTOOLONG\tlong\n"
        "SMIME\\(encrypted\\)\tCRYPTODETAILS\tencrypted mail\n.*\tZIPPASSWORDPROTECTED\tzip password\n"
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
    assert any(line.split("\t")[1:3] == [".*", "FILEDOUBLEBARRELED"] for line in out)
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


# ---------------------------------------------------------------- the original's header semantics, 1.2x file


def test_header_rules_match_the_whole_value_as_the_original(spool: Path) -> None:
    rules = "You are 0wNed\tPolicy-Subject:\tNasty emails not allowed\n"
    assert [f.rule for f in evaluate(spool, rules, message_with(subject="You are 0wNed"))] == ["Subject:"]
    assert evaluate(spool, rules, message_with(subject="you are 0WNED"))  # 2.x files: case-insensitive
    assert not evaluate(spool, rules, message_with(subject="Re: You are 0wNed"))
    assert not evaluate(spool, rules, message_with(subject="You are 0wNed twice"))
    # The value is put between ^ and $ as written, so an alternation anchors each side, as in Perl.
    either = "left.*|.*right\tSubject:\tx\n"
    assert evaluate(spool, either, message_with(subject="left then"))
    assert evaluate(spool, either, message_with(subject="then right"))
    assert not evaluate(spool, either, message_with(subject="the middle"))


def test_virus_prefixed_rules_in_a_2x_file_name_the_header(spool: Path) -> None:
    rules = ".{100,}\t\t\tVirus-Date:\t\tMIME Header Buffer Overflow\n"
    assert evaluate(spool, rules, message_with(extra=f"Date: {'x' * 120}\n"))
    assert not evaluate(spool, rules, message_with(extra="Date: Wed, 25 Nov 2026 08:00:00 +0000\n"))


def legacy_spool(spool: Path, text: str) -> Path:
    """A spool holding only the 1.2x quarantine-attachments.txt."""
    (spool / "quarantine-attachments.txt").write_text(text)
    return spool


def evaluate_legacy(spool: Path, text: str, data: bytes) -> list:
    legacy_spool(spool, text)
    settings = make_settings(spool)
    work = spool.parent / "work"
    work.mkdir(exist_ok=True)
    return policy.check(FakeMessage(settings, unpacked=unpack_bytes(data, work, settings)))


def test_legacy_file_extension_rules_any_size(spool: Path) -> None:
    text = ".vbs\t0\tVBS files not allowed per Company security policy\n.exe\t1234\tsize ignored for .ext\n"
    found = evaluate_legacy(spool, text, message_with(("LOVE-LETTER.TXT.VBS", b"x" * 10)))
    assert [(f.rule, f.reason) for f in found] == [(".vbs", "VBS files not allowed per Company security policy")]
    assert evaluate_legacy(spool, text, message_with(("setup.exe", b"x" * 99)))
    assert not evaluate_legacy(spool, text, message_with(("notes.txt", b"x")))


def test_legacy_file_exact_name_and_size(spool: Path) -> None:
    text = "happy99.exe\t10000\tHappy99\nreadme (1).doc\t0\tany size, literal name\n"
    assert evaluate_legacy(spool, text, message_with(("Happy99.exe", b"x" * 10000)))
    assert not evaluate_legacy(spool, text, message_with(("Happy99.exe", b"x" * 10001)))
    assert evaluate_legacy(spool, text, message_with(("readme (1).doc", b"x" * 3)))
    assert not evaluate_legacy(spool, text, message_with(("readme 1.doc", b"x" * 3)))  # ( ) are not regex here


def test_legacy_header_rules_are_case_sensitive_and_anchored(spool: Path) -> None:
    text = "Pickles.*Breakfast\tVirus-Subject:\tFake Example Pickles virus\n"
    found = evaluate_legacy(spool, text, message_with(subject="Pickles for Breakfast"))
    assert [(f.rule, f.reason) for f in found] == [("Subject:", "Fake Example Pickles virus")]
    assert not evaluate_legacy(spool, text, message_with(subject="pickles for breakfast"))
    assert not evaluate_legacy(spool, text, message_with(subject="Pickles - where did you go?"))
    assert not evaluate_legacy(spool, text, message_with(subject="Re: Pickles for Breakfast"))


def test_both_files_are_in_force_and_a_converted_copy_counts_once(spool: Path) -> None:
    from qmail_scanner.policy_legacy import convert_attachments_file

    legacy = ".pif\t0\tPIF\n.mp3\t0\tno music\n"
    install_rules(spool, convert_attachments_file(legacy) + ".exe\tSIZE=-1\tprograms\n")
    legacy_spool(spool, legacy)
    rules = policy.load_rules(make_settings(spool))
    assert [r[2] for r in rules] == [".pif", ".mp3", ".exe"]
    assert policy.compile_rules(make_settings(spool)) == 0


def test_legacy_file_errors_are_reported_by_its_own_line_numbers(
    spool: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy_spool(spool, "# 1.2x\n.vbs\t0\tok\n.x\tbig\tnot a size\n")
    assert policy.compile_rules(make_settings(spool)) == 1
    err = capsys.readouterr().err
    assert "quarantine-attachments.txt:3:" in err and "'.x\\tbig\\tnot a size'" in err


def test_print_rules_names_where_each_rule_comes_from(spool: Path, capsys: pytest.CaptureFixture[str]) -> None:
    install_rules(spool, ".exe\tSIZE=-1\tprograms\n")
    legacy_spool(spool, "\n.vbs\t0\tscripts\n")
    settings = make_settings(spool)
    assert policy.compile_rules(settings) == 0
    capsys.readouterr()
    policy.print_rules(settings)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["1\t.exe\tSIZE=-1\tprograms", "quarantine-attachments.txt:2\t.vbs\tSIZE=-1\tscripts"]


def test_print_rules_lists_a_migrated_rule_once_and_says_where_it_is(
    spool: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # After a 1.x migration the converted quarantine-events.txt and the kept 1.2x file hold the same rules.
    legacy_text = ".vbs\t0\tscripts\n*.pif\t0\tpif files\nsetup.exe\t1234\tthat installer\n"
    install_rules(spool, convert_attachments_file(legacy_text.replace("setup.exe\t1234\tthat installer\n", "")))
    legacy_spool(spool, legacy_text)
    settings = make_settings(spool)
    assert policy.compile_rules(settings) == 0
    capsys.readouterr()
    policy.print_rules(settings)
    captured = capsys.readouterr()
    values = [line.split("\t")[1] for line in captured.out.splitlines()]
    assert values == [".vbs", ".pif", "setup.exe"]
    assert captured.out.splitlines()[2].startswith("quarantine-attachments.txt:3\t")
    assert "# quarantine-events.txt: 2 rule(s) listed as N\n" in captured.err
    legacy_note = "# quarantine-attachments.txt: 1 rule(s) listed as `quarantine-attachments.txt:N`, 2 the same"
    assert legacy_note in captured.err


def test_a_changed_legacy_file_is_recompiled_and_a_removed_one_drops_its_rules(spool: Path) -> None:
    install_rules(spool, ".exe\tSIZE=-1\tprograms\n")
    legacy = legacy_spool(spool, ".vbs\t0\tscripts\n") / "quarantine-attachments.txt"
    settings = make_settings(spool)
    assert policy.compile_rules(settings) == 0
    legacy.write_text(".vbs\t0\tscripts\n.hta\t0\thta\n")
    os.utime(legacy, ns=((spool / policy.COMPILED_FILE).stat().st_mtime_ns + 10**9,) * 2)
    assert [r[2] for r in policy.load_rules(settings)] == [".exe", ".vbs", ".hta"]
    legacy.unlink()
    assert [r[2] for r in policy.load_rules(settings)] == [".exe"]


def test_convert_attachments_file_gives_the_2x_equivalent() -> None:
    from qmail_scanner.policy_legacy import convert_attachments_file

    text = (
        "# comment kept\n"
        ".vbs\t0\tVBS files\n"
        "*.mp3\t0\tmusic\n"
        "happy99.exe\t10000\tHappy99\n"
        "my file+1.exe\t0\tliteral\n"
        ".{100,}\t\t\tVirus-Date:\t\tMIME Header Buffer Overflow\n"
        "Pickles.*Breakfast\tVirus-Subject:\tPickles\n"
        ".pif\tSIZE=-1\talready 2.x\n"
    )
    converted = convert_attachments_file(text).splitlines()
    body = [line for line in converted if not line.startswith("#")]
    assert body == [
        ".vbs\tSIZE=-1\tVBS files",
        ".mp3\tSIZE=-1\tmusic",
        "happy99.exe\tSIZE=10000\tHappy99",
        "my file\\+1\\.exe\tSIZE=-1\tliteral",
        "(?-i:.{100,})\tDate:\tMIME Header Buffer Overflow",
        "(?-i:Pickles.*Breakfast)\tSubject:\tPickles",
        ".pif\tSIZE=-1\talready 2.x",
    ]
    assert "# comment kept" in converted
    rules, errors = policy.parse_rules("\n".join(converted))
    assert errors == [] and len(rules) == 7


# ---------------------------------------------------------------- real types from libmagic


def random_bytes_libmagic_calls_a_dos_program() -> bytes:
    """Random data (as in an encrypted attachment) that libmagic's header-less .COM guess fires on."""
    import random

    import magic

    generator = random.Random(20261128)
    for _ in range(5000):
        blob = bytes(generator.getrandbits(8) for _ in range(2048))
        if magic.Magic(mime=True).from_buffer(blob) == "application/x-dosexec" and not blob.startswith(b"MZ"):
            return blob
    raise AssertionError("libmagic never guessed a DOS program in 5000 random blobs")


def test_libmagic_com_guess_on_random_data_is_not_a_program(spool: Path) -> None:
    blob = random_bytes_libmagic_calls_a_dos_program()
    with_libmagic = {"settings": {"have_python_magic": True}}
    shipped = install_rules(spool).read_text()
    assert not blocking_rules(evaluate(spool, shipped, message_with(("backup.gpg", blob)), **with_libmagic))
    # A real program under a harmless name is still found by its content.
    found = evaluate(spool, shipped, message_with(("backup.gpg", EXE)), **with_libmagic)
    assert blocking_rules(found) == {"application/x-dosexec"}


def test_header_rules_see_attached_messages_but_not_header_lines_quoted_in_a_reply(spool: Path) -> None:
    rules = "You are 0wNed\tSubject:\tworm subject\n"
    quoted = b"> From: worm@example.org\n> Subject: you are 0wned\n"
    reply = (
        b"From: a@example.org\nSubject: re: that mail\nMIME-Version: 1.0\nContent-Type: text/plain\n\n"
        b"Subject: you are 0wned\nFrom: worm@example.org\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n\n"
        b"Did you really send this?\n" + quoted
    )
    assert evaluate(spool, rules, reply) == []
    forward = message_with(subject="fwd").replace(
        b"--B--\n",
        b"--B\nContent-Type: message/rfc822\n\nFrom: worm@example.org\nSubject: you are 0wned\n\nhi\n--B--\n",
    )
    assert [f.rule for f in evaluate(spool, rules, forward)] == ["Subject:"]
