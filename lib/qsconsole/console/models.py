"""The console's tables: one Message per record, its Recipients, users' Profiles and the AuditLog."""

from __future__ import annotations

from django.conf import settings
from django.db import models

# Column widths: record_format.py cuts longer values from a record to these, and refuses a longer record id.
from qsconsole.record_format import ADDRESS_LENGTH, DOMAIN_LENGTH, RECORD_ID_LENGTH

NAME_LENGTH = DOMAIN_LENGTH
OUTCOMES = ("delivered", "quarantined", "rejected", "dropped", "tempfail")  # in the order a person reads them


class Message(models.Model):
    """One message's record (format version 1) as the mail path wrote it; `record_id` makes loading idempotent."""

    record_id = models.CharField(max_length=RECORD_ID_LENGTH, unique=True)
    time = models.DateTimeField()
    host = models.CharField(max_length=NAME_LENGTH)
    queue_id = models.CharField(max_length=NAME_LENGTH, blank=True)
    client_ip = models.CharField(max_length=64, blank=True)
    helo = models.CharField(max_length=NAME_LENGTH, blank=True)
    auth_user = models.CharField(max_length=NAME_LENGTH, blank=True)
    sender = models.CharField(max_length=ADDRESS_LENGTH, blank=True)
    # Lower-cased copies for search: addresses are found whatever case a client wrote them in.
    sender_key = models.CharField(max_length=ADDRESS_LENGTH, blank=True)
    sender_domain = models.CharField(max_length=NAME_LENGTH, blank=True)
    # The list as the record gave it, for showing; searching goes through Recipient.
    recipients = models.JSONField(default=list)
    subject = models.TextField(blank=True)
    message_id = models.TextField(blank=True)
    size = models.BigIntegerField(default=0)
    outcome = models.CharField(max_length=16)
    reason = models.TextField(blank=True)
    rule = models.CharField(max_length=NAME_LENGTH, blank=True)
    kind = models.CharField(max_length=16, blank=True)
    scanners = models.JSONField(default=list)
    spam_score = models.FloatField(null=True)
    spam_tagged = models.BooleanField(default=False)
    attachments = models.JSONField(default=list)
    quarantine_id = models.CharField(max_length=NAME_LENGTH, blank=True)
    quarantine_dir = models.CharField(max_length=16, blank=True)
    readings = models.JSONField(default=list)
    skipped = models.JSONField(default=list)
    trace = models.TextField(blank=True)
    # The MIME tree as the scanner read it (one item per part, in reading order) and what decided the outcome: the
    # part, rule, scanner and reading (record keys "parts" and "decision"; older records have neither).
    parts = models.JSONField(default=list)
    decision = models.JSONField(default=dict)
    # What became of the quarantined copy through the console: "" (held, or never quarantined), released, deleted.
    state = models.CharField(max_length=16, blank=True)
    loaded = models.DateTimeField(auto_now_add=True)

    class Meta:
        # Each search is an equality on one column ordered newest first: (column, time) serves both the filter and
        # the order, so a page of 50 reads 50 index entries however many rows match.
        indexes = [
            models.Index(fields=["time"], name="message_time"),
            models.Index(fields=["sender_key", "time"], name="message_sender_time"),
            models.Index(fields=["sender_domain", "time"], name="message_sender_domain_time"),
            models.Index(fields=["client_ip", "time"], name="message_client_ip_time"),
            models.Index(fields=["outcome", "time"], name="message_outcome_time"),
            models.Index(fields=["host", "time"], name="message_host_time"),
            models.Index(fields=["quarantine_id"], name="message_quarantine_id"),
        ]


class Recipient(models.Model):
    """One envelope recipient of a message: a row each, so a recipient search is an index lookup, not a text scan."""

    # No index of its own: the unique (message, address_key) index leads with it.
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="recipient_rows", db_index=False)
    address = models.CharField(max_length=ADDRESS_LENGTH)
    address_key = models.CharField(max_length=ADDRESS_LENGTH)
    domain = models.CharField(max_length=NAME_LENGTH)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["message", "address_key"], name="recipient_once")]
        indexes = [
            models.Index(fields=["address_key"], name="recipient_address"),
            models.Index(fields=["domain"], name="recipient_domain"),
        ]


class Profile(models.Model):
    """A console user's role: an administrator sees everything, a recipient only mail to one of their addresses."""

    ADMIN = "admin"
    RECIPIENT = "recipient"
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    role = models.CharField(max_length=16, choices=[(ADMIN, "administrator"), (RECIPIENT, "recipient")])
    # Lower-cased envelope addresses, one per line (Recipient.address_key is compared against them).
    addresses = models.TextField(blank=True)

    def address_list(self) -> list[str]:
        """The recipient's addresses, lower-cased."""
        return [line for line in self.addresses.splitlines() if line]


class AuditLog(models.Model):
    """One action a user took: who, when, what, on which message, and what came of it."""

    time = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.CharField(max_length=150)
    action = models.CharField(max_length=32)
    message = models.ForeignKey(Message, null=True, on_delete=models.SET_NULL, related_name="audit")
    record_id = models.CharField(max_length=RECORD_ID_LENGTH, blank=True)
    detail = models.TextField(blank=True)
    result = models.CharField(max_length=16)
    client_ip = models.CharField(max_length=64, blank=True)


class SenderList(models.Model):
    """An allow or block entry: a sender (address or @domain) for a recipient (address, @domain, or "" for all).

    The spam verdict uses them: each host's loader writes the entries to records/sender-lists, which the scanner reads.
    """

    ALLOW = "allow"
    BLOCK = "block"
    kind = models.CharField(max_length=8, choices=[(ALLOW, "allow"), (BLOCK, "block")])
    # Lower-cased; "user@domain" or "@domain".
    sender = models.CharField(max_length=ADDRESS_LENGTH)
    # Lower-cased; "user@domain", "@domain", or "" for every recipient (administrators only).
    recipient = models.CharField(max_length=ADDRESS_LENGTH, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["sender", "recipient"], name="sender_list_once")]
        indexes = [models.Index(fields=["recipient"], name="sender_list_recipient")]


class ActionRequest(models.Model):
    """An action on a quarantined copy that the console asked of the host holding it; that host's loader performs it.

    The quarantined bytes stay on the host that quarantined them; only the request and its result cross the database.
    """

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    host = models.CharField(max_length=NAME_LENGTH)
    verb = models.CharField(max_length=16)
    quarantine_id = models.CharField(max_length=NAME_LENGTH)
    to = models.CharField(max_length=ADDRESS_LENGTH, blank=True)
    message = models.ForeignKey(Message, null=True, on_delete=models.SET_NULL, related_name="action_requests")
    requested = models.DateTimeField(auto_now_add=True)
    requested_by = models.CharField(max_length=150)
    state = models.CharField(max_length=16, default=PENDING)
    finished = models.DateTimeField(null=True)
    detail = models.TextField(blank=True)
    # A fetched message's bytes, for download or learning on the console's side (bounded by the performer).
    data = models.BinaryField(null=True)

    class Meta:
        indexes = [models.Index(fields=["host", "state"], name="action_request_host_state")]
