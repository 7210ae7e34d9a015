"""
Many idle live clients on one server worker: long-polls, event streams
(SSE) and WebSocket subscribers.

    python bench/live_clients.py                         # 10,000 of each kind, then 3,000 together
    python bench/live_clients.py --clients 2000 --mixed 600 --wait 20
    python bench/live_clients.py --server granian --kinds ws

One worker (Uvicorn by default) is started here on a scratch warehouse and,
without DATABASE_URL, a scratch SQLite file, with the `open` access policy
(the figures are about holding clients, not about tokens). The clients are
raw sockets on one epoll loop per process, spread over several processes
(`--client-processes`) and connecting at a paced rate (`--connect-rate`),
so that the client side stays cheaper than the server it measures. They
time arrivals by the kernel's receive timestamps, and the report says how
far behind the clients fell in reading them (and, where the kernel gave no
timestamps, that their readings are late by that much).

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
import base64
import contextlib
import json
import multiprocessing
import os
import resource
import secrets
import select
import shutil
import signal
import socket
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
# Connections of one client process that may be opening at once.
IN_FLIGHT = 256


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
#
# Each client process runs one epoll loop over non-blocking sockets: no
# tasks, streams or parsers per connection, so a response costs the client
# a recv and a substring search. Arrival times are the kernel's receive
# timestamps (SO_TIMESTAMPNS), so a client process that falls behind reads
# a response late but still records when it arrived; how far behind it fell
# is reported (the gap between that timestamp and the read), and where the
# kernel gives no timestamp the reading is the read's own time.

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
TIMESTAMP_SPACE = socket.CMSG_SPACE(16)


class Connection:
    """One client's socket and what it has seen."""

    __slots__ = ("sock", "path", "buffer", "head_done", "status", "length", "sent_at",
                 "done_at", "ready", "event_at", "failed", "attempts", "connected")  # fmt: skip

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock: socket.socket | None = None
        self.buffer = bytearray()
        self.head_done = False
        self.status = 0
        self.length = 0
        self.sent_at = 0.0
        self.done_at: float | None = None
        self.ready = False
        self.event_at: float | None = None
        self.failed = ""
        self.attempts = 0
        self.connected = False


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (payloads under 126 bytes: pongs, close)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def ws_frames(buffer: bytearray) -> Iterator[tuple[int, bytes]]:
    """Complete server frames at the start of `buffer`, removed from it as they are read."""
    while len(buffer) >= 2:
        length, start = buffer[1] & 0x7F, 2
        if length == 126:
            if len(buffer) < 4:
                return
            (length,), start = struct.unpack("!H", buffer[2:4]), 4
        elif length == 127:
            if len(buffer) < 10:
                return
            (length,), start = struct.unpack("!Q", buffer[2:10]), 10
        if len(buffer) < start + length:
            return
        opcode, payload = buffer[0] & 0x0F, bytes(buffer[start : start + length])
        del buffer[: start + length]
        yield opcode, payload


class Clients:
    """The clients of one process on one epoll loop (see above)."""

    def __init__(self, kind: str, host: str, port: int, paths: list[str]) -> None:
        self.kind = kind
        self.address = (host, port)
        self.host = host
        self.connections = [Connection(path) for path in paths]
        self.by_fd: dict[int, Connection] = {}
        self.epoll = select.epoll()
        # The worst delay between a response's arrival and this process reading it.
        self.worst_lag = 0.0
        self.kernel_timestamps = True

    # Sockets

    def connect(self, conn: Connection) -> None:
        conn.attempts += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect_ex(self.address)
        conn.sock, conn.connected = sock, False
        self.by_fd[sock.fileno()] = conn
        self.epoll.register(sock.fileno(), select.EPOLLOUT)

    def drop(self, conn: Connection) -> None:
        if conn.sock is not None:
            fd = conn.sock.fileno()
            self.by_fd.pop(fd, None)
            with contextlib.suppress(OSError, ValueError):
                self.epoll.unregister(fd)
            conn.sock.close()
            conn.sock = None

    def request(self, conn: Connection) -> None:
        assert conn.sock is not None
        if self.kind == "ws":
            key = base64.b64encode(os.urandom(16)).decode()
            head = (
                f"GET {conn.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            )
        else:
            head = f"GET {conn.path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n"
        conn.sock.send(head.encode())
        conn.sent_at = time.time()

    # The loop

    def run(self, until: Any, timeout: float) -> None:
        """Serve the sockets until `until()` is true or `timeout` seconds have passed."""
        end = time.monotonic() + timeout
        while not until() and time.monotonic() < end:
            self.step(0.01)

    def step(self, timeout: float) -> None:
        for fd, mask in self.epoll.poll(timeout, 1024):
            conn = self.by_fd.get(fd)
            if conn is None:
                continue
            if not conn.connected:
                self.on_connect(conn, mask)
            else:
                self.on_readable(conn)

    def on_connect(self, conn: Connection, mask: int) -> None:
        assert conn.sock is not None
        error = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error or mask & (select.EPOLLERR | select.EPOLLHUP):
            self.drop(conn)
            if conn.attempts < 20:
                # The listen backlog overflowed during the burst: try again.
                self.connect(conn)
            else:
                conn.failed = f"connect: {os.strerror(error)}"
            return
        conn.connected = True
        self.epoll.modify(conn.sock.fileno(), select.EPOLLIN)
        if self.kind != "longpoll":
            self.request(conn)

    def on_readable(self, conn: Connection) -> None:
        assert conn.sock is not None
        try:
            data, ancillary, _, _ = conn.sock.recvmsg(65536, TIMESTAMP_SPACE)
        except BlockingIOError:
            return
        except OSError as exc:
            conn.failed = repr(exc)
            self.drop(conn)
            return
        now = time.time()
        arrived = now
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack("qq", value[:16])
                arrived = seconds + nanoseconds / 1e9
                break
        else:
            self.kernel_timestamps = False
        self.worst_lag = max(self.worst_lag, now - arrived)
        if not data:
            if conn.done_at is None and conn.event_at is None:
                conn.failed = conn.failed or "closed by the server"
            self.drop(conn)
            return
        conn.buffer += data
        if not conn.head_done:
            end = conn.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            conn.status = int(conn.buffer[9:12])
            conn.head_done = True
            head = bytes(conn.buffer[:end])
            del conn.buffer[: end + 4]
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    conn.length = int(line.split(b":")[1])
        if self.kind == "longpoll":
            if len(conn.buffer) >= conn.length:
                conn.done_at = arrived
                body = json.loads(bytes(conn.buffer[: conn.length]) or b"{}")
                conn.ready = (
                    conn.status == 200
                    and body.get("timed_out") is True
                    and body.get("events") == []
                )
                self.drop(conn)
        elif self.kind == "sse":
            if not conn.ready and b": artifact events of" in conn.buffer:
                conn.ready = True
            if conn.ready and conn.event_at is None and b"data: " in conn.buffer:
                conn.event_at = arrived
            del conn.buffer[:-64]
        else:
            for opcode, payload in ws_frames(conn.buffer):
                if opcode == 1:
                    if b'"connection"' in payload:
                        conn.ready = True
                    elif b'"artifact_created"' in payload and conn.event_at is None:
                        conn.event_at = arrived
                elif opcode == 9:
                    conn.sock.send(ws_frame(0xA, payload))
                elif opcode == 8:
                    self.drop(conn)
                    return


def client_process(
    kind: str,
    url: str,
    paths: list[str],
    wait: float,
    connect_rate: float,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """Hold `paths` open as clients of `kind`; report readiness, then results."""
    raise_fd_limit()
    host, port = url.removeprefix("http://").split(":")
    clients = Clients(kind, host, int(port), paths)
    # Connects paced at `connect_rate` a second, and no more than
    # `IN_FLIGHT` at once still connecting (or, for streams and sockets,
    # still waiting for their first message), serving the sockets between:
    # a burst beyond what the server accepts overflows its listen queue, and
    # the connections it resets are the bench's failures, not the server's.
    started = time.monotonic()
    pending: list[Connection] = []
    for i, conn in enumerate(clients.connections):
        clients.connect(conn)
        pending.append(conn)
        while True:
            pending = [c for c in pending if not (c.ready or c.failed or c.sock is None)]
            if kind == "longpoll":
                pending = [c for c in pending if not c.connected]
            if len(pending) < IN_FLIGHT and i + 1 <= (time.monotonic() - started) * connect_rate:
                break
            clients.step(0.002)
    conns = clients.connections
    if kind == "longpoll":
        clients.run(lambda: all(c.connected or c.failed for c in conns), 120)
    else:
        clients.run(lambda: all(c.ready or c.failed for c in conns), 300)
    ready.put(sum(c.connected if kind == "longpoll" else c.ready for c in conns))
    clients.worst_lag = 0.0
    clients.run(go.is_set, 600)
    if kind == "longpoll":
        # Sent together, so their deadlines coincide.
        for conn in conns:
            if conn.connected and conn.sock is not None:
                clients.request(conn)
        clients.run(lambda: all(c.done_at is not None or c.sock is None for c in conns), wait + 120)
        done = [c for c in conns if c.done_at is not None]
        errors = [c for c in conns if c.done_at is None]
        summary: dict[str, Any] = {
            "ok": sum(c.ready for c in done),
            "late": [c.done_at - c.sent_at - wait for c in done if c.done_at is not None],
        }
    else:
        # The parent uploads one event, then waits for us to report.
        clients.run(lambda: all(c.event_at is not None or c.sock is None for c in conns), 30)
        errors = [c for c in conns if c.event_at is None]
        summary = {"arrivals": [c.event_at for c in conns if c.event_at is not None]}
    results.put(
        {
            "kind": kind,
            **summary,
            "errors": len(errors),
            "error_sample": next((c.failed or "no answer" for c in errors), ""),
            "lag": clients.worst_lag,
            "kernel_timestamps": clients.kernel_timestamps,
            "cpu": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
        }
    )
    for conn in conns:
        clients.drop(conn)


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
    connect_rate: float,
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
                    target=client_process,
                    args=(kind, url, chunk, wait, connect_rate / share, ready, go, results),
                )))  # fmt: skip
    rss_before, threads_before = server.rss_mib, server.threads
    cpu_at_start = server.cpu_seconds
    started = time.monotonic()
    for _, worker in workers:
        worker.start()
    streaming = [w for k, w in workers if k != "longpoll"]
    # Long-polls connect first and send their requests together at "go".
    connected = sum(ready.get(timeout=600) for _ in workers)
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
            # Wall-clock time: the clients' readings are the kernel's timestamps.
            uploaded = time.time()
            response = client.post(
                f"/api/uploads/{sessions[0]}", files={"file": ("fan-out.txt", b"one event")}
            )
            assert response.status_code == 201, response.text
            report["server"]["the upload's own response time"] = (
                f"{(time.time() - uploaded) * 1000:.0f} ms"
            )
    collected = [results.get(timeout=wait + 600) for _ in workers]
    report["server"]["cpu seconds for the whole run"] = f"{server.cpu_seconds - cpu_at_start:.1f}"
    for _, worker in workers:
        worker.join(30)
    lag = max(c["lag"] for c in collected)
    stamped = all(c["kernel_timestamps"] for c in collected)
    if lag <= KEEP_UP_SECONDS:
        verdict = ""
    elif stamped:
        verdict = "  <- the clients fell behind, but read arrival times from the kernel"
    else:
        verdict = "  <- the clients could not keep up; their timings are late by up to this"
    report["clients"] = {
        "processes": len(workers),
        "connected": f"{connected} in {connect_seconds:.1f} s",
        "cpu seconds (all client processes)": f"{sum(c['cpu'] for c in collected):.1f}",
        "arrival times": "kernel receive timestamps" if stamped else "read times",
        "worst delay reading a response after it arrived": f"{lag * 1000:.0f} ms" + verdict,
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
    parser.add_argument(
        "--connect-rate", type=float, default=5000, help="new connections a second, in all (5,000)"
    )
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
                    args.idle_seconds, args.connect_rate,
                )  # fmt: skip
                for section, values in report.items():
                    print(f"  {section}:")
                    for key, value in values.items():
                        print(f"    {key}: {value}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
