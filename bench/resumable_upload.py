"""
tus against multipart: one large file uploaded both ways to the default
server (Uvicorn, embedded defaults), and the cost of resuming after the
server was killed.

The same client sends both (a raw socket, the body written in 1 MiB blocks
from a memory map of the file), so the ratio compares the two server paths:

- multipart: one POST /api/uploads/{sid} with the whole file;
- tus: POST to create, then PATCHes of --chunk-mib each.

For scale, each upload follows a twin that writes the same bytes with no
server, as the server writes them (copied into a 1 MiB page-aligned buffer,
written around the page cache): before the multipart upload with one fsync
at the end, as it syncs; before the tus upload with an fsync of every chunk
on another thread while the next one is written, as the server syncs each
PATCH after its 204, and one at the end. Each path's share of its twin's
speed says how much the server adds to the disk, which on a shared virtual
disk can halve or double its speed within minutes.

Then a tus upload is interrupted half-way by SIGKILL of the server, in the
middle of a PATCH that holds the upload's lease; a new server starts, and
the client resumes: HEAD for the offset, then the next PATCH, which takes
over the dead worker's lease at once and first re-hashes the half already
on disk (the digest state lived in the killed process). Printed: the time
from the new server's first answer to the resumed upload's end, against the
same half sent without a restart.

    .venv/bin/python bench/resumable_upload.py [--size-mib 1024] [--chunk-mib 8] [--runs 3]
                                               [--work-dir /dev/shm] [--no-resume]

Target: tus / multipart >= 0.8.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import mmap
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import free_port, read_response, wait_until_listening

PROJECT_DIR = Path(__file__).resolve().parent.parent
MIB = 1 << 20
BOUNDARY = "resumablebench0b1f"


@contextlib.contextmanager
def server(env: dict[str, str], work: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    log = open(work / f"server-{port}.log", "wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "macproject.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--lifespan",
            "off",
        ],
        cwd=PROJECT_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until_listening(port, process, log=work / f"server-{port}.log")
        yield port, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


# One kept-alive connection per server, as tus clients (and browsers) keep
# theirs between PATCHes. The client is a raw socket, not an HTTP library:
# a request's head is one write, its body the caller's buffers as they are,
# and the answer's head is split on its lines, so that what each request
# costs the client (128 of them for tus, one for multipart) stays small
# beside what it costs the server.
_connections: dict[int, socket.socket] = {}
_received: dict[int, bytearray] = {}


def request(port: int, method: str, path: str, body=None, headers=None) -> tuple[int, dict, bytes]:
    """
    `body`: None, bytes, or an iterable of buffers (then `headers` give its
    Content-Length). Returns the status, the headers (lower-cased names) and
    the body of the answer.
    """
    headers = dict(headers or {})
    if isinstance(body, bytes | bytearray | memoryview):
        headers.setdefault("Content-Length", str(len(body)))
        body = [body]
    sock = _connections.get(port)
    if sock is None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=600)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _connections[port], _received[port] = sock, bytearray()
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    try:
        sock.sendall(head.encode("latin-1") + b"\r\n")
        for piece in body or ():
            sock.sendall(piece)
        status, answer_headers, data = read_response(sock, _received[port], method)
    except (OSError, ValueError):
        sock.close()
        del _connections[port], _received[port]
        raise
    if answer_headers.get("connection", "").lower() == "close":
        sock.close()
        del _connections[port], _received[port]
    return status, answer_headers, data


def hang_up() -> None:
    """Close the kept-alive connections; the next request opens its own."""
    for port in list(_connections):
        _connections.pop(port).close()
        del _received[port]


def new_session(port: int) -> tuple[str, dict[str, str]]:
    status, _h, body = request(
        port, "POST", "/api/sessions", b"{}", {"Content-Type": "application/json"}
    )
    reply = json.loads(body)
    return reply["session_id"], {"Authorization": f"Bearer {reply['token']}"}


def multipart(port: int, data: mmap.mmap) -> float:
    session_id, auth = new_session(port)
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    headers = {
        **auth,
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(len(head) + len(data) + len(tail)),
    }
    view = memoryview(data)
    body = iter([head, *(view[i : i + MIB] for i in range(0, len(data), MIB)), tail])
    started = time.perf_counter()
    status, _h, reply = request(port, "POST", f"/api/uploads/{session_id}", body, headers)
    elapsed = time.perf_counter() - started
    assert status == 201, reply
    return elapsed


def tus_create(
    port: int, size: int, session: tuple[str, dict[str, str]] | None = None
) -> tuple[str, dict[str, str]]:
    session_id, auth = session or new_session(port)
    status, headers, reply = request(
        port,
        "POST",
        f"/api/uploads/{session_id}/tus/",
        b"",
        {
            **auth,
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(size),
            "Upload-Metadata": "filename " + base64.b64encode(b"big.bin").decode(),
        },
    )
    assert status == 201, reply
    return headers["location"].split(f":{port}", 1)[1], auth


def tus_send(
    port: int, path: str, auth: dict[str, str], data: mmap.mmap, start: int, end: int, chunk: int
) -> None:
    view = memoryview(data)
    offset = start
    while offset < end:
        piece = view[offset : min(end, offset + chunk)]
        status, _h, reply = request(
            port,
            "PATCH",
            path,
            iter(piece[i : i + MIB] for i in range(0, len(piece), MIB)),
            {
                **auth,
                "Tus-Resumable": "1.0.0",
                "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": str(offset),
                "Content-Length": str(len(piece)),
            },
        )
        assert status == 204, reply
        offset += len(piece)


def tus(port: int, data: mmap.mmap, chunk: int) -> float:
    # Timed like the multipart upload: from the first request about the file
    # (here the creation POST) to the last answer, the session made before.
    session = new_session(port)
    started = time.perf_counter()
    path, auth = tus_create(port, len(data), session)
    tus_send(port, path, auth, data, 0, len(data), chunk)
    return time.perf_counter() - started


def disk_alone(data: mmap.mmap, directory: Path, sync_every: int) -> tuple[float, bool]:
    """
    The same bytes written as the server writes them, with no server: each
    MiB copied into a page-aligned buffer and written from it around the
    page cache (O_DIRECT, where the filesystem takes it) to a file in
    `directory`, with an fsync after every `sync_every` bytes, started on
    another thread while the writes go on, and one at the end. Returns the
    seconds and whether O_DIRECT was used.
    """
    path = directory / "disk-alone.bin"
    direct = getattr(os, "O_DIRECT", 0)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | direct, 0o600)
    except OSError:
        fd, direct = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 0
    buffer = mmap.mmap(-1, MIB)
    view = memoryview(data)
    syncs = ThreadPoolExecutor(max_workers=2)
    try:
        started = time.perf_counter()
        for offset in range(0, len(data), MIB):
            piece = view[offset : offset + MIB]
            buffer[: len(piece)] = piece
            os.write(fd, memoryview(buffer)[: len(piece)])
            if (offset + MIB) % sync_every == 0 and offset + MIB < len(data):
                syncs.submit(os.fsync, fd)
        os.fsync(fd)
        return time.perf_counter() - started, bool(direct)
    finally:
        syncs.shutdown()
        os.close(fd)
        buffer.close()
        path.unlink()


def migrated_installation(work: Path, database_url: str | None) -> dict[str, str]:
    """
    The environment of a throwaway installation in `work` (its warehouse, and
    a new SQLite database unless `database_url` names an empty one), migrated.
    """
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "macproject.settings",
        "DATABASE_URL": database_url or f"sqlite:///{work / 'db.sqlite3'}",
        "MAC_WAREHOUSE_DIR": str(work / "wh"),
    }
    env.pop("REDIS_URL", None)
    # A throwaway installation needs a key of its own (the placeholder fails the checks).
    env.setdefault("MAC_SECRET_KEY", secrets.token_urlsafe(50))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=PROJECT_DIR, env=env, check=True
    )
    return env


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--chunk-mib", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--database-url",
        help="e.g. postgres://root@127.0.0.1:5432/bench (an empty database); default: a new SQLite",
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="measure throughput only, not the resume"
    )
    parser.add_argument(
        "--work-dir",
        default=str(PROJECT_DIR),
        help="where the warehouse, the database and the twins' files go (default: the "
        "project); a tmpfs such as /dev/shm takes the disk out, leaving what each path "
        "costs the CPU",
    )
    args = parser.parse_args()
    size, chunk = args.size_mib * MIB, args.chunk_mib * MIB
    work = Path(tempfile.mkdtemp(prefix="bench-tus-", dir=args.work_dir))
    try:
        env = migrated_installation(work, args.database_url)
        source = work / "big.bin"
        with open(source, "wb") as out:
            for _ in range(args.size_mib):
                out.write(os.urandom(MIB))
        with open(source, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            multi, resumed, disk_once, disk_each = [], [], [], []
            client_cpu = {"multipart": 0.0, "tus": 0.0}
            with server(env, work) as (port, _process):
                for _ in range(args.runs):
                    # Each upload right after its disk-alone twin: the
                    # disk's speed drifts, by half or double, within minutes.
                    seconds, direct = disk_alone(data, work, size)
                    disk_once.append(seconds)
                    # The server may have closed the idle connection meanwhile
                    # (Uvicorn's keep-alive timeout is 5 s): start afresh.
                    hang_up()
                    before = time.process_time()
                    multi.append(multipart(port, data))
                    client_cpu["multipart"] += time.process_time() - before
                    disk_each.append(disk_alone(data, work, chunk)[0])
                    hang_up()
                    before = time.process_time()
                    resumed.append(tus(port, data, chunk))
                    client_cpu["tus"] += time.process_time() - before
            m, t = statistics.median(multi), statistics.median(resumed)
            once, each = statistics.median(disk_once), statistics.median(disk_each)
            database = "PostgreSQL" if env["DATABASE_URL"].startswith("postgres") else "SQLite"
            print(
                f"{args.size_mib} MiB, tus in {args.chunk_mib} MiB chunks, medians of {args.runs}"
                f" ({database}):"
            )
            print(f"  multipart  {m:6.2f} s  {args.size_mib / m:7.1f} MiB/s")
            print(f"  tus        {t:6.2f} s  {args.size_mib / t:7.1f} MiB/s")
            print(f"  tus / multipart throughput: {m / t:.2f}  (target >= 0.8)")
            # What the ratio hides: it moves with the disk, this much less.
            patches = math.ceil(size / chunk)
            print(f"  tus's time over multipart's, per PATCH: {(t - m) / patches * 1000:.1f} ms")
            how = "O_DIRECT" if direct else "through the page cache"
            every = f"an fsync every {args.chunk_mib} MiB, behind"
            print(f"  the disk alone ({how}, 1 MiB writes), same bytes:")
            once_label = "one fsync at the end"
            print(f"    {once_label:<30} {once:6.2f} s   multipart / it: {once / m:.2f}")
            print(f"    {every:<30} {each:6.2f} s   tus / it: {each / t:.2f}")
            # The client must not be the bottleneck: its CPU time against the wall time.
            shares = {
                "multipart": client_cpu["multipart"] / sum(multi),
                "tus": client_cpu["tus"] / sum(resumed),
            }
            print(
                f"  client CPU / wall time: multipart {shares['multipart']:.0%},"
                f" tus {shares['tus']:.0%}"
            )

            if args.no_resume:
                return 0
            half = (size // 2 // chunk) * chunk
            with server(env, work) as (port, process):
                path, auth = tus_create(port, size)
                tus_send(port, path, auth, data, 0, half, chunk)
                # Killed in the middle of the next PATCH, which holds the upload's lease.
                with socket.create_connection(("127.0.0.1", port)) as cut:
                    cut.sendall(
                        (
                            f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                            + "".join(f"{name}: {value}\r\n" for name, value in auth.items())
                            + "Tus-Resumable: 1.0.0\r\n"
                            "Content-Type: application/offset+octet-stream\r\n"
                            f"Upload-Offset: {half}\r\nContent-Length: {chunk}\r\n\r\n"
                        ).encode("latin-1")
                    )
                    cut.sendall(memoryview(data)[half : half + chunk // 2])
                    time.sleep(0.5)
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            with server(env, work) as (port, _process):
                started = time.perf_counter()
                status, headers, _ = request(
                    port, "HEAD", path, None, {**auth, "Tus-Resumable": "1.0.0"}
                )
                assert status == 200 and int(headers["upload-offset"]) == half
                head_seconds = time.perf_counter() - started
                tus_send(port, path, auth, data, half, size, chunk)
                after_kill = time.perf_counter() - started
                path2, auth2 = tus_create(port, size)
                tus_send(port, path2, auth2, data, 0, half, chunk)
                started = time.perf_counter()
                tus_send(port, path2, auth2, data, half, size, chunk)
                without_kill = time.perf_counter() - started
            print(f"resume after SIGKILL at {half // MIB} MiB, in the middle of a PATCH:")
            print(f"  HEAD for the offset      {head_seconds * 1000:7.1f} ms")
            print(
                f"  second half, resumed     {after_kill:7.2f} s"
                f" (re-hashes {half // MIB} MiB on disk first)"
            )
            print(f"  second half, no restart  {without_kill:7.2f} s")
            print(f"  cost of resuming: {after_kill - without_kill:+.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
