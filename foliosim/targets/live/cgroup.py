"""Confinement of scenario processes: a memory cgroup with a hard limit.

A child cgroup ``foliosim-live-<pid>`` is created below the runner's own memory cgroup, with
``memory.limit_in_bytes`` (cgroup v1) or ``memory.max`` (cgroup v2, only where the memory
controller is already enabled for children) set to the limit; the first agent writes its own
pid to ``cgroup.procs`` before it allocates anything and forked agents inherit the cgroup.
Exceeding the limit makes the kernel's memcg OOM killer end a scenario process, which the
runner reports as :class:`MemoryLimitExceeded` (``oom_kill`` in memory.oom_control or
memory.events). RLIMIT_AS would count the PROT_NONE guard reservations, so it is not used.

Where no memory cgroup can be made, the fallback is RLIMIT_DATA in every agent (private
writable mappings count, PROT_NONE reservations do not); then a step that would exceed the
limit fails with ENOMEM and the runner reports that as :class:`MemoryLimitExceeded` too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

DEFAULT_MEMORY_LIMIT = 4 << 30


class MemoryLimitExceeded(RuntimeError):
    """The scenario needed more memory than the runner's limit allows."""


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, super options) of every cgroup mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _source, opts = (right.split() + ["", ""])[:3]
            if fstype in ("cgroup", "cgroup2"):
                out.append((left.split()[4], fstype, set(opts.split(","))))
    return out


def _own_paths() -> dict[str, str]:
    """Controller list (``""`` for v2) -> this process's cgroup path (/proc/self/cgroup)."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            out[controllers] = path
    return out


class MemoryCgroup:
    """A memory cgroup for one run; :meth:`create` returns None where none can be made."""

    def __init__(self, path: Path, version: int, limit: int) -> None:
        self.path = path
        self.version = version
        self.limit = limit

    @classmethod
    def create(cls, limit: int) -> MemoryCgroup | None:
        """Make the cgroup and set its limit; None when no memory controller is usable."""
        own = _own_paths()
        name = f"foliosim-live-{os.getpid()}"
        for mnt, fstype, opts in _mounts():
            if fstype == "cgroup" and "memory" in opts:
                key = next((k for k in own if "memory" in k.split(",")), None)
                if key is None:
                    continue
                parent = Path(mnt) / own[key].lstrip("/")
                path = parent / name
                try:
                    path.mkdir(exist_ok=True)
                    (path / "memory.limit_in_bytes").write_text(str(limit))
                except OSError:
                    _rmdir(path)
                    continue
                return cls(path, 1, limit)
            if fstype == "cgroup2" and "" in own:
                parent = Path(mnt) / own[""].lstrip("/")
                try:
                    if "memory" not in (parent / "cgroup.subtree_control").read_text().split():
                        continue
                    path = parent / name
                    path.mkdir(exist_ok=True)
                    (path / "memory.max").write_text(str(limit))
                except OSError:
                    continue
                return cls(path, 2, limit)
        return None

    @property
    def procs(self) -> str:
        """The file an agent writes its pid to."""
        return str(self.path / "cgroup.procs")

    def oom_kills(self) -> int:
        """How many processes the memcg OOM killer ended in this cgroup."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            for line in (self.path / name).read_text().splitlines():
                key, _, val = line.partition(" ")
                if key == "oom_kill":
                    return int(val)
        except OSError:
            pass
        return 0

    def remove(self, timeout: float = 2.0) -> list[str]:
        """rmdir once the processes are gone (retrying while they are still being torn down)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.path.rmdir()
                return []
            except FileNotFoundError:
                return []
            except OSError as e:
                if time.monotonic() > deadline:
                    return [f"cannot remove cgroup {self.path}: {e}"]
                time.sleep(0.02)


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
