"""What surrounds a live run: the machine-wide lock, the crash journal, signal handling, the
teardown that undoes everything, per-CPU batch draining and the runner's own THP state.

Every change the runner makes to the machine is registered in a :class:`Teardown` right after it
is made; the teardown runs newest first on every exit path (normal return, exception,
KeyboardInterrupt/SIGINT, SIGTERM/SIGHUP, dead agent) with those signals blocked, so a second
Ctrl-C cannot cut a restore short. Changes are also recorded in a journal file under /run: if
the runner itself is SIGKILLed, the next run finds the journal (it holds the lock, so the writer
is gone) and restores the machine before it starts.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

LOCK_PATH = Path("/run/foliosim-live.lock")
JOURNAL_PATH = Path("/run/foliosim-live.journal.json")

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_THP_DISABLE = 41
_PR_GET_THP_DISABLE = 42
_TMPFS_MAGIC = 0x01021994
_RAMFS_MAGIC = 0x858458F6


class LiveInterrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived during a live run (SIGINT raises KeyboardInterrupt)."""


# --- lock ----------------------------------------------------------------------------------

@contextmanager
def machine_lock(path: Path = LOCK_PATH) -> Iterator[None]:
    """Hold an exclusive flock on ``path``: concurrent live runs wait for each other."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# --- journal -------------------------------------------------------------------------------

class Journal:
    """What the current run changed, kept in a JSON file until the run has undone it."""

    def __init__(self, path: Path = JOURNAL_PATH) -> None:
        self.path = path
        self.data: dict[str, Any] = {"owner": os.getpid(), "knobs": {}, "pids": [],
                                     "swapfile": None, "cgroup": None}

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def add_pid(self, pid: int) -> None:
        self.data["pids"].append([pid, start_time(pid)])
        self.save()

    def remove(self) -> None:
        with suppress(FileNotFoundError):
            self.path.unlink()


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), None if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def kill_recorded(pid: int, started: int | None) -> None:
    """SIGKILL a process recorded earlier, only if it is still that same process."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if started is not None and start_time(pid) == started:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(fd)


def recover(path: Path = JOURNAL_PATH) -> list[str]:
    """Undo what a runner that died without its teardown left (call with the lock held)."""
    from foliosim.targets.live import swap, sysfs

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        return [f"unreadable journal {path}: {e}"]
    errors: list[str] = []
    for pid, started in data.get("pids", []):
        kill_recorded(pid, started)
    if data.get("swapfile"):
        errors += swap.disable(Path(data["swapfile"]))
    errors += sysfs.restore_knobs(data.get("knobs", {}))
    if data.get("cgroup"):
        with suppress(OSError):
            Path(data["cgroup"]).rmdir()
    with suppress(FileNotFoundError):
        path.unlink()
    return errors


# --- teardown and signals ------------------------------------------------------------------

class Teardown:
    """Undo actions, run newest first; each one runs even if an earlier one failed."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], object]]] = []
        #: error messages of the actions run so far
        self.errors: list[str] = []

    def add(self, what: str, action: Callable[[], object]) -> None:
        self._actions.append((what, action))

    def run(self) -> list[str]:
        """Run every action with SIGINT/SIGTERM/SIGHUP blocked; returns error messages."""
        with blocked_signals():
            while self._actions:
                what, action = self._actions.pop()
                try:
                    out = action()
                except BaseException as e:  # noqa: BLE001 - a restore must not stop the others
                    self.errors.append(f"{what}: {type(e).__name__}: {e}")
                else:
                    if isinstance(out, list):
                        self.errors += [f"{what}: {m}" for m in out]
        return self.errors


@contextmanager
def blocked_signals() -> Iterator[None]:
    """Block SIGINT, SIGTERM and SIGHUP for this thread; pending ones arrive afterwards."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise LiveInterrupted(f"live run interrupted by {signal.Signals(signum).name}")


def install_signal_handlers(teardown: Teardown) -> None:
    """Make SIGTERM and SIGHUP raise :class:`LiveInterrupted` (SIGINT raises KeyboardInterrupt
    already) so that the teardown runs; the old handlers come back with the teardown. Only
    possible in the main thread; elsewhere the caller's handlers stay as they are."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        old = signal.signal(sig, _raise_interrupted)
        teardown.add(f"restore the {sig.name} handler", lambda s=sig, o=old: signal.signal(s, o))
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        old = signal.signal(signal.SIGINT, signal.default_int_handler)
        teardown.add("restore the SIGINT handler", lambda o=old: signal.signal(signal.SIGINT, o))


# --- the runner's own process ----------------------------------------------------------------

def _prctl(option: int, *args: int) -> int:
    ul = ctypes.c_ulong
    return int(_libc.prctl(ctypes.c_int(option), *[ul(a) for a in (*args, 0, 0, 0, 0)[:4]]))


def get_thp_disable() -> int:
    """prctl(PR_GET_THP_DISABLE) of the runner itself: 0, 1, or 3 (1 | EXCEPT_ADVISED)."""
    return _prctl(_PR_GET_THP_DISABLE)


def set_thp_disable(value: int) -> None:
    """prctl(PR_SET_THP_DISABLE) of the runner itself (value as returned by get)."""
    rc = _prctl(_PR_SET_THP_DISABLE, 1, value & 2) if value else _prctl(_PR_SET_THP_DISABLE, 0)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"prctl(PR_SET_THP_DISABLE): {os.strerror(e)}")


def numpy_madvise_hugepage(enabled: bool) -> bool:
    """numpy madvises large arrays MADV_HUGEPAGE by default; switch that; returns the old value."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _set_madvise_hugepage  # type: ignore[no-redef]
    return bool(_set_madvise_hugepage(enabled))


# --- per-CPU batches -------------------------------------------------------------------------

def _fs_magic(path: str) -> int | None:
    buf = ctypes.create_string_buffer(128)  # struct statfs; f_type is the first long
    if _libc.statfs(os.fsencode(path), buf) != 0:
        return None
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


class Drainer:
    """Drains the per-CPU folio batches of the CPU the caller runs on, as lru_add_drain() does.

    ``posix_fadvise(POSIX_FADV_DONTNEED)`` over the whole of an empty regular file on a
    disk-backed file system calls ``lru_add_drain()`` (mm/fadvise.c:generic_fadvise: the LRU
    add/move/deactivate/lazyfree/activate batches, lru_add_drain_cpu(), and the mlock batch,
    mlock_drain_local()) and then finds nothing to invalidate, so it has no other effect. tmpfs
    and ramfs ignore fadvise (noop backing device), so the file must be elsewhere; if no such
    place is writable the fallback is ``echo 1 > /proc/sys/vm/drop_caches``
    (fs/drop_caches.c: lru_add_drain_all(), then it also drops clean page cache machine-wide,
    which leaves anonymous memory alone).
    """

    def __init__(self, candidates: list[Path]) -> None:
        self.fd: int | None = None
        self.path: Path | None = None
        for d in candidates:
            try:
                d.mkdir(parents=True, exist_ok=True)
                if _fs_magic(str(d)) in (None, _TMPFS_MAGIC, _RAMFS_MAGIC):
                    continue
                path = d / "drain-batches.empty"
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                os.ftruncate(fd, 0)
            except OSError:
                continue
            self.fd, self.path = fd, path
            break

    @property
    def mechanism(self) -> str:
        return ("posix_fadvise(DONTNEED) of an empty file -> lru_add_drain()" if self.fd is not None
                else "drop_caches=1 -> lru_add_drain_all()")

    def drain(self) -> None:
        if self.fd is not None:
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        else:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("1")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
