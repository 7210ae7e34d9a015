"""
The ClamAV scanner: streams the file to clamd (INSTREAM), so clamd needs no
access to the warehouse. Use `"attachments.clamav.scan"` in
ATTACHMENTS_UPLOAD_SCANNERS; it reads ATTACHMENTS_CLAMD_* settings.
"""

from __future__ import annotations

from pathlib import Path

from clamav_client.clamd import (
    BufferTooLongError,
    ClamdError,
    ClamdNetworkSocket,
    ClamdUnixSocket,
)

from .conf import conf
from .scanning import ScannerUnavailable, ScanVerdict


class ClamdScanner:
    """
    A scanner for one clamd. `address` is `unix:///path/to/clamd.sock` or
    `tcp://host:port`; `max_bytes` should match clamd's StreamMaxLength, so
    larger files are reported as too large without a round trip.
    """

    def __init__(self, address: str, max_bytes: int, timeout: float = 60) -> None:
        self.address = address
        self.max_bytes = max_bytes
        self.timeout = timeout

    def _client(self) -> ClamdNetworkSocket:
        if self.address.startswith("tcp://"):
            host, _, port = self.address.removeprefix("tcp://").rpartition(":")
            return ClamdNetworkSocket(host=host, port=int(port), timeout=self.timeout)
        return ClamdUnixSocket(self.address.removeprefix("unix://"), timeout=int(self.timeout))

    def _alive(self) -> bool:
        try:
            return self._client().ping() == "PONG"
        except (ClamdError, OSError):
            return False

    def __call__(self, path: Path) -> ScanVerdict:
        size = path.stat().st_size
        if size > self.max_bytes:
            return ScanVerdict("too_large", f"{size} bytes is over clamd's {self.max_bytes}")
        try:
            with open(path, "rb") as stream:
                result = self._client().instream(stream)
        except BufferTooLongError:
            return ScanVerdict("too_large", f"over clamd's StreamMaxLength ({size} bytes)")
        except BrokenPipeError as exc:
            # clamd hangs up mid-stream when StreamMaxLength is reached, before
            # its answer can be read; if it still answers a ping, that was why.
            if self._alive():
                return ScanVerdict("too_large", f"over clamd's StreamMaxLength ({size} bytes)")
            raise ScannerUnavailable(f"clamd at {self.address}: {exc}") from exc
        except (ClamdError, OSError) as exc:
            raise ScannerUnavailable(f"clamd at {self.address}: {exc}") from exc
        status, signature = result.get("stream", ("ERROR", "no answer"))
        if status == "OK":
            return ScanVerdict("clean")
        if status == "FOUND":
            return ScanVerdict("infected", f"{signature} found")
        raise ScannerUnavailable(f"clamd at {self.address} answered {status}: {signature}")


def scan(path: Path) -> ScanVerdict:
    """Scan with the clamd that the settings name."""
    return ClamdScanner(conf.CLAMD_ADDRESS, conf.CLAMD_MAX_BYTES, conf.CLAMD_TIMEOUT)(path)
