"""MIME detection from content, refined by the extension where libmagic only sees text."""

from __future__ import annotations

import logging
import mimetypes
import multiprocessing
import os
import queue
import threading
from multiprocessing.connection import Connection

import magic

logger = logging.getLogger(__name__)

# How much of a file's head libmagic is shown; enough for every binary
# signature and for its text heuristics.
#
# Text is the expensive case (about 3 ms of C for 10 KiB, against 0.3 ms for
# a binary): libmagic runs every text rule over the head, its regex rules on
# up to 8 KiB and some search rules on up to 64 KiB. A shorter head for the
# text rules, even behind a first pass over the whole head for the binary
# signatures and the encoding, changes verdicts: C or Python whose first
# `#include` or `import` follows a few KiB of comments turns into plain text.
# Only an 8 KiB text head gave the same types on a corpus of 21,000 heads,
# and two passes then cost more than one.
SNIFF_BYTES = 64 * 1024

# A fresh table, so results do not depend on the machine's /etc/mime.types.
_table = mimetypes.MimeTypes()
for _type, _ext in (
    ("text/markdown", ".md"),
    ("text/markdown", ".markdown"),
    ("application/yaml", ".yaml"),
    ("application/yaml", ".yml"),
    ("application/toml", ".toml"),
    ("application/x-ndjson", ".jsonl"),
    ("application/x-ndjson", ".ndjson"),
    ("text/plain", ".log"),
    ("text/x-python", ".py"),
    ("text/typescript", ".ts"),
):
    _table.add_type(_type, _ext)

_TEXTUAL_APPLICATION_TYPES = {
    "application/json",
    "application/xml",
    "application/yaml",
    "application/toml",
    "application/x-ndjson",
    "application/javascript",
    "application/x-sh",
    "application/sql",
}
_UNINFORMATIVE = {"text/plain", "application/x-empty", "inode/x-empty"}


# One libmagic handle per thread. python-magic's shared handle is behind a
# lock, so concurrent uploads took turns at detection, a few milliseconds of
# C each for text, while the call itself releases the GIL and could run on
# another core. A handle costs about 0.3 ms and 200 KiB to open.
_handles = threading.local()


def _magic_handle() -> magic.Magic:
    handle: magic.Magic | None = getattr(_handles, "magic", None)
    if handle is None:
        handle = _handles.magic = magic.Magic(mime=True)
    return handle


class DetectionProcesses:
    """
    libmagic run in processes of their own, each answering one head at a
    time over a pipe, for a server that keeps its own threads on one CPU
    (`macproject.cpu`). A Python server is bound by its GIL, and its
    threads handing the GIL to each other across CPUs cost, on a small
    machine, about as much as libmagic's C running beside them gains: the
    server did as many uploads per second pinned to one CPU as on two.
    Pinned, detection would then take its share of that CPU; here it runs
    on the others.

    A head that no process answers (one died, or hangs past
    `ANSWER_SECONDS`) is detected in the calling thread instead, and the
    process is replaced: detection never fails an upload. The processes
    end with the server: they are daemons, and they leave when their pipe
    closes, a server killed with SIGKILL included.
    """

    ANSWER_SECONDS = 10.0
    # How long a caller waits for a free process before detecting itself.
    WAIT_SECONDS = 5.0

    def __init__(self, count: int, cpus: frozenset[int] | None = None) -> None:
        self.count = count
        self.cpus = cpus
        self._context = multiprocessing.get_context("spawn")
        self._idle: queue.Queue[tuple[Connection, multiprocessing.process.BaseProcess]] = (
            queue.Queue()
        )
        self._processes: set[multiprocessing.process.BaseProcess] = set()
        self._mutex = threading.Lock()
        self._closed = False
        for _ in range(count):
            self._start_one()

    def _start_one(self) -> None:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_serve_detection,
            args=(child, self.cpus),
            name="mime-detection",
            daemon=True,
        )
        process.start()
        child.close()  # the process's end: closing ours is what tells it to leave
        with self._mutex:
            if self._closed:
                parent.close()
                process.kill()
                return
            self._processes.add(process)
        self._idle.put((parent, process))

    def detect(self, head: bytes) -> str | None:
        """libmagic's verdict on `head` from one of the processes, or None if none gave one."""
        try:
            conn, process = self._idle.get(timeout=self.WAIT_SECONDS)
        except queue.Empty:
            return None
        try:
            conn.send_bytes(head)
            if not conn.poll(self.ANSWER_SECONDS):
                raise TimeoutError("no answer from a detection process")
            answer = conn.recv_bytes().decode()
        except (OSError, EOFError, TimeoutError):
            logger.warning("A MIME detection process failed; starting another", exc_info=True)
            self._retire(conn, process)
            if not self._closed:
                try:
                    self._start_one()
                except Exception:  # noqa: BLE001 (one fewer process; detection goes on)
                    logger.exception("Could not start a MIME detection process")
            return None
        if self._closed:
            self._retire(conn, process)
        else:
            self._idle.put((conn, process))
        # Empty: libmagic failed there, and the caller's thread says what it says.
        return answer or None

    def _retire(self, conn: Connection, process: multiprocessing.process.BaseProcess) -> None:
        conn.close()
        process.kill()
        process.join(1)
        with self._mutex:
            self._processes.discard(process)

    def pids(self) -> list[int]:
        with self._mutex:
            return [process.pid for process in self._processes if process.pid is not None]

    def close(self) -> None:
        with self._mutex:
            self._closed = True
        while True:
            try:
                conn, process = self._idle.get_nowait()
            except queue.Empty:
                break
            self._retire(conn, process)


def _serve_detection(conn: Connection, cpus: frozenset[int] | None) -> None:
    """A detection process: answer heads until the server closes the pipe."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    handle = magic.Magic(mime=True)
    while True:
        try:
            head = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            answer = handle.from_buffer(head).encode()
        except Exception:  # noqa: BLE001 (an empty answer: the server detects it itself)
            answer = b""
        conn.send_bytes(answer)


_processes: DetectionProcesses | None = None


def detect_in_processes(count: int, cpus: frozenset[int] | None = None) -> DetectionProcesses:
    """From now on, detect in `count` processes (on `cpus`, if given) rather than in the caller."""
    global _processes
    stop_detection_processes()
    _processes = DetectionProcesses(count, cpus)
    return _processes


def stop_detection_processes() -> None:
    """Detect in the calling thread again; the processes are stopped."""
    global _processes
    processes, _processes = _processes, None
    if processes is not None:
        processes.close()


def _libmagic(head: bytes) -> str:
    processes = _processes
    if processes is not None:
        answer = processes.detect(head)
        if answer is not None:
            return answer
    return _magic_handle().from_buffer(head)


def _is_textual(mime: str) -> bool:
    return (
        mime.startswith("text/")
        or mime in _TEXTUAL_APPLICATION_TYPES
        or mime.endswith(("+json", "+xml"))
    )


def guess_from_name(name: str) -> str | None:
    mime, _encoding = _table.guess_type(name, strict=False)
    return mime


def detect_mime(head: bytes, name: str) -> str:
    """
    The MIME type of a file whose first bytes are `head`.

    The content decides; the extension only refines a plain-text (or empty)
    verdict into a more precise textual type, so a renamed binary can never
    pass for text and a text file can never pass for an image.
    """
    detected = _libmagic(head[:SNIFF_BYTES]) if head else "application/x-empty"
    if detected in _UNINFORMATIVE:
        guessed = guess_from_name(name)
        if guessed and _is_textual(guessed):
            return guessed
        return "text/plain" if head else "application/octet-stream"
    return detected


def kind_for_mime(mime: str) -> str:
    top = mime.split("/", 1)[0]
    return top if top in {"image", "audio", "video"} else "file"
