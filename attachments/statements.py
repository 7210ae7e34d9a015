"""
Running the upload path's statements without building them with the ORM.

For a small upload, compiling its few statements (the session's lookup, the
usage counters' UPDATE, the rows' and events' INSERTs) took more of the
server's CPU than running them. On SQLite and PostgreSQL the callers write
their SQL once per database vendor (`functools.cache`, as
`attachments.resumable` does for the tus statements) and run it through the
helpers here, which do what the ORM would with the rows:

- values go in prepared by each field's `pre_save` and `get_db_prep_save`
  against the connection, so what is stored is what the ORM stores (SQLite's
  datetimes, JSON, ...), byte for byte;
- rows come out through the same converters as the ORM's (the backend's,
  then the field's), into `Model.from_db`;
- inserted instances get their primary key from RETURNING, and their
  `_state`, as `bulk_create` sets them.

Other vendors keep the ORM path (`raw_statements()` is False for them).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import AutoField, Field, Model
from django.db.models.expressions import Col

RAW_VENDORS = frozenset({"sqlite", "postgresql"})

M = TypeVar("M", bound=Model)


def raw_statements() -> bool:
    """Whether this connection's vendor runs the hand-written statements."""
    return connection.vendor in RAW_VENDORS


def quoted_names(model: type[Model], *fields: str) -> tuple[str, ...]:
    """`model`'s table, then the columns of the fields named (`"pk"` for its key), quoted."""
    meta = model._meta
    quote = connection.ops.quote_name
    columns = (meta.pk if name == "pk" else meta.get_field(name) for name in fields)
    return (quote(meta.db_table), *(quote(field.column) for field in columns))


def quoted_columns(fields: Sequence[Field]) -> str:
    quote = connection.ops.quote_name
    return ", ".join(quote(field.column) for field in fields)


@functools.cache
def select_list(vendor: str, model: type[Model]) -> tuple[str, tuple[Field, ...]]:
    """The quoted columns of `model`'s concrete fields (what `from_row` reads), and those fields."""
    fields = tuple(model._meta.concrete_fields)
    return quoted_columns(fields), fields


@functools.cache
def _converted(vendor: str, model: type[Model]) -> tuple[tuple[int, Field, Col], ...]:
    """The positions of `model`'s columns that the ORM converts when it reads them on `vendor`."""
    table = model._meta.db_table
    found = []
    for index, field in enumerate(model._meta.concrete_fields):
        col = field.get_col(table)
        if connection.ops.get_db_converters(col) or field.get_db_converters(connection):
            found.append((index, field, col))
    return tuple(found)


def from_row(model: type[M], row: Sequence[Any]) -> M:
    """An instance of `model` from a row of `select_list()`'s columns, as a queryset yields it."""
    db = connections[DEFAULT_DB_ALIAS]
    converted = _converted(db.vendor, model)
    if converted:
        values = list(row)
        for index, field, col in converted:
            value = values[index]
            # The converters are the current connection's, as the ORM's are.
            for convert in db.ops.get_db_converters(col) + field.get_db_converters(db):
                value = convert(value, col, db)
            values[index] = value
        row = values
    return model.from_db(db.alias, _attnames(model), row)


@functools.cache
def _attnames(model: type[Model]) -> tuple[str, ...]:
    return tuple(field.attname for field in model._meta.concrete_fields)


@functools.cache
def _insert_statement(vendor: str, model: type[Model]) -> tuple[str, str, str, tuple[Field, ...]]:
    """`model`'s INSERT in parts (head, one row's placeholders, tail) and the fields it writes."""
    meta = model._meta
    quote = connection.ops.quote_name
    fields = tuple(
        field
        for field in meta.concrete_fields
        if not field.generated and not isinstance(field, AutoField)
    )
    head = f"INSERT INTO {quote(meta.db_table)} ({quoted_columns(fields)}) VALUES "
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    tail = f" RETURNING {quote(meta.db_table)}.{quote(meta.pk.column)}"
    return head, row, tail, fields


def insert(objs: Sequence[Model]) -> None:
    """
    INSERT new instances of one model with an auto-incremented primary key,
    in as few statements as the database allows (one for a batch of uploads),
    and set their primary keys and `_state` as `bulk_create` does. Run it in
    the caller's transaction.
    """
    if not objs:
        return
    # The connection itself, not the proxy that looks it up at every use.
    db = connections[DEFAULT_DB_ALIAS]
    model = type(objs[0])
    head, row, tail, fields = _insert_statement(db.vendor, model)
    for obj in objs:
        obj._prepare_related_fields_for_save(operation_name="bulk_create")
    per_statement = 1
    if len(objs) > 1:
        per_statement = max(db.ops.bulk_batch_size(list(fields), objs), 1)
    chunks = [objs[start : start + per_statement] for start in range(0, len(objs), per_statement)]
    # More than one statement needs a transaction around them, as bulk_create's.
    several = len(chunks) > 1
    with transaction.atomic(savepoint=False) if several else contextlib.nullcontext():
        for chunk in chunks:
            params = [
                field.get_db_prep_save(field.pre_save(obj, True), db)
                for obj in chunk
                for field in fields
            ]
            with db.cursor() as cursor:
                cursor.execute(head + ", ".join([row] * len(chunk)) + tail, params)
                keys = cursor.fetchall()
            for obj, (key,) in zip(chunk, keys, strict=True):
                obj.pk = key
                obj._state.adding = False
                obj._state.db = db.alias
