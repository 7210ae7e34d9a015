"""
Reading query parameters. A value the client got wrong raises
`InvalidParameter` naming the parameter (400), never a 500.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .exceptions import InvalidParameter

TRUE_VALUES = frozenset({"true", "1", "yes", "on"})
FALSE_VALUES = frozenset({"false", "0", "no", "off"})


def _raw(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name)
    if value is None:
        return None
    return str(value).strip()


def choice(query: Mapping[str, str], name: str, choices: Iterable[str], default: str) -> str:
    """One of `choices`, `default` when the parameter is absent or empty."""
    value = _raw(query, name)
    if not value:
        return default
    allowed = list(choices)
    if value not in allowed:
        raise InvalidParameter(
            name, f"'{name}' must be one of {', '.join(allowed)}; got {value[:64]!r}."
        )
    return value


def boolean(query: Mapping[str, str], name: str, default: bool) -> bool:
    """true/false (also 1/0, yes/no, on/off), `default` when absent or empty."""
    value = _raw(query, name)
    if not value:
        return default
    if value.lower() in TRUE_VALUES:
        return True
    if value.lower() in FALSE_VALUES:
        return False
    raise InvalidParameter(name, f"'{name}' must be true or false; got {value[:64]!r}.")


def non_negative_int(query: Mapping[str, str], name: str) -> int | None:
    """A whole number of at least 0, or None when absent or empty."""
    value = _raw(query, name)
    if not value:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise InvalidParameter(
            name, f"'{name}' must be a whole number of at least 0; got {value[:64]!r}."
        )
    return int(value)


def comma_list(query: Mapping[str, str], name: str) -> list[str]:
    """The comma-separated items of every occurrence of the parameter, blanks dropped."""
    getlist = getattr(query, "getlist", None)
    values = getlist(name) if getlist is not None else [query.get(name) or ""]
    return [item.strip() for value in values for item in str(value).split(",") if item.strip()]
