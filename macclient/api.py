"""
A small synchronous client for the REST API, used by the `macctl` command.
Every error the server sends (`{"detail", "code"}`) becomes an `ApiError`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

Progress = Callable[[int], None]
CHUNK = 1 << 20


class ApiError(Exception):
    """The server answered with an error."""

    def __init__(self, status: int, code: str, detail: str, body: Any = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body


class ConnectionLost(Exception):
    """The connection to the server broke during a resumable upload: running it again resumes."""


@dataclass
class EventFilters:
    include_mime: list[str] = field(default_factory=list)
    include_ext: list[str] = field(default_factory=list)
    max_size: int | None = None

    def params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        if self.include_mime:
            params["include_mime"] = ",".join(self.include_mime)
        if self.include_ext:
            params["include_ext"] = ",".join(self.include_ext)
        if self.max_size is not None:
            params["max_size"] = str(self.max_size)
        return params


class _ProgressReader:
    """A file wrapper that reports how many bytes were read, for upload progress."""

    def __init__(self, stream: IO[bytes], progress: Progress | None) -> None:
        self.stream = stream
        self.progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        if data and self.progress:
            self.progress(len(data))
        return data


RESUMABLE_CHUNK_BYTES = 8 << 20
# How long, in all, a resumable upload waits for another request's hold on
# it to end (423): one that a server killed mid-PATCH left lasts until its
# lease lapses (MAC_TUS_LEASE, 30 s unless set).
LOCKED_WAIT_SECONDS = 120.0


def default_state_file() -> Path:
    """Where resumable uploads remember their URLs: $XDG_CACHE_HOME/macctl/uploads.json."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "macctl" / "uploads.json"


class _SessionFingerprint:
    """tuspy's content fingerprint, scoped to one server and session."""

    def __init__(self, endpoint: str) -> None:
        from tusclient.fingerprint.fingerprint import Fingerprint

        self.endpoint = endpoint
        self.content = Fingerprint()

    def get_fingerprint(self, fs: IO[bytes]) -> str:
        return f"{self.endpoint}|{self.content.get_fingerprint(fs)}"


class Client:
    def __init__(self, server: str, token: str | None = None, timeout: float = 60) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=server.rstrip("/"), headers=headers, timeout=httpx.Timeout(timeout)
        )

    @classmethod
    def from_env(cls, server: str | None = None, token: str | None = None) -> Client:
        return cls(
            server or os.environ.get("MAC_SERVER", "http://127.0.0.1:8000"),
            token or os.environ.get("MAC_TOKEN") or None,
        )

    def close(self) -> None:
        self.http.close()

    # Plumbing

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code < 400:
            return response
        response.read()
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict) and "detail" in body:
            raise ApiError(
                response.status_code, str(body.get("code", "error")), str(body["detail"]), body
            )
        raise ApiError(response.status_code, "http_error", response.reason_phrase or "error", body)

    def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self._check(self.http.request(method, url, **kwargs))
        return response.json() if response.content else None

    # Sessions

    def create_session(self, session_id: str | None = None) -> dict[str, Any]:
        return self._json(
            "POST", "/api/sessions", json={"session_id": session_id} if session_id else {}
        )

    def get_session(self, session_id: str) -> dict[str, Any]:
        return self._json("GET", f"/api/sessions/{session_id}")

    def delete_session(self, session_id: str) -> None:
        self._json("DELETE", f"/api/sessions/{session_id}")

    def limits(self) -> dict[str, Any]:
        return self._json("GET", "/api/limits")

    # Attachments

    def upload(
        self, session_id: str, path: Path, progress: Progress | None = None
    ) -> dict[str, Any]:
        with open(path, "rb") as stream:
            files = {"file": (path.name, _ProgressReader(stream, progress))}
            return self._json("POST", f"/api/uploads/{session_id}", files=files, timeout=None)

    def upload_resumable(
        self,
        session_id: str,
        path: Path,
        progress: Progress | None = None,
        chunk_size: int = RESUMABLE_CHUNK_BYTES,
        state_file: Path | None = None,
        on_wait: Callable[[float], None] | None = None,
    ) -> dict[str, Any]:
        """
        Upload with the tus protocol (tuspy), in chunks with checksums. The
        upload's URL is remembered in `state_file` (default: the user's
        cache), so running this again after an interruption resumes where
        the server's offset says, in the same session, with the same file.

        While another request holds the upload (423, as a PATCH cut off by a
        killed server does until its lease lapses) this waits as long as the
        server says (`on_wait` is told how long), up to LOCKED_WAIT_SECONDS
        in all, then goes on from the offset the server has. ConnectionLost
        if the server goes away meanwhile.
        """
        from tusclient import client as tus
        from tusclient.exceptions import TusCommunicationError
        from tusclient.storage.filestorage import FileStorage

        request_limit = self.limits().get("max_request_bytes")
        if isinstance(request_limit, int):
            # A server that buffers bodies (Daphne) takes chunks no larger than this.
            chunk_size = max(1, min(chunk_size, request_limit - 65536))
        state_file = state_file or default_state_file()
        state_file.parent.mkdir(parents=True, exist_ok=True)
        storage = FileStorage(str(state_file))
        endpoint = f"{self.http.base_url}/api/uploads/{session_id}/tus/"
        try:
            client = tus.TusClient(endpoint, headers=dict(self.http.headers.items()))
            uploader = client.uploader(
                str(path),
                chunk_size=chunk_size,
                metadata={"filename": path.name},
                store_url=True,
                url_storage=storage,
                fingerprinter=_SessionFingerprint(endpoint),
                upload_checksum=True,
            )
            reported = uploader.offset
            if progress and reported:
                progress(reported)
            size = uploader.get_file_size()
            deadline = time.monotonic() + LOCKED_WAIT_SECONDS
            while uploader.offset < size or uploader.url is None:
                try:
                    uploader.upload_chunk()
                except TusCommunicationError as exc:
                    wait = _lease_wait(exc)
                    if wait is None or time.monotonic() + wait > deadline:
                        raise
                    if on_wait:
                        on_wait(wait)
                    time.sleep(wait)
                    # The request that held it may have moved the offset on.
                    uploader.offset = uploader.get_offset()
                if progress:
                    progress(uploader.offset - reported)
                reported = uploader.offset
            attachment_id = (
                uploader.request.response_headers.get("attachment-id")
                if (uploader.request is not None)
                else None
            )
            if attachment_id is None:
                head = self._check(self.http.head(uploader.url, headers={"Tus-Resumable": "1.0.0"}))
                attachment_id = head.headers.get("Attachment-Id")
            storage.remove_item(uploader._get_fingerprint())
        except TusCommunicationError as exc:
            if exc.status_code is None:
                raise ConnectionLost(str(exc)) from exc
            body = _json_body(exc.response_content)
            raise ApiError(
                exc.status_code,
                str(body.get("code", "tus_error")),
                str(body.get("detail", exc)),
                body or None,
            ) from exc
        finally:
            storage.close()
        return self.artifact_meta(session_id, str(attachment_id))

    def list_uploads(self, session_id: str) -> list[dict[str, Any]]:
        return self._json("GET", f"/api/uploads/{session_id}")["attachments"]

    # Workflows

    def workflows(self) -> list[dict[str, Any]]:
        """Each executable workflow: its name, file, description and nodes."""
        return list(self._json("GET", "/api/workflows")["details"])

    def execute(
        self,
        workflow: str,
        task_prompt: str,
        session_id: str | None = None,
        attachments: list[str] | None = None,
        variables: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"workflow": workflow, "task_prompt": task_prompt}
        if session_id:
            body["session_id"] = session_id
        if attachments:
            body["attachments"] = attachments
        if variables:
            body["variables"] = variables
        return self._json("POST", "/api/workflow/execute", json=body)

    # Events

    def events(
        self,
        session_id: str,
        after: int | None = None,
        wait_seconds: int = 0,
        filters: EventFilters | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        params = (filters or EventFilters()).params()
        if after is not None:
            params["after"] = str(after)
        if wait_seconds:
            params["wait_seconds"] = str(wait_seconds)
        if limit:
            params["limit"] = str(limit)
        return self._json(
            "GET",
            f"/api/sessions/{session_id}/artifact-events",
            params=params,
            timeout=wait_seconds + 30,
        )

    def follow(
        self, session_id: str, after: int | None, filters: EventFilters, wait_seconds: int = 30
    ) -> Iterator[dict[str, Any]]:
        """Every matching event after the cursor, forever, resuming past expired cursors."""
        cursor = after
        while True:
            try:
                page = self.events(session_id, cursor, wait_seconds, filters)
            except ApiError as exc:
                resume = (
                    (exc.body or {}).get("resume_after") if isinstance(exc.body, dict) else None
                )
                if exc.status == 410 and isinstance(resume, int):
                    cursor = resume
                    continue
                raise
            yield from page["events"]
            cursor = page["next_cursor"]

    # Downloads

    def _download(
        self,
        url: str,
        destination: Path,
        params: dict[str, str],
        progress: Callable[[int, int | None], None] | None,
    ) -> Path:
        with self.http.stream("GET", url, params=params, timeout=None) as response:
            self._check(response)
            total = (
                int(response.headers["content-length"])
                if "content-length" in response.headers
                else None
            )
            partial = destination.with_name(destination.name + ".part")
            try:
                with open(partial, "wb") as out:
                    for chunk in response.iter_bytes(CHUNK):
                        out.write(chunk)
                        if progress:
                            progress(len(chunk), total)
                partial.replace(destination)
            finally:
                partial.unlink(missing_ok=True)
        return destination

    def artifact_meta(self, session_id: str, artifact_id: str) -> dict[str, Any]:
        return self._json("GET", f"/api/sessions/{session_id}/artifacts/{artifact_id}")

    def fetch_artifact(
        self,
        session_id: str,
        artifact_id: str,
        destination: Path,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> Path:
        return self._download(
            f"/api/sessions/{session_id}/artifacts/{artifact_id}",
            destination,
            {"mode": "stream", "download": "true"},
            progress,
        )

    def download_zip(
        self,
        session_id: str,
        destination: Path,
        filters: EventFilters | None = None,
        after: int | None = None,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> Path:
        params = (filters or EventFilters()).params()
        if after is not None:
            params["after"] = str(after)
        return self._download(f"/api/sessions/{session_id}/download", destination, params, progress)


def _json_body(content: bytes | str | None) -> dict[str, Any]:
    """An error response's JSON object, or {} if it was none."""
    try:
        body = json.loads(content or b"")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _lease_wait(exc: Exception) -> float | None:
    """Seconds until another request's hold on the upload lapses, if that is why it failed."""
    if getattr(exc, "status_code", None) != 423:
        return None
    retry_after = _json_body(getattr(exc, "response_content", None)).get("retry_after")
    return float(retry_after) if isinstance(retry_after, (int, float)) and retry_after > 0 else 1.0
