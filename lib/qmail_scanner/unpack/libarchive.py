"""A small ctypes binding of the system libarchive (libarchive.so.13): read any archive it knows, member by member.

ctypes is in the standard library, so the run-time program stays stdlib-only; configure finds
the library's path and freezes it into the settings. Only reading is bound: open a file, walk
its entries (name, size, type, encryption), stream each entry's data in chunks.
"""

from __future__ import annotations

import ctypes

from ..recordtype import record

ARCHIVE_OK = 0
ARCHIVE_EOF = 1
ARCHIVE_RETRY = -10
ARCHIVE_WARN = -20
ARCHIVE_FAILED = -25
ARCHIVE_FATAL = -30

AE_IFMT = 0o170000
AE_IFREG = 0o100000
AE_IFDIR = 0o040000

OPEN_BLOCK = 1 << 16

_library: ctypes.CDLL | None = None
_library_path = ""


class ArchiveError(Exception):
    """libarchive could not open or read the archive (its own error text, as one line)."""


@record(frozen=True)
class Entry:
    """One archive entry as libarchive describes it."""

    name: str
    size: int  # -1 when the archive does not say before the data is read
    is_file: bool
    is_dir: bool
    encrypted: bool


def _bind(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    pointer = ctypes.c_void_p
    signatures = {
        "archive_read_new": ([], pointer),
        "archive_read_support_filter_all": ([pointer], ctypes.c_int),
        "archive_read_support_format_all": ([pointer], ctypes.c_int),
        "archive_read_support_format_raw": ([pointer], ctypes.c_int),
        "archive_read_open_filename": ([pointer, ctypes.c_char_p, ctypes.c_size_t], ctypes.c_int),
        "archive_read_next_header": ([pointer, ctypes.POINTER(pointer)], ctypes.c_int),
        "archive_read_data": ([pointer, ctypes.c_void_p, ctypes.c_size_t], ctypes.c_ssize_t),
        "archive_read_data_skip": ([pointer], ctypes.c_int),
        "archive_read_free": ([pointer], ctypes.c_int),
        "archive_error_string": ([pointer], ctypes.c_char_p),
        "archive_format_name": ([pointer], ctypes.c_char_p),
        "archive_entry_pathname": ([pointer], ctypes.c_char_p),
        "archive_entry_pathname_utf8": ([pointer], ctypes.c_char_p),
        "archive_entry_size": ([pointer], ctypes.c_int64),
        "archive_entry_size_is_set": ([pointer], ctypes.c_int),
        "archive_entry_filetype": ([pointer], ctypes.c_uint),
        "archive_entry_is_encrypted": ([pointer], ctypes.c_int),
    }
    for name, (arguments, result) in signatures.items():
        function = getattr(lib, name)
        function.argtypes = arguments
        function.restype = result
    return lib


def load(path: str) -> ctypes.CDLL:
    """The bound library at `path` (loaded once per process); OSError/AttributeError when unusable."""
    global _library, _library_path
    if _library is None or _library_path != path:
        _library = _bind(path)
        _library_path = path
    return _library


class Reader:
    """One archive opened for reading: iterate entries, read the current entry's data."""

    def __init__(self, library_path: str, archive_path: str, raw: bool = False) -> None:
        self._lib = load(library_path)
        self._handle = self._lib.archive_read_new()
        if not self._handle:
            raise ArchiveError("archive_read_new failed")
        self._entry = ctypes.c_void_p()
        self._buffer_size = 0
        self._buffer: ctypes.Array | None = None
        self.raw = raw
        self._lib.archive_read_support_filter_all(self._handle)
        # "raw" reads a single compressed file (x.gz) as one entry; libarchive lets a real format win the bid.
        self._lib.archive_read_support_format_all(self._handle)
        if raw:
            self._lib.archive_read_support_format_raw(self._handle)
        if self._lib.archive_read_open_filename(self._handle, archive_path.encode(), OPEN_BLOCK) != ARCHIVE_OK:
            error = self.error()
            self.close()
            raise ArchiveError(error)

    def error(self) -> str:
        """libarchive's last error, as one printable line."""
        text = self._lib.archive_error_string(self._handle) if self._handle else None
        return (text or b"unknown error").decode("utf-8", "replace").encode("unicode_escape").decode("ascii")[:300]

    @property
    def format_name(self) -> str:
        """What libarchive took the archive for ("ZIP 2.0 (deflation)", "RAR5", "raw"...)."""
        name = self._lib.archive_format_name(self._handle)
        return (name or b"").decode("ascii", "replace")

    def next_entry(self) -> Entry | None:
        """The next entry's header, None at the end; ArchiveError when the archive cannot be read further."""
        status = self._lib.archive_read_next_header(self._handle, ctypes.byref(self._entry))
        if status == ARCHIVE_EOF:
            return None
        if status < ARCHIVE_WARN:
            raise ArchiveError(self.error())
        entry = self._entry
        raw_name = self._lib.archive_entry_pathname_utf8(entry)
        if raw_name is not None:
            name = raw_name.decode("utf-8", "replace")
        else:
            name = (self._lib.archive_entry_pathname(entry) or b"").decode("utf-8", "replace")
        kind = self._lib.archive_entry_filetype(entry) & AE_IFMT
        size = int(self._lib.archive_entry_size(entry)) if self._lib.archive_entry_size_is_set(entry) else -1
        return Entry(name, size, kind == AE_IFREG, kind == AE_IFDIR, bool(self._lib.archive_entry_is_encrypted(entry)))

    def read(self, size: int) -> bytes:
        """Up to `size` bytes of the current entry's data; b"" at its end; ArchiveError when it cannot be decoded."""
        if self._buffer is None or self._buffer_size < size:
            self._buffer = ctypes.create_string_buffer(size)
            self._buffer_size = size
        while True:
            got = self._lib.archive_read_data(self._handle, self._buffer, size)
            if got >= 0:
                return self._buffer.raw[:got]
            if got != ARCHIVE_RETRY:
                raise ArchiveError(self.error())  # a warning too: a bad CRC, a truncated member

    def close(self) -> None:
        """Free the libarchive handle (safe to call twice)."""
        if self._handle:
            self._lib.archive_read_free(self._handle)
            self._handle = None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
