"""
The run messages a client sends on the session's control socket (`/ws`,
`artifacts.consumers.SessionConsumer`), which routes them here through
`register_message_handler` (see `WorkflowsConfig.ready`).
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from attachments.sessions import get_live_session

from .control import wake_run_async
from .exceptions import InvalidInput
from .runs import submit_human_input


async def human_input(session_id: str, data: Any) -> dict[str, Any]:
    """`human_input`: `{"input", "attachments"?, "run_id"?}` for the node that waits."""
    if not isinstance(data, dict):
        raise InvalidInput("'data' must be an object with 'input'.")
    run_id, node_id, value = await _submit(session_id, data)
    await wake_run_async(run_id, "input")
    return {"type": "input_received", "data": {"run_id": run_id, "node_id": node_id, **value}}


@database_sync_to_async
def _submit(session_id: str, data: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    run, node, value = submit_human_input(
        get_live_session(session_id),
        data.get("input"),
        data.get("attachments"),
        run_id=data.get("run_id"),
    )
    return run.run_id, node.node_id, value
