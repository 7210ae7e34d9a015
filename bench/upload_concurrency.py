"""
The write path at concurrency: uploads/s and latency of small uploads.

Starts the default server (macproject.server, as scripts/serve runs it:
Uvicorn, and on the embedded defaults its threads on one CPU with MIME
detection in processes on the others, MAC_SERVER_CPU=auto; `--server-cpu
off` to compare) on a throw-away warehouse, then drives it
from client processes that each hold one keep-alive connection and send
pre-built multipart bodies over a raw socket (no HTTP library in the loop),
so the client costs little beside the server on a small machine. Cases:

- 1 client into one session;
- 16 clients into one session (group commit);
- 16 clients into 16 sessions;
- one client into a session that already holds 100 files, and 10,000 files
  (the cost per upload must not grow with the session);
- with --cases sweep: 1 to 32 clients, each into a session of its own, and
  the cores the server used (where more clients stop adding uploads/s);
- with --postgres: the same on PostgreSQL + Redis, and 16 clients into 16
  sessions on 1 and on 3 worker processes, each on a port of its own as
  docs/DEPLOY.md runs them (and, for comparison, 3 sharing one socket).

For scale, the same client also drives nginx answering a canned 201 for the
same requests (a server that does no work): the figures read as a share of
what the client and the loopback allow. nginx comes from Debian's packages
(installed with apt-get when missing and run as root).

    .venv/bin/python bench/upload_concurrency.py [--postgres] [--quick] [--cases 16x16,16x1,sweep]

--postgres uses DATABASE_URL (default postgres://root@127.0.0.1:5432/bench_uploads,
created if missing) and REDIS_URL (default redis://127.0.0.1:6379/9).
Each line also gives the server's CPU time per upload (all its processes,
user + system, from /proc), which other load on the machine does not inflate
the way it does latencies. Every upload is durable before its 201 (file fsync, manifest fsync and
rename, database commit), as in production.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _common import free_port, read_response, wait_until_listening

PROJECT_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
FILE_BYTES = 10 * 1024
BOUNDARY = "benchboundary7d3a9"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def upload_request(host: str, session_id: str, token: str, index: int) -> bytes:
    content = (f"upload {index} ".encode() * (FILE_BYTES // 8))[:FILE_BYTES]
    body = (
        (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="f{index}.txt"\r\n'
            f"Content-Type: text/plain\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    head = (
        f"POST /api/uploads/{session_id} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def client_worker(
    args: tuple[int, str, list[tuple[str, str]], int, int],
) -> list[tuple[float, int]]:
    """One connection sending `count` uploads in turn; (latency, status) of each."""
    port, host, sessions, count, offset = args
    results = []
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = bytearray()
    for n in range(count):
        session_id, token = sessions[(offset + n) % len(sessions)]
        request = upload_request(host, session_id, token, offset * 100_000 + n)
        started = time.perf_counter()
        sock.sendall(request)
        status, _headers, _body = read_response(sock, buffer)
        results.append((time.perf_counter() - started, status))
    sock.close()
    return results


def process_cpu_seconds(pgids: list[int]) -> dict[int, float]:
    """CPU time (user + system) used so far by each process of the process groups `pgids`."""
    seconds = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        # After the command: state, ppid, pgrp, ... utime (12th), stime (13th).
        if int(fields[2]) in pgids:
            seconds[int(entry)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


# The process groups of the servers being driven, for their CPU time per upload.
SERVER_PGIDS: list[int] = []


def drive(
    port: int | list[int], sessions: list[tuple[str, str]], clients: int, total: int
) -> dict[str, float]:
    """
    `clients` connections sending `total` uploads; with several ports (one
    server each), the connections are spread over them in turn.
    """
    ports = [port] if isinstance(port, int) else port
    per_client = max(1, total // clients)
    jobs = [
        (
            ports[i % len(ports)],
            f"127.0.0.1:{ports[i % len(ports)]}",
            sessions if len(sessions) == 1 else [sessions[i % len(sessions)]],
            per_client,
            i,
        )
        for i in range(clients)
    ]
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        cpu_before = process_cpu_seconds(SERVER_PGIDS)
        started = time.perf_counter()
        outcomes = [r for rs in pool.map(client_worker, jobs) for r in rs]
        elapsed = time.perf_counter() - started
        cpu_after = process_cpu_seconds(SERVER_PGIDS)
    used = {pid: cpu_after[pid] - cpu_before.get(pid, 0.0) for pid in cpu_after}
    latencies = [lat for lat, status in outcomes if status in (200, 201)]
    failures = collections.Counter(status for _lat, status in outcomes if status not in (200, 201))
    failed = sum(failures.values())
    return {
        "count": len(outcomes),
        "failed": failed,
        "failures": dict(failures),  # status: count
        "per_second": len(outcomes) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1000 if latencies else float("nan"),
        "p99_ms": percentile(latencies, 0.99) * 1000 if latencies else float("nan"),
        "cpu_ms": sum(used.values()) * 1000 / len(outcomes),
        # Each server process's share of the servers' CPU time, largest first.
        "cpu_shares": sorted(
            (value / total_used for value in used.values() if value > 0.01 * total_used),
            reverse=True,
        )
        if (total_used := sum(used.values())) > 0
        else [],
    }


# Where --profile writes the servers' py-spy profiles (collapsed stacks), if set.
PROFILE_DIR: Path | None = None


@contextlib.contextmanager
def app_server(env: dict[str, str], workers: int, work: Path, profile: str = "") -> Iterator[int]:
    port = free_port()
    log = open(work / f"server-{port}.log", "wb")
    # One worker: the default server, as scripts/serve runs it (macproject.server:
    # connection limits, and MAC_SERVER_CPU's default). Several sharing one
    # socket: Uvicorn's own --workers.
    if workers == 1:
        command = [PYTHON, "-m", "macproject.server", "--host", "127.0.0.1", "--port", str(port)]
    else:
        command = [
            PYTHON, "-m", "uvicorn", "macproject.asgi:application", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--lifespan", "off", "--workers", str(workers),
        ]  # fmt: skip
    if PROFILE_DIR is not None and profile:
        # Sampled for the server's whole life; --subprocesses follows the workers.
        # --gil keeps the threads that hold the GIL (where the CPU goes), and
        # --nonblocking does not stop the server at each sample, which slowed it 2-4x.
        output = PROFILE_DIR / f"{profile}.txt"
        command = [
            "py-spy", "record", "--format", "raw", "--subprocesses", "--rate", "200",
            "--gil", "--nonblocking", "--output", str(output), "--", *command,
        ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=PROJECT_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until_listening(port, process, log=work / f"server-{port}.log", interval=0.2)
        SERVER_PGIDS.append(process.pid)
        yield port
    finally:
        SERVER_PGIDS.remove(process.pid)
        # py-spy writes its profile when interrupted, and Uvicorn stops on SIGINT too.
        os.killpg(process.pid, signal.SIGINT if command[0] == "py-spy" else signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def http_json(port: int, method: str, path: str, body: dict | None = None) -> dict:
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        return json.loads(response.read())


def new_sessions(port: int, count: int) -> list[tuple[str, str]]:
    sessions = []
    for _ in range(count):
        reply = http_json(port, "POST", "/api/sessions", {})
        sessions.append((reply["session_id"], reply["token"]))
    return sessions


@contextlib.contextmanager
def nginx_canned(work: Path) -> Iterator[int]:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], check=True)
    port = free_port()
    root = work / "nginx"
    root.mkdir(exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {root}/body;
    client_max_body_size 10m;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 201 '{{"attachment_id": "att_canned"}}';
        }}
    }}
}}
"""
    )
    process = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(root)], start_new_session=True)
    try:
        wait_until_listening(port, timeout=10)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)


def line(label: str, figures: dict[str, float], ceiling: dict[str, float] | None) -> str:
    share = ""
    if ceiling is not None:
        of_ceiling = figures["per_second"] / ceiling["per_second"]
        share = f"  ({of_ceiling:.2f} of {ceiling['per_second']:.0f}/s no-work nginx)"
    statuses = ", ".join(f"{count} x {status}" for status, count in figures["failures"].items())
    failed = f"  FAILED {figures['failed']} ({statuses})" if figures["failed"] else ""
    cpu = f"  server CPU {figures['cpu_ms']:5.1f} ms/upload" if figures["cpu_ms"] else ""
    return (
        f"  {label:<44} {figures['per_second']:7.1f} uploads/s  p50 {figures['p50_ms']:6.1f} ms  "
        f"p99 {figures['p99_ms']:7.1f} ms{cpu}{share}{failed}"
    )


# The cases `--cases` can pick; all but "sweep" run by default.
CASES = ("1", "16x1", "16x16", "size", "sweep")
DEFAULT_CASES = CASES[:-1]
# Clients, each into a session of its own, for the sweep.
SWEEP = (1, 2, 4, 8, 16, 32)


def run_config(
    name: str,
    env: dict[str, str],
    work: Path,
    scale: float,
    ceilings: dict,
    profile: str,
    cases: tuple[str, ...] = DEFAULT_CASES,
) -> None:
    n = lambda value: max(16, int(value * scale))  # noqa: E731
    print(f"\n{name}")
    with app_server(env, 1, work, profile) as port:
        one = new_sessions(port, 1)
        drive(port, one, 4, 64)  # warm-up: imports, connections, caches
        if "1" in cases:
            print(line("1 client, one session", drive(port, one, 1, n(200)), ceilings["1"]))
        for case, label, sessions in (
            ("16x1", "16 clients, one session", 1),
            ("16x16", "16 clients, 16 sessions", 16),
        ):
            if case in cases:
                figures = drive(port, new_sessions(port, sessions), 16, n(1000))
                print(line(label, figures, ceilings["16"]))
        if "sweep" in cases:
            sweep(port, scale)
        if "size" not in cases:
            return
        small = new_sessions(port, 1)
        drive(port, small, 4, 100)
        big = new_sessions(port, 1)
        drive(port, big, 16, n(10_000))
        at_100 = drive(port, small, 1, n(200))
        at_10k = drive(port, big, 1, n(200))
        files = n(10_000)
        print(line("1 client, session with 100 files", at_100, None))
        print(line(f"1 client, session with {files} files", at_10k, None))
        ratio = at_10k["p50_ms"] / at_100["p50_ms"]
        print(f"  cost ratio {files} : 100 files (p50)          {ratio:.2f}  (target <= 1.25)")


def sweep(port: int, scale: float) -> None:
    """
    N clients, each into a session of its own, for N in SWEEP: where the
    throughput stops growing with the clients, and the server's CPU per
    upload and in cores (uploads/s x CPU per upload) when it does.
    """
    for clients in SWEEP:
        figures = drive(
            port, new_sessions(port, clients), clients, max(200, int(60 * clients * scale))
        )
        cores = figures["per_second"] * figures["cpu_ms"] / 1000
        label = f"{clients} client{'s' if clients > 1 else ''}, as many sessions"
        print(f"{line(label, figures, None)}  = {cores:.2f} cores")


def workers_on_pg(pg: dict[str, str], work: Path, scale: float, ceilings: dict) -> None:
    """
    16 clients into 16 sessions on 1 and on 3 worker processes. As
    docs/DEPLOY.md runs them, each worker has a port of its own, and the
    clients' connections are spread over them in turn, as nginx's round robin
    spreads requests over its upstreams. For comparison, 3 workers also
    share one listening socket (`uvicorn --workers 3`): there the kernel
    hands each new connection to whichever worker accepts first, and a
    worker that wakes to several pending connections takes them all, so
    the split of the 16 connections, kept for the whole run, varies from run
    to run (each worker's share of the CPU is printed).
    """
    print("\nPostgreSQL + Redis, 16 clients into 16 sessions, by worker processes")

    def sixteen_sessions(ports: int | list[int]) -> dict[str, float]:
        sessions16 = new_sessions(ports if isinstance(ports, int) else ports[0], 16)
        drive(ports, sessions16, 16, 160)  # warm-up
        return drive(ports, sessions16, 16, max(160, int(1000 * scale)))

    results = {}
    for workers in (1, 3):
        with contextlib.ExitStack() as servers:
            ports = [
                servers.enter_context(app_server(pg, 1, work, f"postgres-{workers}-workers-{i}"))
                for i in range(workers)
            ]
            results[workers] = sixteen_sessions(ports)
        label = "1 worker" if workers == 1 else f"{workers} workers, a port each"
        print(line(label, results[workers], ceilings["16"]))
    ratio = results[3]["per_second"] / results[1]["per_second"]
    print(f"  3 workers : 1 worker                          {ratio:.2f}  (target >= 1.5)")
    with app_server(pg, 3, work, "postgres-3-workers-shared") as port:
        shared = sixteen_sessions(port)
    shares = ", ".join(f"{share:.0%}" for share in shared["cpu_shares"])
    print(line("3 workers, one shared socket", shared, ceilings["16"]))
    ratio = shared["per_second"] / results[1]["per_second"]
    print(f"  its CPU by process: {shares}; against 1 worker {ratio:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", action="store_true", help="also run on PostgreSQL + Redis")
    parser.add_argument("--quick", action="store_true", help="a tenth of the requests")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record each server with py-spy (collapsed stacks, one file per configuration)",
    )
    parser.add_argument(
        "--cases",
        default=",".join(DEFAULT_CASES),
        help="the embedded cases to run, comma-separated, of: 1 (one client), 16x1 (16 "
        "clients, one session), 16x16 (16 clients, 16 sessions), size (100 vs 10,000 files), "
        "sweep (1 to 32 clients, a session each, and the cores the server used); all but "
        "sweep by default",
    )
    parser.add_argument(
        "--server-cpu",
        help="MAC_SERVER_CPU for the embedded server (default: its own default, auto)",
    )
    args = parser.parse_args()
    cases = tuple(case.strip() for case in args.cases.split(","))
    if unknown := set(cases) - set(CASES):
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    if args.profile:
        if shutil.which("py-spy") is None:
            parser.error("--profile needs py-spy on the PATH (.venv/bin/pip install py-spy)")
        global PROFILE_DIR
        PROFILE_DIR = Path(args.profile).resolve()
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    scale = 0.1 if args.quick else 1.0
    work = Path(tempfile.mkdtemp(prefix="bench-uploads-"))
    base_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "macproject.settings",
        "MAC_WAREHOUSE_DIR": str(work / "WareHouse"),
        "MAC_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    base_env.pop("DATABASE_URL", None)
    base_env.pop("REDIS_URL", None)
    # A throwaway installation needs a key of its own (the placeholder fails the checks).
    base_env.setdefault("MAC_SECRET_KEY", secrets.token_urlsafe(50))
    try:
        with nginx_canned(work) as nginx_port:
            sessions = [("canned", "x")]
            ceilings = {
                "1": drive(nginx_port, sessions, 1, 2000),
                "16": drive(nginx_port, sessions, 16, 8000),
            }
        print("no-work server (nginx, canned 201), same client:")
        print(line("1 client", ceilings["1"], None))
        print(line("16 clients", ceilings["16"], None))

        embedded = {**base_env, "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}"}
        if args.server_cpu:
            embedded["MAC_SERVER_CPU"] = args.server_cpu
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "-v0"], cwd=PROJECT_DIR, env=embedded, check=True
        )
        run_config(
            "embedded defaults (SQLite, in-memory layer), 1 worker",
            embedded,
            work,
            scale,
            ceilings,
            "embedded",
            cases,
        )

        if args.postgres:
            database = os.environ.get(
                "DATABASE_URL", "postgres://root@127.0.0.1:5432/bench_uploads"
            )
            subprocess.run(
                ["createdb", "-h", "127.0.0.1", database.rsplit("/", 1)[1]], capture_output=True
            )
            pg = {
                **base_env,
                "DATABASE_URL": database,
                "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/9"),
                "MAC_WAREHOUSE_DIR": str(work / "WareHousePG"),
            }
            subprocess.run(
                [PYTHON, "manage.py", "migrate", "-v0"], cwd=PROJECT_DIR, env=pg, check=True
            )
            run_config("PostgreSQL + Redis, 1 worker", pg, work, scale, ceilings, "postgres")
            workers_on_pg(pg, work, scale, ceilings)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
