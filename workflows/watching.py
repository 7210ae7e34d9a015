"""
A recursive inotify watcher for a workspace, read without polling.

Linux only (asyncinotify). The kernel queues an event inside the system call
that changed the file, so after a node's process has exited, `drain()` — a
non-blocking read of the queue — has seen everything that process did: that
is the barrier `WorkspaceArtifactHook` relies on after each node. Elsewhere,
or when the kernel refuses (no inotify, watch limit reached),
`InotifyWatcher.start()` raises `WatcherUnavailable` and the hook falls back
to comparing stat signatures.

Symlinked directories are never followed: a link pointing outside the
workspace is not watched, and files behind it are never reported.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path

from asyncinotify import InitFlags, Inotify, Mask, Watch

WATCH_MASK = (
    Mask.MODIFY
    | Mask.ATTRIB
    | Mask.CLOSE_WRITE
    | Mask.MOVED_FROM
    | Mask.MOVED_TO
    | Mask.CREATE
    | Mask.DELETE
    | Mask.DELETE_SELF
    | Mask.MOVE_SELF
    | Mask.ONLYDIR
    | Mask.DONT_FOLLOW
    | Mask.EXCL_UNLINK
)


class WatcherUnavailable(OSError):
    """inotify cannot watch this workspace; compare stat signatures instead."""


class InotifyWatcher:
    """
    Watches `root` and every directory below it, except those `skip_dir`
    names (given the directory's path relative to root, "" for root itself).

    Collects the relative paths of files that may have changed into
    `pending`; `overflowed` says the kernel dropped events, so only a full
    comparison can tell what changed. Not thread-safe: read it from one thread.
    """

    def __init__(self, root: Path, skip_dir: Callable[[str], bool] = lambda rel: False) -> None:
        self.root = Path(root)
        self.skip_dir = skip_dir
        self.pending: set[str] = set()
        self.overflowed = False
        self._inotify: Inotify | None = None
        self._dirs: dict[int, tuple[str, Watch]] = {}

    @property
    def fd(self) -> int:
        """The queue's file descriptor (to wait for it to be readable), or -1 once closed."""
        return self._inotify.fd if self._inotify is not None else -1

    def start(self) -> None:
        """Open the inotify queue and watch the tree; raises `WatcherUnavailable`."""
        if not sys.platform.startswith("linux"):
            raise WatcherUnavailable("inotify is Linux only.")
        try:
            # A zero sync timeout makes sync_get() a non-blocking read.
            self._inotify = Inotify(InitFlags.CLOEXEC, sync_timeout=0)
        except OSError as exc:
            raise WatcherUnavailable(exc.errno, f"inotify: {exc.strerror}") from exc
        try:
            self._watch_tree("", report=False)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        self._dirs.clear()

    def take(self) -> tuple[set[str], bool]:
        """Drain the queue, then hand over what changed and whether events were lost."""
        self.drain()
        pending, overflowed = self.pending, self.overflowed
        self.pending, self.overflowed = set(), False
        return pending, overflowed

    def drain(self) -> None:
        """Read every queued event without blocking."""
        while self._inotify is not None:
            event = self._inotify.sync_get()
            if event is None:
                return
            self._handle(event.mask, event.watch, event.name)

    def _handle(self, mask: Mask, watch: Watch | None, name: Path | None) -> None:
        if Mask.Q_OVERFLOW in mask:
            self.overflowed = True
            return
        known = self._dirs.get(watch.wd) if watch is not None else None
        if known is None or watch is None:
            return
        if Mask.IGNORED in mask:
            del self._dirs[watch.wd]
            return
        if mask & (Mask.DELETE_SELF | Mask.MOVE_SELF) or name is None:
            # The directory itself went; its files were (or will be)
            # reported by its parent's watch.
            return
        directory = known[0]
        relative = f"{directory}/{name}" if directory else str(name)
        if Mask.ISDIR in mask:
            self._directory_changed(relative, mask)
        else:
            self.pending.add(relative)

    def _directory_changed(self, relative: str, mask: Mask) -> None:
        if mask & (Mask.CREATE | Mask.MOVED_TO):
            self._watch_tree(relative, report=True)
        elif mask & (Mask.DELETE | Mask.MOVED_FROM):
            # Whatever was known under it is gone (or elsewhere now): the
            # caller expands the directory into the files it knew there.
            self.pending.add(relative)
            prefix = relative + "/"
            for wd, (path, watch) in list(self._dirs.items()):
                if path == relative or path.startswith(prefix):
                    assert self._inotify is not None
                    # Already gone when the kernel dropped it first.
                    with contextlib.suppress(OSError):
                        self._inotify.rm_watch(watch)
                    del self._dirs[wd]

    def _watch_tree(self, relative: str, report: bool) -> None:
        """Watch a directory and those below it; with `report`, its files count as changed."""
        if self.skip_dir(relative):
            return
        assert self._inotify is not None
        path = self.root / relative if relative else self.root
        try:
            watch = self._inotify.add_watch(path, WATCH_MASK)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return  # gone again, or replaced by a file or a link
            raise WatcherUnavailable(
                exc.errno, f"inotify_add_watch {path}: {exc.strerror}"
            ) from exc
        self._dirs[watch.wd] = (relative, watch)
        try:
            entries = list(os.scandir(path))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            child = f"{relative}/{entry.name}" if relative else entry.name
            if entry.is_dir(follow_symlinks=False):
                self._watch_tree(child, report)
            elif report:
                # Created before the watch existed: no event will tell.
                self.pending.add(child)
