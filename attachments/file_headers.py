"""
The headers of a file response: a Content-Type that is never active content
by accident, a Content-Disposition that no file name can break, the
validators (a strong ETag from the sha256, Repr-Digest), and the Range and
If-Range a request may send (a single byte range; several are answered
with the whole body).
"""

from __future__ import annotations

import base64
import re
import sys
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote

from django.http import HttpRequest
from django.utils.http import parse_etags, parse_http_date_safe

from .parameters import MIME_TYPE

OCTET_STREAM = "application/octet-stream"
# Types a browser would run or render as a document able to run script.
_ACTIVE_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/xsl",
        "application/xslt+xml",
        "text/javascript",
        "text/ecmascript",
        "text/jscript",
        "text/x-javascript",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/x-ecmascript",
    }
)
# Served with every active-content response, in case a browser renders it anyway:
# no script, an opaque origin, nothing loaded.
SANDBOX_POLICY = "sandbox; default-src 'none'"
# RFC 5987 attr-char, beyond letters and digits (which `quote` always keeps).
_ATTR_CHAR_EXTRA = "!#$&+-.^_`|~"
# Printable ASCII safe inside the quoted fallback name for every known client.
_FALLBACK_SAFE = re.compile(r"[^A-Za-z0-9 !#$&'()+,\-.=@\[\]^_`{}~]")


def safe_content_type(mime: str) -> str:
    """`mime` if it is a well-formed type/subtype, else application/octet-stream."""
    essence = (mime or "").split(";", 1)[0].strip()
    return essence.lower() if MIME_TYPE.match(essence) else OCTET_STREAM


def is_active_content(mime: str) -> bool:
    """True for types a browser would render as a document that can run script."""
    essence = safe_content_type(mime)
    return essence in _ACTIVE_TYPES or essence.endswith("+xml") or essence.startswith("multipart/")


def _ascii_fallback(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    ascii_only = "".join(
        ch if ch.isascii() else ("" if unicodedata.combining(ch) else "_") for ch in decomposed
    )
    return _FALLBACK_SAFE.sub("_", ascii_only).strip(" ") or "download"


def content_disposition(filename: str, *, as_attachment: bool) -> str:
    """
    A Content-Disposition value (RFC 6266) carrying `filename` whole in
    `filename*` (RFC 5987: UTF-8, percent-encoded) with a plain-ASCII
    `filename` for old clients. The value is printable ASCII whatever the
    name holds (quotes, CR/LF, semicolons, unicode), so it can neither end
    the header nor add a parameter, and `filename*` decodes to the name.
    """
    # Lone surrogates cannot be UTF-8 encoded; nothing else is altered.
    name = filename.encode("utf-8", "replace").decode("utf-8") or "download"
    disposition = "attachment" if as_attachment else "inline"
    encoded = quote(name, safe=_ATTR_CHAR_EXTRA, encoding="utf-8")
    return f"{disposition}; filename=\"{_ascii_fallback(name)}\"; filename*=UTF-8''{encoded}"


def strong_etag(sha256_hex: str) -> str:
    return f'"{sha256_hex}"'


def repr_digest(sha256_hex: str) -> str:
    """The RFC 9530 Repr-Digest value: the digest of the whole file, also on a 206."""
    return "sha-256=:" + base64.b64encode(bytes.fromhex(sha256_hex)).decode("ascii") + ":"


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


class RangeNotSatisfiable(Exception):
    pass


_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


# No file is this large; a longer number means "past any end", and is never
# handed to int(), which refuses more than 4300 digits.
_MAX_POSITION_DIGITS = 19


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    if len(digits) > _MAX_POSITION_DIGITS:
        return sys.maxsize
    return int(digits)


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """
    The single byte range that `header` asks of a `size`-byte body, or None
    to send the whole body: no header, a form not served here (several
    ranges, another unit) or bad syntax, which RFC 9110 lets a server ignore.
    Raises `RangeNotSatisfiable` for a range that starts past the end.
    """
    if not header:
        return None
    match = _RANGE_RE.match(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = _position(last)
        if suffix == 0:
            raise RangeNotSatisfiable()
        if size == 0:
            return None  # the whole (empty) body is the last `suffix` bytes
        return ByteRange(max(0, size - suffix), size - 1)
    start = _position(first)
    end = _position(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable()
    return ByteRange(start, min(end, size - 1))


def if_range_passes(request: HttpRequest, etag: str | None, last_modified: int | None) -> bool:
    """RFC 9110 13.1.5: a range applies only to the representation the client already has."""
    if_range = request.headers.get("If-Range")
    if if_range is None:
        return True
    if_range = if_range.strip()
    if if_range.startswith(('"', "W/")):
        # Strong comparison: a weak validator never matches.
        return (
            etag is not None and not if_range.startswith("W/") and parse_etags(if_range) == [etag]
        )
    since = parse_http_date_safe(if_range)
    return since is not None and last_modified is not None and since == last_modified
