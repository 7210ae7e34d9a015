"""Run ids, and the id of this worker process as recorded on the runs it executes."""

from __future__ import annotations

import os
import secrets
import socket

from attachments.identifiers import new_id

RUN_PREFIX = "run_"
# Random per process image; with the pid, it tells a restarted worker from its predecessor.
_TOKEN = secrets.token_hex(4)


def new_run_id() -> str:
    return new_id(RUN_PREFIX)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_TOKEN}"
