"""
What real Chromium sends and reads, against a real Uvicorn process: file
names with a quote or a line break (escaped by the browser as %22, %0D, %0A),
and a filtered event stream read by `EventSource`.
"""

from __future__ import annotations

import httpx
import pytest

from tests.attachments.builders import PNG_1x1

from . import test_dashboard_browser as dashboard
from .test_dashboard_browser import open_new_session, serving, wait_for_feed_row

# The dashboard tests' Chromium and page fixtures.
browser = dashboard.browser
page = dashboard.page

pytestmark = [
    pytest.mark.access_policy("open"),
    pytest.mark.server,
    pytest.mark.django_db(transaction=True),
]

UPLOAD_WITH_FETCH = """
async ([url, names]) => {
  const answers = [];
  for (const name of names) {
    const form = new FormData();
    form.append("file", new File(["data"], name, { type: "text/plain" }));
    const response = await fetch(url, { method: "POST", body: form });
    answers.push([response.status, (await response.json()).name]);
  }
  return answers;
}
"""

OPEN_EVENT_SOURCE = """
(url) => {
  window.seen = [];
  window.source = new EventSource(url);
  // An empty message (a cursor block fired as an event) would throw here,
  // and the page fixture fails the test on any page error.
  window.source.onmessage = (event) => {
    window.seen.push([JSON.parse(event.data).file_name, event.lastEventId]);
  };
}
"""


def test_file_names_with_quotes_and_line_breaks_from_chromium(server, page):
    with serving(server, page) as s:
        session_id = open_new_session(page, s.url)
        # The dashboard's own file picker.
        page.set_input_files(
            "#file-input",
            files=[{"name": 'say "hi".txt', "mimeType": "text/plain", "buffer": b"hi"}],
        )
        page.wait_for_selector("#uploads .upload[data-state=done]")
        wait_for_feed_row(page, 'say "hi".txt')
        # FormData and fetch, with names a picker cannot give.
        url = f"{s.url}/api/uploads/{session_id}"
        answers = page.evaluate(UPLOAD_WITH_FETCH, [url, ["two\nlines.txt", 'cr\r"lf".csv']])
        assert answers == [[201, "twolines.txt"], [201, 'cr"lf".csv']]
        names = [a["name"] for a in httpx.get(url).json()["attachments"]]
    assert names == ['say "hi".txt', "twolines.txt", 'cr"lf".csv']


def test_event_source_reads_a_filtered_stream(server, page):
    with serving(server, page) as s:
        response = httpx.post(s.url + "/api/sessions", json={})
        session_id = response.json()["session_id"]
        for name in ("a.png", "b.txt", "c.txt", "d.png", "e.txt"):
            data = PNG_1x1 if name.endswith(".png") else b"text"
            upload = httpx.post(f"{s.url}/api/uploads/{session_id}", files={"file": (name, data)})
            assert upload.status_code == 201
        page.goto(s.url + "/api/limits")  # this origin, no page script
        url = f"/api/sessions/{session_id}/artifact-events/stream?after=0&include_ext=png"
        page.evaluate(OPEN_EVENT_SOURCE, url)
        page.wait_for_function("() => window.seen.length === 2")
        httpx.post(f"{s.url}/api/uploads/{session_id}", files={"file": ("f.png", PNG_1x1)})
        page.wait_for_function("() => window.seen.length === 3")
        seen = page.evaluate("() => { window.source.close(); return window.seen; }")
    # The cursor blocks between them fired nothing.
    assert seen == [["a.png", "1"], ["d.png", "4"], ["f.png", "6"]]
