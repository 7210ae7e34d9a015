"""
Query parameters. Each set of them (the zip's and the feed's filters,
cursors, limits) is one DRF serializer built from the fields here: the
serializer validates a request's parameters and drf-spectacular reads the
same declaration for the OpenAPI schema, so the two cannot drift.

A value the client got wrong raises `InvalidParameter` naming the first
bad parameter in the set's order (400), never a 500.

There is one parser per kind of value (`whole_number`, `flag`) and one MIME
token (`MIME_TOKEN`); everything that reads an integer, a true/false or a
MIME type goes through them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.fields import SkipField, empty

from .exceptions import InvalidParameter

# RFC 6838 restricted-name characters, compared in lower case.
MIME_TOKEN = r"[a-z0-9][a-z0-9!#$&^_.+-]*"
# A whole type/subtype, such as a served file's Content-Type.
MIME_TYPE = re.compile(rf"^{MIME_TOKEN}/{MIME_TOKEN}$", re.IGNORECASE)
# A filter item: a type/subtype, or a prefix when the subtype is left out or `*`.
MIME_FILTER = re.compile(rf"^({MIME_TOKEN})/({MIME_TOKEN}|\*)?$")
# A file extension without its leading dot; several parts (`tar.gz`) allowed.
EXTENSION = re.compile(r"^[a-z0-9_+~-]+(\.[a-z0-9_+~-]+)*$")
MAX_EXTENSION_LENGTH = 32
# Longer lists are refused: each item costs a condition in a query.
MAX_LIST_ITEMS = 50
# Sequence numbers and sizes fit a signed 64-bit column with room to spare.
MAX_DIGITS = 18

TRUE_VALUES = frozenset({"true", "1", "yes", "on"})
FALSE_VALUES = frozenset({"false", "0", "no", "off"})


def whole_number(value: object) -> int:
    """
    A whole number of at least 0, from a query string (ASCII digits only: no
    sign, no exponent, at most `MAX_DIGITS`) or a JSON number; ValueError
    for anything else, booleans included.
    """
    if isinstance(value, bool):
        raise ValueError("not a number")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("negative")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS:
            return int(text)
    raise ValueError("not a whole number")


def flag(value: object) -> bool:
    """true/false (also 1/0, yes/no, on/off, any case), or a JSON boolean; ValueError otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_VALUES:
        return True
    if text in FALSE_VALUES:
        return False
    raise ValueError("not true or false")


def mime_filter_item(item: str) -> str:
    """A MIME filter item in lower case; a prefix ends with "/" (`image/*` reads `image/`)."""
    match = MIME_FILTER.match(item.lower())
    if match is None:
        raise ValueError("not a MIME type")
    if match.group(2) in (None, "*"):
        return match.group(1) + "/"
    return item.lower()


def extension_item(item: str) -> str:
    """An extension in lower case without its leading dot."""
    ext = item.lower().lstrip(".")
    if len(ext) > MAX_EXTENSION_LENGTH or not EXTENSION.match(ext):
        raise ValueError("not an extension")
    return ext


def _messages(detail: str) -> dict[str, str]:
    """One message, naming the parameter, for every way its value can be wrong."""
    return dict.fromkeys(
        ("invalid", "min_value", "max_value", "max_string_length", "overflow", "too_many", "null"),
        detail,
    )


class _QueryField:
    """
    How a parameter's value is taken from the query: the last occurrence;
    blank counts as absent where the parameter set says so.
    """

    field_name: str
    parent: Any

    def get_value(self, dictionary: Mapping[str, Any]) -> Any:
        value = dictionary.get(self.field_name, empty)
        if isinstance(value, str) and not value.strip() and self.parent.blank_is_absent:
            return empty
        return value


class WholeNumberField(_QueryField, serializers.IntegerField):
    """A whole number (see `whole_number`) within `min_value` (default 0) and `max_value`."""

    def __init__(self, *, detail: str, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 0)
        super().__init__(error_messages=_messages(detail), **kwargs)

    def to_internal_value(self, data: Any) -> int:
        try:
            return whole_number(data)
        except ValueError:
            self.fail("invalid")
        raise AssertionError("unreachable")  # pragma: no cover


class SecondsField(_QueryField, serializers.FloatField):
    """A finite number of seconds within `min_value` and `max_value`."""

    def __init__(self, *, detail: str, **kwargs: Any) -> None:
        super().__init__(error_messages=_messages(detail), **kwargs)

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, str | int | float):
            self.fail("invalid")
        seconds: float = super().to_internal_value(data)
        return seconds


class FlagField(_QueryField, serializers.BooleanField):
    """true or false (see `flag`)."""

    def __init__(self, *, detail: str, **kwargs: Any) -> None:
        super().__init__(error_messages=_messages(detail), **kwargs)

    def to_internal_value(self, data: Any) -> bool:
        try:
            return flag(data)
        except ValueError:
            self.fail("invalid")
        raise AssertionError("unreachable")  # pragma: no cover


@extend_schema_field(OpenApiTypes.STR)
class CommaListField(_QueryField, serializers.Field):
    """
    A comma-separated list, from every occurrence of the parameter (or a
    JSON list of strings), blanks dropped, each item read by `item` (which
    raises ValueError for a bad one). At most `MAX_LIST_ITEMS` items.
    """

    def __init__(self, *, item: Any, detail: str, **kwargs: Any) -> None:
        self.item = item
        kwargs.setdefault("required", False)
        kwargs.setdefault("default", list)
        super().__init__(error_messages=_messages(detail), **kwargs)
        self.error_messages["too_many"] = detail.rstrip(".") + f", at most {MAX_LIST_ITEMS}."

    def get_value(self, dictionary: Mapping[str, Any]) -> Any:
        getlist = getattr(dictionary, "getlist", None)
        if getlist is not None:
            return getlist(self.field_name) if self.field_name in dictionary else empty
        return dictionary.get(self.field_name, empty)

    def to_internal_value(self, data: Any) -> list[str]:
        if isinstance(data, str):
            data = [data]
        if not isinstance(data, list | tuple) or not all(isinstance(v, str) for v in data):
            self.fail("invalid")
        raw = [part.strip() for value in data for part in value.split(",") if part.strip()]
        if len(raw) > MAX_LIST_ITEMS:
            self.fail("too_many")
        try:
            return [self.item(part) for part in raw]
        except ValueError:
            self.fail("invalid")
        raise AssertionError("unreachable")  # pragma: no cover

    def to_representation(self, value: Any) -> str:
        return ",".join(value)


class QueryParameters(serializers.Serializer):  # type: ignore[misc]
    """
    A set of query parameters. `read()` gives the validated values (absent
    optional ones left out unless they have a default) or raises
    `error_class` naming the first bad parameter.
    """

    # A blank value (`?max_size=`) reads as absent; where False, it is an error.
    blank_is_absent: ClassVar[bool] = True
    error_class: ClassVar[type[InvalidParameter]] = InvalidParameter

    @classmethod
    def settings_key(cls) -> tuple[Any, ...]:
        """The settings the fields are built from (bounds, say): a change makes new fields."""
        return ()

    @classmethod
    def read(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        # Each field validates its own value, as `Serializer.is_valid` would
        # have it do, but the fields are built and bound once per set and
        # settings: a serializer per request (which deep-copies its fields)
        # cost a long-poll several times what reading its parameters does.
        values: dict[str, Any] = {}
        for name, field in _bound_fields(cls).items():
            try:
                values[name] = field.run_validation(field.get_value(params))
            except SkipField:
                continue
            except ValidationError as exc:
                detail = exc.detail[0] if isinstance(exc.detail, list) else exc.detail
                raise cls.error_class(name, str(detail)) from None
        return values


_bound: dict[tuple[type[QueryParameters], tuple[Any, ...]], Mapping[str, serializers.Field]] = {}


def _bound_fields(cls: type[QueryParameters]) -> Mapping[str, serializers.Field]:
    key = (cls, cls.settings_key())
    fields = _bound.get(key)
    if fields is None:
        # Fields only read their parent (`blank_is_absent`) while they validate,
        # so one bound set serves every request and thread.
        fields = _bound[key] = cls().fields
    return fields


def choice(query: Mapping[str, str], name: str, choices: Iterable[str], default: str) -> str:
    """One of `choices`, `default` when the parameter is absent or empty."""
    value = str(query.get(name) or "").strip()
    if not value:
        return default
    allowed = list(choices)
    if value not in allowed:
        raise InvalidParameter(
            name, f"'{name}' must be one of {', '.join(allowed)}; got {value[:64]!r}."
        )
    return value


def boolean(query: Mapping[str, str], name: str, default: bool) -> bool:
    """A `flag`, `default` when the parameter is absent or empty."""
    value = str(query.get(name) or "").strip()
    if not value:
        return default
    try:
        return flag(value)
    except ValueError:
        raise InvalidParameter(
            name, f"'{name}' must be true or false; got {value[:64]!r}."
        ) from None


def non_negative_int(query: Mapping[str, str], name: str) -> int | None:
    """A `whole_number`, or None when the parameter is absent or empty."""
    value = str(query.get(name) or "").strip()
    if not value:
        return None
    try:
        return whole_number(value)
    except ValueError:
        raise InvalidParameter(
            name, f"'{name}' must be a whole number of at least 0; got {value[:64]!r}."
        ) from None
