"""The console's own configuration: its data directory, console.json in it, and the secret key file."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

DEFAULT_DATA_DIR = "/var/lib/qs-console"
DEFAULT_SPOOLDIR = "/var/spool/qscan"
# The environment variable cli.py sets before Django reads settings.py (Django's settings are a module).
DATA_DIR_VARIABLE = "QS_CONSOLE_DIR"
CONFIG_NAME = "console.json"
SECRET_KEY_NAME = "secret_key"
SQLITE_NAME = "console.sqlite3"
KNOWN_KEYS = frozenset({"db", "spooldir", "allowed_hosts", "secure_cookies", "host", "release_tool", "base_url",
                        "qmail_inject", "digest_sender", "release_link_days", "spamc",
                        "remote_answer_seconds"})
DEFAULT_QMAIL_INJECT = "/var/qmail/bin/qmail-inject"


class ConfigError(Exception):
    """The console's configuration is missing or wrong: the text says what to run or fix."""


@dataclass(frozen=True)
class ConsoleConfig:
    """What console.json says, with the defaults filled in."""

    data_dir: Path
    db: str = ""
    spooldir: str = DEFAULT_SPOOLDIR
    allowed_hosts: list[str] = field(default_factory=lambda: ["localhost", "127.0.0.1", "[::1]"])
    secure_cookies: bool = False
    # The host whose quarantine this console reaches (records name it); "" is this machine's name.
    host: str = ""
    # The installed qs-quarantine that releases from that quarantine through the host's qmail-queue; "" is none.
    release_tool: str = ""
    # The digest (digest.py): the console's address as recipients reach it (https://console.example.org), the
    # qmail-inject that sends it, its envelope sender ("" is postmaster@ this host), how long its release links work.
    base_url: str = ""
    qmail_inject: str = DEFAULT_QMAIL_INJECT
    digest_sender: str = ""
    release_link_days: float = 7
    # How the console reaches spamd to learn a quarantined message as spam or ham (`spamc -L`; spamd needs
    # --allow-tell): the command and its options, e.g. ["spamc", "-U", "/run/spamd.sock"].
    spamc: list[str] = field(default_factory=lambda: ["spamc"])
    # How long an action on another host's copy waits for that host's loader to take it (remote_actions.py).
    remote_answer_seconds: float = 60


def data_dir() -> Path:
    """The data directory named by the environment (cli.py sets it), else the default."""
    return Path(os.environ.get(DATA_DIR_VARIABLE) or DEFAULT_DATA_DIR)


def load(directory: Path) -> ConsoleConfig:
    """console.json in the data directory (absent: the defaults); unknown keys are refused."""
    path = directory / CONFIG_NAME
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ConsoleConfig(data_dir=directory)
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: not a JSON object")
    unknown = sorted(set(values) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {', '.join(unknown)}")
    return ConsoleConfig(data_dir=directory, **values)


def save(config: ConsoleConfig) -> None:
    """Write console.json 0600 (a PostgreSQL URL holds a password), replacing it atomically."""
    values = {"db": config.db, "spooldir": config.spooldir, "allowed_hosts": config.allowed_hosts,
              "secure_cookies": config.secure_cookies, "host": config.host, "release_tool": config.release_tool,
              "base_url": config.base_url, "qmail_inject": config.qmail_inject, "digest_sender": config.digest_sender,
              "release_link_days": config.release_link_days, "spamc": config.spamc,
              "remote_answer_seconds": config.remote_answer_seconds}
    path = config.data_dir / CONFIG_NAME
    temporary = path.with_name(f".{CONFIG_NAME}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        json.dump(values, stream, indent=2)
        stream.write("\n")
    os.replace(temporary, path)


def secret_key(directory: Path, create: bool = False) -> str:
    """The session-signing key from the data directory; created 0600 only when `create` (by migrate)."""
    path = directory / SECRET_KEY_NAME
    if create:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w", encoding="ascii") as stream:
                stream.write(secrets.token_urlsafe(50) + "\n")
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: run `qs-console migrate` first") from None


def database_settings(url: str, directory: Path) -> dict:
    """Django's DATABASES entry for a URL: "" is SQLite in the data directory, postgresql://... is PostgreSQL.

    The host part may be a percent-encoded socket directory (postgresql://user@%2Frun%2Fpg:5433/db), as in libpq.
    """
    if not url:
        # A long busy timeout: the loader writes while the server reads (WAL keeps readers off the writer's lock).
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(directory / SQLITE_NAME),
                "OPTIONS": {"timeout": 30}}
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parts.path), "OPTIONS": {"timeout": 30}}
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"--db: {parts.scheme or 'no'} scheme; give postgresql://user:pass@host:port/db")
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ConfigError("--db: the URL names no database (postgresql://user:pass@host:port/DB)")
    host_port = parts.netloc.rpartition("@")[2]
    host = host_port[1:host_port.find("]")] if host_port.startswith("[") else host_port.partition(":")[0]
    return {"ENGINE": "django.db.backends.postgresql", "NAME": name, "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""), "HOST": unquote(host), "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": 60}
