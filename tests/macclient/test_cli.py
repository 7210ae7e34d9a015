"""`macctl` against a real server process, run as a user would run it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.attachments.builders import PNG_1x1
from tests.servers import ROOT, free_port

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]


def macctl_environment(server_url: str, env: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "MAC_SERVER": server_url,
        "COLUMNS": "200",
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }


def macctl(
    server_url: str, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "macclient.cli", *args],
        capture_output=True,
        text=True,
        env=macctl_environment(server_url, env),
        cwd=cwd or ROOT,
        timeout=60,
    )


def first_mib_sent(server_url: str, session_id: str, token: str, path: Path, cache: Path):
    """
    What an interrupted `macctl upload --resume` leaves (with XDG_CACHE_HOME
    at `cache`): the first MiB of `path` sent, the upload's URL remembered.
    """
    from tusclient import client as tus
    from tusclient.storage.filestorage import FileStorage

    from macclient.api import _SessionFingerprint

    (cache / "macctl").mkdir(parents=True)
    storage = FileStorage(str(cache / "macctl" / "uploads.json"))
    endpoint = f"{server_url}/api/uploads/{session_id}/tus/"
    partial = tus.TusClient(endpoint, headers={"Authorization": f"Bearer {token}"}).uploader(
        str(path),
        chunk_size=1024 * 1024,
        metadata={"filename": path.name},
        store_url=True,
        url_storage=storage,
        fingerprinter=_SessionFingerprint(endpoint),
    )
    partial.upload_chunk()
    storage.close()
    return partial


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def live(server):
    with server("uvicorn") as s:
        yield s


def test_create_upload_and_list(live, tmp_path: Path):
    created = macctl(live.url, "session", "create", "cli-demo")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["session_id"] == "cli-demo"

    files = []
    for name, size in (("a.csv", 10), ("b.bin", 3 * 1024 * 1024)):
        path = tmp_path / name
        path.write_bytes(os.urandom(size) if name.endswith(".bin") else b"x,y\n1,2\n3,")
        files.append(path)
    uploaded = macctl(live.url, "upload", "cli-demo", *map(str, files))
    assert uploaded.returncode == 0, uploaded.stderr
    results = json.loads(uploaded.stdout)
    assert [r["sha256"] for r in results] == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in files
    ]
    assert "b.bin" in uploaded.stderr  # the progress bars go to stderr

    listed = json.loads(macctl(live.url, "list", "cli-demo").stdout)
    assert [a["name"] for a in listed] == ["a.csv", "b.bin"]


def test_workflows_lists_each_with_its_description(live):
    shown = macctl(live.url, "workflows")
    assert shown.returncode == 0, shown.stderr
    assert "csv_summary" in shown.stdout and "review_csv" in shown.stdout
    listed = json.loads(macctl(live.url, "workflows", "--json").stdout)
    assert [(w["name"], w["file"]) for w in listed] == [
        ("csv_summary", "csv_summary.yaml"),
        ("review_csv", "review_csv.yaml"),
    ]
    assert all(w["description"] and w["nodes"] for w in listed)


def test_server_errors_exit_1_with_the_detail(live):
    result = macctl(live.url, "session", "show", "nosuchsession")
    assert result.returncode == 1
    assert "session_not_found" in result.stderr and "No such session" in result.stderr


def test_a_missing_local_file_is_a_usage_error(live, tmp_path: Path):
    macctl(live.url, "session", "create", "cli-usage")
    result = macctl(live.url, "upload", "cli-usage", str(tmp_path / "absent.txt"))
    assert result.returncode == 2
    assert "Not a file" in result.stderr


def test_an_unreachable_server_exits_3():
    result = macctl(f"http://127.0.0.1:{free_port()}", "session", "create")
    assert result.returncode == 3
    assert "Cannot reach" in result.stderr


def test_bad_arguments_exit_2():
    result = macctl("http://127.0.0.1:1", "session", "show")
    assert result.returncode == 2


@pytest.mark.access_policy("token")
def test_the_whole_walk_with_a_token(live, tmp_path: Path):
    """Under the default policy: create, upload, follow events, fetch a file, download the zip."""
    created = json.loads(macctl(live.url, "session", "create").stdout)
    sid, token = created["session_id"], created["token"]
    # Without the token the session answers like an unknown one.
    assert macctl(live.url, "list", sid).returncode == 1
    with_token = ("--token", token)
    data = tmp_path / "data.csv"
    data.write_bytes(b"a,b\n1,2\n")
    image = tmp_path / "dot.png"
    image.write_bytes(PNG_1x1)
    uploaded = macctl(live.url, *with_token, "upload", sid, str(data), str(image))
    assert uploaded.returncode == 0, uploaded.stderr
    csv_id = json.loads(uploaded.stdout)[0]["attachment_id"]

    followed = macctl(
        live.url,
        *with_token,
        "events",
        sid,
        "--follow",
        "--after",
        "0",
        "--include-ext",
        "csv",
        "--count",
        "1",
    )
    assert followed.returncode == 0, followed.stderr
    events = [json.loads(line) for line in followed.stdout.splitlines() if line.strip()]
    assert [(e["name"], e["change_type"]) for e in events] == [("data.csv", "created")]

    fetched = macctl(live.url, *with_token, "fetch", sid, csv_id, "-o", str(tmp_path / "copy.csv"))
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "copy.csv").read_bytes() == data.read_bytes()

    zip_path = tmp_path / "session.zip"
    downloaded = macctl(live.url, *with_token, "download", sid, "-o", str(zip_path))
    assert downloaded.returncode == 0, downloaded.stderr
    names = zipfile.ZipFile(zip_path).namelist()
    assert any(n.endswith("/data.csv") for n in names) and any(
        n.endswith("/dot.png") for n in names
    )


@pytest.mark.access_policy("token")
def test_the_token_from_the_environment(live):
    created = json.loads(macctl(live.url, "session", "create").stdout)
    assert macctl(live.url, "list", created["session_id"]).returncode == 1
    result = macctl(live.url, "list", created["session_id"], env={"MAC_TOKEN": created["token"]})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_upload_resume_continues_an_interrupted_upload(live, tmp_path: Path):

    from attachments.models import ResumableUpload

    created = json.loads(macctl(live.url, "session", "create").stdout)
    session_id, token = created["session_id"], created["token"]
    path = tmp_path / "big.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    path.write_bytes(data)
    cache = tmp_path / "cache"
    partial = first_mib_sent(live.url, session_id, token, path, cache)
    assert partial.offset == 1024 * 1024

    resumed = macctl(
        live.url,
        "upload",
        "--resume",
        session_id,
        str(path),
        env={"MAC_TOKEN": token, "XDG_CACHE_HOME": str(cache)},
    )
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["name"] == "big.bin" and result["sha256"] == hashlib.sha256(data).hexdigest()
    # It went on with the same upload rather than starting another.
    assert ResumableUpload.objects.count() == 1


def test_upload_resume_cut_off_by_a_killed_server_exits_3_and_then_finishes(server, tmp_path):
    from attachments.models import ResumableUpload

    size = 256 << 20
    path = tmp_path / "big.bin"
    with open(path, "wb") as stream:
        stream.truncate(size)  # zeros, without writing them
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    port = free_port()
    with server("uvicorn", port=port, MAC_TUS_LEASE="3") as first:
        created = json.loads(macctl(first.url, "session", "create").stdout)
        session_id, env["MAC_TOKEN"] = created["session_id"], created["token"]
        running = subprocess.Popen(
            [sys.executable, "-m", "macclient.cli", "upload", "--resume", session_id, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=macctl_environment(first.url, env),
            cwd=ROOT,
        )
        wait_for(lambda: ResumableUpload.objects.filter(offset__gt=0).exists())
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        _out, errors = running.communicate(timeout=60)
    assert running.returncode == 3, errors
    assert "Lost the connection" in errors and "Run the same command again" in errors
    kept = ResumableUpload.objects.get().offset
    assert 0 < kept < size
    # The same command, once the server is back at the same address.
    with server("uvicorn", port=port, MAC_TUS_LEASE="3") as second:
        resumed = macctl(second.url, "upload", "--resume", session_id, str(path), env=env)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["size"] == size
    assert result["sha256"] == hashlib.sha256(bytes(size)).hexdigest()
    assert ResumableUpload.objects.count() == 1  # the same upload, not a second one


def test_upload_resume_waits_while_another_request_holds_the_upload(server, tmp_path):
    """A PATCH that stopped sending holds the upload until its lease lapses: macctl waits it out."""

    from attachments.models import ResumableUpload

    data = os.urandom(3 * 1024 * 1024 + 5)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    cache = tmp_path / "cache"
    with server("uvicorn", MAC_TUS_LEASE="3") as live:
        created = json.loads(macctl(live.url, "session", "create").stdout)
        session_id, token = created["session_id"], created["token"]
        partial = first_mib_sent(live.url, session_id, token, path, cache)
        # Another request is sending the next MiB, and stops half-way without hanging up.
        address = urlsplit(live.url)
        stalled = socket.create_connection((address.hostname, address.port))
        head = (
            f"PATCH {urlsplit(partial.url).path} HTTP/1.1\r\nHost: {address.netloc}\r\n"
            f"Authorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Offset: {1 << 20}\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {1 << 20}\r\n\r\n"
        )
        stalled.sendall(head.encode() + data[1 << 20 : (1 << 20) + 65536])
        try:
            wait_for(lambda: ResumableUpload.objects.exclude(lease_token="").exists())
            resumed = macctl(
                live.url,
                "upload",
                "--resume",
                session_id,
                str(path),
                env={"MAC_TOKEN": token, "XDG_CACHE_HOME": str(cache)},
            )
        finally:
            stalled.close()
    assert resumed.returncode == 0, resumed.stderr
    assert "another request holds this upload" in resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    assert ResumableUpload.objects.count() == 1
