"""
Where a session's files live, and the one way to build a path from client input.

No Django import here: `AttachmentStore` uses this module inside workflow
nodes' subprocesses.
"""

from __future__ import annotations

import html
import io
import os
import re
import stat
import unicodedata
from pathlib import Path

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
WORKSPACE_DIRNAME = "code_workspace"
ATTACHMENTS_DIRNAME = "attachments"
MANIFEST_NAME = "attachments_manifest.json"
# Under attachments/: where files are received before they are recorded.
STAGING_DIRNAME = ".staging"

# ext4 and most filesystems cap a name at 255 bytes; leave room for suffixes.
MAX_NAME_BYTES = 200
MAX_DISPLAY_NAME_CHARS = 1024
_RESERVED_CHARS = re.compile(r'[<>:"/\\|?*]')


class UnsafePath(ValueError):
    """A path built from client input would leave its base directory."""


class NotARegularFile(OSError):
    """The path names a directory, a FIFO, a device or a socket rather than a file."""


def is_valid_session_id(session_id: object) -> bool:
    return isinstance(session_id, str) and SESSION_ID_RE.fullmatch(session_id) is not None


def safe_join(base: str | os.PathLike[str], *parts: str) -> Path:
    """
    Join `parts` onto `base` and return the normalised path, refusing absolute
    parts, NUL bytes, and anything that normalises to a place outside `base`.

    Symlinks are not resolved here; `resolve_inside` does that for paths that
    are about to be read.
    """
    base_path = os.path.normpath(os.path.abspath(base))
    for part in parts:
        if "\x00" in part:
            raise UnsafePath("Path contains a NUL byte.")
        if os.path.isabs(part) or part.startswith("\\"):
            raise UnsafePath(f"Absolute path not allowed: {part!r}")
    joined = os.path.normpath(os.path.join(base_path, *parts))
    if joined != base_path and not joined.startswith(base_path + os.sep):
        raise UnsafePath(f"Path leaves its base directory: {os.path.join(*parts)!r}")
    return Path(joined)


def _is_inside(real_base: str, real: str) -> bool:
    return real == real_base or real.startswith(real_base + os.sep)


def resolve_inside(base: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Resolve symlinks in `path` and refuse it unless it still lies inside `base`."""
    real = os.path.realpath(path)
    if not _is_inside(os.path.realpath(base), real):
        raise UnsafePath(f"Path resolves outside its base directory: {os.fspath(path)!r}")
    return Path(real)


def open_inside(base: str | os.PathLike[str], path: str | os.PathLike[str]) -> io.FileIO:
    """
    Open `path` for reading, unbuffered, if it is a regular file that resolves
    inside `base`; raise `UnsafePath` if it resolves elsewhere,
    `NotARegularFile` for anything but a file (or a file with other hard
    links), and `OSError` if it is gone.

    The check is made on the descriptor actually opened, so a link swapped
    in between the check and the open cannot lead outside `base`.
    """
    real = resolve_inside(base, path)
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(real, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(f"Not a regular file: {os.fspath(path)!r}")
        if st.st_nlink > 1:
            # A hard link can name a file outside `base` (a database, say)
            # without any path showing it: served like a symlink, never.
            raise NotARegularFile(f"A file with other hard links: {os.fspath(path)!r}")
        try:
            opened = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            opened = None  # no procfs: the O_NOFOLLOW open of the resolved path stands
        if opened is not None and not _is_inside(os.path.realpath(base), opened):
            raise UnsafePath(f"Path resolves outside its base directory: {os.fspath(path)!r}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def session_dir(warehouse: str | os.PathLike[str], session_id: str) -> Path:
    if not is_valid_session_id(session_id):
        raise UnsafePath(f"Invalid session id: {session_id!r}")
    return safe_join(warehouse, f"session_{session_id}")


def workspace_dir(session_path: Path) -> Path:
    return session_path / WORKSPACE_DIRNAME


def attachments_dir(session_path: Path) -> Path:
    return workspace_dir(session_path) / ATTACHMENTS_DIRNAME


def staging_dir(session_path: Path) -> Path:
    """Where uploads are written until recorded; listings, zips and quotas never look here."""
    return attachments_dir(session_path) / STAGING_DIRNAME


def lock_directory(directory: Path, blocking: bool = True) -> int | None:
    """
    Open `directory` and take an exclusive `flock` on it: the descriptor
    (closing it releases the lock), or None when another process holds it and
    `blocking` is false. Staging directories are held this way while their
    file is written, so reconciliation can tell an upload in progress from
    one whose process died.
    """
    import fcntl  # POSIX only

    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def manifest_path(session_path: Path) -> Path:
    return attachments_dir(session_path) / MANIFEST_NAME


def _truncate_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def _clean_characters(name: str) -> str:
    """NFC; no control, format or undecodable (surrogate) characters; reserved ones as '_'."""
    name = unicodedata.normalize("NFC", name)
    name = "".join(ch for ch in name if unicodedata.category(ch) not in {"Cc", "Cf", "Cs"})
    return _RESERVED_CHARS.sub("_", name)


def has_unsafe_characters(name: str) -> bool:
    """
    Whether a name found on disk (a node wrote it) holds a backslash, a
    control or format character, or bytes that are not UTF-8 (surrogates).
    Such a name is never recorded as it is, nor used as a zip entry.
    """
    return "\\" in name or any(unicodedata.category(ch) in {"Cc", "Cf", "Cs"} for ch in name)


def safe_component(name: str) -> str:
    """
    One component of a name found on disk, cleaned with the character rules
    of `sanitize_filename()` (so a backslash or a control character never
    survives), but not trimmed or shortened: `.gitignore` stays `.gitignore`.
    """
    cleaned = _clean_characters(name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    return "_" if cleaned in {"", ".", ".."} else cleaned


def sanitize_filename(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """
    Turn a client's file name into one that is safe as a single path component.

    Keeps the last component of either separator style, drops control and
    format characters (CR/LF, NUL, bidi overrides), replaces characters that
    some filesystems reserve, never yields "", "." or "..", and bounds the
    UTF-8 length while keeping the extension.
    """
    name = re.split(r"[/\\]", name)[-1]
    name = _clean_characters(name)
    name = name.strip(" .")
    if not name:
        return "file"
    if len(name.encode("utf-8")) > max_bytes:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and len(ext.encode("utf-8")) <= 16:
            room = max_bytes - len(ext.encode("utf-8")) - 1
            name = _truncate_utf8(stem, room).rstrip(" .") + "." + ext
        else:
            name = _truncate_utf8(name, max_bytes).rstrip(" .")
    return name or "file"


# How browsers (the WHATWG multipart/form-data encoding), curl and urllib3
# write the three characters a quoted header parameter cannot hold. A `%`
# itself is sent as is, so a name that really contains "%22" arrives looking
# like an escaped quote: that name is the one clients cannot send.
_FORM_ESCAPES = {"%22": '"', "%0D": "\r", "%0A": "\n"}
_FORM_ESCAPE_RE = re.compile("|".join(_FORM_ESCAPES))


def client_file_name(name: str) -> str | None:
    """
    The file name a multipart part claims, from its raw `filename` parameter,
    as Django's own parser reads it (HTML entities unescaped, the last path
    component, printable characters only) and with the escapes that
    browsers, curl and requests write decoded (`%22` is `"`; `%0D` and `%0A`,
    CR and LF, are then dropped like any control character). None for a name
    that leaves nothing ("", ".", ".."), which counts as no file.
    """
    name = html.unescape(name)
    name = re.split(r"[/\\]", name)[-1]
    name = _FORM_ESCAPE_RE.sub(lambda match: _FORM_ESCAPES[match.group()], name)
    name = "".join(ch for ch in name if ch.isprintable())
    return None if name in {"", ".", ".."} else name


def display_name(name: str) -> str:
    """The client's name as given, less NUL bytes (no database stores them), bounded."""
    return name.replace("\x00", "")[:MAX_DISPLAY_NAME_CHARS]
