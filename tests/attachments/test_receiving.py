"""UploadSink: bytes land in their final place, hashed in the same pass, or leave no trace."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from attachments import receiving
from attachments.receiving import LimitExceeded, UploadSink


def leftovers(root: Path) -> list[Path]:
    """Anything but the (empty) staging directory itself."""
    return [p for p in root.rglob("*") if p.name != ".staging"]


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.fixture(params=[True, False], ids=["direct-io", "page-cache"])
def direct_io(request, settings):
    settings.ATTACHMENTS_DIRECT_IO = request.param
    settings.ATTACHMENTS_UPLOAD_BUFFER_BYTES = 64 * 1024
    return request.param


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 65_536, 65_537, 1_000_003])
@pytest.mark.parametrize("chunk", [1_000, 65_536, 300_000])
def test_any_chunking_gives_the_same_file_and_hash(tmp_path: Path, direct_io, size, chunk):
    data = os.urandom(size)
    sink = UploadSink(tmp_path, "f.bin")
    for part in chunked(data, chunk):
        sink.write(part)
    received = sink.finish()
    assert received.path.read_bytes() == data
    assert received.sha256 == hashlib.sha256(data).hexdigest()
    assert received.size == size
    assert received.head == data[:65_536]


def test_batches_of_views_are_written_in_order(tmp_path: Path, direct_io):
    data = os.urandom(700_000)
    sink = UploadSink(tmp_path, "f.bin")
    views = [memoryview(part) for part in chunked(data, 70_001)]
    sink.write_chunks(views[:5])
    sink.write_chunks(views[5:])
    assert sink.finish().path.read_bytes() == data


def test_over_the_limit_aborts_and_removes_everything(tmp_path: Path, direct_io):
    sink = UploadSink(tmp_path, "f.bin", max_bytes=100_000)
    sink.write(b"x" * 99_999)
    with pytest.raises(LimitExceeded):
        sink.write(b"xx")
    assert leftovers(tmp_path) == []


def test_abort_removes_the_directory(tmp_path: Path, direct_io):
    sink = UploadSink(tmp_path, "f.bin")
    sink.write(os.urandom(200_000))
    sink.abort()
    assert leftovers(tmp_path) == []


def test_a_filesystem_refusing_direct_io_gets_plain_writes(tmp_path: Path, settings, monkeypatch):
    settings.ATTACHMENTS_UPLOAD_BUFFER_BYTES = 64 * 1024
    monkeypatch.setattr(receiving._UploadFile, "_set_direct", lambda self, enabled: False)
    data = os.urandom(500_000)
    sink = UploadSink(tmp_path, "f.bin")
    sink.write(data)
    assert sink.finish().path.read_bytes() == data


def test_short_writes_are_resumed(tmp_path: Path, settings, monkeypatch):
    settings.ATTACHMENTS_DIRECT_IO = False
    settings.ATTACHMENTS_UPLOAD_BUFFER_BYTES = 64 * 1024
    real_write = os.write

    def short_write(fd, data):
        return real_write(fd, bytes(data[: max(1, len(data) // 3)]))

    monkeypatch.setattr(receiving.os, "write", short_write)
    data = os.urandom(300_000)
    sink = UploadSink(tmp_path, "f.bin")
    sink.write(data)
    assert sink.finish().path.read_bytes() == data
