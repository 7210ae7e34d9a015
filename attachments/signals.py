"""
Signals the attachments app sends for the apps built on it.

Rows recorded in bulk (`bulk_create`) send no `post_save`; the upload path
records a whole batch at once and says so with `attachments_recorded`.
"""

from __future__ import annotations

from django.dispatch import Signal

# Sent with `session` (locked: the receiver runs in the transaction that
# holds the session's row lock) and `attachments` (the new live rows, in the
# order they were recorded), inside that transaction: what a receiver writes
# commits, or rolls back, with the rows.
attachments_recorded = Signal()
