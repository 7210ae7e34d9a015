"""
A recursive inotify watcher for a workspace, read without polling.

Linux only (through ctypes; no extra dependency). The kernel queues an event
inside the system call that changed the file, so after a node's process has
exited, `drain()` — a non-blocking read of the queue — has seen everything
that process did: that is the barrier `WorkspaceArtifactHook` relies on
after each node. Elsewhere, or when the kernel refuses (no inotify, watch
limit reached), `InotifyWatcher.start()` raises `WatcherUnavailable` and the
hook falls back to comparing stat signatures.

Symlinked directories are never followed: a link pointing outside the
workspace is not watched, and files behind it are never reported.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

WATCH_MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
    | IN_EXCL_UNLINK
)
_EVENT = struct.Struct("iIII")


class WatcherUnavailable(OSError):
    """inotify cannot watch this workspace; compare stat signatures instead."""


def _libc() -> ctypes.CDLL:
    if not sys.platform.startswith("linux"):
        raise WatcherUnavailable("inotify is Linux only.")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if not hasattr(libc, "inotify_init1"):
        raise WatcherUnavailable("This C library has no inotify.")
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


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
        self.fd = -1
        self._dirs: dict[int, str] = {}
        self._libc: ctypes.CDLL | None = None

    def start(self) -> None:
        """Open the inotify queue and watch the tree; raises `WatcherUnavailable`."""
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise WatcherUnavailable(ctypes.get_errno(), "inotify_init1 failed")
        self.fd = fd
        try:
            self._watch_tree("", report=False)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._dirs.clear()

    def take(self) -> tuple[set[str], bool]:
        """Drain the queue, then hand over what changed and whether events were lost."""
        self.drain()
        pending, overflowed = self.pending, self.overflowed
        self.pending, self.overflowed = set(), False
        return pending, overflowed

    def drain(self) -> None:
        """Read every queued event without blocking."""
        while self.fd >= 0:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            if not data:
                return
            self._parse(data)

    def _parse(self, data: bytes) -> None:
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            raw = data[offset : offset + length].rstrip(b"\0")
            offset += length
            if mask & IN_Q_OVERFLOW:
                self.overflowed = True
                continue
            directory = self._dirs.get(wd)
            if directory is None:
                continue
            if mask & IN_IGNORED:
                del self._dirs[wd]
                continue
            if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
                # The directory itself went; its files were (or will be)
                # reported by its parent's watch.
                continue
            name = os.fsdecode(raw)
            relative = f"{directory}/{name}" if directory else name
            if mask & IN_ISDIR:
                self._directory_changed(relative, mask)
            else:
                self.pending.add(relative)

    def _directory_changed(self, relative: str, mask: int) -> None:
        if mask & (IN_CREATE | IN_MOVED_TO):
            self._watch_tree(relative, report=True)
        elif mask & (IN_DELETE | IN_MOVED_FROM):
            # Whatever was known under it is gone (or elsewhere now): the
            # caller expands the directory into the files it knew there.
            self.pending.add(relative)
            prefix = relative + "/"
            for wd, path in list(self._dirs.items()):
                if path == relative or path.startswith(prefix):
                    assert self._libc is not None
                    self._libc.inotify_rm_watch(self.fd, wd)
                    del self._dirs[wd]

    def _watch_tree(self, relative: str, report: bool) -> None:
        """Watch a directory and those below it; with `report`, its files count as changed."""
        if self.skip_dir(relative):
            return
        assert self._libc is not None
        path = self.root / relative if relative else self.root
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), WATCH_MASK)
        if wd < 0:
            code = ctypes.get_errno()
            if code in (errno.ENOENT, errno.ENOTDIR):
                return  # gone again, or replaced by a file or a link
            raise WatcherUnavailable(code, f"inotify_add_watch {path}: {os.strerror(code)}")
        self._dirs[wd] = relative
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
