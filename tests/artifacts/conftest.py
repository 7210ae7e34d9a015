from __future__ import annotations

import pytest

from artifacts import collection


@pytest.fixture
def page_reads(monkeypatch) -> list[tuple[str, int | None]]:
    """(session id, cursor) of each page the feed reads from the database during the test."""
    from artifacts import feed

    reads: list[tuple[str, int | None]] = []
    real = feed.aread_page

    async def counting(session_id, query):
        reads.append((session_id, query.after))
        return await real(session_id, query)

    monkeypatch.setattr(feed, "aread_page", counting)
    return reads


@pytest.fixture(autouse=True)
def _no_collector_hold_outlives_its_test():
    # A hold ends on its event loop's timer; a test's loop closes first.
    yield
    collection.release()
