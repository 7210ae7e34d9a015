"""
Many idle live clients on one server worker: long-polls, event streams
(SSE) and WebSocket subscribers.

    python bench/live_clients.py                         # 10,000 of each kind, then 3,000 together
    python bench/live_clients.py --clients 2000 --mixed 600 --wait 20
    python bench/live_clients.py --server granian --kinds ws

One worker (Uvicorn by default) is started here on a scratch warehouse and,
without DATABASE_URL, a scratch SQLite file, with the `open` access policy
(the figures are about holding clients, not about tokens). The clients are
raw sockets spread over several processes (`--client-processes`), so that
the client side stays cheaper than the server it measures; each client
process watches its own event loop and the report says when it could not
keep up (its readings are then late by that much).

For each kind, N clients connect, the server is left idle for a while, and
the bench prints:

- long-polls (`wait_seconds=W`): how many returned 200, empty and
  `timed_out`, and their lateness after the deadline (p50 / p99 / max; the
  issue's target is every one within 1 s);
- the server's RSS and threads before and with the clients, and its CPU
  while they idle;
- event streams and WebSockets: one upload, then the delay from the upload's
  request to its event reaching each subscriber (p50 / p99 / max; target
  p99 under 1 s at 10,000 WebSocket subscribers).

A database given by DATABASE_URL is written to: use a scratch one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import resource
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from _common import free_port

ROOT = Path(__file__).resolve().parent.parent
# Client loop lag above this makes a client process's timings suspect.
KEEP_UP_SECONDS = 0.1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def spread(values: list[float]) -> str:
    if not values:
        return "none"
    return " / ".join(
        f"{v * 1000:.0f} ms" for v in (percentile(values, 50), percentile(values, 99), max(values))
    )



def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Process:
    """Resource readings of a process from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.ticks = os.sysconf("SC_CLK_TCK")

    def _status(self, field: str) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            line = next(line for line in status if line.startswith(field + ":"))
        return int(line.split()[1])

    @property
    def rss_mib(self) -> float:
        return self._status("VmRSS") / 1024

    @property
    def threads(self) -> int:
        return self._status("Threads")

    @property
    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.ticks


SERVERS = {
    "uvicorn": [
        sys.executable, "-m", "uvicorn", "macproject.asgi:application", "--host", "127.0.0.1",
        "--port", "{port}", "--no-access-log", "--backlog", "16384", "--log-level", "warning",
    ],
    "granian": [
        sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
        "--port", "{port}", "--backlog", "16384", "--log-level", "warning",
        "macproject.asgi:application",
    ],
}  # fmt: skip


@contextmanager
def run_server(kind: str, env: dict[str, str]) -> Iterator[tuple[str, Process]]:
    port = free_port()
    command = [part.format(port=port) for part in SERVERS[kind]]
    log = open(Path(env["MAC_WAREHOUSE_DIR"]).parent / f"{kind}-{port}.log", "wb")
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/api/sessions/probe", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.1)
        pid = process.pid
        if kind == "granian":
            # The worker is the main process's child.
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            pid = int(children[0])
        yield url, Process(pid)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        log.close()


# Clients: one process holds a share of the connections ---------------------


class Lag:
    """The worst delay of this process's event loop, so a late reading can be told apart."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, loop.time() - before - 0.01)


async def open_connection(host: str, port: int) -> tuple[asyncio.StreamReader, Any]:
    for attempt in range(50):
        try:
            return await asyncio.open_connection(host, port, limit=1 << 20)
        except OSError:
            # The listen backlog overflowed during the burst: try again.
            await asyncio.sleep(0.05 * (attempt + 1))
    return await asyncio.open_connection(host, port)


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def long_poll(host: str, port: int, path: str, wait: float) -> tuple[bool, float]:
    """One long-poll: whether it timed out empty as it should, and its lateness."""
    reader, writer = await open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        sent = time.monotonic()
        status, headers = await read_head(reader)
        body = json.loads(await reader.readexactly(int(headers["content-length"])))
        late = time.monotonic() - sent - wait
        ok = status == 200 and body.get("timed_out") is True and body.get("events") == []
        return ok, late
    finally:
        writer.close()


class Subscriber:
    """An SSE stream or a WebSocket that records when its first event arrives."""

    def __init__(self) -> None:
        self.event_at: float | None = None
        self.ready = False

    async def sse(self, host: str, port: int, path: str, stop: asyncio.Event) -> None:
        reader, writer = await open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            status, _ = await read_head(reader)
            assert status == 200, status
            buffered = b""
            while not stop.is_set():
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buffered = (buffered + chunk)[-4096:]
                if not self.ready and b": artifact events of" in buffered:
                    self.ready = True
                if self.event_at is None and b"data: " in buffered:
                    self.event_at = time.monotonic()
        finally:
            writer.close()

    async def websocket(self, host: str, port: int, path: str, stop: asyncio.Event) -> None:
        reader, writer = await open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            await writer.drain()
            status, _ = await read_head(reader)
            assert status == 101, status
            while not stop.is_set():
                opcode, payload = await read_frame(reader)
                if opcode == 1:
                    kind = json.loads(payload)["type"]
                    if kind == "connection":
                        self.ready = True
                    elif kind == "artifact_created" and self.event_at is None:
                        self.event_at = time.monotonic()
                elif opcode == 9:
                    writer.write(frame(0xA, payload))
                elif opcode == 8:
                    return
        finally:
            writer.close()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


def frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (payloads under 126 bytes: pongs)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def client_process(
    kind: str, url: str, paths: list[str], wait: float, ready: Any, go: Any, results: Any
) -> None:
    """Hold `paths` open as clients of `kind`; report readiness, then results."""
    raise_fd_limit()
    host, port = url.removeprefix("http://").split(":")

    async def main() -> dict[str, Any]:
        lag = Lag()
        stop = asyncio.Event()
        if kind == "longpoll":
            # Sent together when the parent says go, so their deadlines coincide.
            await asyncio.to_thread(go.wait)
            lag.worst = 0.0
            outcomes = await asyncio.gather(
                *(long_poll(host, int(port), path, wait) for path in paths),
                return_exceptions=True,
            )
            done = [o for o in outcomes if isinstance(o, tuple)]
            return {
                "ok": sum(ok for ok, _ in done),
                "errors": len(outcomes) - len(done),
                "error_sample": next((repr(o) for o in outcomes if not isinstance(o, tuple)), ""),
                "late": [late for _, late in done],
                "lag": lag.worst,
            }
        subscribers = [Subscriber() for _ in paths]
        method = "sse" if kind == "sse" else "websocket"
        tasks = [
            asyncio.create_task(getattr(s, method)(host, int(port), path, stop))
            for s, path in zip(subscribers, paths, strict=True)
        ]
        while sum(s.ready for s in subscribers) < len(subscribers):
            failed = [t for t in tasks if t.done()]
            if failed:
                break
            await asyncio.sleep(0.05)
        ready.put(sum(s.ready for s in subscribers))
        lag.worst = 0.0
        await asyncio.to_thread(go.wait)
        # The parent uploads one event, then waits for us to report.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(s.event_at is None for s in subscribers):
            await asyncio.sleep(0.02)
        stop.set()
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [
            o for o in outcomes if o is not None and not isinstance(o, asyncio.CancelledError)
        ]
        return {
            "arrivals": [s.event_at for s in subscribers if s.event_at is not None],
            "errors": len(errors),
            "error_sample": repr(errors[0]) if errors else "",
            "lag": lag.worst,
        }

    results.put({"kind": kind, **asyncio.run(main())})


# Scenarios ----------------------------------------------------------------


def create_sessions(url: str, count: int, prefix: str) -> list[str]:
    ids = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(count):
            response = client.post("/api/sessions", json={"session_id": f"{prefix}-{i}"})
            assert response.status_code == 201, response.text
            ids.append(response.json()["session_id"])
    return ids


def paths_for(kind: str, sessions: list[str], count: int, wait: float) -> list[str]:
    """Long-polls wait on sessions of their own, so the fan-out event does not end them."""
    half = max(1, len(sessions) // 2)
    sessions = sessions[half:] if kind == "longpoll" else sessions[:half]
    template = {
        "longpoll": "/api/sessions/{}/artifact-events?after=0&wait_seconds=" + f"{wait:g}",
        "sse": "/api/sessions/{}/artifact-events/stream",
        "ws": "/ws/sessions/{}/artifacts",
    }[kind]
    return [template.format(sessions[i % len(sessions)]) for i in range(count)]


def measure(
    url: str,
    server: Process,
    plan: dict[str, int],
    sessions: list[str],
    wait: float,
    processes: int,
    idle_seconds: float,
) -> dict[str, Any]:
    """Run `plan` ({kind: count}) at once on the server and report."""
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    workers = []
    for kind, count in plan.items():
        paths = paths_for(kind, sessions, count, wait)
        share = max(1, processes * count // max(1, sum(plan.values())))
        for part in range(share):
            chunk = paths[part::share]
            if chunk:
                workers.append((kind, ctx.Process(
                    target=client_process, args=(kind, url, chunk, wait, ready, go, results)
                )))  # fmt: skip
    rss_before, threads_before = server.rss_mib, server.threads
    cpu_at_start = server.cpu_seconds
    started = time.monotonic()
    for _, worker in workers:
        worker.start()
    streaming = [w for k, w in workers if k != "longpoll"]
    connected = sum(ready.get(timeout=600) for _ in streaming)
    connect_seconds = time.monotonic() - started
    print(f"  connected in {connect_seconds:.1f} s", flush=True)
    polls = [w for k, w in workers if k == "longpoll"]
    go.set()
    report: dict[str, Any] = {"server": {}}
    if polls:
        # Idle after the burst of first reads, before the deadline.
        time.sleep(min(wait * 0.4, 8))
    else:
        time.sleep(1)
    cpu_before, window = server.cpu_seconds, time.monotonic()
    time.sleep(idle_seconds if not polls else min(wait * 0.4, idle_seconds))
    idle_cpu = (server.cpu_seconds - cpu_before) / (time.monotonic() - window)
    report["server"] = {
        "rss_mib before / with clients": f"{rss_before:.0f} / {server.rss_mib:.0f}",
        "threads before / with clients": f"{threads_before} / {server.threads}",
        "idle cpu": f"{idle_cpu * 100:.1f}% of one core",
    }
    uploaded = None
    if streaming:
        with httpx.Client(base_url=url, timeout=60) as client:
            uploaded = time.monotonic()
            response = client.post(
                f"/api/uploads/{sessions[0]}", files={"file": ("fan-out.txt", b"one event")}
            )
            assert response.status_code == 201, response.text
            report["server"]["the upload's own response time"] = (
                f"{(time.monotonic() - uploaded) * 1000:.0f} ms"
            )
    collected = [results.get(timeout=wait + 600) for _ in workers]
    report["server"]["cpu seconds for the whole run"] = f"{server.cpu_seconds - cpu_at_start:.1f}"
    for _, worker in workers:
        worker.join(30)
    lags = [c["lag"] for c in collected]
    report["clients"] = {
        "processes": len(workers),
        "connected (streams and sockets)": f"{connected} in {connect_seconds:.1f} s",
        "worst client loop lag": f"{max(lags) * 1000:.0f} ms"
        + (
            "  <- the clients could not keep up; their timings are late by up to this"
            if max(lags) > KEEP_UP_SECONDS
            else ""
        ),
        "errors": sum(c["errors"] for c in collected),
        "error sample": next((c["error_sample"] for c in collected if c["error_sample"]), ""),
    }
    if polls:
        poll_results = [c for c in collected if c["kind"] == "longpoll"]
        late = [x for c in poll_results for x in c["late"]]
        report["long-polls"] = {
            "answered empty and timed_out": f"{sum(c['ok'] for c in poll_results)} of "
            f"{plan['longpoll']}",
            "after the deadline p50/p99/max": spread(late),
            "within 1 s of the deadline": sum(x <= 1.0 for x in late),
        }
    if streaming and uploaded is not None:
        sessions_with_event = sessions[0]
        for kind in ("sse", "ws"):
            if kind not in plan:
                continue
            arrivals = [t - uploaded for c in collected if c["kind"] == kind for t in c["arrivals"]]
            expected = sum(
                1 for p in paths_for(kind, sessions, plan[kind], wait) if sessions_with_event in p
            )
            report[f"fan-out of one event ({kind})"] = {
                "subscribers of that session": expected,
                "reached": len(arrivals),
                "after the upload was sent p50/p99/max": spread(arrivals),
            }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000, help="of each kind (10,000)")
    parser.add_argument("--mixed", type=int, default=3_000, help="of each kind together (3,000)")
    parser.add_argument("--wait", type=float, default=20, help="long-polls' wait_seconds (20)")
    parser.add_argument(
        "--sessions", type=int, default=1, help="sessions the clients spread over (1)"
    )
    parser.add_argument("--kinds", default="longpoll,sse,ws", help="longpoll,sse,ws")
    parser.add_argument("--server", choices=list(SERVERS), default="uvicorn")
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--idle-seconds", type=float, default=5, help="CPU window (5)")
    args = parser.parse_args()

    print(f"open files: this process {raise_fd_limit()}")
    scratch = Path(tempfile.mkdtemp(prefix="live-clients-bench-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "macproject.settings",
        "MAC_WAREHOUSE_DIR": str(scratch / "WareHouse"),
        "MAC_ACCESS_POLICY": "open",
        "MAC_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        # A throwaway installation gets a key of its own (the placeholder fails the checks).
        "MAC_SECRET_KEY": os.environ.get("MAC_SECRET_KEY") or secrets.token_urlsafe(50),
    }
    env.setdefault("DATABASE_URL", f"sqlite:///{scratch / 'bench.sqlite3'}")
    print(f"server: {args.server}, one worker; database: {env['DATABASE_URL'].split('@')[-1]}")
    print(f"channel layer: {'redis ' + env['REDIS_URL'] if env.get('REDIS_URL') else 'in-memory'}")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    kinds = [k for k in args.kinds.split(",") if k]
    runs: list[tuple[str, dict[str, int]]] = [
        (f"{args.clients:,} {kind}", {kind: args.clients}) for kind in kinds
    ]
    if args.mixed:
        runs.append((f"{args.mixed:,} of each together", {k: args.mixed for k in kinds}))
    run_id = int(time.time())
    try:
        for n, (title, plan) in enumerate(runs):
            # A fresh worker per run, so each starts from the same state.
            with run_server(args.server, env) as (url, server):
                # Half for the streams and sockets, half for the long-polls.
                sessions = create_sessions(url, 2 * args.sessions, f"bench-{run_id}-{n}")
                print(f"\n{title} (wait_seconds={args.wait:g}, {args.sessions} session(s))")
                print(f"  server pid {server.pid}", flush=True)
                report = measure(
                    url, server, plan, sessions, args.wait, args.client_processes,
                    args.idle_seconds,
                )  # fmt: skip
                for section, values in report.items():
                    print(f"  {section}:")
                    for key, value in values.items():
                        print(f"    {key}: {value}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
