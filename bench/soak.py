"""
Soak and fault injection against the production shape, then a reconciliation.

    .venv/bin/python bench/soak.py                     # every fault, ~6 minutes
    .venv/bin/python bench/soak.py --short             # kill-upload, redis-restart, sigterm; ~90 s
    .venv/bin/python bench/soak.py --faults redis-stop,disk-full --duration 120 --workers 3

`deploy/run-local.sh` starts nginx in front of N Uvicorn workers on its own
PostgreSQL and its own redis-server, all on loopback. Several client
processes then drive mixed load through nginx: small and 100 MB uploads,
single-file downloads (X-Accel-Redirect), zips, and followers of every
session on each transport (WebSocket, SSE, long-poll) that reconnect from
their cursor as a real client does. The faults are injected one after the
other, each in its own phase:

    kill-upload    kill -9 the worker receiving a 100 MB upload; a replacement starts
    redis-restart  the channel layer's redis-server stopped and started again at once
    redis-stop     ... stopped for 10 s
    pg-terminate   pg_terminate_backend on every connection to the soak's database, 3 times
    pg-restart     its PostgreSQL cluster restarted (only with its own cluster: --pg own)
    disk-full      the warehouse filesystem (a loop-mounted ext4) filled for 10 s
    sigterm        a worker sent SIGTERM with streams open (one SSE client straight on
                   its port), as a rolling restart does; a replacement starts once it exited

After each fault a probe upload goes into every session, and the phase's
recovery time runs from the end of the injection until every probe was
answered 201 and every follower of every session saw its event.

Then the reconciliation, which is what a user would check:
- every upload answered 201 is listed, in the manifest, and on disk with its sha256;
- no row, manifest entry or file without the others (a file under
  `attachments/` that the manifest does not name is a leftover), no record
  of an upload that was answered with an error (a phantom), and no upload
  recorded twice. An upload whose worker was killed with -9 after its
  commit point stays recorded while nginx answers its client 502: the
  answer was lost, not an error, and the report notes it;
- every follower saw every event of its session exactly once, in order;
- no 5xx other than a JSON one that the fault in progress explains;
- a worker sent SIGTERM ends an open SSE stream with a `retry:` hint and
  exits before Uvicorn's own grace (the backstop) has to cut it.
The table has one row per phase. `--json PATH` also writes it as JSON, for
`tests/e2e/test_soak.py`. Everything is bounded: the run's duration, a
request budget (`--max-requests`) and a deadline on every wait.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import multiprocessing as mp
import os
import queue
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import websockets

ROOT = Path(__file__).resolve().parent.parent
RUN_LOCAL = ROOT / "deploy" / "run-local.sh"

FAULTS = [
    "kill-upload",
    "redis-restart",
    "redis-stop",
    "pg-terminate",
    "pg-restart",
    "disk-full",
    "sigterm",
]
SHORT_FAULTS = ["kill-upload", "redis-restart", "sigterm"]
# The 5xx each phase may show, all as JSON {"detail", "code"}: what the
# design promises when the database or the layer is down (503), the disk
# is full (507), and nginx's own answer for the requests that were inside a
# worker killed with -9 (502). Anything else, or any 5xx that is not JSON,
# is a failure.
EXPLAINED_5XX: dict[str, set[int]] = {
    "baseline": set(),
    "kill-upload": {502},
    "redis-restart": {503},
    "redis-stop": {503},
    "pg-terminate": {503},
    "pg-restart": {503},
    "disk-full": {503, 507},
    "sigterm": {503},
}
BIG_BYTES = 100 * 1024 * 1024
CHUNK = 1 << 20
FOLLOWER_KINDS = ("ws", "sse", "poll")
RECOVERY_DEADLINE = 60.0
DRAIN_DEADLINE = 60.0
MANIFEST = "attachments_manifest.json"
MANIFEST_LOCK = ".attachments_manifest.lock"


def now() -> float:
    return time.time()


async def fetch(
    client: httpx.AsyncClient,
    path: str,
    params: dict[str, str],
    token: str,
    write: Callable[[bytes], object],
) -> httpx.Response:
    """GET `path`; a 200's body goes to `write` as it arrives, an error's JSON is read."""
    async with client.stream(
        "GET", path, params=params, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        if response.status_code != 200:
            await response.aread()
        else:
            async for chunk in response.aiter_bytes():
                write(chunk)
    return response


def parse_iso(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# --- the deployment ------------------------------------------------------------------


class Deployment:
    """deploy/run-local.sh, driven from here: start, faults, stop."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory = directory
        self.env = {**os.environ, **env, "MAC_LOCAL_DIR": str(directory)}
        self.state: dict[str, str] = {}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(RUN_LOCAL), *args], env=self.env, text=True, capture_output=True, check=check
        )

    def start(self) -> None:
        result = self.run("start", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"deploy/run-local.sh start failed:\n{result.stderr}")
        for line in self.run("env").stdout.splitlines():
            if line.startswith("export "):
                continue
            name, _, value = line.partition("=")
            self.state[name] = shlex.split(value)[0] if value else ""

    def stop(self) -> None:
        self.run("stop", check=False)

    @property
    def url(self) -> str:
        return self.state["URL"]

    @property
    def workers(self) -> int:
        return int(self.state["WORKERS"])

    @property
    def warehouse(self) -> Path:
        return Path(self.state["WAREHOUSE"])

    @property
    def mounted(self) -> bool:
        return bool(self.state.get("WAREHOUSE_SIZE"))

    def reload_nginx(self, *args: str) -> None:
        """Run a run-local.sh command that reloads nginx; return once new nginx workers serve."""
        master = int((self.directory / "run" / "nginx.pid").read_text().strip())

        def children() -> set[int]:
            found = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True)
            return {int(pid) for pid in found.stdout.split()}

        before = children()
        self.run(*args)
        deadline = time.monotonic() + 15
        while not (children() - before) and time.monotonic() < deadline:
            time.sleep(0.05)

    def worker_pid(self, index: int) -> int | None:
        try:
            return int((self.directory / "run" / f"worker-{index}.pid").read_text())
        except (OSError, ValueError):
            return None

    def psql(self, sql: str) -> str:
        url = self.state["PG_SERVER_URL"] + "/postgres"
        return subprocess.run(
            ["psql", url, "-XAtqc", sql], text=True, capture_output=True, check=True
        ).stdout


# --- clients ---------------------------------------------------------------------------


@dataclass
class ClientConfig:
    index: int
    url: str
    sessions: dict[str, str]  # session id -> token, where this client uploads
    big_session: tuple[str, str] | None  # where its 100 MB uploads go, if it makes any
    big_budget: int
    followers: list[tuple[str, str, str]]  # (kind, session id, token)
    all_sessions: dict[str, str]
    uploaders: int
    max_requests: int
    result_path: str
    seed: int


def error_fields(response: httpx.Response) -> tuple[bool, str]:
    """Whether an error answer is the JSON {"detail", "code"}, and its code."""
    if response.status_code < 400:
        return True, ""
    try:
        body = response.json()
    except ValueError:
        return False, ""
    ok = isinstance(body, dict) and "detail" in body and "code" in body
    return ok, str(body.get("code", "")) if isinstance(body, dict) else ""


class Load:
    """One client process: its uploads, downloads, zips and followers."""

    def __init__(self, config: ClientConfig, progress: Any, stop_load: Any, drain: Any) -> None:
        self.config = config
        self.progress = progress
        self.stop_load = stop_load
        self.drain = drain
        self.records: list[dict[str, Any]] = []
        self.uploaded: list[dict[str, Any]] = []
        self.seen: dict[str, list[int]] = defaultdict(list)
        self.drops: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self.zips: list[dict[str, Any]] = []
        self.random = random.Random(config.seed)
        self.counter = 0
        self.big_left = config.big_budget

    # Requests ---------------------------------------------------------------------

    def record(self, op: str, t0: float, status: int | str, **extra: Any) -> dict[str, Any]:
        entry = {"op": op, "t0": t0, "t1": now(), "status": status, "json": True, "code": ""}
        entry.update(extra)
        self.records.append(entry)
        return entry

    def record_response(self, op: str, t0: float, response: httpx.Response, **extra: Any) -> dict:
        ok, code = error_fields(response)
        return self.record(op, t0, response.status_code, json=ok, code=code, **extra)

    def budget_left(self) -> bool:
        return len(self.records) < self.config.max_requests and not self.stop_load.is_set()

    def next_name(self, suffix: str) -> str:
        self.counter += 1
        return f"c{self.config.index}-{self.counter:06d}{suffix}"

    async def upload(
        self, client: httpx.AsyncClient, session: str, token: str, size: int, big: bool
    ) -> None:
        name = self.next_name(".bin")
        digest = hashlib.sha256()
        boundary = "soak" + os.urandom(8).hex()
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        async def body() -> AsyncIterator[bytes]:
            yield head
            left = size
            while left:
                chunk = os.urandom(min(CHUNK, left))
                digest.update(chunk)
                left -= len(chunk)
                yield chunk
            yield tail

        t0 = now()
        extra = {"session": session, "name": name, "size": size, "big": big}
        try:
            response = await client.post(
                f"/api/uploads/{session}",
                content=body(),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(len(head) + size + len(tail)),
                },
            )
        except httpx.HTTPError as exc:
            self.record("upload", t0, f"conn:{type(exc).__name__}", **extra)
            return
        entry = self.record_response("upload", t0, response, **extra)
        if response.status_code == 201:
            body_json = response.json()
            entry["attachment_id"] = body_json["attachment_id"]
            entry["sha256"] = digest.hexdigest()
            entry["server_sha256"] = body_json.get("sha256")
            self.uploaded.append(entry)

    async def small_uploader(self, client: httpx.AsyncClient) -> None:
        sessions = list(self.config.sessions.items())
        while self.budget_left():
            session, token = self.random.choice(sessions)
            size = int(self.random.choice((1, 4, 16, 64, 256, 512)) * 1024 * self.random.random())
            await self.upload(client, session, token, max(size, 1), big=False)
            await asyncio.sleep(self.random.uniform(0.05, 0.3))  # pacing, not synchronisation

    async def big_uploader(self, client: httpx.AsyncClient) -> None:
        assert self.config.big_session is not None
        session, token = self.config.big_session
        while self.budget_left() and self.big_left > 0:
            self.big_left -= 1
            await self.upload(client, session, token, BIG_BYTES, big=True)
            await asyncio.sleep(self.random.uniform(1, 3))

    async def downloader(self, client: httpx.AsyncClient) -> None:
        rounds = 0
        while self.budget_left():
            rounds += 1
            await asyncio.sleep(self.random.uniform(0.2, 0.5))
            if rounds % 8 == 0:
                await self.zip(client)
                continue
            small = [u for u in self.uploaded if not u["big"]]
            if not small:
                continue
            target = self.random.choice(small)
            token = self.config.all_sessions[target["session"]]
            t0 = now()
            digest = hashlib.sha256()
            try:
                response = await fetch(
                    client,
                    f"/api/sessions/{target['session']}/artifacts/{target['attachment_id']}",
                    {"mode": "stream"},
                    token,
                    digest.update,
                )
            except httpx.HTTPError as exc:
                self.record("download", t0, f"conn:{type(exc).__name__}")
                continue
            entry = self.record_response("download", t0, response)
            if response.status_code == 200:
                entry["corrupt"] = digest.hexdigest() != target["sha256"]

    async def zip(self, client: httpx.AsyncClient) -> None:
        session = self.random.choice(list(self.config.sessions))
        token = self.config.all_sessions[session]
        t0 = now()
        with tempfile.TemporaryFile() as spool:
            try:
                response = await fetch(
                    client,
                    f"/api/sessions/{session}/download",
                    # Mostly what a dashboard's "Download all" asks; now and then a
                    # stored zip, which has a length up front and resumes.
                    {"compress": "false" if self.random.random() < 0.25 else "true"},
                    token,
                    spool.write,
                )
            except httpx.HTTPError as exc:
                self.record("zip", t0, f"conn:{type(exc).__name__}")
                return
            entry = self.record_response("zip", t0, response)
            if response.status_code != 200:
                return
            try:
                with zipfile.ZipFile(spool) as archive:
                    names = archive.namelist()
            except zipfile.BadZipFile:
                entry["corrupt"] = True
                return
        attachments = [n for n in names if "/attachments/" in n and not n.endswith("/" + MANIFEST)]
        self.zips.append({"session": session, "t0": t0, "entries": attachments})

    # Followers ----------------------------------------------------------------------

    def saw(self, key: str, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        sequences = [int(e["sequence"]) for e in events]
        self.seen[key].extend(sequences)
        with contextlib.suppress(Exception):
            self.progress.put_nowait(("seen", key, max(self.seen[key])))

    def cursor(self, key: str) -> int:
        return max(self.seen[key], default=0)

    async def follow_ws(self, key: str, session: str, token: str) -> None:
        base = self.config.url.replace("http://", "ws://")
        while True:
            t0 = now()
            url = f"{base}/ws/sessions/{session}/artifacts?after={self.cursor(key)}&token={token}"
            connected = False
            try:
                # A browser's Origin: Channels refuses a socket without one
                # unless MAC_ALLOWED_HOSTS is "*".
                async with websockets.connect(
                    url, open_timeout=10, max_size=None, origin=self.config.url
                ) as socket:
                    connected = True
                    self.record("ws-connect", t0, 101)
                    async for raw in socket:
                        message = json.loads(raw)
                        if message.get("type") == "artifact_created":
                            self.saw(key, message["data"]["events"])
                    reason = f"closed {socket.close_code}"
            except websockets.InvalidStatus as exc:
                try:
                    body = json.loads(exc.response.body or b"")
                    ok = isinstance(body, dict) and "detail" in body and "code" in body
                except ValueError:
                    ok = False
                self.record("ws-connect", t0, exc.response.status_code, json=ok)
                reason = f"refused {exc.response.status_code}"
            except (TimeoutError, OSError, websockets.WebSocketException) as exc:
                reason = type(exc).__name__
                if not connected:
                    self.record("ws-connect", t0, f"conn:{reason}")
            self.drops[key].append((now(), reason))
            await asyncio.sleep(0.5)  # a client's reconnection backoff

    async def follow_sse(self, key: str, session: str, token: str) -> None:
        async with httpx.AsyncClient(
            base_url=self.config.url, timeout=httpx.Timeout(30, read=None)
        ) as client:
            while True:
                t0 = now()
                cursor = self.cursor(key)
                headers = {"Last-Event-ID": str(cursor)} if cursor else {}
                params = {"token": token} if cursor else {"token": token, "after": 0}
                reason = "ended"
                try:
                    async with client.stream(
                        "GET",
                        f"/api/sessions/{session}/artifact-events/stream",
                        params=params,
                        headers=headers,
                    ) as response:
                        if response.status_code != 200:
                            await response.aread()
                            self.record_response("sse-connect", t0, response)
                            reason = f"refused {response.status_code}"
                        else:
                            self.record("sse-connect", t0, 200)
                            block: dict[str, str] = {}
                            async for line in response.aiter_lines():
                                if line == "":
                                    if "data" in block and "event" not in block:
                                        self.saw(key, [json.loads(block["data"])])
                                    block = {}
                                elif not line.startswith(":"):
                                    name, _, value = line.partition(":")
                                    block[name] = value.removeprefix(" ")
                except httpx.HTTPError as exc:
                    reason = type(exc).__name__
                self.drops[key].append((now(), reason))
                await asyncio.sleep(0.5)

    async def follow_poll(self, key: str, session: str, token: str) -> None:
        async with httpx.AsyncClient(base_url=self.config.url, timeout=40) as client:
            while True:
                t0 = now()
                try:
                    response = await client.get(
                        f"/api/sessions/{session}/artifact-events",
                        params={"after": self.cursor(key), "wait_seconds": 20, "limit": 200},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                except httpx.HTTPError as exc:
                    self.record("poll", t0, f"conn:{type(exc).__name__}")
                    self.drops[key].append((now(), type(exc).__name__))
                    await asyncio.sleep(0.5)
                    continue
                self.record_response("poll", t0, response)
                if response.status_code == 200:
                    self.saw(key, response.json()["events"])
                else:
                    self.drops[key].append((now(), f"status {response.status_code}"))
                    await asyncio.sleep(0.5)

    async def last_cursor(self, client: httpx.AsyncClient, session: str) -> int:
        deadline = time.monotonic() + DRAIN_DEADLINE
        while True:
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(
                    f"/api/sessions/{session}",
                    headers={"Authorization": f"Bearer {self.config.all_sessions[session]}"},
                )
                if response.status_code == 200 or time.monotonic() > deadline:
                    return int(response.json()["last_event_cursor"])
            await asyncio.sleep(0.5)

    # The whole --------------------------------------------------------------------

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=20)
        timeout = httpx.Timeout(120, connect=10)
        followers = {}
        for kind, session, token in self.config.followers:
            key = f"{kind}:{session}"
            follow = {"ws": self.follow_ws, "sse": self.follow_sse, "poll": self.follow_poll}[kind]
            followers[key] = (session, asyncio.create_task(follow(key, session, token)))
        async with httpx.AsyncClient(
            base_url=self.config.url, timeout=timeout, limits=limits
        ) as client:
            tasks = [
                asyncio.create_task(self.small_uploader(client))
                for _ in range(self.config.uploaders)
            ]
            tasks.append(asyncio.create_task(self.downloader(client)))
            if self.config.big_session is not None:
                tasks.append(asyncio.create_task(self.big_uploader(client)))
            await asyncio.gather(*tasks)
            self.progress.put(("idle", self.config.index, None))
            # Wait until every client stopped writing, then until each follower
            # reached the last event of its session, or the deadline.
            while not self.drain.is_set():
                await asyncio.sleep(0.1)
            targets = {}
            for session in {s for s, _ in followers.values()}:
                targets[session] = await self.last_cursor(client, session)
        deadline = time.monotonic() + DRAIN_DEADLINE
        while time.monotonic() < deadline and any(
            self.cursor(key) < targets[session] for key, (session, _) in followers.items()
        ):
            await asyncio.sleep(0.1)
        for _, task in followers.values():
            task.cancel()
        await asyncio.gather(*(t for _, t in followers.values()), return_exceptions=True)


def client_main(config: ClientConfig, progress: Any, stop_load: Any, drain: Any) -> None:
    load = Load(config, progress, stop_load, drain)
    started_cpu, started = time.process_time(), time.monotonic()
    asyncio.run(load.run())
    result = {
        "records": load.records,
        "uploaded": load.uploaded,
        "seen": load.seen,
        "drops": load.drops,
        "zips": load.zips,
        "cpu": time.process_time() - started_cpu,
        "wall": time.monotonic() - started,
    }
    Path(config.result_path).write_text(json.dumps(result))


# --- faults --------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    start: float
    end: float = 0.0
    recovery: float | None = None
    notes: list[str] = field(default_factory=list)
    # What the fault itself showed wrong: (column, detail).
    failures: list[tuple[str, str]] = field(default_factory=list)
    # A worker was killed with -9 during this phase.
    killed_worker: bool = False


class Soak:
    def __init__(self, args: argparse.Namespace, deployment: Deployment) -> None:
        self.args = args
        self.deployment = deployment
        self.http = httpx.Client(base_url=deployment.url, timeout=httpx.Timeout(120, connect=10))
        self.sessions: dict[str, str] = {}
        self.load_sessions: list[str] = []
        self.followers: dict[str, str] = {}  # key -> session id
        self.progress: Any = None
        self.progress_seen: dict[str, int] = {}
        self.main_records: list[dict[str, Any]] = []
        self.phases: list[Phase] = []

    # Helpers ---------------------------------------------------------------------------

    def create_session(self) -> str:
        response = self.http.post("/api/sessions", json={})
        response.raise_for_status()
        body = response.json()
        self.sessions[body["session_id"]] = body["token"]
        return str(body["session_id"])

    def auth(self, session: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.sessions[session]}"}

    def main_upload(self, session: str, name: str, data: bytes) -> dict[str, Any]:
        t0 = now()
        entry: dict[str, Any] = {
            "op": "upload",
            "t0": t0,
            "session": session,
            "name": name,
            "size": len(data),
            "big": False,
            "json": True,
            "code": "",
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        try:
            response = self.http.post(
                f"/api/uploads/{session}", files={"file": (name, data)}, headers=self.auth(session)
            )
        except httpx.HTTPError as exc:
            entry.update(status=f"conn:{type(exc).__name__}", t1=now())
        else:
            ok, code = error_fields(response)
            entry.update(status=response.status_code, json=ok, code=code, t1=now())
            if response.status_code == 201:
                entry["attachment_id"] = response.json()["attachment_id"]
        self.main_records.append(entry)
        return entry

    def drain_progress(self) -> None:
        while True:
            try:
                kind, key, value = self.progress.get_nowait()
            except queue.Empty:
                return
            if kind == "seen":
                self.progress_seen[key] = max(value, self.progress_seen.get(key, 0))
            elif kind == "idle":
                self.idle.add(key)

    def probe(self, session: str, name: str) -> int | None:
        """Upload a small file; the session's last event cursor after its 201, or None."""
        if self.main_upload(session, name, os.urandom(64))["status"] != 201:
            return None
        try:
            response = self.http.get(f"/api/sessions/{session}", headers=self.auth(session))
        except httpx.HTTPError:
            return None
        return int(response.json()["last_event_cursor"]) if response.status_code == 200 else None

    def wait_recovered(self, phase: Phase, since: float) -> None:
        """Probe every session until its upload is a 201 and every follower saw its event."""
        deadline = time.monotonic() + RECOVERY_DEADLINE
        targets: dict[str, int] = {}
        pending = list(self.load_sessions)
        attempt = 0
        while pending and time.monotonic() < deadline:
            attempt += 1
            name = f"probe-{phase.name}-{attempt}.txt"
            # All sessions at once, so the probe itself adds little to the time.
            with ThreadPoolExecutor(len(pending)) as pool:
                answers = pool.map(self.probe, pending, [name] * len(pending))
                cursors = dict(zip(pending, answers, strict=True))
            for session, cursor in cursors.items():
                if cursor is not None:
                    targets[session] = cursor
                    pending.remove(session)
            if pending:
                time.sleep(0.2)  # retrying a refused probe: a client's backoff
        while time.monotonic() < deadline:
            self.drain_progress()
            behind = [
                key
                for key, session in self.followers.items()
                if session in targets and self.progress_seen.get(key, 0) < targets[session]
            ]
            if not pending and not behind:
                phase.recovery = now() - since
                return
            time.sleep(0.05)
        behind_keys = sorted(
            key
            for key, session in self.followers.items()
            if self.progress_seen.get(key, 0) < targets.get(session, 1 << 62)
        )
        phase.notes.append(
            f"not recovered within {RECOVERY_DEADLINE:.0f} s: "
            f"{len(pending)} probes refused, followers behind: {', '.join(behind_keys) or 'none'}"
        )

    def start_worker(self, index: int) -> float:
        t0 = time.monotonic()
        self.deployment.run("worker", str(index), "start")
        return time.monotonic() - t0

    # Faults ----------------------------------------------------------------------------

    def fault_kill_upload(self, phase: Phase) -> None:
        victim = self.create_session()
        marker = f"session_{victim}"
        started = threading.Event()
        result: dict[str, Any] = {}

        def slow_big_upload() -> None:
            boundary = "soakvictim"
            head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="victim.bin"\r\n\r\n'
            ).encode()
            tail = f"\r\n--{boundary}--\r\n".encode()

            def body() -> Iterator[bytes]:
                yield head
                started.set()
                for _ in range(BIG_BYTES // CHUNK):
                    yield os.urandom(CHUNK)
                    time.sleep(0.04)  # ~25 MB/s: a slow client, so the kill lands mid-upload
                yield tail

            t0 = now()
            try:
                response = httpx.post(
                    f"{self.deployment.url}/api/uploads/{victim}",
                    content=body(),
                    headers={
                        **self.auth(victim),
                        "Content-Type": f"multipart/form-data; boundary={boundary}",
                        "Content-Length": str(len(head) + BIG_BYTES + len(tail)),
                    },
                    timeout=120,
                )
                ok, code = error_fields(response)
                result.update(status=response.status_code, json=ok, code=code)
            except httpx.HTTPError as exc:
                result.update(status=f"conn:{type(exc).__name__}", json=True, code="")
            self.main_records.append(
                {
                    "op": "upload",
                    "t0": t0,
                    "t1": now(),
                    "session": victim,
                    "name": "victim.bin",
                    "size": BIG_BYTES,
                    "big": True,
                    **result,
                }
            )

        thread = threading.Thread(target=slow_big_upload, daemon=True)
        thread.start()
        started.wait(10)
        # The worker receiving it is the one with a file of the victim session open.
        deadline = time.monotonic() + 20
        target: tuple[int, int, str] | None = None
        while target is None and time.monotonic() < deadline:
            for index in range(1, self.deployment.workers + 1):
                pid = self.deployment.worker_pid(index)
                for path in open_files(pid):
                    if (
                        marker in path
                        and os.path.exists(path)
                        and os.path.getsize(path) >= 8 * CHUNK
                    ):
                        target = (index, pid or 0, path)
            if target is None:
                time.sleep(0.05)
        if target is None:
            phase.notes.append("no worker was seen receiving the upload; nothing killed")
            thread.join(130)
            return
        index, pid, path = target
        size = os.path.getsize(path)
        phase.killed_worker = True
        os.kill(pid, signal.SIGKILL)
        phase.notes.append(f"worker {index} killed with {size >> 20} MiB of 100 received")
        thread.join(130)
        phase.notes.append(f"the killed upload got {result.get('status')}")
        # As systemd's Restart=always: a replacement starts.
        took = self.start_worker(index)
        phase.notes.append(f"replacement ready in {took:.1f} s")
        self.victims.append(victim)

    def fault_redis_restart(self, phase: Phase) -> None:
        self.deployment.run("redis", "stop")
        self.deployment.run("redis", "start")

    def fault_redis_stop(self, phase: Phase) -> None:
        self.deployment.run("redis", "stop")
        time.sleep(10)  # the outage itself
        self.deployment.run("redis", "start")

    def fault_pg_terminate(self, phase: Phase) -> None:
        database = self.deployment.state["DB"].replace("'", "''")
        killed = 0
        for round_ in range(3):
            if round_:
                time.sleep(1)  # between rounds, so each catches new transactions
            out = self.deployment.psql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
            )
            killed += int(out.strip() or 0)
        phase.notes.append(f"{killed} backends terminated")

    def fault_pg_restart(self, phase: Phase) -> None:
        if self.deployment.state.get("PG_MODE") != "own":
            phase.notes.append("skipped: needs its own cluster (--pg own)")
            return
        t0 = time.monotonic()
        self.deployment.run("postgres", "restart")
        phase.notes.append(f"restart took {time.monotonic() - t0:.1f} s")

    def fault_disk_full(self, phase: Phase) -> None:
        if not self.deployment.mounted:
            phase.notes.append("skipped: the warehouse is not a filesystem of its own")
            return
        ballast = self.deployment.warehouse.parent / "ballast"
        # Unbuffered: a buffered writer would raise ENOSPC again when closed.
        with open(ballast, "wb", buffering=0) as handle:
            # Claim every free block: fallocate, then fill what it left.
            stat = os.statvfs(ballast)
            with contextlib.suppress(OSError):
                os.posix_fallocate(
                    handle.fileno(), 0, max(stat.f_bavail * stat.f_frsize - CHUNK, 0)
                )
            handle.seek(0, os.SEEK_END)
            for block in (b"\0" * 65536, b"\0" * 4096):
                with contextlib.suppress(OSError):
                    while True:
                        handle.write(block)
        phase.notes.append(f"filled with {ballast.stat().st_size >> 20} MiB for 10 s")
        time.sleep(10)  # the outage itself
        ballast.unlink()

    def fault_sigterm(self, phase: Phase) -> None:
        index = 1 + len(self.phases) % self.deployment.workers
        pid = self.deployment.worker_pid(index)
        if pid is None:
            phase.notes.append(f"worker {index} not running")
            return
        grace = float(self.deployment.state.get("GRACE", 30))
        # An SSE client open on that very worker (straight to its port: nginx
        # would pick the worker), to see what a drain does to a stream.
        port = int(self.deployment.state["WORKER_BASE_PORT"]) + index - 1
        session = self.load_sessions[0]
        opened, ended = threading.Event(), threading.Event()
        stream_end: dict[str, Any] = {}

        def sse_client() -> None:
            try:
                with httpx.stream(
                    "GET",
                    f"http://127.0.0.1:{port}/api/sessions/{session}/artifact-events/stream",
                    params={"token": self.sessions[session], "after": 0},
                    timeout=httpx.Timeout(10, read=None),
                ) as response:
                    for line in response.iter_lines():
                        opened.set()
                        if line.startswith("retry:"):
                            stream_end["retry"] = line
                stream_end["how"] = "ended"
            except httpx.HTTPError as exc:
                stream_end["how"] = type(exc).__name__
            finally:
                stream_end["at"] = time.monotonic()
                ended.set()

        threading.Thread(target=sse_client, daemon=True).start()
        if not opened.wait(15):
            phase.notes.append(f"no SSE stream could be opened on worker {index}")
        # As a rolling restart does it: out of nginx first (a graceful reload), so
        # that nginx does not write a request into a connection the worker closes.
        self.deployment.reload_nginx("worker", str(index), "drain")
        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        deadline = t0 + grace + 5
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        took = time.monotonic() - t0
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)
            phase.notes.append(
                f"worker {index} still running {grace + 5:.0f} s after SIGTERM: killed"
            )
            phase.failures.append(("undrained", f"worker {index} did not exit after SIGTERM"))
        else:
            phase.notes.append(f"worker {index} exited {took:.1f} s after SIGTERM")
            if took >= grace - 1:
                # Uvicorn's --timeout-graceful-shutdown cut it: the app did not drain.
                phase.failures.append(
                    ("undrained", f"worker {index} exited only at Uvicorn's {grace:.0f} s backstop")
                )
        if ended.wait(1):
            phase.notes.append(
                f"its SSE stream {stream_end['how']} {stream_end['at'] - t0:.1f} s after SIGTERM, "
                + (
                    f"with {stream_end['retry']!r}"
                    if "retry" in stream_end
                    else "with no retry: hint"
                )
            )
        else:
            phase.notes.append("its SSE stream did not end")
        if "retry" not in stream_end:
            phase.failures.append(("undrained", "the SSE stream ended without a retry: hint"))
        (self.deployment.directory / "run" / f"worker-{index}.pid").unlink(missing_ok=True)
        took = self.start_worker(index)
        self.deployment.reload_nginx("worker", str(index), "undrain")
        phase.notes.append(f"replacement ready in {took:.1f} s")

    # The run ------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        args = self.args
        faults = args.faults
        clients = args.clients
        self.victims: list[str] = []
        self.victims_checked: list[str] = []
        self.harness_errors: list[str] = []
        self.idle: set[int] = set()
        session_count = max(4, 2 * clients)
        self.load_sessions = [self.create_session() for _ in range(session_count)]
        big_session = self.create_session()
        context = mp.get_context("spawn")
        self.progress = context.Queue()
        stop_load, drain = context.Event(), context.Event()
        follower_specs: list[list[tuple[str, str, str]]] = [[] for _ in range(clients)]
        n = 0
        for session in self.load_sessions:
            for kind in FOLLOWER_KINDS:
                follower_specs[n % clients].append((kind, session, self.sessions[session]))
                self.followers[f"{kind}:{session}"] = session
                n += 1
        workdir = Path(tempfile.mkdtemp(prefix="soak-results-"))
        configs = [
            ClientConfig(
                index=i,
                url=self.deployment.url,
                sessions={s: self.sessions[s] for s in self.load_sessions[i::clients]},
                big_session=(big_session, self.sessions[big_session]) if i == 0 else None,
                big_budget=args.big_uploads,
                followers=follower_specs[i],
                all_sessions=dict(self.sessions),
                uploaders=2,
                max_requests=args.max_requests // clients,
                result_path=str(workdir / f"client-{i}.json"),
                seed=i,
            )
            for i in range(clients)
        ]
        processes = [
            context.Process(target=client_main, args=(c, self.progress, stop_load, drain))
            for c in configs
        ]
        slot = args.duration / (len(faults) + 1)
        started = now()
        for process in processes:
            process.start()
        try:
            baseline = Phase("baseline", started)
            self.phases.append(baseline)
            self.wait_recovered(baseline, started)
            self.hold(started + slot)
            for name in faults:
                phase = Phase(name, now())
                self.phases[-1].end = phase.start
                self.phases.append(phase)
                print(f"[{phase.start - started:6.1f} s] {name}", file=sys.stderr, flush=True)
                getattr(self, "fault_" + name.replace("-", "_"))(phase)
                self.wait_recovered(phase, now())
                for victim in self.victims:
                    self.check_victim(phase, victim)
                self.victims_checked.extend(self.victims)
                self.victims.clear()
                self.hold(phase.start + slot)
            stop_load.set()
            deadline = time.monotonic() + 180  # a 100 MB upload in flight finishes
            while len(self.idle) < clients and time.monotonic() < deadline:
                self.drain_progress()
                time.sleep(0.1)
            drain.set()
            for process in processes:
                process.join(DRAIN_DEADLINE + 60)
            self.phases[-1].end = now()
        finally:
            stop_load.set()
            drain.set()
            for process in processes:
                if process.is_alive():
                    process.kill()
        results = []
        for config in configs:
            path = Path(config.result_path)
            if path.exists():
                results.append(json.loads(path.read_text()))
            else:
                self.harness_errors.append(f"client {config.index} crashed (see its traceback)")
        shutil.rmtree(workdir, ignore_errors=True)
        report = self.reconcile(results, big_session)
        report["harness_errors"] = self.harness_errors
        return report

    def hold(self, until: float) -> None:
        """Keep the load running until `until` (wall clock), reading progress."""
        while now() < until:
            self.drain_progress()
            time.sleep(0.1)

    def check_victim(self, phase: Phase, victim: str) -> None:
        """Once recovered, the killed upload's session holds nothing, and its zip serves nothing."""
        response = self.http.get(f"/api/sessions/{victim}/download", headers=self.auth(victim))
        if response.status_code != 200:
            phase.notes.append(f"the killed upload's session zip: {response.status_code}")
            return
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            served = [
                (info.filename, info.file_size)
                for info in archive.infolist()
                if "/attachments/" in info.filename and not info.filename.endswith("/" + MANIFEST)
            ]
        if served:
            phase.notes.append(
                "after recovery, the killed upload's session zip serves "
                + ", ".join(
                    f"{name.rsplit('/', 1)[-1]} ({size >> 20} MiB)" for name, size in served
                )
            )

    # Reconciliation -----------------------------------------------------------------

    def phase_at(self, t: float) -> Phase:
        for phase in reversed(self.phases):
            if t >= phase.start:
                return phase
        return self.phases[0]

    def phase_of(self, t: float) -> str:
        return self.phase_at(t).name

    def list_events(self, session: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        after = 0
        while True:
            response = self.http.get(
                f"/api/sessions/{session}/artifact-events",
                params={"after": after, "limit": 200},
                headers=self.auth(session),
            )
            response.raise_for_status()
            body = response.json()
            events.extend(body["events"])
            after = body["next_cursor"]
            if not body["has_more"]:
                return events

    def reconcile(self, results: list[dict[str, Any]], big_session: str) -> dict[str, Any]:
        rows_by_phase: dict[str, Counter[str]] = defaultdict(Counter)
        drop_reasons: dict[str, Counter[str]] = defaultdict(Counter)
        issues: dict[str, list[str]] = defaultdict(list)

        def count(phase: str, column: str, detail: str) -> None:
            rows_by_phase[phase][column] += 1
            # The first few of each kind in each phase.
            if sum(d.startswith(phase + ":") for d in issues[column]) < 5:
                issues[column].append(f"{phase}: {detail}")

        records = [r for result in results for r in result["records"]] + self.main_records
        uploads = [r for r in records if r["op"] == "upload"]
        by_name = {(u["session"], u["name"]): u for u in uploads}

        for phase in self.phases:
            for column, detail in phase.failures:
                count(phase.name, column, detail)

        # Requests and their answers, in the phase where the answer came.
        for record in records:
            phase = self.phase_of(record["t1"])
            row = rows_by_phase[phase]
            row["requests"] += 1
            status = record["status"]
            if isinstance(status, int) and status >= 400:
                row[f"status {status}{'' if record['json'] else ' (not JSON)'}"] += 1
                if status >= 500:
                    if not record["json"]:
                        count(phase, "non-JSON 5xx", f"{record['op']} answered {status}, not JSON")
                    elif status not in EXPLAINED_5XX[phase]:
                        count(
                            phase,
                            "unexplained 5xx",
                            f"{record['op']} answered {status} {record['code']}",
                        )
            elif isinstance(status, str):
                row[status] += 1
            if record.get("corrupt"):
                count(phase, "corrupt", f"{record['op']} body did not match its sha256")

        # Every session: rows (the API), the manifest and the files (the disk), the events.
        all_events: dict[str, list[dict[str, Any]]] = {}
        sessions = [*self.load_sessions, big_session, *self.victims_checked]
        for session in sessions:
            listed = self.http.get(f"/api/uploads/{session}", headers=self.auth(session))
            listed.raise_for_status()
            rows = {a["attachment_id"]: a for a in listed.json()["attachments"]}
            directory = self.deployment.warehouse / f"session_{session}"
            attachments_dir = directory / "code_workspace" / "attachments"
            manifest: dict[str, dict[str, Any]] = {}
            with contextlib.suppress(FileNotFoundError):
                document = json.loads((attachments_dir / MANIFEST).read_text())
                manifest = {e["attachment_id"]: e for e in document.get("attachments", [])}
            files = (
                {
                    str(p.relative_to(directory)): p
                    for p in attachments_dir.rglob("*")
                    # A temporary manifest is internal (never listed, zipped or served):
                    # a worker writes the next one of a large manifest ahead.
                    if p.is_file()
                    and p.name not in (MANIFEST, MANIFEST_LOCK)
                    and not (p.name.startswith(".manifest-") and p.name.endswith(".tmp"))
                }
                if attachments_dir.exists()
                else {}
            )
            events = self.list_events(session)
            all_events[session] = events
            created = Counter(e["attachment_id"] for e in events if e["change_type"] == "created")

            for upload in uploads:
                if upload["session"] != session or upload["status"] != 201:
                    continue
                phase = self.phase_of(upload["t1"])
                attachment = upload["attachment_id"]
                entry = manifest.get(attachment)
                missing = []
                if attachment not in rows:
                    missing.append("not listed")
                if entry is None:
                    missing.append("not in the manifest")
                else:
                    path = directory / entry["path"]
                    if not path.is_file():
                        missing.append("no file")
                    elif upload.get("sha256") and sha256_file(path) != upload["sha256"]:
                        missing.append("file differs from what was sent")
                if missing:
                    count(
                        phase, "lost", f"upload {attachment} answered 201 but {', '.join(missing)}"
                    )
                if created[attachment] == 0:
                    count(phase, "lost", f"upload {attachment} has no created event")

            names = Counter(a["name"] for a in rows.values())
            for attachment, row in rows.items():
                upload = by_name.get((session, row["name"]))
                when = upload["t1"] if upload else parse_iso(row["created_at"])
                at = self.phase_at(when)
                phase = at.name
                if names[row["name"]] > 1:
                    count(phase, "duplicated", f"{row['name']} recorded {names[row['name']]} times")
                if created[attachment] > 1:
                    count(
                        phase,
                        "duplicated",
                        f"{attachment} has {created[attachment]} created events",
                    )
                if upload and upload["status"] == 502 and at.killed_worker:
                    # nginx's answer for a request inside the worker killed with
                    # -9, which had committed the upload before it died: the
                    # outcome was lost, not refused, and the record is whole
                    # (the checks below). A retry would record it again.
                    at.notes.append(
                        f"{attachment} committed before its worker was killed; "
                        "its client got nginx's 502"
                    )
                elif upload and isinstance(upload["status"], int) and upload["status"] != 201:
                    count(
                        phase,
                        "phantom",
                        f"{attachment} recorded though its upload was answered {upload['status']}",
                    )
                entry = manifest.get(attachment)
                if entry is None:
                    count(phase, "leftover", f"row {attachment} not in the manifest")
                elif not (directory / entry["path"]).is_file():
                    count(phase, "leftover", f"row {attachment} without its file")
            for attachment, entry in manifest.items():
                if attachment not in rows:
                    count(
                        self.phase_of(parse_iso(entry["created_at"])),
                        "leftover",
                        f"manifest entry {attachment} without a row",
                    )
            named = {e["path"] for e in manifest.values()}
            for relative, path in files.items():
                if relative not in named:
                    count(
                        self.phase_of(path.stat().st_mtime),
                        "leftover",
                        f"file {relative} ({path.stat().st_size} bytes) not in the manifest",
                    )
            for event in events:
                if event["change_type"] == "created" and event["attachment_id"] not in rows:
                    count(
                        self.phase_of(event["timestamp"]),
                        "phantom",
                        f"event {event['sequence']} of {session} for {event['attachment_id']}, "
                        "which has no row",
                    )
            served_leftovers: set[str] = set()  # each file once, however many zips served it
            for zipped in (
                z for result in results for z in result["zips"] if z["session"] == session
            ):
                for name in zipped["entries"]:
                    if name not in named and name not in served_leftovers:
                        served_leftovers.add(name)
                        count(
                            self.phase_of(zipped["t0"]),
                            "leftover",
                            f"the zip served {name}, not in the manifest",
                        )

        # Followers: every event of their session, once, in order.
        seen: dict[str, list[int]] = {}
        drops: dict[str, list[tuple[float, str]]] = {}
        for result in results:
            seen.update(result["seen"])
            drops.update(result["drops"])
        for key, session in self.followers.items():
            events = all_events[session]
            when = {e["sequence"]: e["timestamp"] for e in events}
            got = seen.get(key, [])
            counts = Counter(got)
            for sequence, times in counts.items():
                if times > 1:
                    count(
                        self.phase_of(when.get(sequence, 0)),
                        "events twice",
                        f"{key} got event {sequence} {times} times",
                    )
            for sequence in sorted(set(when) - set(counts)):
                count(
                    self.phase_of(when[sequence]),
                    "missed events",
                    f"{key} never got event {sequence}",
                )
            highest = 0
            for sequence in got:
                if sequence < highest and counts[sequence] == 1:
                    count(
                        self.phase_of(when.get(sequence, 0)),
                        "out of order",
                        f"{key} got event {sequence} after {highest}",
                    )
                highest = max(highest, sequence)
            for t, reason in drops.get(key, []):
                rows_by_phase[self.phase_of(t)]["drops"] += 1
                drop_reasons[self.phase_of(t)][f"{key.split(':')[0]} {reason}"] += 1

        for phase in self.phases:
            if drop_reasons[phase.name]:
                phase.notes.append(
                    "follower drops: "
                    + ", ".join(
                        f"{reason} x{n}" for reason, n in drop_reasons[phase.name].most_common()
                    )
                )
        busy = [r["cpu"] / r["wall"] for r in results if r["wall"]]
        return {
            "phases": [
                {
                    "fault": p.name,
                    "start": p.start,
                    "end": p.end,
                    "recovery_seconds": p.recovery,
                    "notes": p.notes,
                    **rows_by_phase[p.name],
                }
                for p in self.phases
            ],
            "issues": issues,
            "client_cpu": busy,
            "clients": len(results),
            "uploads_201": sum(1 for u in uploads if u["status"] == 201),
            "big_uploads_201": sum(1 for u in uploads if u["status"] == 201 and u.get("big")),
        }


def free_ports(count: int) -> int:
    """The first of `count` consecutive ports free on loopback right now."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count > 65535:
            continue
        sockets = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free ports")


def open_files(pid: int | None) -> list[str]:
    if pid is None:
        return []
    paths = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                paths.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return paths


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- the report ---------------------------------------------------------------------------

# What the reconciliation counts; any of them is a failure.
COLUMNS = (
    "lost",  # answered 201, but not listed, not in the manifest, not on disk or without its event
    "missed events",  # a follower never got an event of its session
    "duplicated",  # one upload recorded twice, or with two created events
    "events twice",  # a follower got an event more than once
    "out of order",
    "phantom",  # recorded, though the upload was answered with an error
    "leftover",  # a row, manifest entry or file without the others; a zip serving such a file
    "corrupt",  # a download or zip whose bytes are not what was uploaded
    "non-JSON 5xx",
    "unexplained 5xx",  # JSON, but not a status the fault in progress explains
    "undrained",  # SIGTERM: the worker was not done before Uvicorn's backstop, no retry: hint
)
# The table's columns: (title, the counters it adds up as a/b).
TABLE = (
    ("lost u/e", ("lost", "missed events")),
    ("dup u/e", ("duplicated", "events twice")),
    ("order", ("out of order",)),
    ("phantom", ("phantom",)),
    ("leftover", ("leftover",)),
    ("corrupt", ("corrupt",)),
    ("5xx !json", ("non-JSON 5xx",)),
    ("5xx unexp", ("unexplained 5xx",)),
    ("drain", ("undrained",)),
)


def render(report: dict[str, Any]) -> str:
    lines = []
    header = (
        f"{'fault':<14} {'requests':>8}  {'errors by status':<40} "
        + " ".join(f"{title:>9}" for title, _ in TABLE)
        + f" {'drops':>5} {'recovery':>9}"
    )
    lines.append(header)
    lines.append("-" * len(header))
    for phase in report["phases"]:
        errors = (
            ", ".join(
                f"{k.removeprefix('status ')}: {v}"
                for k, v in sorted(phase.items())
                if isinstance(v, int) and (k.startswith("status ") or k.startswith("conn:"))
            )
            or "-"
        )
        recovery = phase["recovery_seconds"]
        lines.append(
            f"{phase['fault']:<14} {phase.get('requests', 0):>8}  {errors[:40]:<40} "
            + " ".join(
                f"{'/'.join(str(phase.get(c, 0)) for c in counters):>9}" for _, counters in TABLE
            )
            + f" {phase.get('drops', 0):>5} "
            + (f"{recovery:>7.1f} s" if recovery is not None else f"{'> 60 s':>9}")
        )
        if len(errors) > 40:
            lines.append(f"{'':<25}{errors}")
        for note in phase["notes"]:
            lines.append(f"{'':<16}{note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, help="seconds of load (default 360; --short 60)")
    parser.add_argument(
        "--workers", type=int, default=None, help="Uvicorn workers (default 3; --short 2)"
    )
    parser.add_argument(
        "--clients", type=int, default=None, help="client processes (default 3; --short 2)"
    )
    parser.add_argument("--faults", help=f"comma list, in order, of: {', '.join(FAULTS)}")
    parser.add_argument("--short", action="store_true", help=f"~90 s: {', '.join(SHORT_FAULTS)}")
    parser.add_argument("--max-requests", type=int, default=100_000, help="request budget")
    parser.add_argument(
        "--big-uploads",
        type=int,
        default=None,
        help="100 MB uploads besides the fault's own (default 20; --short 3)",
    )
    parser.add_argument(
        "--pg",
        default="own",
        help="'own': a PostgreSQL cluster of its own (default); or a server URL, "
        "e.g. postgres://root@127.0.0.1:5432, to create its database there",
    )
    parser.add_argument("--database", default="soak", help="its database's name (default soak)")
    parser.add_argument(
        "--port", type=int, default=0, help="nginx's port, the workers' follow (default: free ones)"
    )
    parser.add_argument("--redis-port", type=int, default=0, help="default: a free one")
    parser.add_argument("--pg-port", type=int, default=0, help="its own cluster's; default: free")
    parser.add_argument("--json", help="also write the report here")
    parser.add_argument(
        "--logs",
        default=str(ROOT / "test-output" / "soak-logs"),
        help="where the deployment's logs are kept (default test-output/soak-logs)",
    )
    args = parser.parse_args(argv)
    short = args.short
    args.duration = args.duration or (60 if short else 360)
    args.workers = args.workers or (2 if short else 3)
    args.clients = args.clients or (2 if short else 3)
    args.big_uploads = args.big_uploads if args.big_uploads is not None else (3 if short else 20)
    args.faults = args.faults.split(",") if args.faults else (SHORT_FAULTS if short else FAULTS)
    unknown = set(args.faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")

    args.port = args.port or free_ports(args.workers + 1)
    args.redis_port = args.redis_port or free_ports(1)
    args.pg_port = args.pg_port or free_ports(1)
    directory = Path(tempfile.mkdtemp(prefix="soak-deploy-"))
    directory.rmdir()  # run-local.sh makes it, and refuses one that holds a deployment
    env = {
        "MAC_LOCAL_WORKERS": str(args.workers),
        "MAC_LOCAL_PORT": str(args.port),
        "MAC_LOCAL_REDIS_PORT": str(args.redis_port),
        "MAC_LOCAL_PG": args.pg,
        "MAC_LOCAL_PG_PORT": str(args.pg_port),
        "MAC_LOCAL_DB": args.database,
        "MAC_LOCAL_GRACE": "30",
        "MAC_MAX_UPLOAD_BYTES": str(2 * BIG_BYTES),
    }
    if "disk-full" in args.faults:
        if os.geteuid() != 0:
            print(
                "disk-full needs root (a loop-mounted warehouse); it will be skipped",
                file=sys.stderr,
            )
        else:
            env["MAC_LOCAL_WAREHOUSE_SIZE"] = f"{(args.big_uploads + 12) * 110 + 1024}M"
    deployment = Deployment(directory, env)
    print(f"starting {args.workers} workers behind nginx ...", file=sys.stderr, flush=True)
    try:
        deployment.start()
        soak = Soak(args, deployment)
        report = soak.run()
    finally:
        logs = Path(args.logs)
        shutil.rmtree(logs, ignore_errors=True)
        with contextlib.suppress(OSError):
            shutil.copytree(directory / "log", logs)
        deployment.stop()
    report["arguments"] = {
        "duration": args.duration,
        "workers": args.workers,
        "clients": args.clients,
        "faults": args.faults,
        "big_uploads": args.big_uploads,
    }
    print()
    print(render(report))
    print()
    print(
        f"{report['uploads_201']} uploads answered 201 ({report['big_uploads_201']} of 100 MB); "
        "recovery: from the end of the injection "
        "until every session's probe upload was answered 201 and every follower saw its event."
    )
    busiest = max(report["client_cpu"], default=0)
    print(
        f"{report['clients']} client processes; the busiest used {busiest:.0%} of a core"
        + (" -- the client was a bottleneck" if busiest > 0.85 else " (not the bottleneck)")
    )
    if report["issues"]:
        print("\nFindings (the first of each kind):")
        for column, details in report["issues"].items():
            print(f"  {column}:")
            for detail in details:
                print(f"    {detail}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if report["harness_errors"]:
        print("\nThe harness itself failed: " + "; ".join(report["harness_errors"]))
        return 2
    failed = any(phase.get(column, 0) for phase in report["phases"] for column in COLUMNS)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
