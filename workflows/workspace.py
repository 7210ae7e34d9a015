"""
`WorkspaceArtifactHook`: workspace files become attachments, and so events.

Before and after each node, and while one runs, the hook finds the files of
the session's `code_workspace` that were created, changed or deleted, and
records them in the manifest in place (`source: "workspace"`, the node's id).
It does not emit anything itself: the caller mirrors the manifest into the
ORM (`on_change`), and the artifact receivers turn those row changes into
`created` / `updated` / `deleted` events. So the hook lives here, with the
events, but only depends on the attachments app.

Its cost grows with what changed, not with the workspace. On Linux an
inotify watcher (`workflows.watching`) names the candidate paths as they
change, and reading its queue after a node has exited is an exact barrier;
elsewhere the hook compares stat signatures (size, mtime, inode) with its
last snapshot. Either way, only files whose signature moved are hashed, and
a file whose content did not change produces no event.

Never reported: anything under `attachments/` (uploads and registered
copies have their own entries), caches (`__pycache__`, `.cache`, ...),
symlinks, special files (FIFOs, sockets, devices), files with other hard
links (one may be a file from outside the session), names that are not
UTF-8 or hold a backslash or control character (logged, never fatal), and
anything that resolves outside the workspace.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from attachments import paths
from attachments.manifest import AttachmentEntry
from attachments.store import ORIGIN_KEY, AttachmentStore, digest_file

from .watching import InotifyWatcher, WatcherUnavailable

logger = logging.getLogger(__name__)

WORKSPACE_SOURCE = "workspace"
DEFAULT_IGNORED_DIRS = frozenset(
    {
        "__pycache__",
        ".cache",
        ".ipynb_checkpoints",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".git",
    }
)
DEFAULT_IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp", ".swx", "~")
_MANIFEST = f"{paths.ATTACHMENTS_DIRNAME}/{paths.MANIFEST_NAME}"

Signature = tuple[int, int, int]


@dataclasses.dataclass
class WorkspaceChanges:
    """What one check found; `manifest_changed` also covers other writers (nodes' registrations)."""

    created: list[AttachmentEntry] = dataclasses.field(default_factory=list)
    updated: list[AttachmentEntry] = dataclasses.field(default_factory=list)
    deleted: list[AttachmentEntry] = dataclasses.field(default_factory=list)
    manifest_changed: bool = False

    def __bool__(self) -> bool:
        return bool(self.created or self.updated or self.deleted or self.manifest_changed)


class WorkspaceArtifactHook:
    """
    Watches one session's workspace. Call `start()` before the first node,
    `before_node()` / `after_node()` around each, and `stop()` at the end;
    in between, changes are checked `debounce` seconds after they happen.
    `on_change` is awaited after every check that changed the manifest.
    """

    def __init__(
        self,
        store: AttachmentStore,
        *,
        on_change: Callable[[WorkspaceChanges], Awaitable[None]] | None = None,
        watch: bool = True,
        debounce: float = 0.5,
        ignored_dirs: Iterable[str] = DEFAULT_IGNORED_DIRS,
        ignored_suffixes: Iterable[str] = DEFAULT_IGNORED_SUFFIXES,
    ) -> None:
        self.store = store
        self.root = store.workspace
        self.on_change = on_change
        self.debounce = debounce
        self.ignored_dirs = frozenset(ignored_dirs)
        self.ignored_suffixes = tuple(ignored_suffixes)
        self.current_node: str | None = None
        self._want_watch = watch
        self._watcher: InotifyWatcher | None = None
        self._snapshot: dict[str, Signature] = {}
        self._skipped: set[str] = set()
        self._manifest_signature: Signature | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self._tick: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def mode(self) -> str:
        return "inotify" if self._watcher is not None else "scan"

    # Synchronous core: usable without an event loop (tests, the bench).

    def prime(self) -> None:
        """Start watching, or take the first snapshot when no watcher is available."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._manifest_signature = self._signature(self.root / _MANIFEST)
        if self._want_watch:
            watcher = InotifyWatcher(self.root, self._skip_dir)
            try:
                watcher.start()
            except WatcherUnavailable as exc:
                logger.info(
                    "Workspace %s: no watcher (%s); comparing stat signatures", self.root, exc
                )
            else:
                self._watcher = watcher
                return
        self._snapshot = self.scan()

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    def candidates(self) -> tuple[set[str], bool]:
        """The paths that may have changed since the last check, and whether the manifest did."""
        manifest_changed = self._manifest_moved()
        if self._watcher is None:
            return self._compare_all(), manifest_changed
        pending, overflowed = self._watcher.take()
        if overflowed:
            pending |= self._compare_all()
        return pending, manifest_changed

    def check(self, node_id: str | None = None) -> WorkspaceChanges:
        """Find what changed and record it in the manifest."""
        candidates, manifest_changed = self.candidates()
        changes = self.apply(candidates, node_id)
        changes.manifest_changed = changes.manifest_changed or manifest_changed
        return changes

    def scan(self) -> dict[str, Signature]:
        """Stat signatures of every reportable file (no hashing)."""
        found: dict[str, Signature] = {}
        self._scan_into(self.root, "", found)
        return found

    def apply(self, candidates: Iterable[str], node_id: str | None) -> WorkspaceChanges:
        """Hash the candidates whose signature moved; record created, updated and deleted files."""
        document = self.store.manifest.read()
        in_place = {
            e.path.removeprefix(paths.WORKSPACE_DIRNAME + "/"): e
            for e in document.attachments
            if self.store.is_in_place(e)
        }
        copies = {
            (e.metadata.get(ORIGIN_KEY), e.sha256)
            for e in document.attachments
            if not self.store.is_in_place(e)
        }
        paths_to_check = self._expand(candidates, in_place)
        changes = WorkspaceChanges()
        for rel in sorted(paths_to_check):
            path = self.root / rel
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                st = None
            if st is not None and stat.S_ISDIR(st.st_mode):
                continue  # its files are candidates of their own
            if st is not None and self._unsafe(rel, st):
                st = None  # not reportable: as if it were gone
            if st is None or not stat.S_ISREG(st.st_mode):
                self._snapshot.pop(rel, None)
                if rel in in_place:
                    changes.deleted.append(in_place[rel])
                continue
            signature = (st.st_size, st.st_mtime_ns, st.st_ino)
            if self._snapshot.get(rel) == signature:
                continue
            try:
                paths.resolve_inside(self.root, path)
                digest = digest_file(path)
            except (paths.UnsafePath, FileNotFoundError, IsADirectoryError, PermissionError):
                continue
            # Taken before hashing: a write during the hash moves the
            # signature again, so the next check hashes the file again.
            self._snapshot[rel] = signature
            existing = in_place.get(rel)
            if existing is not None:
                if existing.sha256 != digest.sha256:
                    changes.updated.append(
                        self.store.entry_for_file(
                            path,
                            digest,
                            source=WORKSPACE_SOURCE,
                            node_id=node_id,
                            existing=existing,
                        )
                    )
            elif (self.store.relative(path), digest.sha256) not in copies:
                changes.created.append(
                    self.store.entry_for_file(
                        path, digest, source=WORKSPACE_SOURCE, node_id=node_id
                    )
                )
        if changes:
            self._record(changes)
        return changes

    # Asynchronous driver: the runner's side.

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.prime)
        if self._watcher is not None:
            self._loop.add_reader(self._watcher.fd, self._readable)

    async def stop(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._watcher is not None and self._loop is not None:
            self._loop.remove_reader(self._watcher.fd)
        self.close()

    async def before_node(self, node_id: str) -> WorkspaceChanges:
        """Record what changed since the last check (no node made it); attribute to `node_id`."""
        changes = await self.flush(None)
        self.current_node = node_id
        return changes

    async def after_node(self, node_id: str) -> WorkspaceChanges:
        """Record what the node changed; its process has exited, so nothing is missed."""
        changes = await self.flush(node_id)
        self.current_node = None
        return changes

    async def flush(self, node_id: str | None) -> WorkspaceChanges:
        async with self._lock:
            if self._tick is not None:
                self._tick.cancel()
                self._tick = None
            if self._watcher is not None:
                # The queue is read on the loop's thread only.
                pending, overflowed = self._watcher.take()

                def work() -> WorkspaceChanges:
                    manifest_changed = self._manifest_moved()
                    candidates = pending | self._compare_all() if overflowed else pending
                    found = self.apply(candidates, node_id)
                    found.manifest_changed = found.manifest_changed or manifest_changed
                    return found

                changes = await asyncio.to_thread(work)
            else:
                changes = await asyncio.to_thread(self.check, node_id)
            if changes and self.on_change is not None:
                await self.on_change(changes)
            return changes

    def _readable(self) -> None:
        assert self._watcher is not None
        try:
            self._watcher.drain()
        except OSError:
            logger.exception("Workspace %s: reading inotify failed", self.root)
            self._watcher.overflowed = True
        if (self._watcher.pending or self._watcher.overflowed) and self._tick is None:
            assert self._loop is not None
            self._tick = self._loop.call_later(self.debounce, self._start_tick)

    def _start_tick(self) -> None:
        self._tick = None
        task = asyncio.ensure_future(self.flush(self.current_node))
        self._tasks.add(task)
        task.add_done_callback(self._tick_done)

    def _tick_done(self, task: asyncio.Task[WorkspaceChanges]) -> None:
        self._tasks.discard(task)  # type: ignore[arg-type]
        if not task.cancelled() and task.exception() is not None:
            logger.error("Workspace %s: check failed", self.root, exc_info=task.exception())

    # Internals

    def _compare_all(self) -> set[str]:
        """Every path whose signature differs from the snapshot, by a full stat scan."""
        if self._watcher is not None:
            logger.warning("Workspace %s: inotify dropped events; comparing everything", self.root)
        current = self.scan()
        changed = {rel for rel, sig in current.items() if self._snapshot.get(rel) != sig}
        changed.update(rel for rel in self._snapshot if rel not in current)
        changed.update(
            rel for rel in self._in_place_paths(self.store.entries()) if rel not in current
        )
        return changed

    def _manifest_moved(self) -> bool:
        signature = self._signature(self.root / _MANIFEST)
        moved = signature != self._manifest_signature
        self._manifest_signature = signature
        return moved

    @staticmethod
    def _signature(path: Path) -> Signature | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_size, st.st_mtime_ns, st.st_ino)

    def _skip_dir(self, rel: str) -> bool:
        if rel.startswith(paths.ATTACHMENTS_DIRNAME + "/"):
            return True
        return rel.rsplit("/", 1)[-1] in self.ignored_dirs

    def _unsafe(self, rel: str, st: os.stat_result) -> bool:
        """
        Whether a regular file must not be recorded: its name is not UTF-8
        or holds a backslash or a control character (it would reach events
        and zips as it is), or it has other hard links. Logged once per path.
        """
        if paths.has_unsafe_characters(rel):
            reason = "its name is not UTF-8 or holds a backslash or control character"
        elif stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            reason = "it has other hard links"
        else:
            return False
        if rel not in self._skipped:
            self._skipped.add(rel)
            printable = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            logger.warning("Workspace %s: not recording %r: %s", self.root, printable, reason)
        return True

    def _ignored(self, rel: str) -> bool:
        parts = rel.split("/")
        if parts[0] == paths.ATTACHMENTS_DIRNAME:
            return True
        if any(part in self.ignored_dirs for part in parts):
            return True
        return parts[-1].endswith(self.ignored_suffixes)

    def _scan_into(self, directory: Path, prefix: str, found: dict[str, Signature]) -> None:
        try:
            entries = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return
        with entries:
            for entry in entries:
                rel = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    if not (prefix == "" and entry.name == paths.ATTACHMENTS_DIRNAME) and (
                        entry.name not in self.ignored_dirs
                    ):
                        self._scan_into(Path(entry.path), rel + "/", found)
                elif entry.is_file(follow_symlinks=False) and not self._ignored(rel):
                    st = entry.stat(follow_symlinks=False)
                    if not self._unsafe(rel, st):
                        found[rel] = (st.st_size, st.st_mtime_ns, st.st_ino)

    def _in_place_paths(self, entries: Iterable[AttachmentEntry]) -> set[str]:
        prefix = paths.WORKSPACE_DIRNAME + "/"
        return {e.path.removeprefix(prefix) for e in entries if self.store.is_in_place(e)}

    def _expand(self, candidates: Iterable[str], in_place: dict[str, AttachmentEntry]) -> set[str]:
        """Candidates plus, for a directory that went away, the files known under it."""
        expanded: set[str] = set()
        for rel in candidates:
            if self._ignored(rel):
                continue
            expanded.add(rel)
            prefix = rel + "/"
            expanded.update(p for p in self._snapshot if p.startswith(prefix))
            expanded.update(p for p in in_place if p.startswith(prefix))
        return expanded

    def _record(self, changes: WorkspaceChanges) -> None:
        """Write the changes under the manifest lock, reconciled with what others wrote."""
        manifest = self.store.manifest
        with manifest.locked() as document:
            by_path = {e.path: e for e in document.attachments if self.store.is_in_place(e)}
            for entry in changes.deleted:
                if document.get(entry.attachment_id) is not None:
                    document.remove(entry.attachment_id)
            created: list[AttachmentEntry] = []
            for entry in changes.created:
                current = by_path.get(entry.path)
                if current is None:
                    document.upsert(entry)
                    created.append(entry)
                elif current.sha256 != entry.sha256:
                    # Registered in place by someone else meanwhile: update theirs.
                    entry.attachment_id, entry.created_at = (
                        current.attachment_id,
                        current.created_at,
                    )
                    entry.source = current.source
                    document.upsert(entry)
                    changes.updated.append(entry)
            changes.created = created
            for entry in changes.updated:
                document.upsert(entry)
            manifest.save(document)
            # Our own write is no news for the next check.
            self._manifest_signature = self._signature(manifest.path)
