"""Small scanners that tests name in ATTACHMENTS_UPLOAD_SCANNERS."""

from __future__ import annotations

from pathlib import Path

from attachments.scanning import ScannerUnavailable, ScanVerdict

MARKER = b"EVIL-MARKER"


def reject_marker(path: Path) -> ScanVerdict:
    if MARKER in path.read_bytes():
        return ScanVerdict("infected", "Test.Marker found")
    return ScanVerdict("clean")


def too_large_over_ten_bytes(path: Path) -> ScanVerdict:
    if path.stat().st_size > 10:
        return ScanVerdict("too_large", "over 10 bytes")
    return ScanVerdict("clean")


def unreachable(path: Path) -> ScanVerdict:
    raise ScannerUnavailable("connection refused")
