"""
The session zip: a session's directory as a zip archive, streamed while it is
built, with zipstream-ng writing the format.

Nothing is staged: no temporary zip, and memory holds one read buffer (and
the compressor's window) whatever the session's size. Each file is read only
when its turn comes, so the first bytes leave before the last file is read.

What goes in: every regular file under the session directory, reached
through links only when they stay inside it (links leading out, and links to
directories, are left out), less the manifest's lock and temporary files,
narrowed by `FileFilters` and, for a delta zip, by the paths changed since an
event cursor. Entry names are paths relative to the session directory, as in
the `path` of attachments and artifact events. Already-compressed formats
(and larger files whose head does not shrink) are stored, the rest deflated at
ATTACHMENTS_ZIP_COMPRESS_LEVEL; with `compress=False` everything is stored, so
the archive's length is known before it is built and a download can resume.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import stat
import time
import weakref
import zlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from zipstream import ZIP_DEFLATED, ZIP_STORED, ZipStream

from . import paths
from .conf import conf
from .exceptions import InvalidParameter
from .manifest import is_manifest_internal
from .mime import SNIFF_BYTES, detect_mime
from .models import Session
from .selection import FileFilters

logger = logging.getLogger(__name__)


def _not_the_stored_level_notice(record: logging.LogRecord) -> bool:
    # A deflated zip stores its already-compressed files as they are, and
    # zipstream-ng logs a warning for each that the stream's level does not
    # apply to them: true, intended, and one log line per file of every zip.
    return "compress_level has no effect" not in record.getMessage()


logging.getLogger("zipstream.ng").addFilter(_not_the_stored_level_notice)

# Formats that are compressed already: deflating them again costs CPU for nothing.
STORED_EXTENSIONS = frozenset(
    {
        # images
        "png", "jpg", "jpeg", "gif", "webp", "avif", "heic", "heif", "jxl", "jp2",
        # audio
        "mp3", "m4a", "aac", "ogg", "oga", "opus", "flac", "wma",
        # video
        "mp4", "m4v", "mov", "mkv", "webm", "avi", "wmv", "ogv", "3gp",
        # archives and containers that are zips or compressed inside
        "zip", "gz", "tgz", "bz2", "tbz2", "xz", "txz", "zst", "lz4", "lzma", "7z", "rar",
        "br", "jar", "war", "whl", "apk", "epub", "docx", "xlsx", "pptx", "odt", "ods",
        "odp", "npz", "parquet", "pdf", "woff", "woff2",
    }
)  # fmt: skip


# Larger files have their head test-compressed first: deflating data that
# does not shrink (random, encrypted, or compressed under another name) costs
# as much CPU as deflating text, for nothing.
PROBE_MIN_SIZE = 256 * 1024
PROBE_BYTES = 64 * 1024
PROBE_MAX_RATIO = 0.95


# An open file by its descriptor (Linux): the manifest as it was listed.
_PROC_FD = "/proc/self/fd"
_CAN_HOLD = os.path.isdir(_PROC_FD)


class ArchiveChanged(RuntimeError):
    """A file of a stored archive changed after its length was announced."""


@dataclass(frozen=True)
class ArchiveEntry:
    arcname: str  # relative to the session directory, "/"-separated
    source: Path  # where it was found, possibly a link inside the session
    size: int
    mtime_ns: int
    mode: int
    inode: int
    device: int
    # A descriptor of the file as it was when listed, for one that is
    # replaced while the session is written to (the manifest): the zip
    # takes this version. Owned by the `SessionArchive`.
    held: int | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_stat(
        cls, arcname: str, source: Path, st: os.stat_result, held: int | None = None
    ) -> ArchiveEntry:
        return cls(
            arcname, source, st.st_size, st.st_mtime_ns, st.st_mode, st.st_ino, st.st_dev, held
        )

    @property
    def name(self) -> str:
        return self.arcname.rsplit("/", 1)[-1]

    def unchanged(self, st: os.stat_result) -> bool:
        return (st.st_size, st.st_mtime_ns, st.st_mode, st.st_ino, st.st_dev) == (
            self.size,
            self.mtime_ns,
            self.mode,
            self.inode,
            self.device,
        )


def is_precompressed(name: str) -> bool:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return ext in STORED_EXTENSIONS


def deflates_well(path: str | os.PathLike[str]) -> bool:
    """Whether the file's head shrinks noticeably under a quick deflate."""
    try:
        with open(path, "rb") as file:
            head = file.read(PROBE_BYTES)
    except OSError:
        return True  # the zip itself will report it
    probe = zlib.compressobj(1, zlib.DEFLATED, -15)
    return len(probe.compress(head) + probe.flush()) <= len(head) * PROBE_MAX_RATIO


def _arcname(relative: str) -> str:
    # Undecodable bytes in a name (os.walk keeps them as surrogates) cannot
    # be written as UTF-8; they become U+FFFD rather than failing the zip.
    return relative.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def zip_name(arcname: str) -> str:
    """
    The entry name written into the zip: every component cleaned as an
    upload's name is (`paths.safe_component`), so a node's file called
    `..\\..\\x.txt` can never become a path an extractor follows.
    """
    return "/".join(paths.safe_component(part) for part in arcname.split("/"))


def _checked_stat(base: str, source: Path) -> tuple[Path, os.stat_result] | None:
    """The real path and stat of `source` if it is a regular file inside `base`, else None."""
    try:
        real = paths.resolve_inside(base, source)
        st = os.stat(real)
    except (paths.UnsafePath, OSError):
        return None
    # A file with other hard links may be one from outside the session (a
    # node can link the database into its workspace): left out like a link.
    return (real, st) if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 else None


def walk_session(session_dir: Path) -> Iterator[ArchiveEntry]:
    """The regular files of the session in a stable order, links leading outside left out."""
    base = os.path.realpath(session_dir)
    if not os.path.isdir(base):
        return
    attachments = os.path.realpath(paths.attachments_dir(Path(base)))
    # followlinks=False: a link to a directory is never descended into; what it
    # points at inside the session is zipped under its own name anyway.
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        if dirpath == attachments:
            # Uploads still arriving (staging) are nobody's files yet.
            dirnames[:] = [d for d in dirnames if not is_manifest_internal(d)]
        dirnames.sort()
        for name in sorted(filenames):
            if dirpath == attachments and is_manifest_internal(name):
                continue
            source = Path(dirpath, name)
            checked = _checked_stat(base, source)
            if checked is None:
                continue
            relative = os.path.relpath(source, base).replace(os.sep, "/")
            yield ArchiveEntry.from_stat(_arcname(relative), source, checked[1])


def _held(base: str, entry: ArchiveEntry) -> ArchiveEntry:
    """
    `entry` with its file open, so the zip takes the version that was listed
    even after the path is replaced (by rename, as the manifest is on every
    upload). Unchanged if the file cannot be held.
    """
    checked = _checked_stat(base, entry.source)
    if checked is None or not _CAN_HOLD:
        return entry
    try:
        held = os.open(checked[0], os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return entry
    st = os.fstat(held)
    return ArchiveEntry.from_stat(entry.arcname, entry.source, st, held)


def _close_all(descriptors: list[int]) -> None:
    for fd in descriptors:
        os.close(fd)


def select_entries(
    session_dir: Path,
    filters: FileFilters,
    *,
    only_paths: Collection[str] | None = None,
    mime_of: Callable[[ArchiveEntry], str] | None = None,
) -> list[ArchiveEntry]:
    """
    The entries of the session that pass `filters` and, when given, whose
    path is in `only_paths` (a delta since an event cursor). `mime_of` is
    consulted only when a MIME filter is set.
    """
    selected = []
    for entry in walk_session(session_dir):
        if only_paths is not None and entry.arcname not in only_paths:
            continue
        mime = None
        if filters.needs_mime:
            mime = mime_of(entry) if mime_of is not None else sniff_mime(session_dir, entry)
        if filters.matches(entry.name, entry.size, mime):
            selected.append(entry)
    return selected


def sniff_mime(session_dir: Path, entry: ArchiveEntry) -> str:
    """The MIME type of the file from its first bytes, as uploads are typed."""
    try:
        with paths.open_inside(session_dir, entry.source) as file:
            head = file.read(SNIFF_BYTES)
    except (paths.UnsafePath, OSError):
        return "application/octet-stream"
    return detect_mime(head, entry.name)


# A delta zip (`after=<cursor>`) needs the artifact event feed, which lives in
# the artifacts app; it plugs in here with `register_change_feed()`.
ChangeFeed = Callable[[Session, int], Collection[str]]
_change_feed: ChangeFeed | None = None


def register_change_feed(feed: ChangeFeed) -> None:
    """`feed(session, cursor)` gives the paths, relative to the session, changed after `cursor`."""
    global _change_feed
    _change_feed = feed


def changed_paths(session: Session, cursor: int) -> Collection[str]:
    """The paths changed after the event cursor; 400 naming `after` while no feed is registered."""
    if _change_feed is None:
        raise InvalidParameter(
            "after",
            "'after' selects the files changed since an artifact event cursor, which needs "
            "the artifact event feed; this server does not have it yet. Leave 'after' out "
            "to download the whole session.",
        )
    return _change_feed(session, cursor)


class SessionArchive:
    """
    The zip of `entries`, generated on demand by `chunks()`. With `compress`
    False the archive is stored: `size` and `etag` are known up front (the
    bytes depend only on the entries' names, sizes, times, modes and
    content), so a client can resume with Range and If-Range.
    """

    def __init__(self, session_dir: Path, entries: list[ArchiveEntry], *, compress: bool) -> None:
        self.base = os.path.realpath(session_dir)
        # The manifest is replaced by every upload: the zip holds the one it listed.
        manifest = paths.manifest_path(Path(self.base))
        self.entries = [
            _held(self.base, entry) if entry.source == manifest else entry for entry in entries
        ]
        held = [entry.held for entry in self.entries if entry.held is not None]
        # Released by close(), or with the archive if nobody called it.
        self._release = weakref.finalize(self, _close_all, held)
        self.compress = compress
        self.size: int | None = None if compress else self._stored_size()
        self.etag: str | None = None if compress else self._stored_etag()

    @classmethod
    def for_session(
        cls,
        session: Session,
        filters: FileFilters,
        *,
        compress: bool,
        only_paths: Collection[str] | None = None,
    ) -> SessionArchive:
        mime_of = None
        if filters.needs_mime:
            recorded = dict(
                session.attachments.filter(purged_at__isnull=True).values_list("path", "mime")
            )

            def mime_of(entry: ArchiveEntry) -> str:
                return recorded.get(entry.arcname) or sniff_mime(session.directory, entry)

        entries = select_entries(session.directory, filters, only_paths=only_paths, mime_of=mime_of)
        return cls(session.directory, entries, compress=compress)

    def _stored_size(self) -> int:
        sizer = ZipStream(compress_type=ZIP_STORED, sized=True)
        for entry in self.entries:
            # Only the name and size count towards the length; nothing is read.
            sizer.add(iter(()), zip_name(entry.arcname), size=entry.size)
        return len(sizer)

    def _stored_etag(self) -> str:
        basis = json.dumps(
            {
                "zipstream-ng": importlib.metadata.version("zipstream-ng"),
                # Entry times are written in the server's local time.
                "tz": [time.timezone, time.altzone, time.daylight],
                "entries": [
                    [e.arcname, e.size, e.mtime_ns, e.mode, e.inode, e.device] for e in self.entries
                ],
            }
        )
        return '"zip-' + hashlib.sha256(basis.encode("utf-8")).hexdigest() + '"'

    def close(self) -> None:
        """Let go of the files held open since the listing (the manifest)."""
        self._release()

    def chunks(self, start: int = 0, length: int = -1) -> Iterator[bytes]:
        """The archive's bytes from `start`, `length` of them (-1: to the end)."""
        stream = self._generate()
        if start == 0 and length < 0:
            return stream
        return _slice(stream, start, length)

    def _generate(self) -> Iterator[bytes]:
        stored = not self.compress
        zs = ZipStream(
            compress_type=ZIP_STORED if stored else ZIP_DEFLATED,
            compress_level=None if stored else conf.ZIP_COMPRESS_LEVEL,
            sized=stored,
        )
        for entry in self.entries:
            if entry.held is not None:
                # The very file that was listed, by its descriptor.
                zs.add_path(
                    f"{_PROC_FD}/{entry.held}",
                    zip_name(entry.arcname),
                    compress_type=ZIP_STORED if stored else None,
                )
                yield from zs.file()
                continue
            # Checked again just before the read: the file may have been
            # replaced (by a link leading out, say) since it was listed.
            checked = _checked_stat(self.base, entry.source)
            if stored and (checked is None or not entry.unchanged(checked[1])):
                raise ArchiveChanged(f"{entry.arcname!r} changed while the zip was streamed.")
            if checked is None:
                logger.info(
                    "Left %r out of the zip: it changed since it was listed.", entry.arcname
                )
                continue
            real = checked[0]
            keep_as_is = (
                stored
                or is_precompressed(entry.name)
                or (entry.size >= PROBE_MIN_SIZE and not deflates_well(real))
            )
            zs.add_path(
                str(real),
                zip_name(entry.arcname),
                compress_type=ZIP_STORED if keep_as_is else None,
            )
            yield from zs.file()
        yield from zs.footer()


def _slice(stream: Iterator[bytes], start: int, length: int) -> Iterator[bytes]:
    """Bytes `start` to `start + length` of `stream`; what comes before is made and dropped."""
    try:
        position = 0
        remaining = length
        for chunk in stream:
            end = position + len(chunk)
            if end > start:
                piece = chunk[max(0, start - position) :]
                if remaining >= 0:
                    piece = piece[:remaining]
                    remaining -= len(piece)
                yield piece
                if remaining == 0:
                    return
            position = end
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
