"""
An upload scanner for tests that kill a server while it records an upload:
it says the file is clean, but first, while the file named by
MAC_TEST_HOLD_SCAN exists, waits (and marks that it is waiting, beside it).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from attachments.scanning import ScanVerdict


def scan(path: Path) -> ScanVerdict:
    hold = os.environ.get("MAC_TEST_HOLD_SCAN")
    if hold and os.path.exists(hold):
        Path(hold + ".waiting").touch()
        while os.path.exists(hold):
            time.sleep(0.02)
    return ScanVerdict("clean")
