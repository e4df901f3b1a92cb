"""What is inside archives: every member of zip, 7z, rar, tar, gzip/bzip2/xz/zstd, ISO 9660, cabinet and TNEF files.

Every member becomes a Part with `container` set ("a.zip/b.7z/c.exe"), its name, and its real
type from its decoded head, at every level of nesting, so the policy sees programs inside
archives exactly like attachments. Members are decoded to work files within the message's
budget; those clamd would not find by reading the raw message (a method or format it does
not open, nesting past its recursion limit) are marked scan_alone and handed to it decoded.

Zip goes through our own bounded reader (ziplisting: fast for .docx and friends); a zip member
whose method it lacks is copied alone into a one-member zip and decoded by libarchive (PPMd,
xz) or by 7-Zip (Deflate64, implode and the rest: path frozen by configure), else by the
optional inflate64 module (Deflate64). The other formats go through the system libarchive
(ctypes, path frozen by configure); without libarchive the standard library's
tarfile/gzip/bz2/lzma and the optional rarfile/py7zr listers stand in. What cannot be read
(a method no reader has, a corrupt archive, nesting or sizes past the limits) is a blocking
finding that says why: an archive the scanner could not look into is never delivered as clean.
"""

from __future__ import annotations

import os
import sys
import time

from ..outcomes import Outcome
from ..records import Part
from ..stderr_log import say
from . import magictype
from .content import TNEF_NAMES, TNEF_TYPES, may_be_archive
from .decoding import NEW_FILE_FLAGS

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable

    from .sink import PartSink

# What a wrapper around a library (rarfile, py7zr, tnefparse) lets through untouched: the deadline
# and the stop signals (TemporaryFailure, raised by the alarm wherever the program is) and running
# out of memory. Anything else the library raises on a damaged file is that file being unreadable.
LIBRARY_PASSES = (Outcome, MemoryError)
RATIO_MIN_BYTES = 1 << 20  # a high ratio matters only for members that expand to this much
COPY_CHUNK = 1 << 16
MEMORY_MEMBER_BYTES = 4 << 20  # a member clamd reads itself stays in memory up to this size, no work file

# clamd's default MaxRecursion: a member nested deeper (MIME levels included) is not scanned by
# clamd reading the raw message; it is handed over decoded.
CLAMD_MAX_RECURSION = 17
# What clamd (Debian's build: no unrar, no zstd) opens by itself, and the zip methods it decodes.
CLAMD_READS = frozenset({"zip", "7z", "tar", "gzip", "bzip2", "xz", "cab", "iso9660", "cpio"})
# Stored, implode, deflate, deflate64, bzip2 (clamscan finds clam.exe in clamav-testfiles' clam.impl.zip, clam.d64.zip).
CLAMD_ZIP_METHODS = frozenset({0, 6, 8, 9, 12})
OWN_ZIP_METHODS = frozenset({0, 8, 12, 14})  # what ziplisting decodes: stored, deflate, bzip2, lzma
LIBARCHIVE_ZIP_METHODS = frozenset({0, 8, 12, 14, 95, 98})  # libarchive 3.6 adds xz and PPMd; not deflate64/implode
DEFLATE64 = 9
SEVENZIP_ERROR_BYTES = 4096  # 7-Zip's complaint, kept for the finding
SEVENZIP_ERROR_LINES = ("ERROR", "Unsupported", "Data Error", "CRC Failed")
SINGLE_FILE_KINDS = ("gzip", "bzip2", "xz", "zstd", "lzip")
SINGLE_FILE_SUFFIXES = (".tgz", ".gz", ".bz2", ".tbz2", ".tbz", ".xz", ".txz", ".zst", ".tzst", ".lz", ".z")


class Unreadable(Exception):
    """A member or an archive could not be read: the text says what, for the finding."""


def inspect_archive(sink: PartSink, part: Part, container: str, depth: int) -> None:
    """List every member of one archive part, decoded and typed, and look inside those that are archives."""
    _inspect(sink, part, container, depth, 1)


def _inspect(sink: PartSink, part: Part, container: str, depth: int, level: int) -> None:
    if depth > sink.max_depth:
        sink.too_deep()
        return
    path = part.decoded_path
    if not path:
        return
    names = [name.lower() for name in part.filenames]
    if (
        part.magic_type == "application/vnd.ms-tnef"
        or part.declared_type in TNEF_TYPES
        or any(name.endswith(TNEF_NAMES) for name in names)
    ):
        from .tnef import inspect_tnef

        inspect_tnef(sink, part, container, depth)
        return
    try:
        with open(path, "rb") as source:
            head = source.read(magictype.HEAD_BYTES)
    except OSError:
        return
    kind = magictype.archive_kind(head, path, part.size or os.path.getsize(path))
    if not kind:
        return
    strong = magictype.ARCHIVE_KINDS.get(magictype.by_signature(head), "") == kind
    settings = sink.settings
    if level > settings.max_archive_depth:
        sink.result.add_finding(
            "archive-depth",
            f"Disallowed archive: {_printable(container)} nests archives deeper than"
            f" {settings.max_archive_depth} levels (max_archive_depth)",
            container,
        )
        return
    sink.tick()
    walk = _Walk(sink, container, depth, level, kind, os.path.getsize(path))
    try:
        if kind == "zip" and _read_zip_own(walk, path):
            return
        if settings.libarchive_path:
            _read_libarchive(walk, path, head, part)
        else:
            _read_without_libarchive(walk, path, part)
    except Unreadable as problem:
        # Not one member could be read and nothing says the format is one we lack: a truncated or
        # damaged file that 7-Zip and bsdtar cannot open either, so it delivers no payload; the
        # virus scanners still see its bytes. Past the first member, or a method or feature this
        # host lacks, it is an archive the user may open and we cannot: quarantined.
        lacking = "support" in str(problem) or "no reader" in str(problem)
        if (strong and lacking) or walk.members:
            sink.result.add_finding(
                "archive-unreadable", f"Disallowed archive: {_printable(container)}: {problem}", container
            )
        else:
            log_line(f"{container} looks like a {kind} archive, but no member of it can be read ({problem})")


def _printable(text: str) -> str:
    """Text from mail on one line, control characters escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)[:300]


def log_line(text: str) -> None:
    """One line in the smtpd log, whatever the archive's names contain (stderr_log escapes and bounds it)."""
    say(text)


def _bomb(sink: PartSink, reason: str, name: str = "") -> None:
    sink.result.add_finding("zip-bomb", f"Disallowed archive: {_printable(reason)} (decompression bomb)", name)


def member_part(
    sink: PartSink,
    name: str,
    size: int,
    container: str,
    depth: int,
    encrypted: bool,
    kind: str = "ZIP",
    archive: str = "",
) -> Part | None:
    part = sink.new_part(
        depth, "", b"", filenames=(name,) if name else (), size=size, container=container, archive=archive
    )
    if part is not None and encrypted:
        part.encrypted = True
        sink.result.add_crypto(f"{kind}(encrypted)")
    return part


class _Walk:
    """One archive being read: where its members go, and the output allowed by the expansion ratio."""

    def __init__(self, sink: PartSink, container: str, depth: int, level: int, kind: str, file_size: int) -> None:
        self.sink = sink
        self.container = container
        self.depth = depth
        self.level = level
        self.kind = kind
        self.members = 0
        self.output_left = max(RATIO_MIN_BYTES, file_size * sink.settings.max_expansion_ratio)
        self.crypto_tag = {"7z": "7Z", "rar": "RAR"}.get(kind, "ZIP")

    def too_many(self, count: int) -> bool:
        """A bomb finding when an archive holds more members than a message may have parts."""
        limit = self.sink.settings.max_parts
        if count > limit:
            _bomb(self.sink, f"{self.container} holds {count} members (limit {limit})", self.container)
            return True
        return False

    def member(
        self,
        name: str,
        size: int,
        read: Callable[[int], bytes] | None,
        clamd_reads: bool,
        compressed_size: int = -1,
        encrypted: bool = False,
        names: tuple[str, ...] = (),
    ) -> bool:
        """One member: a part, its bytes in a work file, its real type, a look inside; False to stop the walk."""
        sink = self.sink
        sink.tick()
        self.members += 1
        if self.members > sink.settings.max_parts:
            self.too_many(self.members)
            return False
        part = member_part(sink, name, max(size, 0), self.container, self.depth, encrypted, self.crypto_tag, self.kind)
        if part is None:
            return False
        if names:
            part.filenames = tuple(dict.fromkeys((*part.filenames, *names)))
        if encrypted or read is None:
            return True
        limit = self.output_left
        if compressed_size >= 0:
            limit = min(limit, max(RATIO_MIN_BYTES, compressed_size * sink.settings.max_expansion_ratio))
        settings = sink.settings
        scan_alone = (
            not clamd_reads or part.depth >= CLAMD_MAX_RECURSION - 1 or settings.unzip or settings.av_scan_parts
        )
        head, data = _extract(sink, read, part, limit, self.container, keep_file=scan_alone)
        self.output_left -= part.size
        part.magic_type = magictype.detect(head, settings)
        part.scan_alone = scan_alone and part.decoded_path is not None
        if _nested_kind(head, data, part) or may_be_archive(part):
            if part.decoded_path is None:
                _write_member(sink, part, data)
            _inspect(sink, part, f"{self.container}/{name}", self.depth + 1, self.level + 1)
        return not sink.stopped


def _nested_kind(head: bytes, data: bytes | None, part: Part) -> str:
    """A member's archive format: from its work file, or from all of it when it stayed in memory."""
    if data is None:
        return magictype.archive_kind(head, part.decoded_path, part.size)
    kind = magictype.archive_kind(head, None, len(head))
    if kind:
        return kind
    if magictype.ZIP_END in data[-magictype.ZIP_END_SEARCH :]:
        return "zip"
    return "iso9660" if data[magictype.ISO_MARK_AT : magictype.ISO_MARK_AT + 5] in magictype.ISO_MARKS else ""


def _write_member(sink: PartSink, part: Part, data: bytes | None) -> None:
    """A member kept in memory goes to a work file after all: it is an archive to open."""
    path = sink.work_file(part)
    fd = os.open(path, NEW_FILE_FLAGS, 0o600)
    try:
        os.write(fd, data or b"")
    finally:
        os.close(fd)
    part.decoded_path = path


def _extract(
    sink: PartSink, read: Callable[[int], bytes], member: Part, limit: int, container: str, keep_file: bool
) -> tuple[bytes, bytes | None]:
    """Decode a member within the ratio and decoded-bytes limits: (its head, all of it when it stayed in memory).

    Members clamd reads in the raw message need no work file: they stay in memory while they
    are small (creating a file costs more than decoding a .docx member), and spill to a work
    file past MEMORY_MEMBER_BYTES or when the member is to be handed to clamd.
    """
    pieces: list[bytes] = []
    fd = -1
    written = 0
    try:
        while True:
            chunk = read(COPY_CHUNK)
            if not chunk:
                break
            if written + len(chunk) > limit:
                _bomb(
                    sink,
                    f"{container}/{member.display_name} expands beyond {sink.settings.max_expansion_ratio} times"
                    f" its compressed size",
                    container,
                )
                break
            chunk = chunk[: sink.take_budget(len(chunk))]
            if not chunk:
                break
            if fd < 0 and (keep_file or written + len(chunk) > MEMORY_MEMBER_BYTES):
                member.decoded_path = sink.work_file(member)
                fd = os.open(member.decoded_path, NEW_FILE_FLAGS, 0o600)
                if pieces:
                    os.write(fd, b"".join(pieces))
            if fd >= 0:
                if written < magictype.HEAD_BYTES:
                    pieces.append(chunk[: magictype.HEAD_BYTES - written])
                os.write(fd, chunk)
            else:
                pieces.append(chunk)
            written += len(chunk)
    finally:
        if fd >= 0:
            os.close(fd)
        member.size = written
    data = b"".join(pieces)
    if fd >= 0:
        return data[: magictype.HEAD_BYTES], None
    return data[: magictype.HEAD_BYTES], data


def _read_zip_own(walk: _Walk, path: str) -> bool:
    """Our own zip reader; False when it cannot list the archive and libarchive should try."""
    from .ziplisting import ZipFormatError, read_listing

    sink = walk.sink
    settings = sink.settings
    with open(path, "rb") as source:
        # Directory entries are listed too; a listing cut short means far more entries than members allowed.
        try:
            listing = read_listing(source, 2 * settings.max_parts + 1)
        except ZipFormatError as error:
            if settings.libarchive_path:
                return False
            raise Unreadable(f"not a readable zip ({error})") from None
        members = [entry for entry in listing.entries if not entry.is_dir]
        count = len(members) if listing.complete else max(len(members), listing.declared_entries)
        if walk.too_many(count) or not listing.complete:
            return True
        declared_total = sum(entry.size for entry in members)
        if declared_total > settings.max_zip_size:
            limit = settings.max_zip_size
            _bomb(sink, f"{walk.container} expands to {declared_total} bytes (limit {limit})", walk.container)
            return True
        for entry in members:
            if entry.encrypted:
                if not walk.member(entry.name, entry.size, None, True, encrypted=True):
                    return True
                continue
            ratio = entry.size / max(entry.compressed_size, 1)
            if entry.size >= RATIO_MIN_BYTES and ratio > settings.max_expansion_ratio:
                _bomb(sink, f"{walk.container}/{entry.name} expands {int(ratio)} times", walk.container)
                if not walk.member(entry.name, entry.size, None, True):
                    return True
                continue
            try:
                with _open_zip_member(walk, source, entry) as stream:
                    keep_going = walk.member(
                        entry.name, entry.size, stream.read, entry.method in CLAMD_ZIP_METHODS, entry.compressed_size
                    )
            except ZipFormatError as error:
                raise Unreadable(f"{entry.name}: {error}") from None
            if not keep_going:
                return True
    return True


def _open_zip_member(walk: _Walk, source: object, entry: object) -> object:
    """A stream of one zip member's bytes from the first reader that knows its method, in-process first.

    7-Zip comes before inflate64 for Deflate64: importing inflate64 costs 40-60 ms (it reads its
    package metadata), more than 7-Zip's 3 ms start, and 7-Zip decodes a 30 MB member faster
    (146 ms against 172-200 ms); a decoder of hostile input crashing in its own process costs
    the message nothing.
    """
    from .ziplisting import METHOD_NAMES, open_member

    settings = walk.sink.settings
    method = entry.method  # type: ignore[attr-defined]
    if method in OWN_ZIP_METHODS:
        return open_member(source, entry)  # type: ignore[arg-type]
    if method in LIBARCHIVE_ZIP_METHODS and settings.libarchive_path:
        try:
            return _LibarchiveMember(walk, source, entry)
        except (OSError, AttributeError) as error:
            log_line(f"libarchive at {settings.libarchive_path} is unusable ({error})")
    if settings.sevenzip_binary:
        return _SevenZipMember(walk, source, entry)
    if method == DEFLATE64 and settings.have_inflate64:
        module = _optional_module(walk.sink, "inflate64")
        if module is not None:
            return open_member(source, entry, module.Inflater)  # type: ignore[arg-type, attr-defined]
    name = entry.name  # type: ignore[attr-defined]
    method_name = METHOD_NAMES.get(method, "unknown")
    raise Unreadable(
        f"{name} uses compression method {method} ({method_name}), which no reader on this host supports"
        " (configure found no 7-Zip)"
    )


_single_zips = 0  # one-member copies made by this process: unique names in the unpack dir


def _single_zip(walk: _Walk, source: object, entry: object) -> str:
    """The member copied alone into a new zip work file (see ziplisting.copy_as_single_zip); its path."""
    from .ziplisting import copy_as_single_zip

    global _single_zips
    _single_zips += 1
    path = os.path.join(walk.sink.unpack_dir, f"member{_single_zips:05d}.zip")
    fd = os.open(path, NEW_FILE_FLAGS, 0o600)
    try:
        copy_as_single_zip(source, entry, fd)  # type: ignore[arg-type]
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return path


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class _LibarchiveMember:
    """One zip member decoded by libarchive from its one-member copy (methods our reader lacks: PPMd, xz)."""

    def __init__(self, walk: _Walk, source: object, entry: object) -> None:
        from .libarchive import ArchiveError, Reader

        self._name = entry.name  # type: ignore[attr-defined]
        self._copy = _single_zip(walk, source, entry)
        self._reader = None
        try:
            self._reader = Reader(walk.sink.settings.libarchive_path, self._copy)
            self._reader.next_entry()
        except ArchiveError as error:
            self.close()
            raise Unreadable(f"{_printable(self._name)}: {error}") from None
        except BaseException:
            self.close()
            raise

    def read(self, size: int) -> bytes:
        """Up to `size` decoded bytes; Unreadable when the data does not decode."""
        from .libarchive import ArchiveError

        try:
            return self._reader.read(size)  # type: ignore[union-attr]
        except ArchiveError as error:
            raise Unreadable(f"{_printable(self._name)}: {error}") from None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        _remove(self._copy)

    def __enter__(self) -> _LibarchiveMember:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _SevenZipMember:
    """One zip member decoded by 7-Zip from its one-member copy, read from its stdout in chunks.

    No name from the mail reaches the command line (the copy is ours, its one member is "m"), no
    shell, stdin is /dev/null; 7-Zip gets the time the message has left and is killed as soon as
    the reader stops wanting bytes (past the expansion ratio or the decoded-bytes budget).
    """

    def __init__(self, walk: _Walk, source: object, entry: object) -> None:
        import subprocess

        sink = walk.sink
        self._sink = sink
        self._name = entry.name  # type: ignore[attr-defined]
        self._copy = _single_zip(walk, source, entry)
        self._errors_path = self._copy + ".err"
        self._finished = False
        self._process = None
        elapsed = time.monotonic() - sink.started
        self._deadline = time.monotonic() + max(1.0, min(sink.remaining(), sink.settings.max_unpack_seconds - elapsed))
        argv = [sink.settings.sevenzip_binary, "e", "-so", "-tzip", "-bd", "--", self._copy]
        try:
            errors_fd = os.open(self._errors_path, NEW_FILE_FLAGS, 0o600)
            try:
                self._process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors_fd, close_fds=True
                )
            finally:
                os.close(errors_fd)
        except OSError as error:
            self.close()
            raise Unreadable(f"{_printable(self._name)}: 7-Zip at {argv[0]} does not run ({error})") from None

    def read(self, size: int) -> bytes:
        """Up to `size` decoded bytes; b"" once 7-Zip finished well; Unreadable when it failed."""
        import select
        import subprocess

        process = self._process
        if self._finished or process is None or process.stdout is None:
            return b""
        fd = process.stdout.fileno()
        while not select.select([fd], [], [], max(0.0, self._deadline - time.monotonic()))[0]:
            if time.monotonic() >= self._deadline:
                self._out_of_time()
        data = os.read(fd, size)
        if data:
            return data
        self._finished = True
        try:
            code = process.wait(max(0.1, self._deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._out_of_time()
        if code != 0:
            raise Unreadable(f"{_printable(self._name)}: 7-Zip could not decode it: {self._complaint()}")
        return b""

    def _out_of_time(self) -> None:
        self.close()
        self._sink.tick()  # past the message's time: a temporary failure, as for any slow unpacking
        raise Unreadable(f"{_printable(self._name)}: 7-Zip did not finish decoding in time")

    def _complaint(self) -> str:
        """7-Zip's error lines (it prints the archive and member names: ours), on one line."""
        try:
            with open(self._errors_path, "rb") as errors:
                text = errors.read(SEVENZIP_ERROR_BYTES).decode("utf-8", "replace")
        except OSError:
            return "no message"
        lines = [line.strip() for line in text.splitlines() if line.strip().startswith(SEVENZIP_ERROR_LINES)]
        return _printable("; ".join(lines) or text.strip() or "no message")

    def close(self) -> None:
        process = self._process
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
            self._process = None
        _remove(self._copy)
        _remove(self._errors_path)

    def __enter__(self) -> _SevenZipMember:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read_libarchive(walk: _Walk, path: str, head: bytes, part: Part) -> None:
    """Every member through the system libarchive."""
    from .libarchive import ArchiveError, Reader

    sink = walk.sink
    single = walk.kind in SINGLE_FILE_KINDS
    methods = _zip_methods(path) if walk.kind == "zip" else {}
    try:
        reader = Reader(sink.settings.libarchive_path, path, raw=single)
    except (OSError, AttributeError) as error:
        log_line(f"libarchive at {sink.settings.libarchive_path} is unusable ({error})")
        _read_without_libarchive(walk, path, part)
        return
    except ArchiveError as error:
        _archive_error(walk, str(error))
        return
    with reader:
        try:
            while True:
                entry = reader.next_entry()
                if entry is None:
                    return
                if entry.is_dir or not entry.is_file:
                    continue
                if single and reader.format_name == "raw":
                    names = _single_file_names(part, head)
                    name = entry.name if entry.name and entry.name != "data" else names[0]
                    clamd_reads = walk.kind in CLAMD_READS
                else:
                    names = ()
                    name = entry.name
                    method = methods.get(name)
                    clamd_reads = walk.kind in CLAMD_READS and (method is None or method in CLAMD_ZIP_METHODS)
                if not walk.member(name, entry.size, reader.read, clamd_reads, encrypted=entry.encrypted, names=names):
                    return
        except ArchiveError as error:
            _archive_error(walk, str(error))


def _archive_error(walk: _Walk, error: str) -> None:
    """An encrypted archive is a crypto tag, as zip's encrypted members; anything else is unreadable."""
    if "encrypt" in error.lower() or "passphrase" in error.lower():
        member_part(walk.sink, "", 0, walk.container, walk.depth, True, walk.crypto_tag, walk.kind)
        return
    raise Unreadable(error)


def _zip_methods(path: str) -> dict[str, int]:
    """Member name -> compression method, from our own listing (libarchive does not say it per entry)."""
    from .ziplisting import ZipFormatError, read_listing

    try:
        with open(path, "rb") as source:
            listing = read_listing(source, 100_000)
    except (ZipFormatError, OSError):
        return {}
    return {entry.name: entry.method for entry in listing.entries}


def _single_file_names(part: Part, head: bytes) -> tuple[str, ...]:
    """A compressed file's names: as gunzip names it (the archive's name less its suffix), and gzip's stored one."""
    names = []
    for name in part.filenames or (part.display_name,):
        lower = name.lower()
        for suffix in SINGLE_FILE_SUFFIXES:
            if lower.endswith(suffix):
                base = name[: -len(suffix)]
                names.append(base + ".tar" if suffix.startswith(".t") and suffix != ".tar" else base)
                break
    stored = _gzip_stored_name(head)
    if stored:
        names.append(stored)
    return tuple(dict.fromkeys(names)) or ("data",)


def _gzip_stored_name(head: bytes) -> str:
    """The FNAME field of a gzip header (what gunzip -N and 7-Zip name the file), or ""."""
    if len(head) < 10 or not head.startswith(b"\x1f\x8b") or not head[3] & 0x08:
        return ""
    position = 10
    if head[3] & 0x04:  # FEXTRA
        if len(head) < 12:
            return ""
        position = 12 + int.from_bytes(head[10:12], "little")
    end = head.find(b"\x00", position)
    return head[position:end].decode("latin-1") if end > position else ""


def _read_without_libarchive(walk: _Walk, path: str, part: Part) -> None:
    """No libarchive on this host: the standard library's readers, the optional rar/7z listers, else unreadable."""
    kind = walk.kind
    if kind in ("tar", "gzip", "bzip2", "xz"):
        _read_stdlib(walk, path, part)
    elif kind == "rar":
        _list_rar(walk, path)
    elif kind == "7z":
        _list_7z(walk, path)
    else:
        raise Unreadable(f"no reader for {kind} archives on this host (configure found no libarchive)")


def _read_stdlib(walk: _Walk, path: str, part: Part) -> None:
    import lzma
    import tarfile

    try:
        if tarfile.is_tarfile(path):
            with tarfile.open(path, "r:*") as archive:
                for info in archive:
                    if not info.isfile():
                        continue
                    stream = archive.extractfile(info)
                    if stream is None or not walk.member(info.name, info.size, stream.read, walk.kind in CLAMD_READS):
                        return
            return
        opener = _single_file_opener(walk.kind)
        with open(path, "rb") as source:
            head = source.read(magictype.HEAD_BYTES)
        with opener(path, "rb") as stream:
            names = _single_file_names(part, head)
            walk.member(names[0], -1, stream.read, walk.kind in CLAMD_READS, names=names)
    except (tarfile.TarError, OSError, EOFError, ValueError, lzma.LZMAError) as error:
        raise Unreadable(f"{type(error).__name__}: {error}") from None


def _single_file_opener(kind: str) -> Callable:
    if kind == "gzip":
        import gzip

        return gzip.open
    if kind == "bzip2":
        import bz2

        return bz2.open
    import lzma

    return lzma.open


def _optional_module(sink: PartSink, name: str) -> object | None:
    for directory in sink.settings.extra_sys_path:
        if directory not in sys.path:
            sys.path.append(directory)
    try:
        return __import__(name)
    except ImportError:
        return None


def _list_rar(walk: _Walk, path: str) -> None:
    """Names only, through rarfile (it needs an unrar program to decode): the types stay unknown."""
    rarfile = _optional_module(walk.sink, "rarfile")
    if rarfile is None:
        raise Unreadable("no reader for rar archives on this host (configure found no libarchive)")
    try:
        with rarfile.RarFile(path) as archive:  # type: ignore[attr-defined]
            members = [info for info in archive.infolist() if not info.is_dir()]
            listing = [(info.filename, info.file_size, info.needs_password()) for info in members]
    except rarfile.PasswordRequired:  # type: ignore[attr-defined]
        member_part(walk.sink, "", 0, walk.container, walk.depth, True, "RAR", walk.kind)
        return
    except LIBRARY_PASSES:
        raise
    except Exception as error:  # rarfile.Error, or what a damaged header makes its parser raise
        raise Unreadable(f"rarfile: {type(error).__name__}: {error}") from None
    walk.sink.tick()  # a deadline the library swallowed still ends the message
    _list_members(walk, listing)


def _list_7z(walk: _Walk, path: str) -> None:
    """Names only, through py7zr: the types stay unknown."""
    py7zr = _optional_module(walk.sink, "py7zr")
    if py7zr is None:
        raise Unreadable("no reader for 7z archives on this host (configure found no libarchive)")
    try:
        with py7zr.SevenZipFile(path, mode="r") as archive:  # type: ignore[attr-defined]
            encrypted = archive.needs_password()
            members = [info for info in archive.list() if not info.is_directory]
            listing = [(info.filename, info.uncompressed or 0, encrypted) for info in members]
    except py7zr.PasswordRequired:  # type: ignore[attr-defined]
        member_part(walk.sink, "", 0, walk.container, walk.depth, True, "7Z", walk.kind)
        return
    except LIBRARY_PASSES:
        raise
    except Exception as error:  # py7zr's ArchiveError, or lzma.LZMAError, EOFError... from a damaged header
        raise Unreadable(f"py7zr: {type(error).__name__}: {error}") from None
    walk.sink.tick()  # a deadline the library swallowed still ends the message
    _list_members(walk, listing)


def _list_members(walk: _Walk, members: list[tuple[str, int, bool]]) -> None:
    settings = walk.sink.settings
    if walk.too_many(len(members)):
        return
    if sum(size for _, size, _ in members) > settings.max_zip_size:
        _bomb(walk.sink, f"{walk.container} expands beyond {settings.max_zip_size} bytes", walk.container)
    log_line(f"{walk.container}: {walk.kind} members listed by name only (no libarchive)")
    for name, size, encrypted in members:
        if not walk.member(name, size, None, True, encrypted=encrypted):
            return
