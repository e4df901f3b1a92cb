"""The real type of a part by its content: libmagic when configured, else a small signature table."""

from __future__ import annotations

import sys

from ..settings import Settings
from ..stderr_log import say

# The types the checks care about most, by their leading bytes (offset 0 unless given).
# Order matters: the first match wins.
SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"MZ", "application/x-dosexec"),
    (0, b"\x7fELF", "application/x-executable"),
    (0, b"PK\x03\x04", "application/zip"),
    (0, b"PK\x05\x06", "application/zip"),  # an empty zip
    (0, b"PK\x07\x08", "application/zip"),  # a spanned zip
    (0, b"Rar!\x1a\x07", "application/x-rar"),
    (0, b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"\x78\x9f\x3e\x22", "application/vnd.ms-tnef"),
    (0, b"MSCF\x00\x00\x00\x00", "application/vnd.ms-cab-compressed"),
    (0, b"\x1f\x8b", "application/gzip"),
    (0, b"BZh", "application/x-bzip2"),
    (0, b"\xfd7zXZ\x00", "application/x-xz"),
    (0, b"\x28\xb5\x2f\xfd", "application/zstd"),
    (0, b"LZIP", "application/x-lzip"),
    (0, b"070701", "application/x-cpio"),  # only a full header makes it an archive: see archive_kind
    (0, b"070702", "application/x-cpio"),
    (0, b"070707", "application/x-cpio"),
    (0, b"\xca\xfe\xba\xbe", "application/x-java-applet"),
    (0, b"\xcf\xfa\xed\xfe", "application/x-mach-binary"),
    (0, b"\xce\xfa\xed\xfe", "application/x-mach-binary"),
    (0, b"\xfe\xed\xfa\xcf", "application/x-mach-binary"),
    (0, b"\xfe\xed\xfa\xce", "application/x-mach-binary"),
    (0, b"{\\rtf", "text/rtf"),
    (0, b"#!", "text/x-shellscript"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"BEGIN:VCALENDAR", "text/calendar"),
    (0, b"-----BEGIN PGP", "application/pgp"),
    (257, b"ustar", "application/x-tar"),
)

# libmagic names one thing several ways across versions; rules and checks see one name.
ALIASES = {
    "application/vnd.microsoft.portable-executable": "application/x-dosexec",
    "application/x-msdownload": "application/x-dosexec",
    "application/x-ms-dos-executable": "application/x-dosexec",
    "application/x-pie-executable": "application/x-executable",
    "application/x-sharedlib": "application/x-executable",
    "application/x-zip-compressed": "application/zip",
    "application/x-rar-compressed": "application/x-rar",
    "application/vnd.rar": "application/x-rar",
    "application/x-gzip": "application/gzip",
    "application/cdfv2": "application/x-ole-storage",
    "application/x-zstd": "application/zstd",
    "application/x-compressed-tar": "application/gzip",
    "application/x-ustar": "application/x-tar",
    "application/x-cab": "application/vnd.ms-cab-compressed",
    "application/x-iso9660": "application/x-iso9660-image",
}

EXECUTABLE_TYPES = frozenset({"application/x-dosexec", "application/x-executable", "application/x-mach-binary"})
# What the archive reader opens, by real type; content.may_be_archive sends these parts to archives.py.
ARCHIVE_KINDS = {
    "application/zip": "zip",
    "application/x-rar": "rar",
    "application/x-7z-compressed": "7z",
    "application/x-tar": "tar",
    "application/gzip": "gzip",
    "application/x-bzip2": "bzip2",
    "application/x-xz": "xz",
    "application/zstd": "zstd",
    "application/x-lzip": "lzip",
    "application/x-cpio": "cpio",
    "application/vnd.ms-cab-compressed": "cab",
    "application/x-iso9660-image": "iso9660",
}
ARCHIVE_TYPES = frozenset({*ARCHIVE_KINDS, "application/vnd.ms-tnef"})
HEAD_BYTES = 4096  # how much of a part the type is judged on
ZIP_END = b"PK\x05\x06"
ZIP_END_SEARCH = 0xFFFF + 22  # the end record plus the longest comment it can announce
ISO_MARK_AT = 0x8001  # "CD001" of the first ISO 9660 volume descriptor, past the 32 KB system area
ISO_MARKS = (b"CD001", b"BEA01")

_libmagic: object | None = None
_libmagic_errors: list[type[BaseException]] = []  # python-magic's own error class, once it is loaded


def canonical(mime_type: str) -> str:
    """One name per type, whatever libmagic version produced it."""
    mime_type = mime_type.strip().lower()
    return ALIASES.get(mime_type, mime_type)


def by_signature(head: bytes) -> str:
    """The type from the built-in table, or "" when no signature matches."""
    for offset, signature, mime_type in SIGNATURES:
        if head.startswith(signature, offset):
            return mime_type
    return ""


def guess_plain(head: bytes) -> str:
    """Text or binary, for content no signature knows."""
    if not head:
        return "application/x-empty"
    if b"\x00" in head:
        return "application/octet-stream"
    return "text/plain"


def detect(head: bytes, settings: Settings, want_detail: bool = True) -> str:
    """The canonical real type of content starting with `head`.

    The signature table answers first (it is exact for what the checks need). libmagic is
    asked only about binary content the table does not know, and only when want_detail:
    loading its database costs a process about 20 ms, and for text it would only refine
    text/plain, which name rules (.bat, .vbs, .js ...) already cover.
    """
    known = by_signature(head)
    if known:
        return known
    if want_detail and settings.have_python_magic and b"\x00" in head:
        found = canonical(_ask_libmagic(head, settings))
        if found in EXECUTABLE_TYPES:
            # Every program format the checks block starts with a signature in the table. What
            # libmagic calls a program without one is its guess at a header-less DOS .COM file,
            # which it makes for about 1 % of random bytes (encrypted or compressed data).
            return "application/octet-stream"
        if found:
            return found
    return guess_plain(head)


def _ask_libmagic(head: bytes, settings: Settings) -> str:
    global _libmagic
    if _libmagic is None:
        for directory in settings.extra_sys_path:
            if directory not in sys.path:
                sys.path.append(directory)
        # Only python-magic's own failures are caught: the deadline (a TemporaryFailure raised by
        # the alarm wherever the program is, inside libmagic's wrapper too) must end the message.
        try:
            import magic  # python-magic, found by configure
        except ImportError as error:  # no libmagic on this host
            _libmagic_unusable(error)
        else:
            try:
                _libmagic = magic.Magic(mime=True)
                _libmagic_errors.append(magic.MagicException)
            except (magic.MagicException, OSError) as error:  # its database cannot be read
                _libmagic_unusable(error)
    if not _libmagic:
        return ""
    try:
        return str(_libmagic.from_buffer(head))
    except tuple(_libmagic_errors) as error:
        say(f"libmagic cannot type a part ({type(error).__name__}: {error}); using the built-in table")
        return ""


def _libmagic_unusable(error: BaseException) -> None:
    global _libmagic
    say(f"python-magic unusable ({type(error).__name__}: {error}); using the built-in table")
    _libmagic = False


def archive_kind(head: bytes, path: str | None, size: int) -> str:
    """The archive format of content (\"zip\", \"7z\", \"tar\", \"iso9660\"...), or "" for none.

    The leading signature first; then, as unzip and 7-Zip find them, a zip whose end record
    closes the file after bytes put in front of it (self-extractors, junk), and an ISO 9660
    image by its volume descriptor at 32 KB. Costs one read of the file's tail at most.
    """
    kind = ARCHIVE_KINDS.get(by_signature(head), "")
    if kind == "cpio" and not _full_cpio_header(head):
        kind = ""
    if kind:
        return kind
    if size <= len(head):
        return "zip" if ZIP_END in head[-ZIP_END_SEARCH:] else ""
    if not path:
        return ""
    import os

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        tail_at = max(0, size - ZIP_END_SEARCH)
        if ZIP_END in os.pread(fd, size - tail_at, tail_at):
            return "zip"
        if size > ISO_MARK_AT + 5 and os.pread(fd, 5, ISO_MARK_AT) in ISO_MARKS:
            return "iso9660"
    except OSError:
        return ""
    finally:
        os.close(fd)
    return ""


def _full_cpio_header(head: bytes) -> bool:
    """An ASCII cpio header: its 110 (newc) or 76 (odc) bytes are all hex or octal digits."""
    length = 76 if head.startswith(b"070707") else 110
    return len(head) >= length and all(c in b"0123456789abcdefABCDEF" for c in head[6:length])
