"""
The ClamAV scanner against a real clamd, started here with a signature
database these tests write themselves (nothing is downloaded).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from attachments.clamav import ClamdScanner
from attachments.scanning import ScannerUnavailable

from .builders import DjangoPath, StreamingPath, multipart, new_session, row_ids, uploaded_files

SIGNATURE_NAME = "Mac.Test.Signature"
MARKER = b"MAC-TEST-MALWARE-MARKER-7f3a9c"
STREAM_MAX = 1024 * 1024


@pytest.fixture(scope="module")
def clamd(tmp_path_factory) -> str:
    binary = shutil.which("clamd") or (
        "/usr/sbin/clamd" if os.path.exists("/usr/sbin/clamd") else None
    )
    if binary is None:
        if os.environ.get("MAC_REQUIRE_SERVICES") == "1":
            pytest.fail("clamd is not installed (Debian: clamav-daemon)")
        pytest.skip(
            "clamd is not installed (Debian: clamav-daemon); scripts/test installs it as root"
        )
    root = tmp_path_factory.mktemp("clamd")
    (root / "db").mkdir()
    (root / "db" / "test.ndb").write_text(f"{SIGNATURE_NAME}:0:*:{MARKER.hex()}\n")
    socket_path = root / "clamd.sock"
    (root / "clamd.conf").write_text(
        f"LocalSocket {socket_path}\nDatabaseDirectory {root / 'db'}\nForeground yes\n"
        f"LogFile {root / 'clamd.log'}\nStreamMaxLength {STREAM_MAX}\n"
    )
    process = subprocess.Popen(
        [binary, "-c", str(root / "clamd.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not socket_path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"clamd did not start:\n{(root / 'clamd.log').read_text(errors='replace')}")
        time.sleep(0.1)
    yield f"unix://{socket_path}"
    process.terminate()
    process.wait(10)


@pytest.fixture
def scanner(clamd) -> ClamdScanner:
    return ClamdScanner(clamd, max_bytes=STREAM_MAX)


def test_detects_the_test_signature(scanner, tmp_path: Path):
    path = tmp_path / "infected.bin"
    path.write_bytes(b"some bytes " + MARKER + b" more bytes")
    verdict = scanner(path)
    assert verdict.status == "infected"
    assert SIGNATURE_NAME in verdict.reason


def test_passes_a_clean_file(scanner, tmp_path: Path):
    path = tmp_path / "clean.txt"
    path.write_bytes(b"nothing to see here\n" * 1000)
    assert scanner(path).status == "clean"


def test_reports_a_file_over_its_stream_limit_as_too_large(scanner, tmp_path: Path):
    path = tmp_path / "big.bin"
    path.write_bytes(b"\0" * (STREAM_MAX + 1))
    assert scanner(path).status == "too_large"


def test_a_limit_set_higher_than_clamd_s_is_still_reported_as_too_large(clamd, tmp_path: Path):
    path = tmp_path / "big.bin"
    path.write_bytes(b"\0" * (STREAM_MAX * 3))
    assert ClamdScanner(clamd, max_bytes=STREAM_MAX * 10)(path).status == "too_large"


def test_an_unreachable_daemon_is_unavailable(tmp_path: Path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"x")
    with pytest.raises(ScannerUnavailable):
        ClamdScanner(f"unix://{tmp_path}/nothing.sock", max_bytes=STREAM_MAX)(path)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("client", [DjangoPath(), StreamingPath()], ids=["django", "streaming"])
def test_uploads_are_scanned_by_clamd(clamd, client, settings):
    settings.ATTACHMENTS_UPLOAD_SCANNERS = ["attachments.clamav.scan"]
    settings.ATTACHMENTS_CLAMD_ADDRESS = clamd
    settings.ATTACHMENTS_CLAMD_MAX_BYTES = STREAM_MAX
    session = new_session()
    body, content_type = multipart([("file", "bad.bin", b"x" + MARKER)])
    rejected = client.post(f"/api/uploads/{session.session_id}", body, content_type)
    assert rejected.status == 422
    assert SIGNATURE_NAME in rejected.body["reason"]
    assert uploaded_files(session) == [] and row_ids(session) == []
    body, content_type = multipart([("file", "good.txt", b"fine")])
    accepted = client.post(f"/api/uploads/{session.session_id}", body, content_type)
    assert accepted.status == 201
    assert accepted.body["metadata"]["scan"]["status"] == "clean"
