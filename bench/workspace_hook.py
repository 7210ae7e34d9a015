"""
WorkspaceArtifactHook: the cost of finding one changed file in a big workspace.

Builds a workspace of --files files totalling --total-bytes (default 10,000
files, 1 GiB) in 100-file directories, then, for each mode of the hook
(inotify where available, and stat-signature comparison), changes one file
and times `check()`: finding the change, hashing the changed file and
recording it in the manifest. The reference is hashing every file of the
workspace, which is what a hook without signatures would do. Prints the
median of --repeat changes and its ratio to the reference; the target is a
ratio under 0.01.

    .venv/bin/python bench/workspace_hook.py [--dir /tmp/hook-bench] [--files N] [--total-bytes B]

The workspace is kept in --dir for the next run (delete it when done).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attachments.store import AttachmentStore  # noqa: E402
from workflows.workspace import WorkspaceArtifactHook  # noqa: E402

PER_DIR = 100


def build(workspace: Path, files: int, total: int) -> list[Path]:
    size = max(total // files, 1)
    block = os.urandom(size)
    created = []
    for index in range(files):
        path = workspace / f"d{index // PER_DIR:04d}" / f"f{index % PER_DIR:03d}.bin"
        created.append(path)
        if path.exists() and path.stat().st_size == size:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        # A distinct first line per file, so no two files hash alike.
        path.write_bytes(index.to_bytes(8, "big") + block[8:])
    return created


def hash_everything(paths: list[Path]) -> float:
    started = time.perf_counter()
    for path in paths:
        digest = hashlib.sha256()
        with open(path, "rb") as source:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
    return time.perf_counter() - started


def measure(
    store: AttachmentStore, paths: list[Path], watch: bool, repeat: int
) -> tuple[str, list[float]]:
    hook = WorkspaceArtifactHook(store, watch=watch)
    hook.prime()
    try:
        hook.check("warm-up")
        timings = []
        for round_ in range(repeat):
            target = paths[(round_ * 997) % len(paths)]
            with open(target, "r+b") as changed:
                changed.write(os.urandom(16))
            started = time.perf_counter()
            changes = hook.check("bench")
            timings.append(time.perf_counter() - started)
            assert len(changes.created) + len(changes.updated) == 1, changes
        return hook.mode, timings
    finally:
        hook.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "hook-bench")
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--total-bytes", type=int, default=1 << 30)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    store = AttachmentStore(args.dir / "session_bench", "bench")
    mib = args.total_bytes / (1 << 20)
    print(f"Building {args.files} files, {mib:.0f} MiB in {store.workspace} ...")
    paths = build(store.workspace, args.files, args.total_bytes)
    store.manifest.path.unlink(missing_ok=True)

    reference = min(hash_everything(paths) for _ in range(2))
    print(f"hash the whole workspace:           {reference * 1000:9.1f} ms")
    for watch in (True, False):
        mode, timings = measure(store, paths, watch, args.repeat)
        median = statistics.median(timings)
        print(
            f"detect + hash + record one change ({mode:7}): {median * 1000:7.2f} ms"
            f"   ratio {median / reference:.4f}"
        )
        store.manifest.path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
