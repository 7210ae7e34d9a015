from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from attachments import mime
from attachments.mime import detect_mime, kind_for_mime
from tests.processes import alive

ROOT = Path(__file__).resolve().parents[2]

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


class TestDetectionProcesses:
    """libmagic in processes of their own gives the verdicts it gives in the caller's thread."""

    HEADS = [
        (PNG, "picture.png"),
        (b"# Title\n\nSome text.\n", "spec.md"),
        (b"#include <stdio.h>\nint main(void) { return 0; }\n", "main.c"),
        (b"hello\n", "noext"),
        (b"\x00\x01binary\xff", "data.bin"),
    ]

    @pytest.fixture
    def processes(self):
        started = mime.detect_in_processes(2)
        yield started
        mime.stop_detection_processes()

    def test_same_verdicts_as_in_the_thread(self):
        in_thread = [detect_mime(head, name) for head, name in self.HEADS]
        started = mime.detect_in_processes(2)
        try:
            assert [detect_mime(head, name) for head, name in self.HEADS] == in_thread
            # ...and they came from the processes, not from a fallback.
            assert [started.detect(head) for head, _name in self.HEADS[:1]] == ["image/png"]
        finally:
            mime.stop_detection_processes()

    def test_a_killed_process_is_replaced_and_detection_goes_on(self, processes):
        assert processes.detect(PNG) == "image/png"
        victims = processes.pids()
        assert len(victims) == 2
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        # Each call finds a dead process at most once: detected in the thread, and replaced.
        for _ in range(4):
            assert detect_mime(PNG, "x.png") == "image/png"
        assert processes.detect(PNG) == "image/png"
        survivors = processes.pids()
        assert len(survivors) == 2
        assert not set(survivors) & set(victims)

    def test_they_run_on_the_cpus_they_are_given(self):
        cpu = min(os.sched_getaffinity(0))
        started = mime.detect_in_processes(1, frozenset({cpu}))
        try:
            assert started.detect(PNG) == "image/png"  # it is running by now
            (pid,) = started.pids()
            assert os.sched_getaffinity(pid) == {cpu}
        finally:
            mime.stop_detection_processes()

    def test_they_end_when_the_server_is_killed(self, tmp_path):
        script = (
            "import sys, time\n"
            "from attachments import mime\n"
            "processes = mime.detect_in_processes(2)\n"
            "assert processes.detect(b'hello') == 'text/plain'\n"
            "print(*processes.pids(), flush=True)\n"
            "time.sleep(60)\n"
        )
        server = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        try:
            pids = [int(pid) for pid in server.stdout.readline().split()]
            assert len(pids) == 2
            server.kill()  # SIGKILL: no atexit, no cleanup
            server.wait(10)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(alive(pid) for pid in pids):
                time.sleep(0.05)
            assert not any(alive(pid) for pid in pids)
        finally:
            server.kill()
            server.wait()
