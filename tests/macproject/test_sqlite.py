"""
The SQLite backend's handle pool (macproject.sqlite): a closed connection's
handle serves the next connection, clean, and only while its file is the one
it opened.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from django.db import connection

from macproject.sqlite.base import DatabaseWrapper, HandlePool

pytestmark = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="the embedded default's backend"
)


@pytest.fixture(autouse=True)
def _own_databases(django_db_blocker):
    # These tests open databases of their own, not the test database.
    with django_db_blocker.unblock():
        yield


def wrapper_for(path: Path) -> DatabaseWrapper:
    settings_dict = {
        **connection.settings_dict,
        "NAME": str(path),
        "OPTIONS": dict(connection.settings_dict["OPTIONS"]),
    }
    return DatabaseWrapper(settings_dict, alias="pool-test")


def test_a_closed_connection_hands_its_handle_to_the_next(tmp_path):
    first = wrapper_for(tmp_path / "db.sqlite3")
    first.ensure_connection()
    handle = first.connection
    first.close()
    second = wrapper_for(tmp_path / "db.sqlite3")
    second.ensure_connection()
    assert second.connection is handle
    # The PRAGMAs of init_command hold on the reused handle.
    with second.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
    second.close()


def test_a_handle_comes_back_without_the_transaction_it_was_closed_in(tmp_path):
    first = wrapper_for(tmp_path / "db.sqlite3")
    with first.cursor() as cursor:
        cursor.execute("CREATE TABLE t (x INTEGER)")
    first.set_autocommit(False)
    with first.cursor() as cursor:
        cursor.execute("INSERT INTO t VALUES (1)")
    first.close()  # never committed
    second = wrapper_for(tmp_path / "db.sqlite3")
    with second.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM t")
        assert cursor.fetchone()[0] == 0
    assert second.get_autocommit()
    second.close()


def test_a_database_file_made_anew_gets_new_handles(tmp_path):
    path = tmp_path / "db.sqlite3"
    first = wrapper_for(path)
    with first.cursor() as cursor:
        cursor.execute("CREATE TABLE old (x INTEGER)")
    handle = first.connection
    first.close()
    path.unlink()
    (tmp_path / "db.sqlite3-wal").unlink(missing_ok=True)
    (tmp_path / "db.sqlite3-shm").unlink(missing_ok=True)
    sqlite3.connect(path).close()
    second = wrapper_for(path)
    with second.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE name = 'old'")
        assert cursor.fetchone() is None
    assert second.connection is not handle
    second.close()


def test_the_pool_keeps_at_most_its_size(tmp_path):
    path = tmp_path / "db.sqlite3"
    sqlite3.connect(path).close()
    pool = HandlePool(2)
    identity = (path.stat().st_dev, path.stat().st_ino)
    handles = [sqlite3.connect(path, check_same_thread=False) for _ in range(3)]
    for handle in handles:
        pool.give(str(path), handle, identity)
    taken = [pool.take(str(path)) for _ in range(3)]
    assert [t[0] for t in taken if t is not None] == [handles[1], handles[0]]
    assert taken[2] is None
    with pytest.raises(sqlite3.ProgrammingError):
        handles[2].execute("SELECT 1")  # closed, not pooled
