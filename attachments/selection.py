"""
Which files a client asked for: the filters shared by the session zip and the
artifact event feed (`include_ext`, `include_mime`, `max_size`), described
once by `FileFilterParameters`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .parameters import (
    CommaListField,
    QueryParameters,
    WholeNumberField,
    extension_item,
    mime_filter_item,
)


class FileFilterParameters(QueryParameters):
    """The filter parameters, as the zip and the event feed both read them."""

    include_mime = CommaListField(
        item=mime_filter_item,
        detail=(
            "'include_mime' is a comma list of MIME types such as image/png, "
            "or of prefixes such as image/."
        ),
        help_text="Comma list of MIME types; 'image/' (or 'image/*') matches a prefix.",
    )
    include_ext = CommaListField(
        item=extension_item,
        detail="'include_ext' is a comma list of file extensions such as csv or .png.",
        help_text="Comma list of extensions, with or without dot ('tar.gz' works).",
    )
    max_size = WholeNumberField(
        required=False,
        detail="'max_size' must be a whole number of bytes.",
        help_text="Largest file size in bytes.",
    )


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
    def from_parameters(cls, values: Mapping[str, Any]) -> FileFilters:
        """From the values `FileFilterParameters` (or a set built on it) read."""
        return cls(
            extensions=tuple(values.get("include_ext", ())),
            mime_types=tuple(values.get("include_mime", ())),
            max_size=values.get("max_size"),
        )

    @classmethod
    def from_query(cls, params: Mapping[str, Any]) -> FileFilters:
        """Read `include_ext`, `include_mime`, `max_size`; a bad value raises `InvalidParameter`."""
        return cls.from_parameters(FileFilterParameters.read(params))

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
