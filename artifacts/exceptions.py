"""
The event feed's errors, in the project's JSON shape (see
`attachments.exceptions`). Cursor errors carry `resume_after`, the cursor to
continue from once the client has relisted, on every transport.
"""

from __future__ import annotations

from rest_framework import status

# The feed's parameters are read as the zip's are (`attachments.parameters`).
from attachments.exceptions import ApiError
from attachments.exceptions import InvalidParameter as InvalidParameter


class CursorError(ApiError):
    status_code = status.HTTP_410_GONE

    def __init__(self, after: int, resume_after: int, last_sequence: int) -> None:
        super().__init__(
            self.default_detail.format(after=after, resume_after=resume_after),
            resume_after=resume_after,
            last_sequence=last_sequence,
        )
        self.resume_after = resume_after


class CursorAhead(CursorError):
    default_detail = (
        "Cursor {after} is beyond the session's last event; relist the session's "
        "artifacts, then continue after {resume_after}."
    )
    default_code = "cursor_ahead"


class CursorExpired(CursorError):
    default_detail = (
        "Events after cursor {after} are no longer kept; relist the session's "
        "artifacts, then continue after {resume_after}."
    )
    default_code = "cursor_expired"
