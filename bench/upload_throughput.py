"""
Upload throughput and memory per ASGI server.

For each server: start it on a free local port against a throw-away warehouse
and SQLite database, upload one large random file with curl (which streams it
from disk), check the sha256 and size that the server reports, and compare the
upload's throughput with a raw write()+fsync of the same number of bytes to
the same directory. The server's RSS (all of its processes) is read from
/proc before the upload and at its peak (VmHWM, reset before each upload).

    .venv/bin/python bench/upload_throughput.py [--size-mib 1024]
        [--servers uvicorn,granian,daphne] [--runs 3] [--tmp-dir DIR]

Targets on the default server: ratio >= 0.6, RSS growth < 64 MiB.
Linux only (/proc); needs curl on PATH.

Before each upload come two timed raw writes. On a virtual machine the page
cache's speed depends on the host: memory freed a moment ago is still backed
and fast to reuse, memory idle for a few seconds may have been handed back
and is slow to fault in again (several times slower here). So a "cold" raw
write follows COLD_IDLE_SECONDS of idleness, and a "warm" one follows an
untimed write of the same size; the upload starts right after the warm one,
as the strict comparison. On bare metal the two agree. Every timed run first
waits for the CPUs to be idle, and the figures are medians: use --runs.
Daphne is skipped when the upload would not fit comfortably in memory.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from _common import free_port

PROJECT_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
APP = "macproject.asgi:application"
MIB = 1 << 20
CHUNK = 4 * MIB
# Timed runs wait (up to QUIET_MAX_WAIT seconds) for the CPUs to be this idle,
# so that another job on the machine does not pass for a slow server.
QUIET_BUSY_FRACTION = 0.1
QUIET_MAX_WAIT = 60.0
# Longer than Linux's free page reporting delay (2 s), after which a VM's host
# may take back memory that was freed.
COLD_IDLE_SECONDS = 3.0
TARGET_RATIO = 0.6
TARGET_RSS_GROWTH_MIB = 64

# The command line of each server, after the Python executable. Variants beyond
# the three supported servers compare configurations (--servers uvicorn-h11).
SERVERS: dict[str, str] = {
    "uvicorn": "-m uvicorn {app} --host 127.0.0.1 --port {port} --no-access-log",
    "uvicorn-h11": "-m uvicorn {app} --host 127.0.0.1 --port {port} --no-access-log --http h11",
    "granian": "-m granian --interface asgi {app} --host 127.0.0.1 --port {port} --workers 1",
    "daphne": "-m daphne -b 127.0.0.1 -p {port} {app}",
}

# Servers that hold a whole request body in memory, and roughly how many bytes
# per body byte: Daphne lets Twisted read the body, and Twisted also parses a
# multipart/form-data body into request.args with the email package.
MEMORY_PER_BODY_BYTE = {"daphne": 16}

_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclasses.dataclass
class UploadRun:
    seconds: float
    rss_before: int
    rss_peak: int
    cpu_seconds: float  # the server's, all processes, user + system
    quiet: bool  # the machine was idle when it started

    @property
    def rss_growth(self) -> int:
        return self.rss_peak - self.rss_before


@dataclasses.dataclass
class Baseline:
    """Seconds taken by raw write()+fsync runs, in each state (see the docstring)."""

    warm: list[float] = dataclasses.field(default_factory=list)
    cold: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ServerResult:
    name: str
    runs: list[UploadRun] = dataclasses.field(default_factory=list)
    error: str | None = None


# ---------------------------------------------------------------- data and baseline


def generate_file(path: Path, size: int) -> str:
    """Write `size` random bytes to `path` and return their sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            block = os.urandom(min(CHUNK, remaining))
            digest.update(block)
            f.write(block)
            remaining -= len(block)
        f.flush()
        os.fsync(f.fileno())
    return digest.hexdigest()


def measure_raw(directory: Path, size: int, baseline: Baseline) -> None:
    """A cold raw write, then a warm one; an upload should start right after."""
    if not wait_until_quiet(QUIET_MAX_WAIT):
        print("  (the machine is busy; these raw writes may be slow)", flush=True)
    time.sleep(COLD_IDLE_SECONDS)
    baseline.cold.append(raw_write_seconds(directory, size))
    raw_write_seconds(directory, size)
    baseline.warm.append(raw_write_seconds(directory, size))


def raw_write_seconds(directory: Path, size: int) -> float:
    """Time to write `size` bytes with write() and fsync them, as the upload has to."""
    block = os.urandom(MIB)
    view = memoryview(block)
    path = directory / "raw-write.bin"
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        remaining = size
        while remaining:
            remaining -= os.write(fd, view[: min(MIB, remaining)])
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    path.unlink()
    return elapsed


# ---------------------------------------------------------------- process memory


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (servers that fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; fields resume after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


def wait_until_quiet(max_wait: float) -> bool:
    """Wait until other processes leave the CPUs mostly idle; False if they never did."""
    deadline = time.monotonic() + max_wait
    while True:
        busy0, total0 = machine_cpu_seconds()
        time.sleep(0.5)
        busy1, total1 = machine_cpu_seconds()
        if busy1 - busy0 <= QUIET_BUSY_FRACTION * (total1 - total0):
            return True
        if time.monotonic() > deadline:
            return False


def tree_cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_kib(pids: list[int], field: str) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += _status_kib(pid, field)
    return total


def reset_peak_rss(pids: list[int]) -> bool:
    """Reset each process's VmHWM to its current RSS (Linux >= 4.0), so VmHWM is this run's peak."""
    try:
        for pid in pids:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
    except OSError:
        return False
    return True


class RssSampler:
    """Polls the summed RSS of a process tree; a fallback where VmHWM cannot be reset."""

    def __init__(self, pids: list[int], interval: float = 0.05) -> None:
        self.pids = pids
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, tree_kib(self.pids, "VmRSS"))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- server and client


BENCH_SECRET_KEY = secrets.token_urlsafe(50)


def server_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "MAC_WAREHOUSE_DIR": str(work / "warehouse"),
            "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
            "MAC_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            "NO_PROXY": "*",
        }
    )
    # A throwaway installation needs a key of its own (the placeholder fails the checks).
    env.setdefault("MAC_SECRET_KEY", BENCH_SECRET_KEY)
    return env


def request_json(method: str, url: str, body: dict[str, object] | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with _no_proxy.open(req, timeout=30) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


@contextlib.contextmanager
def running_server(name: str, work: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    command = [PYTHON, *SERVERS[name].format(app=APP, port=port).split()]
    log = open(work / f"{name}.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        command,
        cwd=PROJECT_DIR,
        env=server_env(work),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so its workers stop with it
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(process, base, work / f"{name}.log")
        yield process, base
    finally:
        _stop(process)
        log.close()


def _wait_until_up(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode}:\n{log.read_text()[-2000:]}"
            )
        try:
            # Any HTTP answer, even an error, means the app is loaded and serving.
            _no_proxy.open(f"{base}/api/sessions/readiness-probe", timeout=5).close()
            return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError("server did not answer within 60 s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def curl_upload(url: str, path: Path, response_path: Path, timeout: float) -> tuple[int, float]:
    """POST `path` as the `file` field, streamed from disk by curl; (HTTP status, seconds)."""
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            str(int(timeout)),
            # No "Expect: 100-continue": not every server answers it, and curl would stall a second.
            "-H",
            "Expect:",
            "-F",
            f"file=@{path};type=application/octet-stream",
            "-o",
            str(response_path),
            "-w",
            "%{http_code} %{time_total}",
            url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"curl failed ({result.returncode}): {result.stderr.strip()}")
    status, seconds = result.stdout.split()
    return int(status), float(seconds)


def upload_once(
    process: subprocess.Popen[bytes], base: str, data: Path, size: int, sha256: str, work: Path
) -> UploadRun:
    session = request_json("POST", f"{base}/api/sessions", {})
    assert isinstance(session, dict)
    session_id = session["session_id"]
    pids = process_tree(process.pid)
    quiet = wait_until_quiet(QUIET_MAX_WAIT)
    hwm_reset = reset_peak_rss(pids)
    before = tree_kib(pids, "VmRSS")
    cpu_before = tree_cpu_seconds(pids)
    response_path = work / "response.json"
    timeout = max(120.0, size / MIB)  # a generous 1 MiB/s floor
    sampler = None if hwm_reset else RssSampler(pids)
    try:
        with sampler or contextlib.nullcontext():
            status, seconds = curl_upload(
                f"{base}/api/uploads/{session_id}", data, response_path, timeout
            )
        cpu = tree_cpu_seconds(pids) - cpu_before
        peak = tree_kib(pids, "VmHWM") if sampler is None else sampler.peak_kib
        body = response_path.read_text()
        if status != 201:
            raise RuntimeError(f"upload answered {status}: {body[:500]}")
        answer = json.loads(body)
        if answer.get("size") != size or answer.get("sha256") != sha256:
            raise RuntimeError(
                f"server stored size {answer.get('size')} sha256 {answer.get('sha256')}, "
                f"expected {size} {sha256}"
            )
    finally:
        # Purge the session so that every run starts with the same free space.
        with contextlib.suppress(urllib.error.URLError):
            request_json("DELETE", f"{base}/api/sessions/{session_id}")
        response_path.unlink(missing_ok=True)
    return UploadRun(
        seconds=seconds,
        rss_before=before * 1024,
        rss_peak=peak * 1024,
        cpu_seconds=cpu,
        quiet=quiet,
    )


def warm_up(base: str, work: Path) -> None:
    """One small upload, so lazy imports and first-request set-up are not counted as growth."""
    small = work / "warm-up.bin"
    small.write_bytes(os.urandom(MIB))
    session = request_json("POST", f"{base}/api/sessions", {})
    assert isinstance(session, dict)
    response = work / "warm-up.json"
    status, _ = curl_upload(f"{base}/api/uploads/{session['session_id']}", small, response, 60)
    if status != 201:
        raise RuntimeError(f"warm-up upload answered {status}: {response.read_text()[:500]}")
    request_json("DELETE", f"{base}/api/sessions/{session['session_id']}")
    small.unlink()
    response.unlink()


# ---------------------------------------------------------------- main


def mib(n: float) -> str:
    return f"{n / MIB:.1f}"


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def measure_server(
    name: str, work: Path, data: Path, size: int, sha256: str, runs: int, baseline: Baseline
) -> ServerResult:
    result = ServerResult(name)
    factor = MEMORY_PER_BODY_BYTE.get(name)
    if factor is not None and factor * size > mem_available() // 2:
        result.error = (
            f"skipped: it holds about {factor}x the body in memory "
            f"({mib(factor * size)} MiB here, {mib(mem_available())} MiB available); "
            "measure it with a smaller --size-mib"
        )
        return result
    size_mib = size / MIB
    with running_server(name, work) as (process, base):
        warm_up(base, work)
        for _ in range(runs):
            measure_raw(work, size, baseline)
            run = upload_once(process, base, data, size, sha256, work)
            result.runs.append(run)
            print(
                f"  {name}: upload {size_mib / run.seconds:.0f} MiB/s "
                f"(raw warm {size_mib / baseline.warm[-1]:.0f}, "
                f"cold {size_mib / baseline.cold[-1]:.0f}), "
                f"server CPU {run.cpu_seconds:.2f} s, "
                f"RSS {mib(run.rss_before)} -> {mib(run.rss_peak)} MiB"
                + ("" if run.quiet else " (the machine was busy)"),
                flush=True,
            )
    return result


def report(results: list[ServerResult], baseline: Baseline, size: int) -> None:
    size_mib = size / MIB
    print()
    print(f"raw write()+fsync of {size_mib:.0f} MiB, median over {len(baseline.warm)} runs:")
    raw: dict[str, float] = {}
    for state, seconds in (("warm", baseline.warm), ("cold", baseline.cold)):
        speeds = sorted(size_mib / s for s in seconds)
        raw[state] = statistics.median(speeds)
        print(f"  {state} {raw[state]:.0f} MiB/s (min {speeds[0]:.0f}, max {speeds[-1]:.0f})")
    print(
        f"{'server':<12} {'MiB/s':>7} {'min-max':>9} {'ratio warm':>10} {'cold':>6} {'CPU s':>6} "
        f"{'RSS before':>11} {'peak':>8} {'growth':>7}  (MiB)"
    )
    for result in results:
        if result.error is not None or not result.runs:
            print(f"{result.name:<12} {result.error}")
            continue
        speeds = sorted(size_mib / r.seconds for r in result.runs)
        speed = statistics.median(speeds)
        cpu = statistics.median(r.cpu_seconds for r in result.runs)
        worst = max(result.runs, key=lambda r: r.rss_growth)
        spread = f"{speeds[0]:.0f}-{speeds[-1]:.0f}"
        print(
            f"{result.name:<12} {speed:>7.0f} {spread:>9} {speed / raw['warm']:>10.2f} "
            f"{speed / raw['cold']:>6.2f} {cpu:>6.2f} "
            f"{mib(worst.rss_before):>11} {mib(worst.rss_peak):>8} {mib(worst.rss_growth):>7}"
        )
    print(
        "ratio: median upload throughput / median raw throughput, warm (strict) and cold; "
        f"target >= {TARGET_RATIO}.\nRSS: all the server's processes, in the run that grew most; "
        f"target growth < {TARGET_RSS_GROWTH_MIB} MiB. CPU: the server's, median."
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="upload size (default 1024)")
    parser.add_argument(
        "--servers",
        default="uvicorn,granian,daphne",
        help=f"comma list of {', '.join(SERVERS)} (default uvicorn,granian,daphne)",
    )
    parser.add_argument("--runs", type=int, default=3, help="uploads per server (default 3)")
    parser.add_argument(
        "--tmp-dir", default=None, help="parent of the temporary directory (default: the system's)"
    )
    args = parser.parse_args()
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        parser.error(f"unknown servers: {', '.join(unknown)}")
    if args.runs < 1 or args.size_mib < 1:
        parser.error("--runs and --size-mib must be at least 1")
    if shutil.which("curl") is None:
        parser.error("curl is needed on PATH")
    size = args.size_mib * MIB

    work = Path(tempfile.mkdtemp(prefix="upload-bench-", dir=args.tmp_dir))
    try:
        print(f"work dir {work}; {args.size_mib} MiB; {args.runs} upload(s) per server", flush=True)
        data = work / "upload.bin"
        sha256 = generate_file(data, size)
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=PROJECT_DIR,
            env=server_env(work),
            check=True,
        )
        baseline = Baseline()
        results: list[ServerResult] = []
        for name in servers:
            try:
                result = measure_server(name, work, data, size, sha256, args.runs, baseline)
            except Exception as exc:  # noqa: BLE001 (reported; the other servers still run)
                result = ServerResult(name, error=f"failed: {type(exc).__name__}: {exc}")
            if result.error is not None:
                print(f"  {name}: {result.error}", flush=True)
            results.append(result)
        if not baseline.warm:
            return 1
        report(results, baseline, size)
        return 1 if any(r.error and r.error.startswith("failed") for r in results) else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
