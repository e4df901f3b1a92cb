"""qs-console's command line: migrate (data directory, key, config, re-run keeps data), createuser, bad input."""

from __future__ import annotations

import stat

from console_fixtures import ADMIN_PASSWORD, Console, append_record, console_ready, make_record


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
