"""The app's registration with Django."""

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """Messages, recipients, profiles and the audit log; SQLite connections switched to WAL."""

    name = "qsconsole.console"
    label = "console"
    verbose_name = "qmail-scanner console"

    def ready(self) -> None:
        """Every new SQLite connection uses WAL: the server reads while the loader writes."""
        from django.db.backends.signals import connection_created

        connection_created.connect(use_wal)


def use_wal(sender, connection, **kwargs) -> None:
    """WAL journal and NORMAL sync on SQLite (durable at each commit's checkpoint, readers never blocked)."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
