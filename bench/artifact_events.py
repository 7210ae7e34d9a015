"""
Benchmark of the artifact event feed against one server worker.

    python bench/artifact_events.py                    # embedded: SQLite, in-memory layer
    DATABASE_URL=postgres://.../scratch REDIS_URL=redis://127.0.0.1:6379/1 \
        python bench/artifact_events.py                # production shape

Three measurements, each against one Uvicorn process started here on a
scratch warehouse (and, without DATABASE_URL, a scratch SQLite file):

1. idle long-polls: N concurrent `wait_seconds=20` polls on sessions with no
   events; how many return 200, empty and `timed_out` at their deadline,
   and the server's RSS, threads and CPU while they wait. Target: 1,000.
2. wake-up latency: S WebSocket subscribers and S long-pollers on one
   session; uploads one at a time; the delay from each upload's response
   to each poll's return and each socket's message. Target: p99 < 100 ms.
3. one cursor page with E events across K sessions in the table: the
   latency of `read_page` in-process and of `GET .../artifact-events` through
   the server, and the query plan. Target: < 5 ms.

A database given by DATABASE_URL is written to: use a scratch one. The
sessions made here are named `bench-...` and deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import websockets
from _common import free_port

ROOT = Path(__file__).resolve().parent.parent
PAGE_URL = "/api/sessions/{}/artifact-events"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


class RawHTTP:
    """
    A minimal keep-alive HTTP/1.1 GET client on asyncio streams. On a small
    machine a thousand httpx clients cost more CPU than the server they
    measure; this keeps the client out of the figures.
    """

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def send(self, target: str) -> float:
        """Send a GET; the moment it left."""
        if self.writer is None:
            await self.connect()
        assert self.writer is not None
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        await self.writer.drain()
        return time.monotonic()

    async def response(self) -> tuple[int, dict]:
        assert self.reader is not None
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, json.loads(await self.reader.readexactly(length))

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


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


@contextmanager
def uvicorn(env: dict[str, str]) -> Iterator[tuple[str, Process]]:
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "macproject.asgi:application",
        "--host", "127.0.0.1", "--port", str(port), "--lifespan", "off",
        "--no-access-log", "--backlog", "4096", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.1)
        yield url, Process(process.pid)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


async def create_sessions(client: httpx.AsyncClient, prefix: str, count: int) -> list[str]:
    ids = [f"bench-{prefix}-{i}" for i in range(count)]
    for session_id in ids:
        response = await client.post("/api/sessions", json={"session_id": session_id})
        assert response.status_code == 201, response.text
    return ids


async def idle_long_polls(url: str, server: Process, count: int, wait: float, run: str) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        sessions = await create_sessions(client, f"{run}-idle", max(1, count // 10))
    baseline_rss, baseline_threads = server.rss_mib, server.threads
    connections = [RawHTTP(url) for _ in range(count)]
    for start in range(0, count, 100):
        await asyncio.gather(*(c.connect() for c in connections[start : start + 100]))

    async def one(connection: RawHTTP, session_id: str) -> tuple[bool, float, str]:
        sent = await connection.send(
            PAGE_URL.format(session_id) + f"?after=0&wait_seconds={wait:g}"
        )
        status, body = await connection.response()
        elapsed = time.monotonic() - sent
        await connection.close()
        correct = (
            status == 200
            and body.get("timed_out") is True
            and body.get("events") == []
            and body.get("next_cursor") == 0
        )
        return correct, elapsed, f"{status} {json.dumps(body)[:120]}"

    polls = [
        asyncio.create_task(one(c, sessions[i % len(sessions)])) for i, c in enumerate(connections)
    ]
    # Idle means after the burst of first reads has drained: the second half.
    await asyncio.sleep(wait * 0.5)
    cpu_before, window_start = server.cpu_seconds, time.monotonic()
    await asyncio.sleep(wait * 0.4)
    cpu_during = (server.cpu_seconds - cpu_before) / (time.monotonic() - window_start)
    rss_during, threads_during = server.rss_mib, server.threads
    results = await asyncio.gather(*polls, return_exceptions=True)
    done = [r for r in results if isinstance(r, tuple)]
    durations = [elapsed for _, elapsed, _ in done]
    on_time = [ok and wait <= elapsed < wait + 2 for ok, elapsed, _ in done]
    wrong = Counter(answer for ok, _, answer in done if not ok)
    return {
        "requested": count,
        "correct_at_deadline": sum(on_time),
        "errors": len(results) - len(done),
        "wrong_answers": dict(wrong.most_common(3)),
        "return_after_s": (min(durations), max(durations)) if durations else None,
        "rss_mib": (round(baseline_rss, 1), round(rss_during, 1)),
        "threads": (baseline_threads, threads_during),
        "cpu_while_waiting": f"{cpu_during * 100:.1f}% of one core",
    }


async def wake_latency(ws_url: str, url: str, subscribers: int, uploads: int, run: str) -> dict:
    limits = httpx.Limits(max_connections=subscribers + 20)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        (session_id,) = await create_sessions(client, f"{run}-wake", 1)
        poll_arrivals: dict[str, list[float]] = {}
        ws_arrivals: dict[str, list[float]] = {}
        stop = asyncio.Event()

        async def poller() -> None:
            connection = RawHTTP(url)
            after = 0
            try:
                while not stop.is_set():
                    await connection.send(
                        PAGE_URL.format(session_id) + f"?after={after}&wait_seconds=20"
                    )
                    _status, body = await connection.response()
                    now = time.monotonic()
                    for event in body["events"]:
                        poll_arrivals.setdefault(event["attachment_id"], []).append(now)
                    after = body["next_cursor"]
            finally:
                await connection.close()

        async def subscriber(ready: asyncio.Event) -> None:
            path = f"{ws_url}/ws/sessions/{session_id}/artifacts?after=0"
            async with websockets.connect(path, open_timeout=30, max_queue=None) as socket:
                await socket.recv()
                ready.set()
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(socket.recv(), 1)
                    except TimeoutError:
                        continue
                    now = time.monotonic()
                    for event in json.loads(raw)["data"]["events"]:
                        ws_arrivals.setdefault(event["attachment_id"], []).append(now)

        readies = [asyncio.Event() for _ in range(subscribers)]
        tasks = [asyncio.create_task(subscriber(ready)) for ready in readies]
        tasks += [asyncio.create_task(poller()) for _ in range(subscribers)]
        for ready in readies:
            await asyncio.wait_for(ready.wait(), 60)
        await asyncio.sleep(1)
        sent: dict[str, tuple[float, float]] = {}
        async with httpx.AsyncClient(base_url=url, timeout=60) as uploader:
            for i in range(uploads):
                started = time.monotonic()
                response = await uploader.post(
                    f"/api/uploads/{session_id}", files={"file": (f"f{i}.txt", b"%d" % i)}
                )
                sent[response.json()["attachment_id"]] = (started, time.monotonic())
                await asyncio.sleep(0.25)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            sum(map(len, poll_arrivals.values())) < uploads * subscribers
            or sum(map(len, ws_arrivals.values())) < uploads * subscribers
        ):
            await asyncio.sleep(0.1)
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def summary(arrivals: dict[str, list[float]]) -> dict:
        after_response = [t - sent[a][1] for a, times in arrivals.items() for t in times]
        after_request = [t - sent[a][0] for a, times in arrivals.items() for t in times]
        return {
            "deliveries": f"{len(after_response)} of {uploads * subscribers}",
            "after_upload_response p50/p99/max": " / ".join(
                ms(v)
                for v in (
                    percentile(after_response, 50),
                    percentile(after_response, 99),
                    max(after_response),
                )
            ),
            "after_upload_request p50/p99": " / ".join(
                ms(v) for v in (percentile(after_request, 50), percentile(after_request, 99))
            ),
        }

    upload_times = [done - started for started, done in sent.values()]
    return {
        "subscribers": subscribers,
        "uploads": uploads,
        "upload_request p50": ms(statistics.median(upload_times)),
        "long_poll": summary(poll_arrivals),
        "websocket": summary(ws_arrivals),
    }


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    # The project logs at INFO; a request log line per poll would drown the figures.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def fill_events(total: int, sessions: int, run: str) -> list[str]:
    """K sessions with total/K events each, written in bulk (no signals)."""
    from django.db import transaction
    from django.utils import timezone

    from artifacts.models import ArtifactEvent, EventStream, new_artifact_id
    from attachments.models import Session

    per_session = total // sessions
    ids = [f"bench-{run}-page-{i}" for i in range(sessions)]
    rows = Session.objects.bulk_create([Session(session_id=i) for i in ids], batch_size=1000)
    rows = list(Session.objects.filter(session_id__in=ids))
    EventStream.objects.bulk_create(
        [EventStream(session=s, last_sequence=per_session) for s in rows], batch_size=1000
    )
    now = timezone.now()
    batch: list[ArtifactEvent] = []
    started = time.monotonic()
    # Interleaved by session, as concurrent sessions write in production.
    for sequence in range(1, per_session + 1):
        for session in rows:
            batch.append(
                ArtifactEvent(
                    session=session, sequence=sequence, artifact_id=new_artifact_id(),
                    change_type="created", attachment_id=f"att_bench{sequence:08d}",
                    path=f"code_workspace/attachments/att_bench{sequence:08d}/file{sequence}.csv",
                    name=f"file{sequence}.csv", ext="csv", size=sequence, mime="text/csv",
                    kind="file", sha256="0" * 64, created_at=now,
                )
            )  # fmt: skip
            if len(batch) == 20_000:
                with transaction.atomic():
                    ArtifactEvent.objects.bulk_create(batch)
                batch = []
    if batch:
        ArtifactEvent.objects.bulk_create(batch)
    print(f"  wrote {per_session * sessions:,} events in {time.monotonic() - started:.0f} s")
    return ids


def explain(session_id: str, after: int) -> str:
    from django.db import connection

    from artifacts.feed import FeedQuery, parse_filters
    from artifacts.models import ArtifactEvent
    from attachments.models import Session

    pk = Session.objects.get(session_id=session_id).pk
    query = (
        parse_filters({})
        .apply(
            ArtifactEvent.objects.filter(
                session_id=pk, sequence__gt=after, sequence__lte=after + 10_000
            )
        )
        .order_by("sequence")[: FeedQuery().limit + 1]
    )
    sql, params = query.query.sql_with_params()
    prefix = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN ANALYZE "
    with connection.cursor() as cursor:
        cursor.execute(prefix + sql, params)
        return "\n".join("    " + " ".join(str(c) for c in row) for row in cursor.fetchall())


def page_latency(url: str, session_ids: list[str], per_session: int, samples: int) -> dict:
    from artifacts.feed import FeedQuery, read_page

    rng = random.Random(7)
    picks = [(rng.choice(session_ids), rng.randrange(per_session)) for _ in range(samples)]
    for session_id, after in picks[:50]:
        read_page(session_id, FeedQuery(after=after, limit=200))
    results = {}
    for limit in (50, 200):
        timings = []
        for session_id, after in picks:
            started = time.perf_counter()
            page = read_page(session_id, FeedQuery(after=after, limit=limit))
            timings.append(time.perf_counter() - started)
            assert page.events and page.events[0]["sequence"] == after + 1
        results[f"read_page limit={limit} p50/p99"] = (
            f"{ms(percentile(timings, 50))} / {ms(percentile(timings, 99))}"
        )
    with httpx.Client(base_url=url, timeout=30) as client:
        timings = []
        for session_id, after in picks:
            started = time.perf_counter()
            response = client.get(PAGE_URL.format(session_id), params={"after": after, "limit": 50})
            timings.append(time.perf_counter() - started)
            assert response.status_code == 200
        results["HTTP GET limit=50 p50/p99"] = (
            f"{ms(percentile(timings, 50))} / {ms(percentile(timings, 99))}"
        )
    return results


def cleanup(run: str) -> None:
    from artifacts.models import ArtifactEvent, EventStream
    from attachments.models import Session

    sessions = Session.objects.filter(session_id__startswith=f"bench-{run}-")
    ArtifactEvent.objects.filter(session__in=sessions).delete()
    EventStream.objects.filter(session__in=sessions).delete()
    sessions.delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=1000, help="idle long-polls (1000)")
    parser.add_argument("--wait", type=float, default=20, help="their wait_seconds (20)")
    parser.add_argument("--subscribers", type=int, default=100, help="per transport (100)")
    parser.add_argument("--uploads", type=int, default=30, help="uploads to time (30)")
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the table")
    parser.add_argument("--sessions", type=int, default=1000, help="sessions they span")
    parser.add_argument("--samples", type=int, default=1000, help="pages timed (1000)")
    parser.add_argument("--skip", action="append", default=[], choices=["idle", "wake", "page"])
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="artifact-events-bench-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "macproject.settings",
        "MAC_WAREHOUSE_DIR": str(scratch / "WareHouse"),
        "PYTHONPATH": str(ROOT),
    }
    env.setdefault("DATABASE_URL", f"sqlite:///{scratch / 'bench.sqlite3'}")
    # A throwaway installation needs a key of its own (the placeholder fails the checks).
    env.setdefault("MAC_SECRET_KEY", secrets.token_urlsafe(50))
    run = f"{int(time.time())}"
    print(f"database: {env['DATABASE_URL'].split('@')[-1]}")
    print(f"channel layer: {'redis ' + env['REDIS_URL'] if env.get('REDIS_URL') else 'in-memory'}")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    setup_django(env)
    try:
        with uvicorn(env) as (url, server):
            ws_url = "ws" + url.removeprefix("http")
            if "idle" not in args.skip:
                print(f"\n1. {args.idle} idle long-polls, wait_seconds={args.wait:g}, one worker")
                for key, value in asyncio.run(
                    idle_long_polls(url, server, args.idle, args.wait, run)
                ).items():
                    print(f"  {key}: {value}")
            if "wake" not in args.skip:
                print(f"\n2. wake-up latency, {args.subscribers} subscribers per transport")
                result = asyncio.run(wake_latency(ws_url, url, args.subscribers, args.uploads, run))
                for key, value in result.items():
                    print(f"  {key}: {value}")
            if "page" not in args.skip:
                print(f"\n3. one cursor page, {args.events:,} events in {args.sessions:,} sessions")
                ids = fill_events(args.events, args.sessions, run)
                per_session = args.events // args.sessions
                for key, value in page_latency(url, ids, per_session, args.samples).items():
                    print(f"  {key}: {value}")
                print("  plan of the page query:")
                print(explain(ids[len(ids) // 2], per_session // 2))
    finally:
        cleanup(run)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
