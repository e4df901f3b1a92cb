"""Command-line virus scanners, each described by data: argv template, exit codes, name pattern.

No shell: the argv template is a list of words; `{targets}` expands to the paths to scan (the
spooled message and the work dir of decoded parts, never a name taken from mail). clamscan and
clamdscan are tested here against real ClamAV; the other definitions carry the original
Qmail-Scanner's knowledge of those products and are marked `tested=False`.
"""

from __future__ import annotations

import os
import re

from ..records import Finding, ScanResult
from ..recordtype import record
from .common import ScannerFailure, one_line, scan_deadline

TYPE_CHECKING = False  # importing typing costs every message milliseconds
if TYPE_CHECKING:
    from ..message import Message
    from ..settings import ScannerConfig

MAX_OUTPUT_BYTES = 1_000_000


@record(frozen=True)
class CommandLineAV:
    """How to run one command-line scanner and read its answer."""

    name: str
    binary: str  # default program name, looked up in PATH by configure
    argv: tuple[str, ...]  # words after the binary; "{targets}" becomes the paths to scan
    clean_codes: frozenset[int]
    found_codes: frozenset[int]
    virus_pattern: str  # regex with a group "name", applied to each output line
    version_argv: tuple[str, ...] = ("--version",)
    version_pattern: str = r"(?P<version>\d+(?:\.\d+)+)"
    tested: bool = False  # run against the real product in this project's tests

    def command(self, binary: str, targets: list[str], extra_args: tuple[str, ...] = ()) -> list[str]:
        """The full argv for one scan."""
        words = [binary or self.binary, *extra_args]
        for word in self.argv:
            if word == "{targets}":
                words.extend(targets)
            else:
                words.append(word)
        return words

    def virus_names(self, output: str) -> list[str]:
        """Every virus name the scanner printed, in order, without repeats."""
        pattern = re.compile(self.virus_pattern)
        names: list[str] = []
        for line in output.splitlines():
            match = pattern.search(line)
            if match and match.group("name") not in names:
                names.append(match.group("name"))
        return names


def _codes(*codes: int) -> frozenset[int]:
    return frozenset(codes)


# Exit codes and output formats as the vendors documented them; "untested here" unless tested=True.
DEFINITIONS: dict[str, CommandLineAV] = {
    definition.name: definition
    for definition in (
        CommandLineAV(
            "clamscan", "clamscan", ("--no-summary", "--stdout", "--recursive", "{targets}"),
            _codes(0), _codes(1), r": (?P<name>\S+) FOUND$", tested=True,
        ),
        CommandLineAV(
            "clamdscan", "clamdscan", ("--no-summary", "--stdout", "--stream", "{targets}"),
            _codes(0), _codes(1), r": (?P<name>\S+) FOUND$", tested=True,
        ),
        # Sophos: 0 clean, 1 interrupted, 2 error, 3 virus; `>>> Virus 'EICAR-AV-Test' found in file ...`
        CommandLineAV(
            "sweep", "sweep", ("-f", "-all", "-rec", "-ss", "-sc", "-archive", "-mime", "-tnef", "{targets}"),
            _codes(0), _codes(3), r">>> Virus '(?P<name>[^']+)' found", version_argv=("-v",),
        ),
        CommandLineAV(
            "savscan", "savscan", ("-f", "-all", "-rec", "-ss", "-sc", "-archive", "-mime", "-tnef", "{targets}"),
            _codes(0), _codes(3), r">>> Virus '(?P<name>[^']+)' found", version_argv=("-v",),
        ),
        # McAfee: 0 clean, 13 virus; `... Found the EICAR test file NOT a virus.` / `Found: NAME`
        CommandLineAV(
            "uvscan", "uvscan", ("--recursive", "--unzip", "--secure", "--noboot", "--mime", "{targets}"),
            _codes(0), _codes(13), r"Found(?: the|:)? (?P<name>\S+)", version_argv=("--version",),
        ),
        # F-Secure: 0 clean, 3 virus, 6 riskware (treated as found), 1/7/9 error; `Infected: NAME [engine]`
        CommandLineAV(
            "fsav", "fsav", ("--archive", "--dumb", "--mime", "{targets}"),
            _codes(0), _codes(3, 6), r"Infected: (?P<name>\S+)", version_argv=("--version",),
        ),
        # F-Prot 3/4 (f-prot): 0 clean, 3 virus; `Infection: NAME`
        CommandLineAV(
            "fprot", "f-prot", ("-archive", "-dumb", "-packed", "-ai", "{targets}"),
            _codes(0), _codes(3), r"Infection: (?P<name>\S+)", version_argv=("-verno",),
        ),
        CommandLineAV(
            "f-prot", "f-prot", ("-archive", "-dumb", "-packed", "-ai", "{targets}"),
            _codes(0), _codes(3), r"Infection: (?P<name>\S+)", version_argv=("-verno",),
        ),
        # F-Prot 6 (fpscan): bit 1 = virus found; `[Found virus] <NAME> path`
        CommandLineAV(
            "fpscan", "fpscan", ("--report", "--adware", "--applications", "{targets}"),
            _codes(0), _codes(1, 3), r"\[Found [^\]]+\]\s+<(?P<name>[^>]+)>", version_argv=("--version",),
        ),
        # H+BEDV AntiVir: 0 clean, 1 virus; `ALERT: [NAME virus] path`
        CommandLineAV(
            "antivir", "antivir", ("-allfiles", "-s", "-z", "-rs", "{targets}"),
            _codes(0), _codes(1), r"ALERT: \[(?P<name>[^\]\s]+)", version_argv=("--version",),
        ),
        # Kaspersky: 0 clean, 20/21/25 virus found, others error; `path infected: NAME`
        CommandLineAV(
            "kavscanner", "kavscanner", ("-i0", "-xp", "-a-", "-e", "-r", "{targets}"),
            _codes(0), _codes(20, 21, 25), r"infected: (?P<name>\S+)", version_argv=("-v",),
        ),
        # Central Command Vexira: 0 clean, 1/3 virus; `ALERT: [NAME virus] path`
        CommandLineAV(
            "vexira", "vexira", ("--allfiles", "-s", "-z", "-rs", "{targets}"),
            _codes(0), _codes(1, 3), r"ALERT: \[(?P<name>[^\]\s]+)", version_argv=("--version",),
        ),
        # Trend Micro (trophie standalone): 0 clean, 1 virus; `Found virus NAME in file`
        CommandLineAV(
            "vscan", "vscan", ("-za", "-a", "{targets}"),
            _codes(0), _codes(1), r"Found virus (?P<name>\S+)", version_argv=("-v",),
        ),
        # CA eTrust / InoculateIT: 0 clean, 1 virus; `File ... is infected with virus NAME`
        CommandLineAV(
            "inocucmd", "inocucmd", ("-sec", "-nex", "{targets}"),
            _codes(0), _codes(1), r"infected with virus (?P<name>\S+)", version_argv=("-ver",),
        ),
        # AVG: 0 clean, 4 virus, 5 heuristic; `path  Virus identified  NAME`
        CommandLineAV(
            "avgscan", "avgscan", ("-ext", "-arc", "{targets}"),
            _codes(0), _codes(4, 5), r"Virus (?:identified|found)\s+(?P<name>\S+)", version_argv=("-v",),
        ),
        # BitDefender (bdc): 0 clean, 1 virus; `path  infected: NAME`
        CommandLineAV(
            "bitdefender", "bdc", ("--arc", "--mail", "--all", "{targets}"),
            _codes(0), _codes(1), r"infected: (?P<name>\S+)", version_argv=("--info",),
        ),
        # ESET NOD32: 0 clean, 1 virus; `... virus="NAME"`
        CommandLineAV(
            "nod32", "nod32cli", ("--subdir", "--arch", "--mail", "{targets}"),
            _codes(0), _codes(1), r'virus="(?P<name>[^"]+)"', version_argv=("--version",),
        ),
        # Command AntiVirus (csav): 0 clean, 50-52 virus; `... Infection: NAME`
        CommandLineAV(
            "csav", "csav", ("-packed", "-archive", "-dumb", "{targets}"),
            _codes(0), _codes(50, 51, 52), r"Infection: (?P<name>\S+)", version_argv=("-ver",),
        ),
    )
}


def definition_for(config: ScannerConfig) -> CommandLineAV:
    """The definition named by the scanner config, or ScannerFailure."""
    definition = DEFINITIONS.get(config.name)
    if definition is None:
        raise ScannerFailure(f"no command-line definition for scanner {config.name!r}")
    return definition


def scan_targets(message: Message) -> list[str]:
    """The spooled message, plus the work dir of decoded parts when it holds any file."""
    targets = [message.area.message_path]
    try:
        if any(os.scandir(message.area.unpack_dir)):
            targets.append(message.area.unpack_dir)
    except OSError:
        pass
    return targets


def scan(config: ScannerConfig, message: Message) -> ScanResult:
    """Run the scanner on the message; map exit code and output to a result."""
    import subprocess

    definition = definition_for(config)
    deadline = scan_deadline(config, message)
    argv = definition.command(config.binary, scan_targets(message), config.extra_args)
    environment = {key: value for key, value in os.environ.items() if key != "QMAILQUEUE"}
    try:
        completed = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=deadline.left(),
            close_fds=True,
            env=environment,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ScannerFailure(f"{definition.name} timed out") from None
    except OSError as error:
        raise ScannerFailure(f"cannot run {argv[0]}: {error.strerror or error}") from None
    output = completed.stdout[:MAX_OUTPUT_BYTES].decode("utf-8", "replace")
    return result_from_exit(definition, config.name, completed.returncode, output)


def result_from_exit(definition: CommandLineAV, scanner: str, code: int, output: str) -> ScanResult:
    """Clean / found / failure by exit code; a found code with no readable name still blocks."""
    if code in definition.clean_codes:
        return ScanResult(scanner)
    if code in definition.found_codes:
        names = definition.virus_names(output) or [f"{definition.name}-unnamed-virus"]
        findings = tuple(Finding("virus", name, f"Virus found: {name}") for name in names)
        return ScanResult(scanner, findings=findings)
    last_line = one_line(output.strip().splitlines()[-1] if output.strip() else "")
    raise ScannerFailure(f"{definition.name} exited with {code}: {last_line}")


def version(config: ScannerConfig, timeout: float = 20.0) -> str:
    """The scanner's version, from its version command."""
    import subprocess

    definition = definition_for(config)
    try:
        completed = subprocess.run(
            [config.binary or definition.binary, *definition.version_argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            close_fds=True,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ScannerFailure(f"cannot get the version of {definition.name}: {error}") from None
    text = completed.stdout.decode("utf-8", "replace")
    match = re.search(definition.version_pattern, text)
    if not match:
        raise ScannerFailure(f"no version in {definition.name}'s output: {one_line(text)}")
    version_text = match.group("version")
    # ClamAV prints `ClamAV 1.4.3/27000/date`: keep the database number like the original trace.
    database = re.search(re.escape(version_text) + r"/(\d+)", text)
    return f"{version_text}/{database.group(1)}" if database else version_text
