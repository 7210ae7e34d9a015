"""
Which files a client asked for: the filters shared by the session zip and the
artifact event feed (`include_ext`, `include_mime`, `max_size`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from . import query
from .exceptions import InvalidParameter

_MIME_RE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/([a-z0-9][a-z0-9!#$&^_.+-]*)?$")
_EXT_RE = re.compile(r"^[^/\\\x00-\x1f]{1,32}$")


@dataclass(frozen=True)
class FileFilters:
    """
    A file passes when it matches every filter given: one of `extensions`
    (lower case, no leading dot; "tar.gz" works), one of `mime_types` (exact,
    or a prefix when the item ends with "/", as in "image/"), and a size no
    larger than `max_size`. No filters: everything passes.
    """

    extensions: tuple[str, ...] = ()
    mime_types: tuple[str, ...] = ()
    max_size: int | None = None

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> FileFilters:
        """Read `include_ext`, `include_mime`, `max_size`; a bad value raises `InvalidParameter`."""
        extensions = []
        for item in query.comma_list(params, "include_ext"):
            ext = item.lstrip(".").lower()
            if not _EXT_RE.match(ext):
                raise InvalidParameter(
                    "include_ext",
                    f"'include_ext' is a comma list of file extensions such as csv,.png; "
                    f"got {item[:64]!r}.",
                )
            extensions.append(ext)
        mime_types = []
        for item in query.comma_list(params, "include_mime"):
            mime = item.lower()
            if not _MIME_RE.match(mime):
                raise InvalidParameter(
                    "include_mime",
                    "'include_mime' is a comma list of MIME types such as text/csv, or of "
                    f"prefixes such as image/; got {item[:64]!r}.",
                )
            mime_types.append(mime)
        return cls(
            extensions=tuple(extensions),
            mime_types=tuple(mime_types),
            max_size=query.non_negative_int(params, "max_size"),
        )

    @property
    def needs_mime(self) -> bool:
        return bool(self.mime_types)

    def matches(self, name: str, size: int, mime: str | None = None) -> bool:
        if self.max_size is not None and size > self.max_size:
            return False
        if self.extensions:
            lowered = name.lower()
            if not any(lowered.endswith("." + ext) for ext in self.extensions):
                return False
        if self.mime_types:
            essence = (mime or "").split(";", 1)[0].strip().lower()
            if not any(
                essence.startswith(wanted) if wanted.endswith("/") else essence == wanted
                for wanted in self.mime_types
            ):
                return False
        return True
