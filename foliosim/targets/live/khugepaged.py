"""Parking khugepaged for a run (spec 1.2).

khugepaged scans at once whenever its mm list turns non-empty (mm/khugepaged.c:
``__khugepaged_enter`` wakes it, ``khugepaged_wait_event``), and whenever
``scan_sleep_millisecs`` is written (``khugepaged_sleep_expire = 0``). So a helper process first
faults one fully written PMD THP (MADV_HUGEPAGE, 2 MiB aligned; registration happens at the
first THP-eligible fault), which keeps the list non-empty and, being fully written, is never
split by the underused shrinker; then ``scan_sleep_millisecs`` is set to 3600000, the one pass
this triggers is waited for (``full_scans`` moves), and khugepaged sleeps for an hour. At the end
the old value is written back and the helper is killed by its pidfd.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

from foliosim.targets.live.sysfs import THP_DIR, SettingsStack, read_knob

PARK_MILLISECONDS = "3600000"
SCAN_SLEEP = THP_DIR / "khugepaged" / "scan_sleep_millisecs"
FULL_SCANS = THP_DIR / "khugepaged" / "full_scans"


class Helper:
    """The khugepaged helper process (``agent helper``)."""

    def __init__(self, agent: Path) -> None:
        self.proc = subprocess.Popen([str(agent), "helper"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, close_fds=True,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self.pidfd = os.pidfd_open(self.pid)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 10.0)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.kill()
            raise RuntimeError("the khugepaged helper did not start "
                               f"(exit status {self.proc.poll()})")

    def anon_huge_kb(self) -> int:
        """AnonHugePages of the helper (/proc/PID/smaps_rollup)."""
        with open(f"/proc/{self.pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1])
        return 0

    def kill(self) -> None:
        """SIGKILL by pidfd and reap."""
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        finally:
            if self.proc.stdout:
                self.proc.stdout.close()
            os.close(self.pidfd)


def park(stack: SettingsStack, helper: Helper, *, timeout: float = 1.0) -> None:
    """Set ``scan_sleep_millisecs`` to an hour (through ``stack``) and wait for the pass that
    the write triggers to finish (``full_scans`` moves), at most ``timeout`` seconds.

    When the helper got no THP, PMD THPs are off: the khugepaged thread is not running
    (start_stop_khugepaged) and there is no pass to wait for.
    """
    before = read_knob(FULL_SCANS)
    if not stack.push(SCAN_SLEEP, PARK_MILLISECONDS) or helper.anon_huge_kb() < 2048:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and read_knob(FULL_SCANS) == before:
        time.sleep(0.005)
