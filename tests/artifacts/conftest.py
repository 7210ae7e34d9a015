from __future__ import annotations

import pytest

from artifacts import collection


@pytest.fixture(autouse=True)
def _no_collector_hold_outlives_its_test():
    # A hold ends on its event loop's timer; a test's loop closes first.
    yield
    collection.release()
