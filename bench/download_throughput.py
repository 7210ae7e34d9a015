#!/usr/bin/env python
"""
Download benchmark: the session zip and single-file streaming, against a real
server process.

Starts the default server (Uvicorn, as tests/servers.py runs it) on a
temporary warehouse and SQLite database, uploads a session of FILES files of
FILE_MIB MiB each through the API (half compressible CSV-like text, half
random bytes), then measures, RUNS times each, reporting medians:

- the zip (compressed, then compress=false): time to the first body byte,
  throughput as a ratio to `zip -r` (resp. `zip -0 -r`) of the same directory
  on the same disk writing to /dev/null, and the server's RSS growth;
- one file with mode=stream: throughput as a ratio to `cat file > /dev/null`,
  and the server's RSS growth.

RSS growth is the server's peak RSS during a download (VmHWM, reset through
/proc/<pid>/clear_refs before it, and a 10 ms sampler of VmRSS as a cross
check) less its RSS just before it. Everything is read from the page cache
on both sides: the files were just written, and each side runs once to warm up.

    python bench/download_throughput.py               # 10 x 100 MiB, 3 runs
    python bench/download_throughput.py --files 4 --file-mib 16 --runs 2   # quick
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import COMMANDS, DEFAULT_SERVER, free_port  # noqa: E402

MIB = 1 << 20
TTFB_TARGET_S = 0.200
RSS_TARGET_MIB = 64


# The server process -----------------------------------------------------------


def proc_status(pid: int, field_name: str) -> int:
    """A memory field of /proc/<pid>/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field_name)


class RssWatch:
    """The peak RSS of a process over a block, measured two ways."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = 0
        self.peak_sampled = 0
        self.peak_hwm: int | None = None
        self.resettable = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_sampled = max(self.peak_sampled, proc_status(self.pid, "VmRSS"))
            self._stop.wait(0.01)

    def __enter__(self) -> RssWatch:
        self.baseline = proc_status(self.pid, "VmRSS")
        self.peak_sampled = self.baseline
        try:
            # "5" resets the peak RSS (VmHWM) to the current RSS.
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self.resettable = True
        except OSError:
            pass
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.resettable:
            self.peak_hwm = proc_status(self.pid, "VmHWM")

    @property
    def growth(self) -> int:
        peak = max(self.peak_sampled, self.peak_hwm or 0)
        return max(0, peak - self.baseline)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def start_server(kind: str, workdir: Path, zip_level: int | None) -> Server:
    database = workdir / "db.sqlite3"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "macproject.settings",
        "DATABASE_URL": f"sqlite:///{database}",
        "MAC_WAREHOUSE_DIR": str(workdir / "WareHouse"),
        "MAC_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("REDIS_URL", None)
    # A throwaway installation needs a key of its own (the placeholder fails the checks).
    env.setdefault("MAC_SECRET_KEY", secrets.token_urlsafe(50))
    if zip_level is not None:
        env["MAC_ZIP_COMPRESS_LEVEL"] = str(zip_level)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    port = free_port()
    command = [part.format(port=port) for part in COMMANDS[kind]]
    log = open(workdir / f"{kind}.log", "wb")  # noqa: SIM115 (kept open for the server's life)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(process, "127.0.0.1", port)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{kind} exited: see {workdir / (kind + '.log')}")
        try:
            httpx.get(server.url + "/api/sessions/readiness", timeout=1)
            return server
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{kind} did not start in 30 s")


# The session ------------------------------------------------------------------


def write_files(directory: Path, count: int, size: int) -> list[Path]:
    """Half CSV-like text (deflates to about a third), half random bytes (does not deflate)."""
    directory.mkdir(parents=True)
    rng = random.Random(42)
    lines = []
    while sum(len(line) for line in lines) < MIB:
        lines.append(f"{rng.randrange(10**9)},{rng.random():.6f},{rng.choice('ABCDEFGH')}\n")
    block = "".join(lines).encode()[:MIB]
    written = []
    for index in range(count):
        compressible = index % 2 == 0
        path = directory / (f"data_{index}.csv" if compressible else f"blob_{index}.bin")
        with open(path, "wb") as file:
            for _ in range(size // MIB):
                file.write(block if compressible else os.urandom(MIB))
        written.append(path)
    return written


def upload_session(server: Server, files: list[Path]) -> tuple[str, list[dict]]:
    session_id = httpx.post(server.url + "/api/sessions", json={}).json()["session_id"]
    uploaded = []
    for path in files:
        with open(path, "rb") as file:
            response = httpx.post(
                f"{server.url}/api/uploads/{session_id}",
                files={"file": (path.name, file, "application/octet-stream")},
                timeout=600,
            )
        response.raise_for_status()
        uploaded.append(response.json())
    return session_id, uploaded


# Measuring --------------------------------------------------------------------


@dataclass
class Fetch:
    first_byte: float  # seconds from sending the request to the first body byte
    total: float  # seconds to the last byte
    body_bytes: int  # bytes after the headers, chunk framing included


def fetch(server: Server, target: str) -> Fetch:
    """GET with a bare socket (Connection: close, read to EOF) so the client costs little."""
    buffer = bytearray(4 * MIB)
    view = memoryview(buffer)
    with socket.create_connection((server.host, server.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MIB)
        request = f"GET {target} HTTP/1.1\r\nHost: {server.host}\r\nConnection: close\r\n\r\n"
        started = time.perf_counter()
        sock.sendall(request.encode())
        head = bytearray()
        in_head = True
        first_byte = None
        body_bytes = 0
        while True:
            received = sock.recv_into(buffer)
            if not received:
                break
            if in_head:
                head += view[:received]
                end = head.find(b"\r\n\r\n")
                if end < 0:
                    continue
                in_head = False
                if head.split(b" ", 2)[1] != b"200":
                    raise SystemExit(f"GET {target}: {bytes(head[:300])!r}")
                received = len(head) - end - 4
            body_bytes += received
            if first_byte is None and received:
                first_byte = time.perf_counter() - started
        total = time.perf_counter() - started
    return Fetch(first_byte or total, total, body_bytes)


def timed(command: list[str] | str, cwd: Path | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, shell=isinstance(command, str), check=True)
    return time.perf_counter() - started


@dataclass
class Series:
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def spread(self, scale: float = 1.0, digits: int = 3) -> str:
        return ", ".join(f"{v * scale:.{digits}f}" for v in self.values)


def repeat(runs: int, measure: Callable[[], None]) -> None:
    measure()  # warm-up, not counted
    for _ in range(runs):
        measure()


def bench_zip(server: Server, session_dir: Path, session_id: str, runs: int, stored: bool) -> dict:
    query = "?compress=false" if stored else ""
    reference = "zip -q -0 -r - . > /dev/null" if stored else "zip -q -r - . > /dev/null"
    ttfb, ours, theirs, rss = Series(), Series(), Series(), Series()

    def measure() -> None:
        with RssWatch(server.process.pid) as watch:
            result = fetch(server, f"/api/sessions/{session_id}/download{query}")
        ttfb.add(result.first_byte)
        ours.add(result.total)
        rss.add(watch.growth)
        theirs.add(timed(reference, cwd=session_dir))

    repeat(runs, measure)
    ratios = Series([t / o for t, o in zip(theirs.values[1:], ours.values[1:], strict=True)])
    for series in (ttfb, ours, theirs, rss):
        series.values = series.values[1:]
    return {"ttfb": ttfb, "ours": ours, "theirs": theirs, "ratio": ratios, "rss": rss}


def bench_stream(
    server: Server, path: Path, session_id: str, attachment_id: str, runs: int
) -> dict:
    target = f"/api/sessions/{session_id}/artifacts/{attachment_id}?mode=stream"
    ttfb, ours, theirs, rss = Series(), Series(), Series(), Series()

    def measure() -> None:
        with RssWatch(server.process.pid) as watch:
            result = fetch(server, target)
        ttfb.add(result.first_byte)
        ours.add(result.total)
        rss.add(watch.growth)
        theirs.add(timed(f"cat '{path}' > /dev/null"))

    repeat(runs, measure)
    ratios = Series([t / o for t, o in zip(theirs.values[1:], ours.values[1:], strict=True)])
    for series in (ttfb, ours, theirs, rss):
        series.values = series.values[1:]
    return {"ttfb": ttfb, "ours": ours, "theirs": theirs, "ratio": ratios, "rss": rss}


def report(title: str, result: dict, size: int, reference: str) -> None:
    ours, theirs = result["ours"], result["theirs"]
    print(f"\n{title}")
    print(
        f"  time to first body byte  median {result['ttfb'].median * 1000:7.1f} ms"
        f"   (runs: {result['ttfb'].spread(1000, 1)} ms; target < {TTFB_TARGET_S * 1000:.0f} ms)"
    )
    print(
        f"  server                   median {ours.median:7.2f} s = "
        f"{size / MIB / ours.median:7.0f} MiB/s of input   (runs: {ours.spread(1, 2)} s)"
    )
    print(
        f"  {reference:<24} median {theirs.median:7.2f} s = "
        f"{size / MIB / theirs.median:7.0f} MiB/s   (runs: {theirs.spread(1, 2)} s)"
    )
    print(
        f"  throughput ratio         median {result['ratio'].median:7.2f} x {reference}"
        f"   (runs: {result['ratio'].spread(1, 2)})"
    )
    print(
        f"  server RSS growth        median {result['rss'].median / MIB:7.1f} MiB"
        f"   (runs: {result['rss'].spread(1 / MIB, 1)} MiB; target < {RSS_TARGET_MIB} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--file-mib", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3, help="measured runs, after one warm-up")
    parser.add_argument("--server", choices=sorted(COMMANDS), default=DEFAULT_SERVER)
    parser.add_argument(
        "--zip-level", type=int, default=None, help="MAC_ZIP_COMPRESS_LEVEL for the server (6)"
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="work directory (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if shutil.which("zip") is None:
        raise SystemExit("`zip` is needed for the reference: apt-get install zip")

    workdir = Path(tempfile.mkdtemp(prefix="mac-bench-", dir=args.dir))
    server = None
    try:
        print(
            f"Work directory {workdir}; server: {args.server}; "
            f"zip level: {args.zip_level or 'default (6)'}"
        )
        sources = write_files(workdir / "source", args.files, args.file_mib * MIB)
        server = start_server(args.server, workdir, args.zip_level)
        started = time.perf_counter()
        session_id, uploaded = upload_session(server, sources)
        total = sum(item["size"] for item in uploaded)
        print(
            f"Uploaded {len(uploaded)} files, {total / MIB:.0f} MiB, in "
            f"{time.perf_counter() - started:.1f} s; session {session_id}"
        )
        shutil.rmtree(workdir / "source")
        pid = server.process.pid
        print(
            f"Server RSS after the uploads {proc_status(pid, 'VmRSS') / MIB:.0f} MiB, "
            f"peak so far {proc_status(pid, 'VmHWM') / MIB:.0f} MiB"
        )
        session_dir = workdir / "WareHouse" / f"session_{session_id}"
        # Make sure both sides read from the page cache.
        subprocess.run(f"cat $(find '{session_dir}' -type f) > /dev/null", shell=True, check=True)

        report(
            "Session zip (deflated; stored where deflate does not help)",
            bench_zip(server, session_dir, session_id, args.runs, stored=False),
            total,
            "zip -r",
        )
        report(
            "Session zip, compress=false (stored, Content-Length up front)",
            bench_zip(server, session_dir, session_id, args.runs, stored=True),
            total,
            "zip -0 -r",
        )
        first = uploaded[0]
        report(
            f"One file, mode=stream ({first['size'] / MIB:.0f} MiB)",
            bench_stream(
                server, session_dir / first["path"], session_id, first["attachment_id"], args.runs
            ),
            first["size"],
            "cat",
        )
    finally:
        if server is not None:
            server.process.terminate()
            server.process.wait(10)
        if args.keep:
            print(f"Kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
