"""
What serving a page over ASGI adds to the page itself: the server's CPU
time per request for a few plain pages (sync DRF views) on the default
server (Uvicorn, SQLite unless --database-url), against the CPU time of the
same requests run in one thread by Django's test client in a process of
their own (the view, the middleware, the queries: no ASGI, no thread hop).

    .venv/bin/python bench/page_cost.py [--requests 600] [--database-url postgres://...]

The client is one raw socket, one request at a time; the server's CPU is
read from /proc (all its threads), so the client's own cost is not in it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from resumable_upload import PROJECT_DIR, migrated_installation, request, server, tus_create
from tus_patch_cost import server_cpu_seconds

# Run in a process of its own with the installation's environment: the
# same pages, in one thread, through Django's test client.
IN_PROCESS = """
import json, sys, time
import django
django.setup()
from django.test import Client
pages, auth, n = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
client = Client(**{"HTTP_" + k.upper().replace("-", "_"): v for k, v in auth.items()})
costs = {}
for method, path in pages:
    call = getattr(client, method.lower())
    for _ in range(n // 3):
        call(path)
    started = time.process_time()
    for _ in range(n):
        assert call(path).status_code == 200
    costs[f"{method} {path}"] = (time.process_time() - started) / n
print(json.dumps(costs))
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--database-url", help="an empty database; default: a new SQLite")
    args = parser.parse_args()
    n = args.requests
    work = Path(tempfile.mkdtemp(prefix="bench-pages-", dir=PROJECT_DIR))
    try:
        env = migrated_installation(work, args.database_url)
        with server(env, work) as (port, process):
            path, auth = tus_create(port, 1 << 20)
            session_id = path.split("/")[3]
            auth = {**auth, "Tus-Resumable": "1.0.0"}
            pages = [
                ("GET", "/api/limits"),
                ("GET", f"/api/sessions/{session_id}"),
                ("GET", f"/api/uploads/{session_id}"),
                ("HEAD", path),
            ]
            served = {}
            for method, page in pages:
                for _ in range(n // 3):  # warm-up: imports, connections, caches
                    request(port, method, page, None, auth)
                cpu = server_cpu_seconds(process.pid)
                for _ in range(n):
                    status, _headers, reply = request(port, method, page, None, auth)
                    assert status == 200, reply
                served[f"{method} {page}"] = (server_cpu_seconds(process.pid) - cpu) / n
        result = subprocess.run(
            [sys.executable, "-c", IN_PROCESS, json.dumps(pages), json.dumps(auth), str(n)],
            cwd=PROJECT_DIR,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        in_process = json.loads(result.stdout.strip().splitlines()[-1])
        database = "PostgreSQL" if env["DATABASE_URL"].startswith("postgres") else "SQLite"
        print(f"server CPU per request, {n} each ({database}), Uvicorn : in one thread")
        for name, cost in served.items():
            alone = in_process[name]
            shown = name.replace(session_id, "{sid}").split("/tus/")[0]
            shown += "/tus/{id}" if "/tus/" in name else ""
            print(
                f"  {shown:44s} {cost * 1e3:6.2f} ms : {alone * 1e3:5.2f} ms  = {cost / alone:.2f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parent)
    sys.exit(main())
