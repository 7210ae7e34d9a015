"""
Letting go of live clients when the worker stops.

A worker holds long-polls, event streams and sockets for as long as their
clients like. Asked to stop, a server either waits for them (Uvicorn's
"Waiting for connections to close", for as long as an `EventSource` stays)
or cuts them without a word. So on SIGTERM (and SIGINT) the process first
drains its live clients (`EventHub.drain`: long-polls return their page,
streams end with a `retry:` hint, sockets close with 1012) and then hands the
signal to the server, which stops as it always does, now with nothing left
to wait for. Whatever still runs `ARTIFACTS_SHUTDOWN_GRACE` seconds after the
signal (a slow download, an upload) is cut: the process exits, with status 1.

Servers install their own signal handlers before they first call the
application, so `install` runs on that first call (the lifespan startup, or
the first request under a server that sends no lifespan events, such as
Daphne or `uvicorn --lifespan off`) and wraps theirs. A handler that the
server installed through `loop.add_signal_handler` (Granian) runs anyway;
the drain then races the server's own shutdown, and the lifespan shutdown
drains too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import threading
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import Any

from .conf import conf
from .wakeups import hub

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Exit status when the grace period ran out with work still in flight.
FORCED_EXIT_STATUS = 1

_install_lock = threading.Lock()
_installed = False
_signalled = False
# Drain tasks, kept referenced until done (the loop holds tasks only weakly).
_drains: set[asyncio.Task[None]] = set()

Handler = Callable[[int, FrameType | None], Any] | int | None


def raise_open_file_limit() -> tuple[int, int]:
    """
    Raise the soft limit on open files to the hard limit where it is lower
    (every live client holds a descriptor, and the common soft default, 1024,
    is a thousand clients). Returns the (soft, hard) limits now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        # Linux refuses an infinite soft limit; its ceiling is fs.nr_open.
        try:
            with open("/proc/sys/fs/nr_open") as nr_open:
                target = int(nr_open.read())
        except (OSError, ValueError):
            return soft, hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning("Could not raise the open-file limit to %d: %s", target, exc)
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def install() -> None:
    """
    Once per process, from the main thread: raise the open-file limit and hook
    SIGTERM and SIGINT so that they drain live clients before the server's
    own handler runs. Elsewhere (another thread, a second call) it does nothing.
    """
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    with _install_lock:
        if _installed:
            return
        _installed = True
        soft, hard = raise_open_file_limit()
        logger.info("Open-file limit %d (hard %d): each live client holds one.", soft, hard)
        for signum in SIGNALS:
            previous = signal.getsignal(signum)
            signal.signal(signum, partial(_on_signal, previous))


def _on_signal(previous: Handler, signum: int, frame: FrameType | None) -> None:
    global _signalled
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if _signalled or loop is None:
        # A second signal (or no event loop to drain): the server's way at once.
        _hand_over(previous, signum, frame)
        return
    _signalled = True
    grace = conf.SHUTDOWN_GRACE
    watchdog = threading.Timer(grace, _exit_now, args=(grace,))
    watchdog.daemon = True
    watchdog.start()
    # Signal handlers run between two bytecodes of the loop's own thread:
    # schedule the drain rather than run anything here.
    loop.call_soon_threadsafe(_start_drain, loop, previous, signum, grace)


def _start_drain(
    loop: asyncio.AbstractEventLoop, previous: Handler, signum: int, grace: float
) -> None:
    task = loop.create_task(_drain_then_hand_over(previous, signum, grace))
    _drains.add(task)
    task.add_done_callback(_drains.discard)


async def _drain_then_hand_over(previous: Handler, signum: int, grace: float) -> None:
    logger.info("Shutting down: letting go of live clients.")
    try:
        # Half the grace period at most, so that the server has the rest to
        # finish what else is in flight before the watchdog.
        if not await hub().drain(grace / 2):
            logger.warning("Live clients were still connected after %.1f s.", grace / 2)
    finally:
        _hand_over(previous, signum, None)


def _hand_over(previous: Handler, signum: int, frame: FrameType | None) -> None:
    """Do what the signal would have done without us."""
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _exit_now(grace: float) -> None:
    logger.warning(
        "Still running %.1f s after the shutdown signal (ARTIFACTS_SHUTDOWN_GRACE); exiting now.",
        grace,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(FORCED_EXIT_STATUS)
