"""The 128 MiB swap file of ``swap: file`` runs (spec 1.2): create, swapon, swapoff, delete.

The file is written with zeros (swap files must not have holes, so no fallocate/sparse file),
given a version-1 swap header (``union swap_header`` in include/linux/swap.h: ``last_page`` at
byte 1028, ``SWAPSPACE2`` at the end of the first page) and enabled with swapon(2). A swap
*file* cannot hold order > 0 entries (mm/swapfile.c: cluster_alloc_swap_entry), so large folios
are always split before swap-out; that is what the scenario sees.
"""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

SWAP_BYTES = 128 << 20
SWAP_DIR = Path("/var/tmp")
SWAP_PREFIX = "foliosim-live-"
_PAGE = 4096

_libc = ctypes.CDLL(None, use_errno=True)


def swap_path(pid: int | None = None) -> Path:
    """The swap file of the runner process ``pid`` (default: this process)."""
    return SWAP_DIR / f"{SWAP_PREFIX}{pid if pid is not None else os.getpid()}.swap"


def active_swaps() -> list[str]:
    """Paths listed in /proc/swaps."""
    with open("/proc/swaps") as f:
        return [line.split()[0] for line in f.readlines()[1:] if line.strip()]


def create(path: Path, size: int = SWAP_BYTES) -> None:
    """Write a zero-filled swap file with a version-1 swap header (mode 0600)."""
    pages = size // _PAGE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        chunk = bytes(1 << 20)
        left = size
        while left:
            left -= os.write(fd, chunk[:min(left, len(chunk))])
        header = bytearray(_PAGE)
        struct.pack_into("<III", header, 1024, 1, pages - 1, 0)
        header[_PAGE - 10:] = b"SWAPSPACE2"
        os.pwrite(fd, bytes(header), 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def swapon(path: Path) -> None:
    """swapon(2) with default priority; raises OSError."""
    if _libc.swapon(os.fsencode(str(path)), 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"swapon {path}: {os.strerror(e)}")


def swapoff(path: Path) -> None:
    """swapoff(2); raises OSError."""
    if _libc.swapoff(os.fsencode(str(path))) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"swapoff {path}: {os.strerror(e)}")


def enable(path: Path) -> None:
    """Create and enable the swap file; removes it again if swapon fails."""
    try:
        create(path)
        swapon(path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def disable(path: Path) -> list[str]:
    """swapoff (if active) and delete the file; returns error messages, never raises."""
    errors = []
    if str(path) in active_swaps():
        try:
            swapoff(path)
        except OSError as e:
            errors.append(str(e))
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        errors.append(f"cannot delete {path}: {e}")
    return errors
