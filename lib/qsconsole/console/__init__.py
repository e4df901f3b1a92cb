"""The console's Django app: message records, recipients, profiles, the audit log and the JSON API."""
