"""
The session dashboard in real headless Chromium, driven by Playwright,
against a real Uvicorn process: uploads (file picker and drag-and-drop),
the live artifact feed (and its long-polling fallback), a csv_summary run,
previews, human input, and "Download all".

Screenshots of each step are kept under test-output/dashboard/.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT

# Under the product's default policy: the page must carry the session's token.
pytestmark = [
    pytest.mark.access_policy("token"),
    pytest.mark.server,
    pytest.mark.django_db(transaction=True),
]

CSV = "city,population,area\nParis,2148000,105.4\nLyon,516000,47.9\nNice,342000,71.9\n"
SCREENSHOTS = ROOT / "test-output" / "dashboard"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000
HOSTILE_NAME = "<img src=x onerror=window.pwned=1>page.html"


def _unavailable(reason: str) -> None:
    if os.environ.get("MAC_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _chromium_path() -> str | None:
    for candidate in ("chromium", "chromium-browser"):
        if found := shutil.which(candidate):
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


@pytest.fixture
def browser(transactional_db) -> Iterator:
    """
    Headless Chromium, per test: while Playwright's sync API is open, its
    event loop counts as running in this thread, and Django refuses the
    database flush that ends a transactional test; so it closes first.
    """
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[test]')")
    executable = _chromium_path()
    if executable is None:
        _unavailable(
            "Chromium is not installed (Debian: chromium); scripts/test installs it as root"
        )
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Error as exc:
            _unavailable(f"Chromium at {executable} did not start: {exc}")
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()
    assert page.errors == [], page.errors


@contextlib.contextmanager
def serving(server, page, **env: str) -> Iterator:
    """A Uvicorn process for the page; the page leaves before it stops."""
    with server("uvicorn", **env) as s:
        try:
            yield s
        finally:
            # Its sockets and long-polls would hold up the graceful shutdown.
            page.goto("about:blank")


def shot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def open_new_session(page, base_url: str) -> str:
    page.goto(base_url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.click("#new-session")
    page.wait_for_selector("#feed-mode[data-state=live]")
    page.wait_for_selector("#connection[data-state=live]")
    return page.input_value("#session-id")


def feed_names(page) -> list[str]:
    return page.locator("#feed .event .event-name").all_inner_texts()


def feed_sequences(page) -> list[int]:
    script = "rows => rows.map(r => r.dataset.sequence)"
    return [int(s) for s in page.eval_on_selector_all("#feed .event", script)]


def wait_for_run(page, base_url: str, status: str) -> None:
    """Wait for the page to show the run in `status`; on timeout, say what the server says."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_selector(f"#run-status[data-state={status}]")
    except PlaywrightTimeout:
        run_id = page.inner_text("#run-id")
        server_side = httpx.get(f"{base_url}/api/workflow/runs/{run_id}").text
        raise AssertionError(
            f"The page shows {page.inner_text('#run-status')!r} for {run_id}; "
            f"the server: {server_side}"
        ) from None


def wait_for_feed_row(page, name: str) -> None:
    page.locator("#feed .event .event-name", has_text=re.compile(f"^{re.escape(name)}$")).wait_for()


def test_upload_run_and_download_all(server, page, tmp_path):
    csv_path = tmp_path / "cities.csv"
    csv_path.write_text(CSV)
    with serving(server, page) as s:
        session_id = open_new_session(page, s.url)
        shot(page, "01-new-session")

        page.set_input_files("#file-input", str(csv_path))
        page.wait_for_selector("#uploads .upload[data-state=done]")
        wait_for_feed_row(page, "cities.csv")
        assert page.locator("#attachments tbody tr").count() == 1
        assert page.is_checked("#attachments tbody input[type=checkbox]")
        page.locator("#session-files", has_text="1").wait_for()
        shot(page, "02-uploaded")

        page.select_option("#workflow", "csv_summary")
        page.fill("#prompt", "Summarise the cities")
        page.click("#start-run")
        wait_for_run(page, s.url, "completed")
        wait_for_feed_row(page, "result.json")
        wait_for_feed_row(page, "chart.png")
        page.locator("#logs", has_text="3 rows, 3 columns").wait_for()
        assert sorted(feed_names(page)) == ["chart.png", "cities.csv", "result.json"]
        page.locator("#session-files", has_text="3").wait_for()
        sequences = feed_sequences(page)
        assert sequences == sorted(sequences, reverse=True) and len(set(sequences)) == 3

        page.locator("#feed .event", has_text="result.json").get_by_role("button").click()
        page.locator("#preview-body pre.viewer", has_text='"rows": 3').wait_for()
        shot(page, "03-run-completed-json-preview")

        page.locator("#feed .event", has_text="chart.png").get_by_role("button").click()
        image = page.locator("#preview-body img.preview-image")
        image.wait_for()
        page.wait_for_function("() => document.querySelector('#preview-body img').naturalWidth > 0")
        shot(page, "04-image-preview")

        page.select_option("#filter-type", "image/")
        assert page.locator("#feed .event:visible .event-name").all_inner_texts() == ["chart.png"]
        page.select_option("#filter-type", "")
        page.fill("#filter-ext", "json, .csv")
        assert sorted(page.locator("#feed .event:visible .event-name").all_inner_texts()) == [
            "cities.csv",
            "result.json",
        ]
        page.fill("#filter-ext", "")

        with page.expect_download() as download_info:
            page.click("#download-all")
        download = download_info.value
        assert download.suggested_filename == f"session_{session_id}.zip"
        with zipfile.ZipFile(io.BytesIO(Path(download.path()).read_bytes())) as archive:
            names = archive.namelist()
        assert "code_workspace/result.json" in names
        assert any(n.endswith("/cities.csv") for n in names)
        assert any(n.endswith("/chart.png") for n in names)
        shot(page, "05-downloaded")


def test_drag_and_drop_several_files_with_a_refusal(server, page):
    with serving(server, page, MAC_MAX_UPLOAD_BYTES="2000") as s:
        # The page checks /api/limits before sending; hide the limit so that
        # the server's own 413 and its sentence reach the page.
        page.route("**/api/limits", lambda route: route.fulfill(json={"max_upload_bytes": None}))
        open_new_session(page, s.url)
        files = page.evaluate_handle(
            """(NAME) => {
                const data = new DataTransfer();
                data.items.add(new File(["hello\\n"], "notes.txt", {type: "text/plain"}));
                data.items.add(new File(['{"a": 1}'], "data.json", {type: "application/json"}));
                data.items.add(new File(["x".repeat(5000)], "too-big.txt", {type: "text/plain"}));
                data.items.add(new File(["<b>hi</b>"], NAME, {type: "text/html"}));
                return data;
            }""",
            HOSTILE_NAME,
        )
        page.dispatch_event("#dropzone", "dragenter", {"dataTransfer": files})
        page.dispatch_event("#dropzone", "dragover", {"dataTransfer": files})
        page.dispatch_event("#dropzone", "drop", {"dataTransfer": files})
        page.wait_for_selector("#uploads .upload[data-state=done] >> text=notes.txt")
        page.wait_for_selector("#uploads .upload[data-state=done] >> text=data.json")
        refused = page.locator("#uploads .upload[data-state=error]")
        refused.wait_for()
        assert "too-big.txt" in refused.inner_text()
        assert "(413)" in refused.locator(".upload-status").inner_text()
        assert refused.locator(".upload-error").inner_text().strip()
        wait_for_feed_row(page, "notes.txt")
        wait_for_feed_row(page, "data.json")
        wait_for_feed_row(page, HOSTILE_NAME)
        assert sorted(feed_names(page)) == sorted(["data.json", "notes.txt", HOSTILE_NAME])
        page.locator("#session-files", has_text="3").wait_for()
        # Names are text, never markup; an HTML file is offered as a download.
        assert page.locator("main img").count() == 0
        assert page.evaluate("window.pwned") is None
        page.locator("#feed .event", has_text="<img").get_by_role("button").click()
        page.locator("#preview-body a", has_text="Download").wait_for()
        rendered = page.locator("#preview-body pre, #preview-body img, #preview-body iframe")
        assert rendered.count() == 0

        page.locator("#feed .event", has_text="notes.txt").get_by_role("button").click()
        page.locator("#preview-body pre.viewer", has_text="hello").wait_for()
        shot(page, "06-drag-and-drop-with-refusal")


def test_feed_falls_back_to_long_polling_and_resumes_without_gaps(server, page, tmp_path):
    sockets = {"refuse": False, "open": []}

    def route_socket(ws):
        if sockets["refuse"]:
            ws.close()
            return
        ws.connect_to_server()
        sockets["open"].append(ws)

    page.route_web_socket(re.compile(r"/ws/sessions/.+/artifacts"), route_socket)
    names = ["first.txt", "second.txt", "third.txt"]
    for name in names:
        (tmp_path / name).write_text(name)
    with serving(server, page) as s:
        open_new_session(page, s.url)
        page.set_input_files("#file-input", str(tmp_path / "first.txt"))
        wait_for_feed_row(page, "first.txt")

        # The socket drops and cannot come back: the feed long-polls from its cursor.
        sockets["refuse"] = True
        sockets["open"].pop().close()
        page.wait_for_selector("#feed-mode[data-state=polling]")
        page.set_input_files("#file-input", str(tmp_path / "second.txt"))
        wait_for_feed_row(page, "second.txt")
        page.locator("#session-files", has_text="2").wait_for()
        shot(page, "07-feed-long-polling")

        # The socket is back: it resumes after the same cursor.
        sockets["refuse"] = False
        page.wait_for_selector("#feed-mode[data-state=live]", timeout=15_000)
        page.set_input_files("#file-input", str(tmp_path / "third.txt"))
        wait_for_feed_row(page, "third.txt")
        page.wait_for_timeout(300)
        assert feed_names(page) == ["third.txt", "second.txt", "first.txt"]
        assert feed_sequences(page) == [3, 2, 1]


def test_human_input_over_the_control_socket(server, page, tmp_path):
    csv_path = tmp_path / "cities.csv"
    csv_path.write_text(CSV)
    with serving(server, page) as s:
        open_new_session(page, s.url)
        page.select_option("#workflow", "review_csv")
        page.fill("#prompt", "Summarise what I attach")
        page.click("#start-run")
        wait_for_run(page, s.url, "waiting_for_input")
        page.locator("#input-prompt", has_text="Attach the CSV file").wait_for()

        page.set_input_files("#file-input", str(csv_path))
        page.wait_for_selector("#uploads .upload[data-state=done]")
        choice = page.get_by_role("checkbox", name="cities.csv", exact=True)
        choice.wait_for()
        choice.check()
        page.fill("#input-text", "Here it is")
        shot(page, "08-human-input")
        page.click("#input-form button[type=submit]")

        wait_for_run(page, s.url, "completed")
        assert page.is_hidden("#input-form")
        wait_for_feed_row(page, "result.json")
        page.wait_for_selector("#download-all:visible")
        shot(page, "09-human-input-completed")


def test_a_link_into_another_session_asks_before_switching(server, page):
    with serving(server, page) as s:
        mine = open_new_session(page, s.url)
        assert page.inner_text("#current-session-id") == mine
        assert mine in page.title()
        theirs = httpx.post(f"{s.url}/api/sessions", json={}).json()
        link = f"{s.url}/?session={theirs['session_id']}&token={theirs['token']}"

        page.goto(link)
        page.wait_for_selector("#link-confirm:visible")
        assert page.inner_text("#link-session-id") == theirs["session_id"]
        assert mine in page.inner_text("#link-current")
        # The token left the address bar, and the page is still in its own session.
        assert "token=" not in page.url
        page.locator("#current-session-id", has_text=mine).wait_for()
        shot(page, "10-link-asks-first")

        page.click("#link-stay")
        assert page.is_hidden("#link-confirm")
        assert page.inner_text("#current-session-id") == mine
        assert f"session={mine}" in page.url

        page.goto(link)
        page.wait_for_selector("#link-confirm:visible")
        page.click("#link-open")
        page.locator("#current-session-id", has_text=theirs["session_id"]).wait_for()
        page.wait_for_selector("#feed-mode[data-state=live]")
        assert page.inner_text("#session-name") == theirs["session_id"]
        shot(page, "11-link-opened")

        # Reloading the session the page is in asks nothing.
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        page.locator("#current-session-id", has_text=theirs["session_id"]).wait_for()
        assert page.is_hidden("#link-confirm")


def test_a_first_visit_by_link_asks_too(server, page):
    with serving(server, page) as s:
        theirs = httpx.post(f"{s.url}/api/sessions", json={}).json()
        page.goto(f"{s.url}/?session={theirs['session_id']}&token={theirs['token']}")
        page.wait_for_selector("#link-confirm:visible")
        assert "not in any session" in page.inner_text("#link-current")
        assert page.is_hidden("#workspace")
        page.click("#link-open")
        page.locator("#current-session-id", has_text=theirs["session_id"]).wait_for()


def test_a_large_file_goes_by_tus_through_a_cut_connection_and_a_reload(server, page, tmp_path):
    import hashlib

    big = tmp_path / "big.bin"
    data = os.urandom(20 * 1024 * 1024 + 123)  # three 8 MiB chunks
    big.write_bytes(data)
    seen = {"POST": 0, "PATCH": 0, "cut": 0}

    def tus_traffic(route, request):
        seen[request.method] = seen.get(request.method, 0) + 1
        if request.method == "PATCH" and seen["PATCH"] == 2 and not seen["cut"]:
            seen["cut"] += 1
            route.abort("connectionreset")  # the connection drops mid-upload
        else:
            route.continue_()

    with serving(server, page) as s:
        session_id = open_new_session(page, s.url)
        token = page.evaluate("sessionStorage.getItem('mac.dashboard.token') || ''") or None
        page.route("**/tus/**", tus_traffic)
        page.set_input_files("#file-input", str(big))
        item = page.locator("#uploads .upload[data-resumable=true]")
        item.wait_for()
        # Pause once the first chunk is in, then reload the page: the upload is
        # remembered and, given the same file again, resumes from the server's offset.
        page.wait_for_function(
            "() => (document.querySelector('#uploads .upload progress') || {}).value > 0"
        )
        item.locator(".upload-pause").click()
        page.wait_for_selector("#uploads .upload[data-state=paused]")
        shot(page, "20-tus-paused")
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        page.wait_for_selector("#connection[data-state=live]")
        page.set_input_files("#file-input", str(big))
        page.wait_for_selector("#uploads .upload[data-state=done] >> text=big.bin")
        wait_for_feed_row(page, "big.bin")
        shot(page, "21-tus-done")

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        listed = httpx.get(f"{s.url}/api/uploads/{session_id}", headers=headers).json()[
            "attachments"
        ]
        (attachment,) = [a for a in listed if a["name"] == "big.bin"]
        assert attachment["sha256"] == hashlib.sha256(data).hexdigest()
        assert seen["POST"] == 1, seen  # one upload, resumed, never started again
        assert seen["cut"] == 1
