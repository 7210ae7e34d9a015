"""
The default server with MAC_SERVER_CPU=auto: its threads on one CPU, MIME
detection in processes on the others, uploads detected as before. (That a
python node it starts uses every CPU: tests/workflows/test_node.py.)
"""

from __future__ import annotations

import os

import httpx
import pytest

from tests.servers import DEFAULT_SERVER

pytestmark = [
    pytest.mark.server,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs"),
]


def cpus_of(pid: int | str) -> set[int]:
    return os.sched_getaffinity(int(pid))


def threads_of(pid: int) -> list[str]:
    return os.listdir(f"/proc/{pid}/task")


def cpus_of_threads(pid: int) -> set[frozenset[int]]:
    """The CPU sets of the process's threads (a thread that ends meanwhile is left out)."""
    sets = set()
    for task in threads_of(pid):
        try:
            sets.add(frozenset(cpus_of(task)))
        except (ProcessLookupError, FileNotFoundError):
            continue
    return sets


def detection_processes_of(pid: int) -> list[int]:
    """The server's children that multiprocessing spawned (not its resource tracker)."""
    children = []
    for task in threads_of(pid):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as listed:
                children += [int(child) for child in listed.read().split()]
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
    spawned = []
    for child in children:
        try:
            with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                if b"spawn_main" in cmdline.read():
                    spawned.append(child)
        except FileNotFoundError:
            continue
    return spawned


def test_threads_on_one_cpu_and_detection_on_the_others(server):
    allowed = os.sched_getaffinity(0)
    with server(DEFAULT_SERVER, MAC_SERVER_CPU="auto") as running:
        created = httpx.post(f"{running.url}/api/sessions").json()
        auth = {"Authorization": f"Bearer {created['token']}"}
        url = f"{running.url}/api/uploads/{created['session_id']}"
        uploaded = httpx.post(
            url, headers=auth, files={"file": ("spec.md", b"# Title\n\nSome text.\n")}
        )
        assert uploaded.status_code == 201, uploaded.text
        assert uploaded.json()["mime"] == "text/markdown"
        picture = httpx.post(
            url,
            headers=auth,
            files={"file": ("renamed.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(20))},
        )
        assert picture.json()["mime"] == "image/png"

        pid = running.process.pid
        assert cpus_of_threads(pid) == {frozenset({min(allowed)})}
        detection = detection_processes_of(pid)
        assert len(detection) >= 2
        for child in detection:
            assert cpus_of(child) == allowed - {min(allowed)}


def test_off_leaves_the_server_on_every_cpu(server):
    allowed = os.sched_getaffinity(0)
    with server(DEFAULT_SERVER, MAC_SERVER_CPU="off") as running:
        httpx.post(f"{running.url}/api/sessions")
        pid = running.process.pid
        assert cpus_of_threads(pid) == {frozenset(allowed)}
        assert detection_processes_of(pid) == []
