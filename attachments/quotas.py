"""
Per-session quotas (bytes and files) and the upload limit, as one allowance.

While a body streams, the allowance caps how many bytes are kept, so nothing
over a limit is ever kept; when the file is recorded, the quota is checked
again under the session's row lock (`attachments.committing`), because
uploads running side by side each saw the usage from before the others.

Usage is kept as two counters on the session's row, moved in the same
transaction as the rows they count, so reading it costs the same whatever
the session holds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django.db.models import Count, Sum

from .conf import conf
from .exceptions import UploadTooLarge
from .models import Session


@dataclasses.dataclass(frozen=True)
class Usage:
    files: int
    bytes: int


class QuotaExceeded(UploadTooLarge):
    default_detail = "The session's quota would be exceeded."
    default_code = "quota_exceeded"


def usage(session: Session) -> Usage:
    """What the session's live attachments take, as last committed."""
    row = Session.objects.filter(pk=session.pk).values("used_files", "used_bytes").first()
    if row is None:
        return Usage(files=0, bytes=0)
    return Usage(files=row["used_files"], bytes=row["used_bytes"])


def counted_usage(session: Session) -> Usage:
    """Usage summed from the rows, for resetting the counters after a bulk change."""
    totals = session.attachments.filter(purged_at__isnull=True).aggregate(
        files=Count("id"), bytes=Sum("size")
    )
    return Usage(files=totals["files"], bytes=totals["bytes"] or 0)


def reset_usage(session: Session) -> Usage:
    """Set the counters from the rows. Call it in the transaction that changed them."""
    current = counted_usage(session)
    Session.objects.filter(pk=session.pk).update(used_files=current.files, used_bytes=current.bytes)
    return current


def quota_fields(current: Usage) -> dict[str, Any]:
    """What a client reads to know the quotas and what is left of them (None: no quota)."""
    max_bytes, max_files = conf.SESSION_MAX_BYTES, conf.SESSION_MAX_FILES
    return {
        "quota_bytes": max_bytes,
        "quota_files": max_files,
        "used_bytes": current.bytes,
        "used_files": current.files,
        "remaining_bytes": None if max_bytes is None else max(0, max_bytes - current.bytes),
        "remaining_files": None if max_files is None else max(0, max_files - current.files),
    }


def quota_error(current: Usage, detail: str) -> QuotaExceeded:
    return QuotaExceeded(detail, **quota_fields(current))


def too_large_error(limit: int) -> UploadTooLarge:
    return UploadTooLarge(
        f"The upload is larger than this server accepts ({limit} bytes).", limit_bytes=limit
    )


@dataclasses.dataclass(frozen=True)
class Allowance:
    """How many bytes one upload into a session may have, and which limit says so."""

    session: Session
    usage: Usage
    max_bytes: int | None
    by_quota: bool

    def exceeded(self) -> UploadTooLarge:
        """The error for an upload that went over `max_bytes`."""
        if self.by_quota:
            return quota_error(
                self.usage,
                "The upload would exceed the session's quota of bytes; nothing was kept.",
            )
        assert self.max_bytes is not None
        return too_large_error(self.max_bytes)


def upload_allowance(session: Session) -> Allowance:
    """
    The allowance for the next upload into `session`. Raises `QuotaExceeded`
    at once when the session has no room left for another file.
    """
    max_files, quota_bytes = conf.SESSION_MAX_FILES, conf.SESSION_MAX_BYTES
    if max_files is None and quota_bytes is None:
        # No quota: nothing to read (the usual case, and a query saved per upload).
        return Allowance(session, Usage(0, 0), conf.MAX_UPLOAD_BYTES, False)
    current = usage(session)
    if max_files is not None and current.files >= max_files:
        raise quota_error(current, "The session already holds as many files as its quota allows.")
    limit, by_quota = conf.MAX_UPLOAD_BYTES, False
    if quota_bytes is not None:
        room = max(0, quota_bytes - current.bytes)
        if limit is None or room < limit:
            limit, by_quota = room, True
    return Allowance(session, current, limit, by_quota)


def quota_overrun(session: Session) -> str | None:
    """
    A sentence saying which quota the session's attachments exceed, or None.
    For files that arrive without an upload to refuse (workflow outputs),
    checked once they are recorded.
    """
    current = usage(session)
    max_files, max_bytes = conf.SESSION_MAX_FILES, conf.SESSION_MAX_BYTES
    if max_files is not None and current.files > max_files:
        return f"the session holds {current.files} files; its quota is {max_files}"
    if max_bytes is not None and current.bytes > max_bytes:
        return f"the session holds {current.bytes} bytes; its quota is {max_bytes}"
    return None
