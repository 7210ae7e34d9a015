"""
The portable record of a session's attachments: `attachments_manifest.json`.

Every writer, in any process (server workers, workflow nodes), goes through
`Manifest.locked()` or `Manifest.edit()`, which holds an inter-process lock for the whole
read-modify-write and replaces the file atomically, so no writer loses
another's entry and no reader ever sees half a file. No Django import here:
workflow nodes use this module in their own processes.

The lock is `flock(2)` on a file beside the manifest: a waiter blocks in the
kernel until the holder lets go (or dies: the kernel releases the lock of a
killed process), and never polls.

Reading and writing cost O(1) in the number of entries once a process has
seen the manifest: the parsed document is cached, and a cached copy is known
to be current while the file is the one this process last read or wrote:
same inode, size and modification time, and the same `updated_at` (to the
microsecond, written by every save) in its first line, read with one small
read. The manifest in place is never changed: a save writes a new file and
renames it over the manifest. Each entry is serialised once and its text
reused.

Writing a large manifest whole for every save would cost O(entries) of
disk writes per upload, so a save also keeps the manifest it replaces,
under a temporary name, as a spare for the next save of the session: that
file already holds all but the newest entries, so the next save writes the
new first line (the same length: only `updated_at` changes) and the entries
it lacks over it, fsyncs a few pages, and renames it into place, as whole
and as durable as a file written from scratch. A spare is only written
over while no other open file refers to it, in any process (a reader that
opened it while it was the manifest, a zip that holds it): the kernel
answers that question (`_open_nowhere_else()`); otherwise, or where it
cannot be asked, the save writes a whole file. So no reader sees a file
change under it.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import secrets
import signal
import tempfile
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .mime import detect_mime, kind_for_mime
from .paths import MANIFEST_NAME, STAGING_DIRNAME, attachments_dir

MANIFEST_VERSION = 1
LOCK_NAME = ".attachments_manifest.lock"
# The temporary file each save writes before renaming it over the manifest.
TEMP_PREFIX = ".manifest-"
TEMP_SUFFIX = ".tmp"
# How many sessions' manifests one process keeps parsed.
CACHE_SESSIONS = 256
# Manifests from this size on are appended to in a spare (`_Spare`); a
# smaller one costs less to write whole.
SPARE_MIN_BYTES = 128 * 1024
# How many sessions' spares one process keeps.
SPARE_SESSIONS = 16
# What a manifest with entries ends its first line with, and ends with.
_HEAD_END = b'"attachments": [\n'
_TAIL = b"\n]}\n"


def is_manifest_internal(name: str) -> bool:
    """
    True for what the attachments directory holds besides attachments and the
    manifest itself: the lock, temporary manifests, and the staging directory
    where uploads are received before they are recorded.
    """
    return (
        name == LOCK_NAME
        or name == STAGING_DIRNAME
        or (name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX))
    )


class ManifestError(Exception):
    """The manifest on disk cannot be read."""


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclasses.dataclass(frozen=True)
class AttachmentEntry:
    """One attachment as the manifest records it. Immutable: change one with `replace()`."""

    attachment_id: str
    name: str
    path: str  # relative to the session directory, with forward slashes
    mime: str
    kind: str
    size: int
    sha256: str
    source: str
    created_at: str
    updated_at: str
    node_id: str | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __hash__(self) -> int:
        # The metadata dict is not hashable; these fields tell entries apart well enough.
        return hash((self.attachment_id, self.sha256, self.updated_at))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> AttachmentEntry:
        return dataclasses.replace(self, **changes)

    @classmethod
    def for_new_file(
        cls,
        *,
        attachment_id: str,
        name: str,
        path: str,
        head: bytes,
        size: int,
        sha256: str,
        source: str,
        node_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AttachmentEntry:
        """The entry of a file recorded just now: MIME and kind from its first bytes and name."""
        mime = detect_mime(head, name)
        now = utc_now_iso()
        return cls(
            attachment_id=attachment_id,
            name=name,
            path=path,
            mime=mime,
            kind=kind_for_mime(mime),
            size=size,
            sha256=sha256,
            source=source,
            created_at=now,
            updated_at=now,
            node_id=node_id,
            metadata=metadata or {},
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttachmentEntry:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# The JSON text of each entry, made once per entry object.
_entry_text: weakref.WeakKeyDictionary[AttachmentEntry, str] = weakref.WeakKeyDictionary()


def _text_of(entry: AttachmentEntry) -> str:
    text = _entry_text.get(entry)
    if text is None:
        text = json.dumps(entry.to_dict(), ensure_ascii=False)
        _entry_text[entry] = text
    return text


# Entries encoded together before their bytes are joined into one piece.
_ENCODED_PIECES = 32


@dataclasses.dataclass
class _Encoded:
    """
    The UTF-8 JSON of a document's first `count` entries, in pieces (each the
    text of consecutive entries joined by ",\n"), valid while `entries` is
    still the document's list and only `append()` has changed it.
    """

    entries: list[AttachmentEntry]
    count: int
    pieces: list[bytes]


@dataclasses.dataclass
class ManifestDocument:
    session_id: str
    attachments: list[AttachmentEntry]
    updated_at: str = ""
    # What the last save encoded, so the next one encodes only what was
    # appended since: a save costs O(new entries) in Python, whatever the
    # session holds (the bytes are still all written).
    _encoded: _Encoded | None = dataclasses.field(default=None, repr=False, compare=False)

    def get(self, attachment_id: str) -> AttachmentEntry | None:
        for entry in self.attachments:
            if entry.attachment_id == attachment_id:
                return entry
        return None

    def upsert(self, entry: AttachmentEntry) -> None:
        self._encoded = None
        for index, existing in enumerate(self.attachments):
            if existing.attachment_id == entry.attachment_id:
                self.attachments[index] = entry
                return
        self.attachments.append(entry)

    def append(self, entry: AttachmentEntry) -> None:
        """Add an entry known to be new (a fresh attachment id), without a search."""
        self.attachments.append(entry)

    def remove(self, attachment_id: str) -> AttachmentEntry | None:
        self._encoded = None
        for index, existing in enumerate(self.attachments):
            if existing.attachment_id == attachment_id:
                return self.attachments.pop(index)
        return None

    def copy(self) -> ManifestDocument:
        entries = list(self.attachments)
        encoded = self._current_encoding()
        if encoded is not None:
            encoded = _Encoded(entries, encoded.count, list(encoded.pieces))
        return ManifestDocument(self.session_id, entries, self.updated_at, encoded)

    def _current_encoding(self) -> _Encoded | None:
        encoded = self._encoded
        if (
            encoded is None
            or encoded.entries is not self.attachments
            or encoded.count > len(self.attachments)
        ):
            return None
        return encoded

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "session_id": self.session_id,
            "updated_at": self.updated_at,
            "attachments": [entry.to_dict() for entry in self.attachments],
        }

    def to_json(self) -> str:
        """The document as JSON text, one attachment per line."""
        head = json.dumps(
            {
                "version": MANIFEST_VERSION,
                "session_id": self.session_id,
                "updated_at": self.updated_at,
            },
            ensure_ascii=False,
        )
        if not self.attachments:
            return head[:-1] + ', "attachments": []}\n'
        body = ",\n".join(_text_of(entry) for entry in self.attachments)
        return head[:-1] + ', "attachments": [\n' + body + "\n]}\n"

    def to_json_pieces(self) -> list[bytes]:
        """`to_json()` encoded as UTF-8, in pieces, encoding only the entries appended since."""
        if not self.attachments:
            self._encoded = None
            return [self.to_json().encode("utf-8")]
        encoded = self._current_encoding()
        if encoded is None:
            encoded = _Encoded(self.attachments, 0, [])
        if encoded.count < len(self.attachments):
            new = self.attachments[encoded.count :]
            encoded.pieces.append(",\n".join(_text_of(entry) for entry in new).encode("utf-8"))
            encoded.count = len(self.attachments)
            if len(encoded.pieces) > _ENCODED_PIECES:
                encoded.pieces = [b",\n".join(encoded.pieces)]
        self._encoded = encoded
        head = json.dumps(
            {
                "version": MANIFEST_VERSION,
                "session_id": self.session_id,
                "updated_at": self.updated_at,
            },
            ensure_ascii=False,
        )
        pieces = [(head[:-1] + ', "attachments": [\n').encode("utf-8")]
        for index, piece in enumerate(encoded.pieces):
            if index:
                pieces.append(b",\n")
            pieces.append(piece)
        pieces.append(b"\n]}\n")
        return pieces


@dataclasses.dataclass
class _Cached:
    identity: tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns
    updated_at: str
    document: ManifestDocument


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


_HEAD_BYTES = 512
_UPDATED_AT = re.compile(rb'"updated_at":\s*"([^"]*)"')


def _updated_at_in_head(head: bytes) -> str | None:
    match = _UPDATED_AT.search(head)
    return match.group(1).decode("utf-8", "replace") if match else None


class _DocumentCache:
    """The manifests this process read or wrote last, while they are still the current file."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: collections.OrderedDict[str, _Cached] = collections.OrderedDict()
        self._mutex = threading.Lock()

    def get(self, key: str, fd: int) -> ManifestDocument | None:
        with self._mutex:
            cached = self._entries.get(key)
        if cached is None or cached.identity != _identity(os.fstat(fd)):
            return None
        if _updated_at_in_head(os.pread(fd, _HEAD_BYTES, 0)) != cached.updated_at:
            return None
        with self._mutex:
            if key in self._entries:
                self._entries.move_to_end(key)
        return cached.document.copy()

    def put(
        self, key: str, identity: tuple[int, int, int, int], document: ManifestDocument
    ) -> None:
        cached = _Cached(identity, document.updated_at, document.copy())
        with self._mutex:
            self._entries.pop(key, None)
            self._entries[key] = cached
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def forget(self, key: str) -> None:
        with self._mutex:
            self._entries.pop(key, None)


_cache = _DocumentCache(CACHE_SESSIONS)


@dataclasses.dataclass(frozen=True)
class _Replaced:
    """A manifest as this process knows it: its `updated_at` and how many entries it holds."""

    updated_at: str
    count: int


@dataclasses.dataclass
class _Spare:
    """
    A manifest this process replaced, kept under a temporary name for its
    next save to write over: it already holds all but the newest entries.
    """

    path: Path
    fd: int  # open for reading and writing
    count: int  # its entries
    length: int  # its bytes, less `_TAIL`
    # The manifest that replaced it: a save may write over this one only
    # while that manifest is still the current one.
    successor: _Replaced

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        _release_later(self.fd)


class _Spares:
    """
    Replaced manifests kept for the next save of their session (see the
    module's docstring), at most `capacity` of them: the least recently
    saved sessions' are removed first.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._spares: collections.OrderedDict[str, _Spare] = collections.OrderedDict()
        self._mutex = threading.Lock()

    def keep(self, key: str, spare: _Spare) -> None:
        dropped = []
        with self._mutex:
            previous = self._spares.pop(key, None)
            if previous is not None:
                dropped.append(previous)
            self._spares[key] = spare
            while len(self._spares) > self.capacity:
                dropped.append(self._spares.popitem(last=False)[1])
        for old in dropped:
            old.discard()

    def take(self, key: str, current: _Replaced) -> _Spare | None:
        """
        `key`'s spare, if the manifest in place (`current`) is still the one
        that replaced it, it is still under its name and nobody has it open;
        else None. Call it under the manifest's lock: that is what keeps
        reconciliation from removing the spare, and other writers from
        replacing the manifest, meanwhile.
        """
        with self._mutex:
            spare = self._spares.pop(key, None)
        if spare is None:
            return None
        try:
            in_place = os.stat(spare.path).st_ino == os.fstat(spare.fd).st_ino
        except FileNotFoundError:
            in_place = False
        if not in_place or spare.successor != current or not _open_nowhere_else(spare.fd):
            spare.discard()
            return None
        return spare

    def forget(self, key: str) -> None:
        with self._mutex:
            spare = self._spares.pop(key, None)
        if spare is not None:
            spare.discard()

    def close(self) -> None:
        """Remove every spare (at exit: reconciliation would remove what is left, later)."""
        with self._mutex:
            spares, self._spares = list(self._spares.values()), collections.OrderedDict()
        for spare in spares:
            spare.discard()


_spares = _Spares(SPARE_SESSIONS)
atexit.register(_spares.close)

# Closing the last descriptor of a removed manifest frees its blocks, which
# for megabytes (with online discard) took longer than the rest of a save.
# That happens on this thread instead.
_releaser: ThreadPoolExecutor | None = None
_releaser_mutex = threading.Lock()


def _release_later(fd: int) -> None:
    """Close `fd` on a background thread."""
    global _releaser
    try:
        with _releaser_mutex:
            if _releaser is None:
                _releaser = ThreadPoolExecutor(1, thread_name_prefix="manifest-release")
            _releaser.submit(os.close, fd)
    except RuntimeError:  # the interpreter is shutting down
        os.close(fd)


# Linux's lease commands, where this platform has them. A lease broken
# while it is held (someone opening the spare by its temporary name in the
# microseconds between the two calls of `_open_nowhere_else()`) signals its
# holder: SIGIO by default, whose default action ends the process, so the
# lease's descriptor is set to signal SIGURG instead, ignored by default.
_LEASES = getattr(fcntl, "F_SETLEASE", None)
_F_SETSIG = getattr(fcntl, "F_SETSIG", None)


def _open_nowhere_else(fd: int) -> bool:
    """
    True if no other open file, in any process, refers to the file open at
    `fd` (which must be open for writing, and owned by this user).

    The kernel grants a write lease only on that condition, so taking one
    and letting it go at once asks the question without a race: a reader
    that opened a manifest before it was replaced still has it open, and
    nobody opens a spare by the manifest's name any more. Where leases are
    not available (not Linux, some filesystems) the answer is False and
    every save writes a whole file.
    """
    if _LEASES is None:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except OSError:
        return False
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return True


def _open_spare(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    if _F_SETSIG is not None:
        try:
            fcntl.fcntl(fd, _F_SETSIG, signal.SIGURG)
        except OSError:
            os.close(fd)
            raise
    return fd


@dataclasses.dataclass
class PreparedManifest:
    """A new manifest written and fsync'd under a temporary name, not yet in place."""

    temp_path: Path
    fd: int
    document: ManifestDocument
    # The manifest in place, when the new one only appends to it: it can
    # then be kept as the next save's spare.
    replaces: _Replaced | None = None


class Manifest:
    """A session's manifest file and the lock that guards it."""

    def __init__(self, session_path: Path, session_id: str) -> None:
        self.session_id = session_id
        self.directory = attachments_dir(session_path)
        self.path = self.directory / MANIFEST_NAME
        self.lock_path = self.directory / LOCK_NAME
        self._key = os.fspath(self.path)

    def read(self) -> ManifestDocument:
        """The manifest as last written; an absent file is an empty manifest."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            _cache.forget(self._key)
            return ManifestDocument(session_id=self.session_id, attachments=[])
        try:
            cached = _cache.get(self._key, fd)
            if cached is not None:
                return cached
            identity = _identity(os.fstat(fd))
            document = self._parse(fd)
        finally:
            os.close(fd)
        _cache.put(self._key, identity, document)
        return document

    def _parse(self, fd: int) -> ManifestDocument:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        try:
            data = json.loads(b"".join(chunks))
            entries = [AttachmentEntry.from_dict(item) for item in data.get("attachments", [])]
        except (ValueError, TypeError, AttributeError) as exc:
            raise ManifestError(f"{self.path} is not a valid manifest: {exc}") from exc
        return ManifestDocument(
            session_id=data.get("session_id", self.session_id),
            attachments=entries,
            updated_at=data.get("updated_at", ""),
        )

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the inter-process lock; waiting blocks in the kernel."""
        make_directories(self.directory)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    @contextlib.contextmanager
    def locked(self) -> Iterator[ManifestDocument]:
        """
        Hold the inter-process lock and yield the current document. Nothing
        is written unless the caller calls `save()` inside the block, so work
        that must stay consistent with the manifest (the ORM mirror) can
        decide whether the change happens at all.
        """
        with self.lock():
            yield self.read()

    @contextlib.contextmanager
    def edit(self) -> Iterator[ManifestDocument]:
        """Like `locked()`, saving the document when the block exits normally."""
        with self.locked() as document:
            yield document
            self.save(document)

    def save(self, document: ManifestDocument) -> None:
        """Replace the file atomically (temp file, fsync, rename, fsync). Call it under the lock."""
        self.install(self.prepare(document))

    def prepare(self, document: ManifestDocument) -> PreparedManifest:
        """
        Write `document` to a temporary file beside the manifest and fsync
        it. This is the step that needs disk space; `install()` only renames.
        Call it under the lock, with `document` as read under it.
        """
        encoded = document._current_encoding()
        replaces = None
        if encoded is not None and encoded.count > 0:
            # Only appended to since it was read or saved: the file in place
            # holds its first `count` entries.
            replaces = _Replaced(document.updated_at, encoded.count)
        spare = _spares.take(self._key, replaces) if replaces else None
        document.updated_at = utc_now_iso()
        pieces = document.to_json_pieces()
        if spare is not None:
            prepared = self._prepare_on(spare, document, pieces[0], replaces)
            if prepared is not None:
                return prepared
        fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=self.directory)
        try:
            _write_pieces(fd, pieces)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise
        return PreparedManifest(Path(temp_name), fd, document, replaces)

    def _prepare_on(
        self, spare: _Spare, document: ManifestDocument, head: bytes, replaces: _Replaced | None
    ) -> PreparedManifest | None:
        """
        `prepare()` over a spare: the new first line over its first line,
        and the entries it lacks after its own. None if the first lines
        differ in length (a manifest another version wrote).
        """
        new = ",\n".join(_text_of(entry) for entry in document.attachments[spare.count :])
        appended = (",\n" + new).encode("utf-8") if new else b""
        try:
            old_head = os.pread(spare.fd, len(head), 0)
            if old_head.count(b"\n") != 1 or not old_head.endswith(_HEAD_END):
                spare.discard()
                return None
            os.pwrite(spare.fd, head, 0)
            os.pwrite(spare.fd, appended + _TAIL, spare.length)
            os.fsync(spare.fd)
        except BaseException:
            spare.discard()
            raise
        return PreparedManifest(spare.path, spare.fd, document, replaces)

    def install(self, prepared: PreparedManifest) -> None:
        """Rename a prepared manifest into place and make the rename durable."""
        st = os.fstat(prepared.fd)
        document = prepared.document
        spare = None
        if st.st_size >= SPARE_MIN_BYTES and prepared.replaces is not None:
            spare = self._keep_replaced(prepared.replaces, document)
        try:
            os.replace(prepared.temp_path, self.path)
        except BaseException:
            if spare is not None:
                spare.discard()
            self.discard(prepared)
            raise
        _cache.put(self._key, _identity(st), document)
        sync_directory(self.directory)
        if spare is not None:
            _spares.keep(self._key, spare)
        else:
            _spares.forget(self._key)
        os.close(prepared.fd)  # the file stays: it is the manifest now

    def _keep_replaced(self, replaced: _Replaced, successor: ManifestDocument) -> _Spare | None:
        """
        Give the manifest in place a second, temporary name, so that the
        rename that replaces it leaves it there as a spare. None if it is
        not the manifest `replaced` describes, or cannot be linked.
        """
        temp_path = self.directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}"
        try:
            fd = _open_spare(self.path)
        except OSError:
            return None
        try:
            length = os.fstat(fd).st_size - len(_TAIL)
            if (
                length <= 0
                or os.pread(fd, len(_TAIL), length) != _TAIL
                or _updated_at_in_head(os.pread(fd, _HEAD_BYTES, 0)) != replaced.updated_at
            ):
                os.close(fd)
                return None
            os.link(self.path, temp_path)
        except OSError:
            os.close(fd)
            return None
        return _Spare(
            temp_path,
            fd,
            replaced.count,
            length,
            _Replaced(successor.updated_at, len(successor.attachments)),
        )

    def discard(self, prepared: PreparedManifest) -> None:
        """Throw away a prepared manifest that will not be installed."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(prepared.temp_path)
        _release_later(prepared.fd)


# How many buffers one writev() may take (POSIX guarantees 16; Linux takes 1024).
_IOV_MAX = max(16, os.sysconf("SC_IOV_MAX")) if hasattr(os, "sysconf") else 16


def _write_pieces(fd: int, pieces: list[bytes]) -> None:
    """Write `pieces` in order with as few system calls as the OS allows (one, usually)."""
    views = [memoryview(piece) for piece in pieces if piece]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while written:
            if written >= len(views[0]):
                written -= len(views.pop(0))
            else:
                views[0], written = views[0][written:], 0


def sync_directory(directory: Path) -> None:
    """fsync a directory, so that renames and new names in it survive a crash."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directories(directory: Path) -> None:
    """
    `mkdir -p` whose new directories survive a crash. A directory's name is
    durable once the directory that holds it is fsync'd, and an fsync of the
    files written into it later does not do that: each directory that holds
    a new one is synced before this returns.
    """
    missing = [directory]
    while not missing[-1].is_dir():
        missing.append(missing[-1].parent)
    if len(missing) == 1:
        return
    directory.mkdir(parents=True, exist_ok=True)
    for holder in missing[1:]:
        sync_directory(holder)
