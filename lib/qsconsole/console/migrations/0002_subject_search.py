"""An index for the subject search (q=): a substring test that a B-tree cannot answer.

SQLite: an FTS5 table with the trigram tokenizer, kept in step with console_message by triggers. PostgreSQL: a pg_trgm
GIN index on UPPER(subject), the expression Django's icontains compares. A PostgreSQL role that may not create the
extension gets no index (said on stderr): the search still works, reading every row.
"""

import sys

from django.db import DatabaseError, migrations, transaction

SQLITE_CREATE = [
    "CREATE VIRTUAL TABLE console_subject_search USING fts5(subject, content='console_message', "
    "content_rowid='id', tokenize='trigram')",
    "INSERT INTO console_subject_search(console_subject_search) VALUES ('rebuild')",
    "CREATE TRIGGER console_subject_search_insert AFTER INSERT ON console_message BEGIN "
    "INSERT INTO console_subject_search(rowid, subject) VALUES (new.id, new.subject); END",
    "CREATE TRIGGER console_subject_search_delete AFTER DELETE ON console_message BEGIN "
    "INSERT INTO console_subject_search(console_subject_search, rowid, subject) VALUES ('delete', old.id, old.subject);"
    " END",
    "CREATE TRIGGER console_subject_search_update AFTER UPDATE OF subject ON console_message BEGIN "
    "INSERT INTO console_subject_search(console_subject_search, rowid, subject) VALUES ('delete', old.id, old.subject);"
    " INSERT INTO console_subject_search(rowid, subject) VALUES (new.id, new.subject); END",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS console_subject_search_insert",
    "DROP TRIGGER IF EXISTS console_subject_search_delete",
    "DROP TRIGGER IF EXISTS console_subject_search_update",
    "DROP TABLE IF EXISTS console_subject_search",
]
POSTGRESQL_INDEX = ("CREATE INDEX console_message_subject_trgm ON console_message "
                    "USING gin (UPPER(subject) gin_trgm_ops)")


def create(apps, schema_editor):
    """The vendor's substring index."""
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            for statement in SQLITE_CREATE:
                cursor.execute(statement)
        elif connection.vendor == "postgresql":
            try:
                with transaction.atomic(using=connection.alias):
                    cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            except DatabaseError as error:
                print(f"qs-console migrate: no index for the subject search (pg_trgm: {error}".strip() + ")",
                      file=sys.stderr)
                return
            cursor.execute(POSTGRESQL_INDEX)


def drop(apps, schema_editor):
    """Remove the index (the extension stays: other tables may use it)."""
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            for statement in SQLITE_DROP:
                cursor.execute(statement)
        elif connection.vendor == "postgresql":
            cursor.execute("DROP INDEX IF EXISTS console_message_subject_trgm")


class Migration(migrations.Migration):
    dependencies = [("console", "0001_initial")]
    operations = [migrations.RunPython(create, drop)]
