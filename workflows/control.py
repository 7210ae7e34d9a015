"""
Messages between a run and the world, through the channel layer.

A run executes on one worker, but cancel requests and human input may reach
any worker. The database holds the truth (`WorkflowRun.cancel_requested`,
a human node's `output`); the channel layer only wakes the run up at once,
and the run also polls the database, so a lost wake-up costs a delay, never
a hang. Run status and node logs go to the session's group, which the /ws
`SessionConsumer` forwards to its clients as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db.models import Q
from django.utils import timezone

from artifacts.groups import session_group

from .conf import conf
from .models import NodeRun, WorkflowRun

logger = logging.getLogger(__name__)

# The consumer handler that forwards a message to the socket unchanged.
FORWARD_TYPE = "workflow.message"


def run_group(run_id: str) -> str:
    # Run ids are "run_" + URL-safe characters; "_" is not allowed in group names.
    return "workflow-run." + run_id.replace("_", ".u")


async def send_to_session(session_id: str, message: dict[str, Any]) -> None:
    """Forward `message` ({"type": ..., "data": ...}) to every /ws client of the session."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(
            session_group(session_id), {"type": FORWARD_TYPE, "message": message}
        )
    except Exception:  # noqa: BLE001 (a full or unreachable layer must not fail the run)
        logger.warning("Could not send %s to session %s", message.get("type"), session_id)


def wake_run(run_id: str, action: str) -> None:
    """Tell the worker running `run_id` to look at the database now (sync callers)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            run_group(run_id), {"type": "run.control", "action": action}
        )
    except Exception:  # noqa: BLE001 (the run polls the database anyway)
        logger.warning("Could not wake run %s", run_id)


async def wake_run_async(run_id: str, action: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(run_group(run_id), {"type": "run.control", "action": action})
    except Exception:  # noqa: BLE001 (the run polls the database anyway)
        logger.warning("Could not wake run %s", run_id)


class RunControl:
    """The running side: cancel and input events, set by wake-ups or by polling; the heartbeat."""

    def __init__(self, run: WorkflowRun) -> None:
        self.run_id = run.run_id
        self.run_pk = run.pk
        self.cancelled = asyncio.Event()
        self.changed = asyncio.Event()
        self._channel: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        layer = get_channel_layer()
        if layer is not None:
            self._channel = await layer.new_channel()
            await layer.group_add(run_group(self.run_id), self._channel)
            self._tasks.append(asyncio.ensure_future(self._listen(layer)))
        self._tasks.append(asyncio.ensure_future(self._poll()))

    async def stop(self) -> None:
        layer = get_channel_layer()
        listener = self._tasks[0] if layer is not None and self._channel is not None else None
        if listener is not None:
            # Cancelling a channels-redis receive can hang its cleanup, so
            # the listener is told to return instead.
            with contextlib.suppress(Exception):
                await layer.send(self._channel, {"type": "run.control", "action": "stop"})
                await asyncio.wait_for(asyncio.shield(listener), 5)
        for task in self._tasks:
            if not task.done():
                task.cancel()
        for task in self._tasks:
            if task is not listener:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if layer is not None and self._channel is not None:
            with contextlib.suppress(Exception):
                await layer.group_discard(run_group(self.run_id), self._channel)

    async def wait(self, timeout: float | None) -> None:
        """Until something may have changed (a wake-up or a poll), cancel, or the timeout."""
        self.changed.clear()
        waiters = [
            asyncio.ensure_future(self.changed.wait()),
            asyncio.ensure_future(self.cancelled.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _listen(self, layer: Any) -> None:
        assert self._channel is not None
        while True:
            try:
                message = await layer.receive(self._channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 (polling still covers us)
                logger.warning("Run %s: channel layer receive failed", self.run_id)
                await asyncio.sleep(conf.CONTROL_POLL_SECONDS)
                continue
            action = message.get("action")
            if action == "stop":
                return
            if action == "cancel":
                await self._refresh()
            self.changed.set()

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        last_beat = loop.time()  # the run recorded one as it started
        while True:
            await asyncio.sleep(conf.CONTROL_POLL_SECONDS)
            beat = loop.time() - last_beat >= conf.HEARTBEAT_SECONDS
            if beat:
                last_beat = loop.time()
            await self._refresh(beat)
            self.changed.set()

    async def _refresh(self, beat: bool = False) -> None:
        if await database_sync_to_async(self._read_cancel)(beat):
            self.cancelled.set()

    def _read_cancel(self, beat: bool) -> bool:
        if beat:
            WorkflowRun.objects.filter(pk=self.run_pk).update(heartbeat_at=timezone.now())
        # A run closed by someone else (declared dead) stops like a cancelled one.
        return (
            WorkflowRun.objects.filter(pk=self.run_pk)
            .filter(Q(cancel_requested=True) | ~Q(status__in=WorkflowRun.ACTIVE))
            .exists()
        )


def read_input(node_pk: int) -> Any:
    """A human node's input, or None while none arrived."""
    return NodeRun.objects.filter(pk=node_pk).values_list("output", flat=True).first()
