"""qs-console: migrate, createuser, load, serve, digest (the console's command line; run by contrib/qs-console)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from qsconsole import config

USAGE_EXIT = 2


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="qs-console", description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get(config.DATA_DIR_VARIABLE) or config.DEFAULT_DATA_DIR,
                        help=f"the console's own directory: console.json, secret_key, the SQLite file "
                             f"(default {config.DEFAULT_DATA_DIR})")
    commands = parser.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser("migrate", help="create or upgrade the database (and the data directory)")
    migrate.add_argument("--db", help="postgresql://user:pass@host:port/db (saved in console.json); default SQLite")
    migrate.add_argument("--spooldir", help=f"the scanner's spool, whose records/ the loader reads "
                                            f"(saved; default {config.DEFAULT_SPOOLDIR})")
    migrate.add_argument("--host", help="the host name the records of this spool carry (saved; default the scanner's: "
                              "/var/qmail/control/me, else this machine's FQDN)")
    migrate.add_argument("--release-tool", metavar="PATH",
                         help="the installed qs-quarantine that releases from this host's quarantine (saved)")
    migrate.add_argument("--base-url", metavar="URL", help="the console's address as recipients reach it, for the "
                                                           "digest's links (saved; its host joins allowed_hosts)")
    migrate.add_argument("--digest-sender", metavar="ADDR", help="the digest's sender (saved; default postmaster@host)")
    createuser = commands.add_parser("createuser", help="add a user; the password is read from standard input")
    createuser.add_argument("name")
    role = createuser.add_mutually_exclusive_group(required=True)
    role.add_argument("--admin", action="store_true", help="an administrator: sees and acts on every message")
    role.add_argument("--recipient", action="append", metavar="ADDR",
                      help="a recipient who sees mail addressed to ADDR (repeat for more addresses)")
    load = commands.add_parser("load", help="move message records from the spool into the database")
    load.add_argument("--once", action="store_true", help="load what is there, then exit")
    load.add_argument("--batch", type=int, default=1000, help="records per transaction (default 1000)")
    load.add_argument("--poll", type=float, default=1.0, help="seconds between looks for new records (default 1)")
    load.add_argument("--settle", type=float, default=2.0,
                      help="seconds a renamed file stays open to a writer that opened it before the rename (default 2)")
    load.add_argument("--cpu", choices=("idle", "normal"), default="idle",
                      help="idle (default): run only when mail leaves a CPU free (SCHED_IDLE), so a busy loader never "
                           "slows the scanner; normal: the priority it was started with")
    serve = commands.add_parser("serve", help="serve the console's API (waitress)")
    serve.add_argument("--listen", required=True, metavar="HOST:PORT")
    serve.add_argument("--threads", type=int, default=8)
    digest = commands.add_parser("digest", help="mail each recipient account's addresses their quarantined mail, "
                                                "with release links (base_url etc. in console.json)")
    digest.add_argument("--since", type=float, default=24, metavar="HOURS", help="the window (default 24 hours)")
    digest.add_argument("--dry-run", action="store_true", help="print the mails instead of sending them")
    return parser.parse_args(argv)


def setup(data_dir: Path, create_key: bool = False) -> None:
    """Point Django at this data directory and start it."""
    os.environ[config.DATA_DIR_VARIABLE] = str(data_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "qsconsole.settings"
    if create_key:
        os.environ["QS_CONSOLE_CREATE_KEY"] = "1"
    import django

    django.setup()


def migrate(arguments: argparse.Namespace, data_dir: Path) -> int:
    """Create the data directory and console.json, the secret key, then apply Django's migrations."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    saved = config.load(data_dir)
    wanted = replace(saved, db=saved.db if arguments.db is None else arguments.db,
                     spooldir=arguments.spooldir or saved.spooldir,
                     host=saved.host if arguments.host is None else arguments.host,
                     release_tool=saved.release_tool if arguments.release_tool is None else arguments.release_tool,
                     base_url=saved.base_url if arguments.base_url is None else arguments.base_url,
                     digest_sender=saved.digest_sender if arguments.digest_sender is None else arguments.digest_sender)
    wanted = replace(wanted, allowed_hosts=with_base_url_host(wanted.allowed_hosts, wanted.base_url))
    config.database_settings(wanted.db, data_dir)  # a wrong URL is refused before anything is written
    if wanted != saved or not (data_dir / config.CONFIG_NAME).exists():
        config.save(wanted)
    setup(data_dir, create_key=True)
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=1)
    return 0


def with_base_url_host(allowed_hosts: list[str], base_url: str) -> list[str]:
    """allowed_hosts with the base URL's host added: the pages answer the address the digest's links name."""
    if not base_url:
        return allowed_hosts
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise config.ConfigError(f"--base-url {base_url!r}: give http(s)://HOST[:PORT]")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return allowed_hosts if host in allowed_hosts else [*allowed_hosts, host]


def createuser(arguments: argparse.Namespace, data_dir: Path) -> int:
    """Add a user with the password from standard input (first line), checked by Django's validators."""
    setup(data_dir)
    from django.contrib.auth import get_user_model
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError
    from django.db import transaction

    from qsconsole.console.models import Profile
    from qsconsole.record_format import address_key

    password = sys.stdin.readline().rstrip("\r\n")
    users = get_user_model()
    if users.objects.filter(username=arguments.name).exists():
        print(f"qs-console createuser: {arguments.name} exists", file=sys.stderr)
        return 1
    candidate = users(username=arguments.name)
    try:
        validate_password(password, candidate)
    except ValidationError as problem:
        print(f"qs-console createuser: the password is refused: {' '.join(problem.messages)}", file=sys.stderr)
        return 1
    addresses = [address_key(address)[0] for address in arguments.recipient or []]
    if any("@" not in address or "\n" in address for address in addresses):
        print("qs-console createuser: a recipient address is user@domain", file=sys.stderr)
        return USAGE_EXIT
    with transaction.atomic():
        user = users.objects.create_user(arguments.name, password=password)
        Profile.objects.create(user=user, role=Profile.ADMIN if arguments.admin else Profile.RECIPIENT,
                               addresses="\n".join(addresses))
    print(f"qs-console createuser: {arguments.name} added ({'administrator' if arguments.admin else 'recipient'})")
    return 0


def load(arguments: argparse.Namespace, data_dir: Path) -> int:
    """Run the loader once or until SIGTERM."""
    setup(data_dir)
    from django.conf import settings
    from django.db import DatabaseError

    from qsconsole.loader import Loader, LoaderBusy

    loader = Loader(Path(settings.CONSOLE.spooldir), batch=max(1, arguments.batch), settle=max(0.0, arguments.settle))
    try:
        loader.lock()
    except (LoaderBusy, FileNotFoundError) as problem:
        print(f"qs-console load: {problem}", file=sys.stderr)
        return 1
    if not arguments.once:
        if arguments.cpu == "idle":
            yield_to_mail()
        loader.run_forever(poll=arguments.poll)
        return 0
    try:
        loader.run_once()
    except DatabaseError as problem:
        print(f"qs-console load: database error: {problem}", file=sys.stderr)
        return 1
    return 0


def yield_to_mail() -> None:
    """SCHED_IDLE: the scheduler gives the loader a CPU only when no normal task (the scanner, qmail) wants it.

    Records wait safely in the spool, so a loader that falls behind at a peak costs nothing; a loader at the scanner's
    priority on a 2-core host took half a CPU from mail (make bench-console). Where the policy cannot be set, the loader
    runs at its start priority and says so.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError) as problem:
        print(f"qs-console load: staying at normal CPU priority (SCHED_IDLE: {problem})", file=sys.stderr)


def serve(arguments: argparse.Namespace, data_dir: Path) -> int:
    """Serve the WSGI application with waitress on HOST:PORT."""
    host, _, port = arguments.listen.rpartition(":")
    if not host or not port.isdigit():
        print("qs-console serve: --listen HOST:PORT", file=sys.stderr)
        return USAGE_EXIT
    os.environ["QS_CONSOLE_LISTEN_HOST"] = host.strip("[]") if host.startswith("[") else host
    if host.startswith("["):
        os.environ["QS_CONSOLE_LISTEN_HOST"] += "," + host
    setup(data_dir)
    import waitress
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
    print(f"qs-console serve: listening on http://{arguments.listen}/", file=sys.stderr, flush=True)
    waitress.serve(application, listen=arguments.listen, threads=arguments.threads, ident="qs-console",
                   _quiet=True)
    return 0


def digest(arguments: argparse.Namespace, data_dir: Path) -> int:
    """Send (or print) the digests of the last --since hours."""
    setup(data_dir)
    from qsconsole import digest as digests

    return digests.run(max(0.0, arguments.since), arguments.dry_run)


COMMANDS = {"migrate": migrate, "createuser": createuser, "load": load, "serve": serve, "digest": digest}


def main(argv: list[str] | None = None) -> int:
    """Run one command; configuration problems are one line and exit 1."""
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    os.umask(0o077)  # the SQLite file, the key and console.json are the console's alone
    try:
        return COMMANDS[arguments.command](arguments, Path(arguments.data_dir).resolve())
    except config.ConfigError as problem:
        print(f"qs-console {arguments.command}: {problem}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
