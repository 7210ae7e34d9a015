#!/usr/bin/env python
"""
One artifact served by the application against nginx serving the same file
with sendfile, over loopback.

    python bench/live_file_serving.py                  # 100 MiB, 5 runs, granian and uvicorn
    python bench/live_file_serving.py --mib 32 --runs 3 --servers granian

Uploads one file of `--mib` MiB of random bytes through the API to a server
started here (scratch warehouse and SQLite), then downloads
`GET .../artifacts/{id}?mode=stream` with curl to /dev/null, `--runs` times
after one warm-up, and the same file from nginx (installed with apt-get from
Debian's packages if it is missing) started on the warehouse with
`sendfile on`. Prints each side's median MiB/s and their ratio. The file is in
the page cache on both sides. Under Granian the application hands the file to
the server (ASGI `http.response.pathsend`); under Uvicorn and Daphne it
streams it in 4 MiB reads.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from _common import free_port

ROOT = Path(__file__).resolve().parent.parent

SERVERS = {
    "granian": [
        sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
        "--port", "{port}", "--log-level", "warning", "macproject.asgi:application",
    ],
    "uvicorn": [
        sys.executable, "-m", "uvicorn", "macproject.asgi:application", "--host", "127.0.0.1",
        "--port", "{port}", "--no-access-log", "--log-level", "warning",
    ],
    "daphne": [
        sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", "{port}",
        "macproject.asgi:application",
    ],
}  # fmt: skip

NGINX_CONF = """
daemon off;
worker_processes 1;
{user}
pid {scratch}/nginx.pid;
error_log {scratch}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {scratch}/nginx-body;
    proxy_temp_path {scratch}/nginx-proxy;
    fastcgi_temp_path {scratch}/nginx-fastcgi;
    uwsgi_temp_path {scratch}/nginx-uwsgi;
    scgi_temp_path {scratch}/nginx-scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{url} did not start") from None
            time.sleep(0.1)


@contextmanager
def started(command: list[str], url: str, env: dict[str, str], log: Path) -> Iterator[None]:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, start_new_session=True, stdout=out, stderr=out
        )
    try:
        wait_until_up(url, process)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if found:
        return found
    print("nginx is missing: installing it from Debian's packages", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "nginx"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return shutil.which("nginx") or "/usr/sbin/nginx"


def download_mib_s(url: str, size: int) -> float:
    """One download with curl to /dev/null; curl's own average speed, in MiB/s."""
    result = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{speed_download}", url],
        capture_output=True,
        text=True,
        check=True,
    )
    received, speed = result.stdout.split()
    assert int(received) == size, (received, size)
    return float(speed) / (1 << 20)


def show(name: str, speeds: list[float]) -> float:
    speed = statistics.median(speeds)
    print(f"  {name:8} {speed:8.0f} MiB/s  (runs: {', '.join(f'{s:.0f}' for s in speeds)})")
    return speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--servers", default="granian,uvicorn", help="granian,uvicorn,daphne")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="file-serving-bench-"))
    warehouse = scratch / "WareHouse"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "macproject.settings",
        "MAC_WAREHOUSE_DIR": str(warehouse),
        "MAC_ACCESS_POLICY": "open",
        "DATABASE_URL": f"sqlite:///{scratch / 'bench.sqlite3'}",
        "PYTHONPATH": str(ROOT),
        "MAC_SECRET_KEY": os.environ.get("MAC_SECRET_KEY") or secrets.token_urlsafe(50),
    }
    size = args.mib << 20
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
            cwd=ROOT, env=env, check=True,
        )  # fmt: skip
        nginx = nginx_binary()
        nginx_port = free_port()
        conf = scratch / "nginx.conf"
        # As root, nginx's workers would drop to `nobody`, who cannot read the
        # scratch directory.
        user = "user root;" if os.getuid() == 0 else ""
        conf.write_text(
            NGINX_CONF.format(scratch=scratch, port=nginx_port, root=warehouse, user=user)
        )
        nginx_url = f"http://127.0.0.1:{nginx_port}/"
        ratios: dict[str, float] = {}
        with started(
            [nginx, "-c", str(conf), "-p", str(scratch)], nginx_url, env, scratch / "nginx.log"
        ):
            artifact_url = ""
            for kind in args.servers.split(","):
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                command = [part.format(port=port) for part in SERVERS[kind]]
                with started(command, url + "/api/sessions/probe", env, scratch / f"{kind}.log"):
                    if not artifact_url:
                        session = httpx.post(url + "/api/sessions", json={}).json()["session_id"]
                        uploaded = httpx.post(
                            f"{url}/api/uploads/{session}",
                            files={"file": ("big.bin", os.urandom(size))},
                            timeout=120,
                        ).json()
                        artifact = warehouse / f"session_{session}" / uploaded["path"]
                        assert artifact.stat().st_size == size
                        nginx_url += str(artifact.relative_to(warehouse))
                        artifact_url = (
                            f"/api/sessions/{session}/artifacts/{uploaded['attachment_id']}"
                            "?mode=stream"
                        )
                    # Warm-up, then turn and turn about, so that both sides
                    # see the same load from the rest of the machine.
                    download_mib_s(url + artifact_url, size)
                    download_mib_s(nginx_url, size)
                    app_speeds, nginx_speeds = [], []
                    for _ in range(args.runs):
                        app_speeds.append(download_mib_s(url + artifact_url, size))
                        nginx_speeds.append(download_mib_s(nginx_url, size))
                    print(f"{kind}:")
                    ratios[kind] = show(kind, app_speeds) / show("nginx", nginx_speeds)
        print(f"\n{args.mib} MiB artifact, medians of {args.runs}; ratio to nginx sendfile:")
        for kind, ratio in ratios.items():
            print(f"  {kind:8} {ratio:.2f}x")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
