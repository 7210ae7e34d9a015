"""
Upload scanners: callables run on every saved upload before it is recorded.

A scanner takes the file's path and returns a `ScanVerdict`; it raises
`ScannerUnavailable` when it cannot give one (daemon down), and uploads then
fail closed. A file the scanner cannot judge (too large for it) is reported
as `too_large`, never as clean or infected; `ATTACHMENTS_UNSCANNABLE` decides
whether such files are refused or kept, marked unscanned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from django.utils.module_loading import import_string

from .conf import conf
from .exceptions import ApiError

Status = Literal["clean", "infected", "too_large"]


@dataclasses.dataclass(frozen=True)
class ScanVerdict:
    status: Status
    reason: str = ""


Scanner = Callable[[Path], ScanVerdict]


class ScannerUnavailable(Exception):
    """The scanner could not be reached or failed to answer."""


class UploadRejected(ApiError):
    status_code = 422
    default_detail = "The upload was rejected by a scanner."
    default_code = "upload_rejected"


class Unscannable(ApiError):
    status_code = 422
    default_detail = (
        "The upload is too large for the configured scanner, and such files are refused."
    )
    default_code = "unscannable"


class ScanningUnavailable(ApiError):
    status_code = 503
    default_detail = "The upload scanner is unavailable; nothing was kept. Retry later."
    default_code = "scanner_unavailable"


def configured_scanners() -> list[tuple[str, Scanner]]:
    scanners = []
    for entry in conf.UPLOAD_SCANNERS:
        scanner = import_string(entry) if isinstance(entry, str) else entry
        name = entry if isinstance(entry, str) else getattr(entry, "__qualname__", repr(entry))
        scanners.append((name, scanner))
    return scanners


def scan_file(path: Path) -> dict[str, Any]:
    """
    Run every configured scanner on `path` and return what to record in the
    attachment's metadata. Raises an `ApiError` when the file must not be kept.
    """
    scanners = configured_scanners()
    if not scanners:
        return {}
    results = []
    unscanned = False
    for name, scanner in scanners:
        try:
            verdict = scanner(path)
        except ScannerUnavailable as exc:
            raise ScanningUnavailable(
                f"The upload scanner is unavailable ({exc}); nothing was kept. Retry later.",
                scanner=name,
            ) from exc
        if verdict.status == "infected":
            raise UploadRejected(
                f"The upload was rejected by a scanner: {verdict.reason}.",
                scanner=name,
                reason=verdict.reason,
            )
        if verdict.status == "too_large":
            if conf.UNSCANNABLE == "refuse":
                raise Unscannable(scanner=name, reason=verdict.reason)
            unscanned = True
        results.append({"scanner": name, "status": verdict.status, "reason": verdict.reason})
    return {"scan": {"status": "unscanned" if unscanned else "clean", "results": results}}
