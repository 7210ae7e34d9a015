"""
The fixed cost of one tus PATCH: many PATCHes of a few KiB to one upload on
the default server (Uvicorn, SQLite unless --database-url), against HEADs of
the same upload (a plain request through Django's middleware and a view,
with one query). Printed: the median latency of each, and the server's CPU
time per request (all its threads, from /proc), as a ratio PATCH / HEAD.

A PATCH pays, on top of a HEAD's work, the lease (one conditional UPDATE),
the file's fsync and the offset's move (one more UPDATE); what it costs
beyond that is the request path itself. With 8 MiB chunks, a 1 GiB upload
pays it 128 times (bench/resumable_upload.py).

    .venv/bin/python bench/tus_patch_cost.py [--requests 600] [--piece-kib 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from resumable_upload import PROJECT_DIR, migrated_installation, request, server, tus_create

TUS = {"Tus-Resumable": "1.0.0"}


def server_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--piece-kib", type=int, default=4)
    parser.add_argument("--database-url", help="an empty database; default: a new SQLite")
    args = parser.parse_args()
    n, piece = args.requests, args.piece_kib * 1024
    work = Path(tempfile.mkdtemp(prefix="bench-tus-cost-", dir=PROJECT_DIR))
    body = os.urandom(piece)
    try:
        env = migrated_installation(work, args.database_url)
        with server(env, work) as (port, process):
            path, auth = tus_create(port, (n + n // 3) * piece)
            offset = 0

            def patch() -> float:
                nonlocal offset
                started = time.perf_counter()
                status, _h, reply = request(
                    port,
                    "PATCH",
                    path,
                    body,
                    {
                        **auth,
                        **TUS,
                        "Content-Type": "application/offset+octet-stream",
                        "Upload-Offset": str(offset),
                    },
                )
                assert status == 204, reply
                offset += piece
                return time.perf_counter() - started

            def head() -> float:
                started = time.perf_counter()
                status, _h, reply = request(port, "HEAD", path, None, {**auth, **TUS})
                assert status == 200, reply
                return time.perf_counter() - started

            for _ in range(n // 3):  # warm-up: imports, connections, caches
                patch()
                head()
            cpu = server_cpu_seconds(process.pid)
            patches = [patch() for _ in range(n)]
            patch_cpu = server_cpu_seconds(process.pid) - cpu
            cpu = server_cpu_seconds(process.pid)
            heads = [head() for _ in range(n)]
            head_cpu = server_cpu_seconds(process.pid) - cpu
        database = "PostgreSQL" if env["DATABASE_URL"].startswith("postgres") else "SQLite"
        p, h = statistics.median(patches), statistics.median(heads)
        print(f"{n} PATCHes of {args.piece_kib} KiB and {n} HEADs, one upload ({database}):")
        print(f"  PATCH  median {p * 1000:6.2f} ms   server CPU {patch_cpu / n * 1000:6.2f} ms")
        print(f"  HEAD   median {h * 1000:6.2f} ms   server CPU {head_cpu / n * 1000:6.2f} ms")
        print(f"  PATCH / HEAD: latency {p / h:.2f}, server CPU {patch_cpu / head_cpu:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
