from __future__ import annotations

import pytest

from attachments.mime import detect_mime, kind_for_mime

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"


@pytest.mark.parametrize(
    ("head", "name", "expected"),
    [
        (b"# Title\n\nSome text.\n", "spec.md", "text/markdown"),
        (b"a,b\n1,2\n", "data.csv", "text/csv"),
        (b"a: 1\n", "config.yaml", "application/yaml"),
        (b"hello\n", "notes.txt", "text/plain"),
        (b"hello\n", "noext", "text/plain"),
        (b'{"a": 1}', "data.json", "application/json"),
        (b"", "empty.txt", "text/plain"),
        (b"", "empty.bin", "application/octet-stream"),
        (PNG, "picture.png", "image/png"),
    ],
)
def test_detects_from_content_refined_by_extension(head: bytes, name: str, expected: str):
    assert detect_mime(head, name) == expected


def test_content_wins_over_a_misleading_extension():
    assert detect_mime(PNG, "notes.txt") == "image/png"


def test_extension_never_turns_text_into_an_image():
    assert detect_mime(b"just text\n", "fake.png") == "text/plain"


@pytest.mark.parametrize(
    ("mime", "kind"),
    [
        ("image/png", "image"),
        ("audio/mpeg", "audio"),
        ("video/mp4", "video"),
        ("text/markdown", "file"),
        ("application/pdf", "file"),
    ],
)
def test_kind_follows_mime(mime: str, kind: str):
    assert kind_for_mime(mime) == kind
