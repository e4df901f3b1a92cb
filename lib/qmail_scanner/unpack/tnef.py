"""TNEF (winmail.dat) attachments: tnefparse in-process when configure found it, else the `tnef` program."""

from __future__ import annotations

import os
import sys

from . import magictype
from .archives import LIBRARY_PASSES, inspect_archive, log_line, member_part
from .content import may_be_archive
from .decoding import NEW_FILE_FLAGS

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from ..records import Part
    from .sink import PartSink

TNEF_IN_MEMORY_LIMIT = 32 << 20  # tnefparse reads the whole file; bigger ones go to the tnef program


def _add_member(
    sink: PartSink, name: str, data_path: str | None, data: bytes | None, container: str, depth: int
) -> None:
    """One TNEF member: a work file of our own naming, its type, and a look inside."""
    member = member_part(sink, name, 0, container, depth, False, archive="tnef")
    if member is None:
        return
    path = sink.work_file(member)
    if data is not None:
        data = data[: sink.take_budget(len(data))]
        fd = os.open(path, NEW_FILE_FLAGS, 0o600)
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
    if may_be_archive(member):
        inspect_archive(sink, member, f"{container}/{name}", depth + 1)


def inspect_tnef(sink: PartSink, part: Part, container: str, depth: int) -> None:
    """The attachments of a winmail.dat: tnefparse in-process when configure found it, else the tnef program."""
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
        except LIBRARY_PASSES:
            raise
        except Exception as error:  # ValueError, struct.error... whatever a damaged winmail.dat makes it raise
            log_line(f"tnefparse failed on {container} ({type(error).__name__}: {error}); trying tnef")
        else:
            sink.tick()  # a deadline the library swallowed still ends the message
            for name, data in attachments[: settings.max_parts]:
                _add_member(sink, name.strip("\x00"), None, data if isinstance(data, bytes) else b"", container, depth)
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
            log_line(f"tnef failed on {container}: {error}")
            return
        if done.returncode == 0:
            break
    else:
        log_line(f"tnef could not read {container}: {done.stderr[:200]!r}")
    with os.scandir(out_dir) as entries:
        found = sorted((entry.name, entry.path) for entry in entries if entry.is_file(follow_symlinks=False))
    for name, path in found[: settings.max_parts]:
        _add_member(sink, name, path, None, container, depth)
