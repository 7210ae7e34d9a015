"""
What the event feed's response headers cost on its ASGI fast path.

    python bench/feed_headers.py [--events 20] [--samples 2000]

The fast path runs the project's header middleware (`attachments.header_policy`)
for each response: it builds a Django request from the scope, checks the
host, and runs the middleware once over a stand-in response (which is
where an HTTPS redirect would answer first), whose headers the page then
takes. This prints the time of that work next to the time of
a whole long-poll page (`wait_seconds=0`, `--events` events) served
in-process by the project's ASGI application, and their ratio; the same for
reading the query parameters. Scratch SQLite database and warehouse; nothing
else is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup(scratch: Path) -> None:
    env = {
        "DJANGO_SETTINGS_MODULE": "macproject.settings",
        "MAC_WAREHOUSE_DIR": str(scratch / "WareHouse"),
        "DATABASE_URL": f"sqlite:///{scratch / 'bench.sqlite3'}",
        "MAC_ACCESS_POLICY": "open",
        "MAC_CORS_ALLOWED_ORIGINS": "https://ui.example",
        "MAC_LOG_LEVEL": "WARNING",
        "MAC_SECRET_KEY": os.environ.get("MAC_SECRET_KEY") or secrets.token_urlsafe(50),
    }
    os.environ.update(env)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)


def session_with_events(count: int) -> str:
    from attachments.manifest_sync import sync_session_from_manifest
    from attachments.sessions import create_session
    from attachments.store import AttachmentStore

    session = create_session()
    store = AttachmentStore(session.directory, session.session_id)
    for index in range(count):
        store.register_bytes(f"row {index}\n".encode(), f"file{index}.txt")
    # The mirror into the database is what appends the events.
    sync_session_from_manifest(session)
    return session.session_id


def scope_for(path: str, query: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"127.0.0.1"), (b"origin", b"https://ui.example")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


def header_work(scope: dict, body: dict) -> None:
    from django.core.handlers.asgi import ASGIRequest

    from attachments.header_policy import prepare_headers

    request = ASGIRequest(scope, io.BytesIO())
    request.get_host()
    early, headers = prepare_headers(request, "application/json", {"Cache-Control": "no-store"})
    assert early is None
    [*headers, (b"content-length", b"%d" % len(json.dumps(body)))]


async def whole_requests(url: str, samples: int) -> list[float]:
    import httpx

    from macproject.asgi import application

    transport = httpx.ASGITransport(app=application)
    times = []
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for _ in range(samples):
            started = time.perf_counter()
            response = await client.get(url, headers={"origin": "https://ui.example"})
            times.append(time.perf_counter() - started)
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == "https://ui.example"
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="feed-headers-bench-"))
    setup(scratch)
    session_id = session_with_events(args.events)
    path = f"/api/sessions/{session_id}/artifact-events"
    query = "after=0&wait_seconds=0"

    from artifacts.feed import FeedQuery, read_page

    body = read_page(session_id, FeedQuery(after=0)).to_json()
    assert len(body["events"]) == args.events
    scope = scope_for(path, query)
    headers = []
    for _ in range(args.samples):
        started = time.perf_counter()
        header_work(scope, body)
        headers.append(time.perf_counter() - started)
    from artifacts.feed import parse_query

    # What reading a long-poll's query parameters costs (`parse_query`).
    params = {"after": "0", "wait_seconds": "10", "include_mime": "image/"}
    reads = []
    for _ in range(args.samples):
        started = time.perf_counter()
        parse_query(params)
        reads.append(time.perf_counter() - started)
    whole = asyncio.run(whole_requests(f"{path}?{query}", args.samples))
    header_ms, whole_ms = statistics.median(headers) * 1e3, statistics.median(whole) * 1e3
    read_ms = statistics.median(reads) * 1e3
    print(f"long-poll page of {args.events} events, {args.samples} samples, medians:")
    print(f"  header work (request, host check, middleware): {header_ms:.3f} ms")
    print(f"  whole request through the ASGI app:            {whole_ms:.3f} ms")
    print(f"  ratio header / whole: {header_ms / whole_ms:.3f}")
    print(f"  reading the query parameters:                  {read_ms:.3f} ms")
    print(f"  ratio parameters / whole: {read_ms / whole_ms:.3f}")
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
