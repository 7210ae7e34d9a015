"""
PostgreSQL becomes unreachable under a real server: the database stops
accepting connections and the server's backends are terminated, as in a
failover. Every client gets a JSON answer with a code: HTTP requests a 503
with Retry-After, WebSocket handshakes an `error` message and the close
code 1013 ("try again later") rather than a plain-text 500. Once the
database is back, both work again with no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import websockets
from django.db import connection

from tests.servers import ServerProcess

from . import event_clients as clients

pytestmark = [pytest.mark.server, pytest.mark.services, pytest.mark.django_db(transaction=True)]

# A request waits up to the connection pool's timeout (10 s) for a connection
# before it is answered 503, and the first after the outage for the pool's
# next reconnection attempt.
OUTAGE_WAIT = 30
# The server's connections say who they are (libpq reads PGAPPNAME).
SERVER_APPLICATION = "mac-outage-test-server"


@contextlib.contextmanager
def database_unreachable() -> Iterator[None]:
    """
    No new connection to the test database, and the server's cut (known by
    the application name it connects with). This process's other threads'
    connections are left alone: a test after this one would inherit them dead.
    """
    settings = connection.settings_dict
    name = settings["NAME"]
    quoted = connection.ops.quote_name(name)
    # A database cannot refuse connections from a session connected to it.
    maintenance = psycopg.connect(
        host=settings.get("HOST") or "127.0.0.1",
        port=settings.get("PORT") or 5432,
        user=settings.get("USER") or None,
        dbname="postgres",
        autocommit=True,
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (own,) = cursor.fetchone()
    with maintenance:
        maintenance.execute(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS false")
        try:
            maintenance.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> %s AND application_name = %s",
                [name, own, SERVER_APPLICATION],
            )
            yield
        finally:
            maintenance.execute(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS true")


async def first_message_and_close(url: str) -> tuple[dict, int | None]:
    async with websockets.connect(url, open_timeout=OUTAGE_WAIT) as socket:
        message = json.loads(await asyncio.wait_for(socket.recv(), OUTAGE_WAIT))
        with contextlib.suppress(websockets.ConnectionClosed):
            await asyncio.wait_for(socket.recv(), OUTAGE_WAIT)
        return message, socket.close_code


async def connection_message(url: str) -> dict:
    async with websockets.connect(url, open_timeout=OUTAGE_WAIT) as socket:
        return json.loads(await asyncio.wait_for(socket.recv(), OUTAGE_WAIT))


def artifacts_socket(s: ServerProcess, session_id: str) -> str:
    return f"{s.ws_url}/ws/sessions/{session_id}/artifacts?after=0"


@pytest.fixture
def postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: set DATABASE_URL=postgres://...")


def test_a_database_outage_is_a_json_error_on_every_transport_and_ends_by_itself(server, postgres):
    with server("uvicorn", PGAPPNAME=SERVER_APPLICATION) as s:
        session_id = clients.create_session(s.url)

        with database_unreachable():
            listing = httpx.get(
                f"{s.url}/api/sessions/{session_id}/artifact-events", timeout=OUTAGE_WAIT
            )
            message, code = asyncio.run(first_message_and_close(artifacts_socket(s, session_id)))
            control, control_code = asyncio.run(
                first_message_and_close(f"{s.ws_url}/ws?session_id={session_id}")
            )

        assert listing.status_code == 503
        assert listing.json()["code"] == "service_unavailable"
        assert "retry-after" in listing.headers
        for received, closed in ((message, code), (control, control_code)):
            assert received["type"] == "error"
            assert received["data"]["code"] == "service_unavailable"
            assert closed == 1013
        assert "Traceback" not in s.log()

        # Back: the same server answers and follows again, once its pool has
        # reconnected (it retries with a backoff of a few seconds after an outage).
        back = httpx.get(f"{s.url}/api/sessions/{session_id}/artifact-events", timeout=OUTAGE_WAIT)
        assert back.status_code == 200
        connected = asyncio.run(connection_message(artifacts_socket(s, session_id)))
        assert connected["type"] == "connection"
