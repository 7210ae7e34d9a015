"""
Lease holders (attachments.holders): a process is judged dead only when this
process can see for certain that it is gone; any holder it cannot see is
assumed alive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from attachments import holders

from .builders import NAME_ITSELF, name_of_a_dead_process

pytestmark = pytest.mark.skipif(
    not holders.this_process(), reason="needs /proc to name processes (Linux)"
)


def test_this_process_is_alive():
    assert not holders.has_died(holders.this_process())


def test_every_process_of_this_boot_names_the_same_boot():
    # The page cache that a tus PATCH's unsynced bytes live in is the kernel's.
    child = subprocess.run(
        [sys.executable, "-c", "from attachments import holders; print(holders.this_boot())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == holders.this_boot() != ""
    assert holders.this_process().startswith(holders.this_boot() + "/")


def test_a_process_that_exited_has_died():
    holder = name_of_a_dead_process()
    assert holder != holders.this_process()
    assert holders.has_died(holder)


def test_a_killed_process_not_yet_reaped_has_died():
    child = subprocess.Popen(
        [sys.executable, "-c", NAME_ITSELF + "; import time; time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        holder = child.stdout.readline().strip()
        assert not holders.has_died(holder)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not holders.has_died(holder) and time.monotonic() < deadline:
            time.sleep(0.01)
        # Still in the process table (a zombie until waited for), yet dead.
        assert os.path.exists(f"/proc/{child.pid}")
        assert holders.has_died(holder)
    finally:
        child.kill()
        child.wait()


def test_a_pid_taken_by_another_process_is_not_the_holder():
    boot, namespace, pid, started = holders.this_process().split("/")
    assert holders.has_died(f"{boot}/{namespace}/{pid}/{int(started) - 1}")


@pytest.mark.parametrize(
    "holder",
    [
        "",  # a holder that could not name itself
        "another-boot/4026531836/1/1",
        "not a holder",
    ],
)
def test_a_holder_this_process_cannot_see_is_assumed_alive(holder):
    assert not holders.has_died(holder)


def test_another_pid_namespace_is_assumed_alive():
    boot, _namespace, pid, started = holders.this_process().split("/")
    assert not holders.has_died(f"{boot}/1/{pid}/{int(started) - 1}")
