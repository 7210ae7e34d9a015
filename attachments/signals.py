"""
Signals the attachments app sends for the apps built on it.

Rows recorded in bulk (`bulk_create`) send no `post_save`; the upload path
records a whole batch at once and says so with `attachments_recorded`.
"""

from __future__ import annotations

from django.dispatch import Signal

# Sent with `batches`: a list of (session, attachments), each session's new
# live rows in the order they were recorded, one item per session. Sent
# inside the transaction that recorded them, which holds those sessions' row
# locks: what a receiver writes commits, or rolls back, with the rows. On
# SQLite one signal may carry the batches of several sessions that shared a
# transaction; a receiver that fails makes all of them be recorded again, one
# session at a time, each then failing or committing on its own.
attachments_recorded = Signal()
