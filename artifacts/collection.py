"""
Holding off the cyclic garbage collector through a burst of live clients.

Ten thousand long-polls arriving together, or falling due together, keep
the event loop busy for a second or two, and every answer in that time is
late by every pause the loop makes. The collector's passes over the young
generations are such pauses: with ten thousand clients in flight, each
surviving request adds its objects to the generation the next pass scans,
and passes of 50-100 ms came every few hundred requests (bench/live_clients.py).
Through such a burst the collector would find little garbage anyway (what
it scans is mostly the clients themselves, alive and waiting).

`hold(seconds)` turns automatic collection off until `seconds` after the
last call, so a burst holds it off for as long as it lasts and the collector
runs again (and catches up in one pass) once the loop is quiet. A hold never
lasts more than `MAX_HOLD_SECONDS`; after one that reached it, holds are
refused for as long again, so under load that never lets up the collector
still runs. Collection that something else turned off stays off.
"""

from __future__ import annotations

import asyncio
import gc

# The longest hold: a burst of ten thousand clients takes a second or two.
MAX_HOLD_SECONDS = 5.0


class _Hold:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = 0.0
        self.until = 0.0
        self.refused_until = 0.0
        self.timer: asyncio.TimerHandle | None = None

    @property
    def active(self) -> bool:
        return self.timer is not None

    def hold(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.loop is not None and self.loop.is_closed():
            # Its loop ended before the hold did (a test's, say).
            self.release()
        if self.timer is None:
            if now < self.refused_until or not gc.isenabled():
                return
            gc.disable()
            self.loop, self.started, self.until = loop, now, now
            self.timer = loop.call_at(now + seconds, self._check)
        elif loop is not self.loop:
            return
        self.until = max(self.until, min(now + seconds, self.started + MAX_HOLD_SECONDS))

    def _check(self) -> None:
        assert self.loop is not None
        now = self.loop.time()
        if now < self.until:
            self.timer = self.loop.call_at(self.until, self._check)
            return
        if now >= self.started + MAX_HOLD_SECONDS:
            self.refused_until = now + MAX_HOLD_SECONDS
        self.release()

    def release(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.loop = None
            gc.enable()


_hold = _Hold()


def hold(seconds: float) -> None:
    """Keep automatic garbage collection off until `seconds` from now (see the module)."""
    _hold.hold(seconds)


def holding() -> bool:
    """Whether a hold is in force."""
    return _hold.active


def release() -> None:
    """End a hold now (automatic collection runs again)."""
    _hold.release()
