"""qs-console: the postmaster's console (message records in a database, a JSON API), a Django project."""
