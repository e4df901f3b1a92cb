"""qs-console's command line: migrate (data directory, key, config, re-run keeps data), createuser, bad input."""

from __future__ import annotations

import os
import stat
import subprocess

from console_fixtures import (
    ADMIN_PASSWORD,
    QS_CONSOLE,
    SYSTEM_PYTHON,
    Console,
    append_record,
    console_ready,
    make_record,
)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_migrate_makes_a_private_data_directory_and_a_rerun_keeps_the_data(tmp_path):
    console_ready()
    console = Console(data_dir=tmp_path / "console", spooldir=tmp_path / "spool")
    (console.records).mkdir(parents=True)
    console.run("migrate", "--spooldir", str(console.spooldir))
    assert mode(console.data_dir) == 0o700
    for name in ("secret_key", "console.json", "console.sqlite3"):
        assert mode(console.data_dir / name) == 0o600, name
    key = (console.data_dir / "secret_key").read_text()
    assert len(key.strip()) >= 50
    console.run("createuser", "admin", "--admin", stdin=ADMIN_PASSWORD + "\n")
    append_record(console.records, make_record(1))
    console.run("load", "--once", "--settle", "0")
    again = console.run("migrate")
    assert "No migrations to apply" in again.stdout
    assert (console.data_dir / "secret_key").read_text() == key
    assert console.count() == 1
    assert console.query("SELECT username FROM auth_user") == [("admin",)]
    # The saved spooldir is used without naming it again.
    assert str(console.spooldir) in (console.data_dir / "console.json").read_text()


def test_createuser_refuses_weak_passwords_duplicates_and_bad_addresses(tmp_path):
    console_ready()
    console = Console(data_dir=tmp_path / "console", spooldir=tmp_path / "spool")
    console.run("migrate")
    weak = console.run("createuser", "alice", "--recipient", "alice@example.org", stdin="123456\n", check=False)
    assert weak.returncode == 1 and "the password is refused" in weak.stderr
    console.run("createuser", "alice", "--recipient", "Alice@Example.org", stdin=ADMIN_PASSWORD + "\n")
    twice = console.run("createuser", "alice", "--admin", stdin=ADMIN_PASSWORD + "\n", check=False)
    assert twice.returncode == 1 and "alice exists" in twice.stderr
    bad = console.run("createuser", "carol", "--recipient", "carol", stdin=ADMIN_PASSWORD + "\n", check=False)
    assert bad.returncode == 2
    neither = console.run("createuser", "dave", stdin=ADMIN_PASSWORD + "\n", check=False)
    assert neither.returncode == 2
    assert console.query("SELECT u.username, p.role, p.addresses FROM auth_user u JOIN console_profile p "
                         "ON p.user_id = u.id") == [("alice", "recipient", "alice@example.org")]
    (stored,) = console.query("SELECT password FROM auth_user")[0]
    assert stored.startswith("pbkdf2_sha256$") and ADMIN_PASSWORD not in stored


def test_commands_before_migrate_and_a_wrong_db_url_say_what_to_do(tmp_path):
    console_ready()
    console = Console(data_dir=tmp_path / "console", spooldir=tmp_path / "spool")
    early = console.run("load", "--once", check=False)
    assert early.returncode == 1 and "run `qs-console migrate` first" in early.stderr
    wrong = console.run("migrate", "--db", "mysql://u:p@h/db", check=False)
    assert wrong.returncode == 1 and "postgresql://user:pass@host:port/db" in wrong.stderr
    assert not (console.data_dir / "secret_key").exists()


def run_django(console: Console, code: str) -> None:
    """Python code run with the console's Django set up (its data dir and database)."""
    environment = dict(os.environ, QS_CONSOLE_DIR=str(console.data_dir), DJANGO_SETTINGS_MODULE="qsconsole.settings",
                       PYTHONPATH=str(QS_CONSOLE.parent.parent / "lib"))
    subprocess.run([SYSTEM_PYTHON, "-c", "import django; django.setup()\n" + code], env=environment, check=True,
                   timeout=120)


def migrate_to(console: Console, migration: str) -> None:
    """Take the console's schema back to `migration` with Django's own migrate (qs-console only goes forward)."""
    run_django(console, f"from django.core.management import call_command; "
                        f"call_command('migrate', 'console', '{migration}', verbosity=0)")


# The columns of console_message in migration 0001, as a loader of that release filled them.
FIRST_SCHEMA_ROW = """
import datetime, json
from django.db import connection
columns = ("record_id", "time", "host", "queue_id", "client_ip", "helo", "auth_user", "sender", "sender_key",
           "sender_domain", "recipients", "subject", "message_id", "size", "outcome", "reason", "rule", "kind",
           "scanners", "spam_score", "spam_tagged", "attachments", "quarantine_id", "quarantine_dir", "readings",
           "skipped", "trace", "loaded")
now = datetime.datetime.now(datetime.timezone.utc)
with connection.cursor() as cursor:
    for number in range(COUNT):
        values = (f"mx1:old{number}", now, "mx1", f"old{number}", "192.0.2.1", "helo", "", "a@example.com",
                  "a@example.com", "example.com", json.dumps(["b@example.org"]), f"Quarterly Report {number}", "",
                  100, "delivered", "clean", "", "", "[]", None, False, "[]", "", "", "[]", "[]", "", now)
        marks = ", ".join(["%s"] * len(columns))
        cursor.execute(f"INSERT INTO console_message ({', '.join(columns)}) VALUES ({marks})", values)
"""


def test_an_upgrade_keeps_the_data_and_indexes_it(console):
    """Rows stored under the first schema; `qs-console migrate` keeps them and adds the subject index over them."""
    migrate_to(console, "0001")
    run_django(console, FIRST_SCHEMA_ROW.replace("COUNT", "20"))
    upgrade = console.run("migrate")


    assert "Applying console.0002_subject_search... OK" in upgrade.stdout
    assert "Applying console.0003_actions_lists_tree... OK" in upgrade.stdout
    assert console.count() == 20
    assert console.query("SELECT count(*) FROM console_message WHERE state = '' AND subject LIKE 'Quarterly%'") \
        == [("20",)]
    if console.database is None:
        found = console.query("SELECT rowid FROM console_subject_search WHERE console_subject_search MATCH "
                              "'\"report 17\"'")
        assert found == console.query("SELECT id FROM console_message WHERE subject = 'Quarterly Report 17'")
    else:
        assert console.query("SELECT indexname FROM pg_indexes WHERE tablename = 'console_message' "
                             "AND indexdef LIKE '%gin_trgm_ops%'") == [("console_message_subject_trgm",)]
    # Rows loaded after the upgrade are indexed too (the triggers on SQLite).
    append_record(console.records, make_record(99, subject="late arrival"))
    console.run("load", "--once", "--settle", "0")
    if console.database is None:
        assert len(console.query("SELECT rowid FROM console_subject_search WHERE console_subject_search MATCH "
                                 "'\"arrival\"'")) == 1


def test_the_committed_migrations_match_the_models(tmp_path):
    """A model changed without `makemigrations` would leave databases behind the code: Django's own check."""
    console_ready()
    console = Console(data_dir=tmp_path / "console", spooldir=tmp_path / "spool")
    console.run("migrate")
    code = ("import django; from django.core.management import call_command; django.setup(); "
            "call_command('makemigrations', 'console', '--check', '--dry-run')")
    environment = dict(os.environ, QS_CONSOLE_DIR=str(console.data_dir), DJANGO_SETTINGS_MODULE="qsconsole.settings",
                       PYTHONPATH=str(QS_CONSOLE.parent.parent / "lib"))
    done = subprocess.run([SYSTEM_PYTHON, "-c", code], env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No changes detected" in done.stdout
