"""The frozen run-time settings: one object, made once per message from the generated literal."""

from __future__ import annotations

from .recordtype import field, fields, record


@record(frozen=True)
class ScannerConfig:
    """One configured scanner: its name, where it listens, and what a failure means."""

    name: str  # clamd, clamdscan, clamscan, spamd, rspamd, or a command-line AV name
    kind: str  # "virus" or "spam"
    addresses: tuple[str, ...] = ()  # unix socket paths or host:port, tried in order
    binary: str = ""  # for command-line scanners
    connect_timeout: float = 5.0
    scan_timeout: float = 120.0
    fail: str = "tempfail"  # tempfail | pass
    version: str = ""  # as probed at configure/-z time
    extra_args: tuple[str, ...] = ()  # command-line scanners: extra argv words, e.g. --database=DIR


@record(frozen=True)
class Settings:
    """Everything the generated program knows about this site, frozen at configure time."""

    version: str = "0.0.0"
    configure_command: str = ""
    # Paths and identities.
    qmaildir: str = "/var/qmail"
    spooldir: str = "/var/spool/qscan"
    qmail_queue_binary: str = "/var/qmail/bin/qmail-queue"
    qmail_inject_binary: str = "/var/qmail/bin/qmail-inject"
    engine_dir: str = ""  # where the installed, byte-compiled engine lives
    qs_user: str = "qscand"
    qs_group: str = "qscand"
    hostname: str = "localhost"
    # Contract.
    custom_error_fd: int = 6  # 0 = off
    deadline_seconds: float = 1200.0
    spool_chunk_bytes: int = 65536
    # The resident engine (--serve).
    engine_workers: int = 0  # 0: four per core
    engine_max_messages: int = 500  # a worker is replaced after this many messages; 0 never
    trace_header_style: str = "x-diagnostics"  # x-diagnostics (2.x) | received (1.x)
    # Alerts and identity of the admin.
    admin: str = "root"
    domain: str = "localhost"
    admin_description: str = "System Anti-Virus Administrator"
    local_domains: tuple[str, ...] = ()
    notify: tuple[str, ...] = ("admin",)  # a new install tells only the admin (no backscatter to forged senders)
    silent_viruses: tuple[str, ...] = ()
    lang: str = "en_GB"
    # Scanning.
    scanners: tuple[ScannerConfig, ...] = ()
    skip_text_msgs: bool = True
    redundant: bool = False
    unzip: bool = False
    block_password_protected: bool = False
    max_zip_size: int = 1_000_000_000
    max_scan_size: int = 100_000_000
    fix_mime: int = 1  # 0 off; 1 read every interpretation of an ambiguity; 2 quarantine every ambiguity
    ignore_eol_check: bool = False
    normalize: bool = True
    mime_unpacker: str = "internal"  # internal | reformime
    reformime_binary: str = ""
    tnef_binary: str = ""
    have_python_magic: bool = False
    have_tnefparse: bool = False
    extra_sys_path: tuple[str, ...] = ()  # site dirs holding python-magic / tnefparse
    libarchive_path: str = ""  # the system libarchive.so found by configure: 7z, rar, tar, iso, cab, zip methods
    sevenzip_binary: str = ""  # 7-Zip (7zz, 7z, 7za) found by configure: zip methods like Deflate64, implode
    have_inflate64: bool = False  # the inflate64 module: Deflate64 zip members when there is no 7-Zip
    max_archive_depth: int = 10  # archives inside archives; deeper is quarantined (archive-depth)
    max_depth: int = 20
    max_parts: int = 5000
    max_readings: int = 32  # passes over an ambiguous message (--fix-mime 1)
    max_decoded_bytes: int = 500_000_000
    max_expansion_ratio: int = 200
    max_unpack_seconds: float = 300.0  # unpacking longer than this is a temporary failure
    dlp_monitor: str = ""
    virus_to_delete: bool = False
    virus_reject: bool = False
    av_scan_parts: bool = False  # clamd: also stream each decoded part, not only the whole message
    # Spam.
    sa_quarantine: float | None = None
    sa_delete: float | None = None
    sa_reject: bool = False
    sa_subject: str = ""
    sa_delta: float = 0.0
    sa_maxsize: int = 512_000
    sa_timeout: float = 60.0
    sa_verbose: bool = False
    # Logging and headers.
    debug: int = 0  # 0 off; 1..3 more detail; >= 100 keeps work files
    log_details: str = "syslog"  # syslog | mailstats | no
    log_crypto: bool = False
    console_records: bool = True  # one JSON line per message in <spooldir>/records/current.jsonl, for qs-console
    syslog_socket: str = "/dev/log"  # where syslog lines go (BSD: /var/run/log)
    archive: str = ""  # "" off, "yes" all, else a regex on sender/recipients
    add_dscr_hdrs: str = "no"  # no | yes | all
    dscr_hdrs_text: str = "X-Qmail-Scanner"
    settings_per_domain: bool = False
    settings_per_domain_file: str = ""  # default: <spooldir>/settings_per_domain.txt
    failed_action: str = "tempfail"  # tempfail | store: keep unprocessable mail in failed/ and accept it
    spam_maildir: str = ""  # spam quarantine maildir; "" = <spooldir>/quarantine/spam
    etcdir: str = ""  # policy and per-domain settings files (st patch's --etcdir); "" = spooldir
    logdir: str = ""  # quarantine.log, mailstats.csv, qmail-queue.log (st patch's --logdir); "" = spooldir
    spam_redirect: str = ""  # delivered spam goes to this address instead (FreeBSD port's --spams-redirect)
    spam_recipient_suffix: str = ""  # delivered spam goes to user-SUFFIX@domain (--spams-tosuffix)
    alert_texts: dict = field(default_factory=dict)  # field -> text in --lang, rendered at configure time

    @classmethod
    def from_mapping(cls, frozen: dict) -> Settings:
        """Build settings from the literal frozen into the generated program."""
        known = {f.name for f in fields(cls)}
        unknown = set(frozen) - known
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        values = dict(frozen)
        values["scanners"] = tuple(
            ScannerConfig(**{**s, **{k: tuple(s[k]) for k in ("addresses", "extra_args") if k in s}})
            for s in frozen.get("scanners", ())
        )
        for name in ("local_domains", "notify", "silent_viruses", "extra_sys_path"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    @property
    def effective_etcdir(self) -> str:
        """Where the policy and per-domain settings files are: --etcdir, else the spooldir."""
        return self.etcdir or self.spooldir

    @property
    def effective_logdir(self) -> str:
        """Where quarantine.log, mailstats.csv and qmail-queue.log are: --logdir, else the spooldir."""
        return self.logdir or self.spooldir

    @property
    def admin_address(self) -> str:
        """The address alerts come from and go to: admin@domain."""
        return f"{self.admin}@{self.domain}"
