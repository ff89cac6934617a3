"""The live-kernel target: runs a scenario on this machine's kernel and observes it (spec 1.2, 2).

Public API:

- :func:`unavailable_reason` -- None when live runs are possible here, else a one-line reason.
- :func:`run` -- run one resolved scenario, return its observation document (target ``live``).
- :class:`LiveUnavailable` -- raised by :func:`run` when live runs are not possible here (or
  the scenario uses an op only the simulator has).
- :class:`LiveError`, :class:`MemoryLimitExceeded`, :class:`LiveInterrupted` -- a run that
  failed, outgrew its memory limit, or was interrupted by SIGTERM/SIGHUP. On every one of these
  paths (and KeyboardInterrupt) the machine is restored before the exception propagates.

Each scenario process is a small C agent (agent.c) driven over a socket; the Python side pushes
the THP settings, parks khugepaged, sets up swap and a memory cgroup, drains per-CPU folio
batches, and reads smaps, status, pagemap, kpageflags, kpagecount, /proc/PID/mem, /proc/vmstat
and the per-size mTHP stats.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from collections.abc import Callable
from typing import Any

from foliosim.scenario.model import Scenario
from foliosim.targets.live.cgroup import DEFAULT_MEMORY_LIMIT, MemoryLimitExceeded
from foliosim.targets.live.controller import LiveError
from foliosim.targets.live.session import LiveInterrupted

__all__ = [
    "DEFAULT_MEMORY_LIMIT", "LiveError", "LiveInterrupted", "LiveUnavailable",
    "MemoryLimitExceeded", "run", "unavailable_reason",
]

# A process that runs live scenarios must own no THP of its own: with max_ptes_none < 511 the
# shrinker would split its underused ones and move the global counters (spec 1.2). numpy
# madvises large arrays MADV_HUGEPAGE, so stop that from the moment the live target is imported
# (before any simulator array of this process is allocated, in `foliosim diff` and in pytest).
from foliosim.targets.live.session import numpy_madvise_hugepage as _np_madvise  # noqa: E402

_np_madvise(False)

#: simulator-only ops (model.DmaWrite): there is no device to write through a pin here
SIM_ONLY_OPS = ("dma_write",)


class LiveUnavailable(RuntimeError):
    """Live runs are not possible here; the message says why."""


def unavailable_reason() -> str | None:
    """None when the live kernel can be used, else a one-line reason.

    Needs: Linux with 4 KiB pages, root (pagemap shows PFNs only with CAP_SYS_ADMIN; the THP
    knobs and drop_caches are root-only), /proc/kpageflags and /proc/kpagecount,
    /sys/kernel/mm/transparent_hugepage, vm.overcommit_memory other than 2 (MAP_NORESERVE guard
    reservations), pidfds, and gcc/cc to build the agent (unless it is built already).
    """
    from foliosim.targets.live.agent import agent_path, compiler

    if not sys.platform.startswith("linux"):
        return f"the live target needs Linux (this is {sys.platform})"
    if os.sysconf("SC_PAGE_SIZE") != 4096:
        return "the live target needs 4 KiB base pages"
    if os.geteuid() != 0:
        return "the live target needs root (PFNs in pagemap, THP knobs, drop_caches)"
    if not os.path.isdir("/sys/kernel/mm/transparent_hugepage"):
        return "/sys/kernel/mm/transparent_hugepage does not exist (kernel without THP)"
    for f in ("/proc/kpageflags", "/proc/kpagecount"):
        try:
            with open(f, "rb") as fh:
                fh.read(8)
        except OSError as e:
            return f"cannot read {f}: {e.strerror}"
    if not _pagemap_shows_pfns():
        return "/proc/self/pagemap does not show PFNs (needs CAP_SYS_ADMIN)"
    try:
        with open("/proc/sys/vm/overcommit_memory") as fh:
            if fh.read().strip() == "2":
                return ("vm.overcommit_memory is 2: MAP_NORESERVE is ignored and guard "
                        "reservations could merge with PROT_NONE regions")
    except OSError:
        pass
    if not hasattr(os, "pidfd_open"):
        return "this Python has no os.pidfd_open"
    if compiler() is None and not agent_path().exists():
        return "no C compiler (gcc or cc) to build the live agent"
    return None


def _pagemap_shows_pfns() -> bool:
    """Touch one page of our own and look for its PFN in /proc/self/pagemap."""
    m = mmap.mmap(-1, 4096)
    try:
        m[0] = 1
        buf = (ctypes.c_char * 1).from_buffer(m)
        addr = ctypes.addressof(buf)
        try:
            with open("/proc/self/pagemap", "rb") as fh:
                entry = int.from_bytes(os.pread(fh.fileno(), 8, addr // 4096 * 8), "little")
        finally:
            del buf
        return bool(entry >> 63 & 1) and (entry & ((1 << 55) - 1)) != 0
    except OSError:
        return False
    finally:
        m.close()


def run(scenario: Scenario, *, progress: Callable[[int, int], None] | None = None,
        memory_limit: int | None = None) -> dict[str, Any]:
    """Run one resolved scenario on the live kernel; returns its observation document.

    ``progress(done, total)`` is called after every step. ``memory_limit`` (bytes; default
    ``$FOLIOSIM_LIVE_MEMORY_LIMIT`` or 4 GiB) caps the memory of all scenario processes
    together; a scenario that needs more raises :class:`MemoryLimitExceeded`.

    :raises LiveUnavailable: live runs are not possible here, or the scenario has sim-only ops
    :raises LiveError: the run failed; the machine has been restored
    """
    from foliosim.targets.live.agent import build_agent
    from foliosim.targets.live.controller import LiveRun

    reason = unavailable_reason()
    if reason:
        raise LiveUnavailable(reason)
    sim_only = sorted({s.op for s in scenario.steps if s.op in SIM_ONLY_OPS})
    if sim_only:
        raise LiveUnavailable(f"scenario {scenario.name!r} uses {', '.join(sim_only)}, which "
                              "only the simulator models")
    if memory_limit is None:
        memory_limit = int(os.environ.get("FOLIOSIM_LIVE_MEMORY_LIMIT", DEFAULT_MEMORY_LIMIT))
    try:
        binary = build_agent()
    except RuntimeError as e:
        raise LiveUnavailable(str(e)) from None
    live = LiveRun(scenario, progress=progress, memory_limit=memory_limit, binary=binary)
    try:
        live.setup()
        doc = live.execute()
    except BaseException as e:
        errors = live.teardown()
        if errors:
            e.add_note("restoring the machine also failed: " + "; ".join(errors))
        if isinstance(e, OSError):
            raise LiveError(f"the live run failed: {e}") from e
        raise
    errors = live.teardown()
    if errors:
        raise LiveError("the run finished but restoring the machine failed: " + "; ".join(errors))
    return doc

