"""
The channel layer (Redis) stops and comes back under a real server: live
subscribers stay connected and keep getting events from the database
re-check, and once Redis is back the server rejoins its groups, so
notifications are prompt again. The test runs its own Redis on a free port
and never touches a shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator

import httpx
import pytest
import websockets

from tests.servers import ServerProcess, free_port

from . import event_clients as clients

pytestmark = [
    pytest.mark.server,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

# Long enough that an event arriving well within it came by notification.
RECHECK_SECONDS = 4


@contextlib.contextmanager
def private_redis(port: int) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_line(process, b"Ready to accept connections")
        yield process
    finally:
        process.terminate()
        process.wait(10)


def _wait_for_line(process: subprocess.Popen[bytes], text: bytes, timeout: float = 10) -> None:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if text in line:
            return
        if not line and process.poll() is not None:
            break
    raise RuntimeError(f"redis-server did not say {text!r}")


def wait_for_log(server: ServerProcess, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{server.kind} never logged {text!r}:\n{server.log()}")
        time.sleep(0.05)


class Subscriber:
    """A WebSocket that records its events; `closed` says whether the server dropped it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.received = clients.Received()
        self.connected = asyncio.Event()
        self.changed = asyncio.Condition()
        self.task = asyncio.create_task(self._run())
        self.task.add_done_callback(lambda _task: asyncio.create_task(self._notify()))

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def _run(self) -> None:
        async with websockets.connect(self.url, open_timeout=10) as socket:
            first = json.loads(await socket.recv())
            assert first["type"] == "connection", first
            self.connected.set()
            async for frame in socket:
                message = json.loads(frame)
                if message["type"] == "artifact_created":
                    self.received.add(message["data"]["events"])
                    await self._notify()

    async def wait_for(self, count: int, timeout: float) -> float:
        """Wait until `count` events arrived in all; when the last of them did."""

        def done() -> bool:
            return len(self.received.events) >= count or self.task.done()

        try:
            async with self.changed:
                await asyncio.wait_for(self.changed.wait_for(done), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{self.url}: {self.received.sequences} after {timeout} s"
            ) from None
        if len(self.received.events) < count:
            raise AssertionError(f"{self.url} was closed: {self.task.exception()!r}")
        return self.received.times[count - 1]


async def close_all(subscribers: Iterable[Subscriber]) -> None:
    for subscriber in subscribers:
        subscriber.task.cancel()
        with contextlib.suppress(BaseException):
            await subscriber.task


async def upload(base_url: str, session_id: str, name: str) -> float:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        _id, at = await clients.upload(client, session_id, name, name.encode())
    return at


def test_subscribers_survive_a_redis_outage_and_notifications_resume_when_it_is_back(server):
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(private_redis(port))
        reader = stack.enter_context(
            server(REDIS_URL=redis_url, MAC_EVENT_RECHECK_SECONDS=str(RECHECK_SECONDS))
        )
        writer = stack.enter_context(server(REDIS_URL=redis_url))
        # Writes during the outage go through a server without Redis: this
        # test is about the readers, not about announcing.
        offline_writer = stack.enter_context(server(REDIS_URL=""))
        session_id = clients.create_session(writer.url)
        feeds = {
            "artifacts": f"{reader.ws_url}/ws/sessions/{session_id}/artifacts?after=0",
            "control": f"{reader.ws_url}/ws?session_id={session_id}&after=0",
        }

        async def before() -> dict[str, Subscriber]:
            subscribers = {name: Subscriber(url) for name, url in feeds.items()}
            for subscriber in subscribers.values():
                await asyncio.wait_for(subscriber.connected.wait(), 10)
            uploaded = await upload(writer.url, session_id, "before.txt")
            for subscriber in subscribers.values():
                arrived = await subscriber.wait_for(1, 10)
                assert arrived - uploaded < RECHECK_SECONDS / 2
            return subscribers

        loop = asyncio.new_event_loop()
        try:
            subscribers = loop.run_until_complete(before())

            redis.terminate()
            redis.wait(10)
            wait_for_log(reader, "Channel layer unavailable")

            async def during() -> None:
                # Connects while Redis is down, from the session's last event.
                late = Subscriber(f"{reader.ws_url}/ws/sessions/{session_id}/artifacts")
                await asyncio.wait_for(late.connected.wait(), 10)
                subscribers["late"] = late
                await upload(offline_writer.url, session_id, "during.txt")
                for name, subscriber in subscribers.items():
                    await subscriber.wait_for(1 if name == "late" else 2, 3 * RECHECK_SECONDS)

            loop.run_until_complete(during())

            stack.enter_context(private_redis(port))
            wait_for_log(reader, "Channel layer is back")
            # A worker that writes while Redis restarts is the write side's
            # concern; here a fresh one announces the next event.
            fresh_writer = stack.enter_context(server(REDIS_URL=redis_url))

            async def after() -> None:
                uploaded = await upload(fresh_writer.url, session_id, "after.txt")
                for name, subscriber in subscribers.items():
                    total = 2 if name == "late" else 3
                    arrived = await subscriber.wait_for(total, 3 * RECHECK_SECONDS)
                    # By notification: the re-check is RECHECK_SECONDS away.
                    assert arrived - uploaded < RECHECK_SECONDS / 2, name
                for subscriber in subscribers.values():
                    assert not subscriber.task.done()

            loop.run_until_complete(after())
        finally:
            loop.run_until_complete(close_all(subscribers.values()))
            loop.close()
        log = reader.log()
    assert "Task exception was never retrieved" not in log
    assert "Traceback" not in log, log
    for name in ("artifacts", "control"):
        assert subscribers[name].received.sequences == [1, 2, 3], name
    assert subscribers["late"].received.sequences == [2, 3]
