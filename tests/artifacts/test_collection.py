"""The garbage collector is held off through a burst, and runs again once it is over."""

from __future__ import annotations

import asyncio
import gc

import pytest

from artifacts import collection
from artifacts.admission import Admission


@pytest.fixture(autouse=True)
def _collector_restored():
    yield
    collection.release()
    collection._hold.refused_until = 0.0
    gc.enable()


async def test_a_hold_lasts_until_the_burst_has_been_quiet_for_its_time():
    collection.hold(0.05)
    assert not gc.isenabled()
    await asyncio.sleep(0.03)
    collection.hold(0.05)  # the burst goes on
    await asyncio.sleep(0.03)
    assert not gc.isenabled()
    await asyncio.sleep(0.1)
    assert gc.isenabled()
    assert not collection.holding()


async def test_a_hold_never_outlasts_its_cap_and_the_next_one_waits(monkeypatch):
    monkeypatch.setattr(collection, "MAX_HOLD_SECONDS", 0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    collection.hold(0.05)
    # A burst that never lets up.
    while not gc.isenabled():
        assert loop.time() - started < 5
        await asyncio.sleep(0.01)
        collection.hold(0.05)
    assert loop.time() - started >= 0.2
    collection.hold(0.05)
    assert gc.isenabled(), "held again at once after reaching the cap"


async def test_collection_turned_off_elsewhere_stays_off():
    gc.disable()
    collection.hold(0.01)
    await asyncio.sleep(0.05)
    assert not gc.isenabled()


async def test_a_queued_burst_holds_the_collector_off():
    admission = Admission(per_pass=2)
    tasks = [asyncio.create_task(admission.turn()) for _ in range(10)]
    await asyncio.sleep(0)
    assert collection.holding()
    await asyncio.gather(*tasks)
