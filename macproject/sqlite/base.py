"""
Django's SQLite backend, with a connection's SQLite handle reused rather than
reopened.

Under ASGI, Django runs each request's database work on a thread of its own
and closes the connection when the request ends (persistent connections are
per thread, and the threads do not last), so every request opened SQLite
again: the file, Django's ~30 SQL functions and the PRAGMAs of
`init_command` (WAL, synchronous=FULL), about a fifth of a small upload's
CPU. Here, closing a connection hands its handle, rolled back to a clean
state, to a small per-process pool, and the next connection takes it from
there. PostgreSQL has the psycopg pool for the same purpose.

A pooled handle is only reused while its file is the one it opened (same
device and inode): a database file removed and created again (tests) gets
new handles. In-memory databases are never pooled.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

from django.db.backends.sqlite3 import base

# Idle handles kept per database file; more are closed.
POOL_SIZE = 32

Identity = tuple[int, int]


def _identity(name: str) -> Identity | None:
    try:
        st = os.stat(name)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)


class HandlePool:
    """Idle SQLite handles by database file, each with the identity of the file it opened."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: dict[str, list[tuple[sqlite3.Connection, Identity]]] = {}
        self._mutex = threading.Lock()

    def take(self, name: str) -> tuple[sqlite3.Connection, Identity] | None:
        current = _identity(name)
        stale = []
        found = None
        with self._mutex:
            idle = self._idle.get(name, [])
            while idle:
                handle, identity = idle.pop()
                if identity == current:
                    found = (handle, identity)
                    break
                stale.append(handle)
        for handle in stale:
            handle.close()
        return found

    def give(self, name: str, handle: sqlite3.Connection, identity: Identity) -> None:
        if handle.in_transaction:
            handle.rollback()
        with self._mutex:
            idle = self._idle.setdefault(name, [])
            if len(idle) < self.size:
                idle.append((handle, identity))
                return
        handle.close()

    def clear(self) -> None:
        with self._mutex:
            idle, self._idle = self._idle, {}
        for handles in idle.values():
            for handle, _identity in handles:
                handle.close()


pool = HandlePool(POOL_SIZE)


class DatabaseWrapper(base.DatabaseWrapper):
    _handle_identity: Identity | None = None

    def _pooled_name(self) -> str | None:
        if self.is_in_memory_db():
            return None
        return str(self.settings_dict["NAME"])

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        name = self._pooled_name()
        if name is not None:
            taken = pool.take(name)
            if taken is not None:
                handle, self._handle_identity = taken
                return handle
        handle = super().get_new_connection(conn_params)
        self._handle_identity = _identity(name) if name is not None else None
        return handle

    def _close(self) -> None:
        name = self._pooled_name()
        if self.connection is None or name is None or self._handle_identity is None:
            super()._close()
            return
        identity, self._handle_identity = self._handle_identity, None
        try:
            pool.give(name, self.connection, identity)
        except sqlite3.Error:
            # A handle that cannot even roll back is not worth keeping.
            super()._close()
