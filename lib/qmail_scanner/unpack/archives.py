"""What is inside archives: zip (nested), TNEF winmail.dat, and rar/7z listings when their modules exist.

Every member becomes a Part with `container` set, so the checks and the policy rules see
names inside archives exactly like attachment names. Limits (member count, expansion ratio,
total size, depth) turn into "zip-bomb" style findings, never into a crash.
"""

from __future__ import annotations

import os
import sys

from ..records import Part
from . import magictype

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from .sink import PartSink

RATIO_MIN_BYTES = 1 << 20  # a high ratio matters only for members that expand to this much
TNEF_IN_MEMORY_LIMIT = 32 << 20  # tnefparse reads the whole file; bigger ones go to the tnef program
COPY_CHUNK = 1 << 16
ARCHIVE_SUFFIXES = (".zip", ".rar", ".7z", ".tnef")
TNEF_NAMES = ("winmail.dat", "win.dat")
TNEF_TYPES = ("application/ms-tnef", "application/vnd.ms-tnef")


def looks_like_archive(part: Part, head: bytes) -> bool:
    """Whether a decoded part or member is worth opening as an archive."""
    if part.magic_type in magictype.ARCHIVE_TYPES:
        return True
    if part.declared_type in TNEF_TYPES:
        return True
    return any(name.lower().endswith(ARCHIVE_SUFFIXES + TNEF_NAMES) for name in part.filenames)


def inspect_archive(sink: PartSink, part: Part, container: str, depth: int) -> None:
    """List (and with --unzip extract) the members of one archive part."""
    if depth > sink.max_depth:
        sink.too_deep()
        return
    if not part.decoded_path:
        return
    names = [name.lower() for name in part.filenames]
    if part.magic_type == "application/zip":
        _inspect_zip(sink, part, container, depth)
    elif (
        part.magic_type == "application/vnd.ms-tnef"
        or part.declared_type in TNEF_TYPES
        or any(name.endswith(TNEF_NAMES) for name in names)
    ):
        _inspect_tnef(sink, part, container, depth)
    elif part.magic_type == "application/x-rar":
        _list_rar(sink, part, container, depth)
    elif part.magic_type == "application/x-7z-compressed":
        _list_7z(sink, part, container, depth)


def _member_part(
    sink: PartSink, name: str, size: int, container: str, depth: int, encrypted: bool, kind: str = "ZIP"
) -> Part | None:
    part = sink.new_part(depth, "", b"", filenames=(name,) if name else (), size=size, container=container)
    if part is not None and encrypted:
        part.encrypted = True
        sink.result.add_crypto(f"{kind}(encrypted)")
    return part


def _bomb(sink: PartSink, reason: str, name: str = "") -> None:
    sink.result.add_finding("zip-bomb", f"Disallowed archive: {reason} (decompression bomb)", name)


def _inspect_zip(sink: PartSink, part: Part, container: str, depth: int) -> None:
    from .ziplisting import ZipFormatError, open_member, read_listing

    settings = sink.settings
    try:
        source = open(part.decoded_path or "", "rb")  # noqa: SIM115 - closed below, after the members
    except OSError:
        return
    with source:
        # Directory entries are listed too; a listing cut short means far more entries than members allowed.
        try:
            listing = read_listing(source, 2 * settings.max_parts + 1)
        except (ZipFormatError, OSError):
            return  # not a readable zip: the part stays what it is, the scanners still see it
        members = [entry for entry in listing.entries if not entry.is_dir]
        count = len(members) if listing.complete else max(len(members), listing.declared_entries)
        if count > settings.max_parts or not listing.complete:
            _bomb(sink, f"{container} holds {count} members (limit {settings.max_parts})", container)
        declared_total = sum(entry.size for entry in members)
        if declared_total > settings.max_zip_size:
            _bomb(sink, f"{container} expands to {declared_total} bytes (limit {settings.max_zip_size})", container)
        for entry in members[: settings.max_parts]:
            sink.tick()
            ratio = entry.size / max(entry.compressed_size, 1)
            too_big = entry.size >= RATIO_MIN_BYTES and ratio > settings.max_expansion_ratio
            if too_big:
                _bomb(sink, f"{container}/{entry.name} expands {int(ratio)} times", container)
            member = _member_part(sink, entry.name, entry.size, container, depth, entry.encrypted)
            if member is None:
                return
            if entry.encrypted or too_big or declared_total > settings.max_zip_size:
                continue
            try:
                with open_member(source, entry) as stream:
                    if settings.unzip:
                        head = _extract(sink, stream, member, entry.compressed_size)
                    else:
                        head = stream.read(magictype.HEAD_BYTES)
            except (ZipFormatError, OSError):
                continue
            member.magic_type = magictype.detect(head, settings)
            if member.decoded_path and looks_like_archive(member, head):
                inspect_archive(sink, member, f"{container}/{entry.name}", depth + 1)


def _extract(sink: PartSink, stream: object, member: Part, compressed_size: int) -> bytes:
    """Copy a member to a work file within the ratio and decoded-bytes limits; return its head."""
    settings = sink.settings
    path = sink.work_file(member)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC, 0o600)
    member.decoded_path = path
    head = b""
    written = 0
    limit = max(RATIO_MIN_BYTES, compressed_size * settings.max_expansion_ratio)
    try:
        while True:
            chunk = stream.read(COPY_CHUNK)  # type: ignore[attr-defined]
            if not chunk:
                break
            if written + len(chunk) > limit:
                _bomb(
                    sink,
                    f"{member.display_name} expands beyond {settings.max_expansion_ratio} times",
                    member.container,
                )
                break
            chunk = chunk[: sink.take_budget(len(chunk))]
            if not chunk:
                break
            if len(head) < magictype.HEAD_BYTES:
                head += chunk[: magictype.HEAD_BYTES - len(head)]
            os.write(fd, chunk)
            written += len(chunk)
    finally:
        os.close(fd)
    member.size = written
    return head


def _add_extracted(
    sink: PartSink, name: str, data_path: str | None, data: bytes | None, container: str, depth: int
) -> None:
    """One TNEF member: a work file of our own naming, its type, and a look inside."""
    member = _member_part(sink, name, 0, container, depth, False)
    if member is None:
        return
    path = sink.work_file(member)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
    if data is not None:
        data = data[: sink.take_budget(len(data))]
        fd = os.open(path, flags, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        head = data[: magictype.HEAD_BYTES]
        member.size = len(data)
    else:
        os.rename(data_path or "", path)
        member.size = os.path.getsize(path)
        if sink.take_budget(member.size) < member.size:
            os.truncate(path, 0)
        with open(path, "rb") as extracted:
            head = extracted.read(magictype.HEAD_BYTES)
    member.decoded_path = path
    member.magic_type = magictype.detect(head, sink.settings)
    if looks_like_archive(member, head):
        inspect_archive(sink, member, f"{container}/{name}", depth + 1)


def _inspect_tnef(sink: PartSink, part: Part, container: str, depth: int) -> None:
    settings = sink.settings
    if settings.have_tnefparse and part.size <= TNEF_IN_MEMORY_LIMIT:
        for directory in settings.extra_sys_path:
            if directory not in sys.path:
                sys.path.append(directory)
        try:
            from tnefparse.tnef import TNEF

            with open(part.decoded_path or "", "rb") as source:
                tnef = TNEF(source.read(), do_checksum=False)
            attachments = [(a.long_filename() or a.name or "", a.data) for a in tnef.attachments]
        except Exception as error:
            sys.stderr.write(f"qmail-scanner: tnefparse failed on {container} ({type(error).__name__}); trying tnef\n")
        else:
            for name, data in attachments[: settings.max_parts]:
                _add_extracted(
                    sink, name.strip("\x00"), None, data if isinstance(data, bytes) else b"", container, depth
                )
            return
    if settings.tnef_binary:
        _tnef_program(sink, part, container, depth)


def _tnef_program(sink: PartSink, part: Part, container: str, depth: int) -> None:
    """Unpack with the tnef program into a fresh dir; retry with --ignore-checksum (Debian's tnef needs it)."""
    import shutil
    import subprocess

    settings = sink.settings
    out_dir = sink.work_file(part, ".tnef")
    for extra in ([], ["--ignore-checksum"]):
        shutil.rmtree(out_dir, ignore_errors=True)
        os.mkdir(out_dir, 0o700)
        argv = [
            settings.tnef_binary,
            *extra,
            "--number-backups",
            f"--maxsize={settings.max_zip_size}",
            "-C",
            out_dir,
            "-f",
            part.decoded_path or "",
        ]
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=max(1.0, min(sink.remaining(), 60.0)),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            sys.stderr.write(f"qmail-scanner: tnef failed on {container}: {error}\n")
            return
        if done.returncode == 0:
            break
    else:
        sys.stderr.write(f"qmail-scanner: tnef could not read {container}: {done.stderr[:200]!r}\n")
    with os.scandir(out_dir) as entries:
        found = sorted((entry.name, entry.path) for entry in entries if entry.is_file(follow_symlinks=False))
    for name, path in found[: settings.max_parts]:
        _add_extracted(sink, name, path, None, container, depth)


def _optional_module(sink: PartSink, name: str) -> object | None:
    for directory in sink.settings.extra_sys_path:
        if directory not in sys.path:
            sys.path.append(directory)
    try:
        return __import__(name)
    except ImportError:
        return None


def _list_rar(sink: PartSink, part: Part, container: str, depth: int) -> None:
    rarfile = _optional_module(sink, "rarfile")
    if rarfile is None:
        return
    try:
        with rarfile.RarFile(part.decoded_path) as archive:  # type: ignore[attr-defined]
            members = [i for i in archive.infolist() if not i.is_dir()]
            _list_members(
                sink, container, depth, [(i.filename, i.file_size, i.needs_password()) for i in members], "RAR"
            )
    except Exception:
        return


def _list_7z(sink: PartSink, part: Part, container: str, depth: int) -> None:
    py7zr = _optional_module(sink, "py7zr")
    if py7zr is None:
        return
    try:
        with py7zr.SevenZipFile(part.decoded_path, mode="r") as archive:  # type: ignore[attr-defined]
            encrypted = archive.needs_password()
            members = [i for i in archive.list() if not i.is_directory]
            _list_members(sink, container, depth, [(i.filename, i.uncompressed or 0, encrypted) for i in members], "7Z")
    except Exception as error:
        if "password" in str(error).lower():
            _member_part(sink, "", 0, container, depth, True, "7Z")
        return


def _list_members(sink: PartSink, container: str, depth: int, members: list[tuple[str, int, bool]], kind: str) -> None:
    settings = sink.settings
    if len(members) > settings.max_parts:
        _bomb(sink, f"{container} holds {len(members)} members (limit {settings.max_parts})", container)
    if sum(size for _, size, _ in members) > settings.max_zip_size:
        _bomb(sink, f"{container} expands beyond {settings.max_zip_size} bytes", container)
    for name, size, encrypted in members[: settings.max_parts]:
        if _member_part(sink, name, size, container, depth, encrypted, kind) is None:
            return
