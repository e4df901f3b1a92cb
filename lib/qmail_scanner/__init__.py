"""qmail-scanner: a content scanner that takes the place of qmail-queue."""

__version__ = "2.0.0"
