from __future__ import annotations

import io
import json
import zipfile

import pytest

from attachments.mime import detect_mime, kind_for_mime

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    b"\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
)


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


# libmagic decides a textual type by searching well past the first kilobytes:
# its regex rules read up to 8 KiB and some search rules 64 KiB, and its
# encoding check covers the whole head. Detection on a shortened head, or a
# cheaper first pass that only looks at the start, changes these verdicts.
LICENCE = b"/* Licensed under the terms in LICENSE; see the file for details. */\n" * 75


def test_c_source_after_a_long_licence_comment_is_still_c():
    head = LICENCE + b"\n#include <stdio.h>\n\nint main(void) { return 0; }\n"
    assert len(LICENCE) > 4096
    assert detect_mime(head, "main.c") == "text/x-c"


def test_python_module_after_a_long_comment_block_is_still_python():
    head = b"# A comment line that explains the module.\n" * 110
    head += b"\nimport os\n\nclass Loader:\n    def load(self):\n        pass\n"
    assert len(head) > 4096
    assert detect_mime(head, "loader.py") == "text/x-script.python"


@pytest.mark.parametrize("offset", [100, 9_000, 60_000])
def test_a_binary_byte_anywhere_in_the_head_makes_it_binary(offset: int):
    head = (b"plain text line\n" * 4000)[:offset] + b"\x00\x01\x02\xff\xfe" + b"more text\n" * 100
    assert detect_mime(head, "notes.txt") == "application/octet-stream"


def test_a_zip_archive_renamed_to_text_stays_a_zip():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "hello " * 1000)
    assert detect_mime(buffer.getvalue(), "notes.txt") == "application/zip"


@pytest.mark.parametrize(
    ("head", "name", "expected"),
    [
        (b"#!/bin/sh\nset -eu\n" + b"echo line\n" * 900, "run.txt", "text/x-shellscript"),
        (
            b"<!DOCTYPE html>\n<html><head><title>t</title></head><body>\n"
            + b"<p>paragraph</p>\n" * 600
            + b"</body></html>\n",
            "page.txt",
            "text/html",
        ),
        (
            json.dumps([{"id": i, "name": f"row {i}"} for i in range(400)]).encode(),
            "rows.txt",
            "application/json",
        ),
        (
            b"id,name,value\n" + b"".join(b"%d,row %d,%d.5\n" % (i, i, i) for i in range(600)),
            "rows.txt",
            "text/csv",
        ),
        ((b"upload 5 " * 1200)[:10240], "upload.bin", "text/plain"),
    ],
)
def test_textual_types_come_from_the_content_of_a_10_kib_head(
    head: bytes, name: str, expected: str
):
    assert len(head) > 8192
    assert detect_mime(head, name) == expected
