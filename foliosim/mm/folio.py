"""Folio state, kept column-wise (one numpy array per field, indexed by folio id) so that
hundreds of millions of folios fit in memory (follows struct folio, include/linux/mm_types.h).

Per-page state of a large folio (PTE mapcounts, PageAnonExclusive, contents) lives in small
arrays created only once pages differ from each other; a PMD-mapped THP written uniformly needs
none. Counts are natural numbers here (the kernel stores mapcounts offset by -1).
"""

from __future__ import annotations

import mmap
import platform
import sys
from typing import Any

import numpy as np

# Columns up to this many rows are plain arrays grown by copying; past it, they move once
# into address space reserved for every folio the memory could hold (:func:`reserved`).
RESERVE_FROM = 1 << 20


# MAP_NORESERVE (Python's mmap module lacks it before 3.13): the asm-generic value, which
# x86, arm64, riscv and s390 use
MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if platform.machine() in (
    "x86_64", "aarch64", "arm64", "riscv64", "s390x") and sys.platform == "linux" else 0)
MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", 0)


def reserved(n: int, dtype: Any, huge: bool = False) -> np.ndarray | None:
    """A zeroed array of ``n`` entries in anonymous memory mapped without commitment
    (``MAP_NORESERVE``): the kernel gives a page only when it is first written, so a column
    can be sized for the most folios there could ever be and never grow (no copy, no old and
    new copies held at once); the rows never used cost nothing. None where that can't be
    had (no MAP_NORESERVE, or the mapping refused).

    ``huge``: ask for transparent huge pages (``MADV_HUGEPAGE``; ignored where refused), for
    a column written densely from its first row: the same memory, and one TLB entry covers
    2 MiB of it instead of 4 KiB (a column of a big run is accessed at random rows)."""
    if not MAP_NORESERVE:
        return None
    nbytes = max(n * np.dtype(dtype).itemsize, mmap.PAGESIZE)
    try:
        m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
    except OSError:
        return None
    if huge and MADV_HUGEPAGE:
        try:
            m.madvise(MADV_HUGEPAGE)
        except OSError:  # no THP in this kernel: small pages
            pass
    return np.frombuffer(m, dtype, n)


# folio->flags bits (the ones the model needs)
PG_ANON = 1 << 0
PG_MLOCKED = 1 << 1
PG_UNEVICTABLE = 1 << 2
PG_LRU = 1 << 3
PG_ACTIVE = 1 << 4
PG_DIRTY = 1 << 5
PG_SWAPBACKED = 1 << 6
PG_SWAPCACHE = 1 << 7
PG_PARTIALLY_MAPPED = 1 << 8
PG_QUEUED = 1 << 9            # on the deferred split queue (_deferred_list not empty)
PG_MM_SHARED = 1 << 10        # FOLIO_MM_IDS_SHARED_BIT
PG_ANON_EXCLUSIVE = 1 << 11   # PAE of the head page (or of every page, while uniform)
PG_FREE = 1 << 12
PG_LAZYFREE_DONE = 1 << 13    # reserved

# include/linux/mm.h: a FOLL_PIN of a small folio adds this many references (its pin count
# lives in the refcount; a large folio has _pincount)
GUP_PIN_COUNTING_BIAS = 1024

# Processes alive at once: a page's PTE mapcount (at most one mapping per mm) fits 16 bits.
MAX_PROCESSES = 32767

ZERO_FID = -2        # the shared zero page in a PTE
HUGE_ZERO_FID = -3   # the huge zero folio in a PMD


class PageArrays:
    """Per-page state of one large folio, created on demand.

    :ivar mapcount: PTE mappings of each page (``page->_mapcount + 1``); a page is mapped at
        most once per mm, so 16 bits hold it (``System`` allows at most
        :data:`MAX_PROCESSES` processes at once)
    :ivar pae: PageAnonExclusive of each page
    :ivar val: the 64-bit word at the start of each page
    """

    __slots__ = ("mapcount", "pae", "val")

    def __init__(self, nr: int, pae: bool, val: int) -> None:
        self.mapcount = np.zeros(nr, np.int16)
        self.pae = np.full(nr, pae, bool)
        self.val = np.full(nr, val, np.uint64)


class FreeIds:
    """The ids of released folios, for reuse: a stack in a numpy array (a Python list of ints
    costs 36 bytes an id; this 4: folio ids fit 31 bits)."""

    __slots__ = ("a", "n")

    def __init__(self) -> None:
        self.a = np.zeros(1024, np.int32)
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def _room(self, k: int) -> None:
        if self.n + k > len(self.a):
            a = np.zeros(max(self.n + k, len(self.a) * 3 // 2), np.int32)
            a[: self.n] = self.a[: self.n]
            self.a = a

    def append(self, f: int) -> None:
        self._room(1)
        self.a[self.n] = f
        self.n += 1

    def extend(self, ids: np.ndarray | list[int]) -> None:
        k = len(ids)
        self._room(k)
        self.a[self.n: self.n + k] = ids
        self.n += k

    def pop(self) -> int:
        self.n -= 1
        return int(self.a[self.n])

    def pop_many(self, k: int) -> np.ndarray:
        """Up to ``k`` ids, last released first."""
        k = min(k, self.n)
        out = self.a[self.n - k: self.n][::-1].astype(np.int64)
        self.n -= k
        return out

    def tolist(self) -> list[int]:
        return self.a[: self.n].tolist()


class LargeColumn:
    """A field only large folios use (``_entire_mapcount``, ``_pincount``, the MM-id slots,
    ...), stored in a side table with one row per large folio: indexed by folio id like any
    column (``F.entire[f]``, ``F.entire[ids]``, ``F.entire[:n]``), through ``Folios.lid``.
    Order-0 folios share row 0, which stays zero (they have no such fields in the kernel
    either: ``struct folio``'s second page holds them). Saves an order-0 folio 22 bytes."""

    __slots__ = ("F", "a")

    def __init__(self, F: Folios, a: np.ndarray) -> None:
        self.F = F
        self.a = a

    def __getitem__(self, key: Any) -> Any:  # any numpy index: an id, ids, a slice, a mask
        return self.a[self.F.lid[key]]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.a[self.F.lid[key]] = value


class IndexColumn:
    """``folio->index`` (the anon linear page index, below 2**40) in five bytes a folio: the
    low 32 bits in ``Folios.index_lo``, the rest in ``Folios.index_hi``; indexed like any
    column (``F.index[f]``, ``F.index[ids] = ...``)."""

    __slots__ = ("F",)

    def __init__(self, F: Folios) -> None:
        self.F = F

    def __getitem__(self, key: Any) -> Any:
        F = self.F
        if isinstance(key, int):  # one folio: Python ints (a fifth of the numpy scalar way)
            return (F.index_hi.item(key) << 32) | F.index_lo.item(key)
        return (F.index_hi[key].astype(np.int64) << 32) | F.index_lo[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        F = self.F
        v = np.asarray(value, np.int64)
        F.index_lo[key] = v & 0xFFFFFFFF
        F.index_hi[key] = v >> 32

    def set_run(self, key: Any, start: int, n: int) -> None:
        """``index[key] = start, start + 1, ..., start + n - 1``."""
        lo = start & 0xFFFFFFFF
        if lo + n > 1 << 32:  # the low half wraps inside the run
            self[key] = start + np.arange(n, dtype=np.int64)
            return
        self.F.index_lo[key] = np.arange(lo, lo + n, dtype=np.uint32)
        self.F.index_hi[key] = start >> 32


class SwapColumn:
    """``folio->swap``: the swap slot of a folio in the swap cache, -1 for every other folio.
    Few folios are in the swap cache at a time, so the slots are a dict by folio id; indexed
    like a column (``F.swap[f]``, ``F.swap[ids] = ...``; setting -1 drops the entry)."""

    __slots__ = ("d",)

    def __init__(self) -> None:
        self.d: dict[int, int] = {}

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            return self.d.get(int(key), -1)
        d = self.d
        return np.fromiter((d.get(f, -1) for f in _ids(key)), np.int64)

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(key, (int, np.integer)):
            keys, vals = [int(key)], [int(value)]
        else:
            keys = _ids(key)
            vals = np.broadcast_to(np.asarray(value, np.int64), (len(keys),)).tolist()
        d = self.d
        for f, v in zip(keys, vals, strict=True):
            if v < 0:
                d.pop(f, None)
            else:
                d[f] = v

    def drop(self, ids: Any) -> None:
        """Forget the slots of folios being released or reused (-1)."""
        _forget(self.d, ids)


class ValueColumn:
    """The 64-bit word a uniform folio's pages start with (``F.val[f]``, ``F.val[ids] = v``):
    the low 32 bits in ``Folios.val_lo``, the high 32 bits of the values that have any in a
    dict by folio id (stores of values below 2**32, the common case, never touch it)."""

    __slots__ = ("F", "hi")

    def __init__(self, F: Folios) -> None:
        self.F = F
        self.hi: dict[int, int] = {}

    def __getitem__(self, key: Any) -> Any:
        lo = self.F.val_lo[key]
        hi = self.hi
        if isinstance(key, (int, np.integer)):  # an int
            return (hi.get(int(key), 0) << 32) | int(lo) if hi else int(lo)
        out = lo.astype(np.uint64)
        if hi:
            for j, f in enumerate(_ids(key)):
                h = hi.get(f)
                if h:
                    out[j] |= np.uint64(h << 32)
        return out

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, (int, np.integer)) and 0 <= value < 1 << 32:  # the common case
            self.F.val_lo[key] = value
            self.drop(key)
            return
        v = np.asarray(value, np.uint64)
        self.F.val_lo[key] = v & np.uint64(0xFFFFFFFF)
        h = v >> np.uint64(32)
        if not self.hi and not h.any():
            return
        if isinstance(key, (int, np.integer)):
            keys = [int(key)]
        else:
            keys = _ids(key)
        hs = np.broadcast_to(h, (len(keys),)).tolist()
        for f, x in zip(keys, hs, strict=True):
            if x:
                self.hi[f] = x
            else:
                self.hi.pop(f, None)

    def drop(self, ids: Any) -> None:
        """Forget the high bits of folios being released or reused."""
        _forget(self.hi, ids)


def _forget(d: dict[int, int], ids: Any) -> None:
    """Drop the entries of folio ids ``ids`` (an id, ids or a slice of rows) from ``d``."""
    if d:
        for f in [int(ids)] if isinstance(ids, (int, np.integer)) else _ids(ids):
            d.pop(f, None)


def _ids(key: Any) -> list[int]:
    """The folio ids an index (ids, or a slice of rows) names."""
    if isinstance(key, slice):
        return list(range(key.start, key.stop))
    return np.asarray(key).tolist()


class Folios:
    """All folios of the system as columns. A folio is an ``int`` id into them."""

    # Column widths: PFNs fit 31 bits (8 TiB of RAM), flags 14 bits, mlock_count at most the
    # number of VMAs, folio->index 40 bits (:class:`IndexColumn`), the value's low 32 bits
    # (:class:`ValueColumn`); 34 bytes a folio with ``lid``, its row in the side table of the
    # fields only large folios have (:class:`LargeColumn`). The swap slot, rare, is a dict
    # (:class:`SwapColumn`).
    _COLS = {
        "pfn": np.int32, "order": np.int8, "ref": np.int32, "large": np.int32,
        "flags": np.int16, "mlock_count": np.int16, "index_lo": np.uint32,
        "index_hi": np.uint8, "anon_vma": np.int32, "val_lo": np.uint32, "lid": np.int32,
    }
    # Columns most folios never write (only large or mlocked ones do): in small pages when
    # reserved, so that their untouched rows cost nothing; every other column is written for
    # every folio, its rows in use are all touched anyway, and takes huge pages (:func:`reserved`)
    _SPARSE = ("lid", "mlock_count")
    # what :meth:`new` / :meth:`new_many` reset in a reused row (:meth:`_fill` sets the rest;
    # ``lid`` is 0 in every free row: a released folio gives its side-table row back)
    _ZEROED = tuple(c for c in _COLS if c not in ("pfn", "order", "ref", "anon_vma", "lid"))
    # Large folios only: nr_mapped and the per-mm mapping counts mmc0/mmc1 are at most 512
    # (a page is mapped at most once per mm); 26 bytes a large folio.
    _LARGE = {
        "pin": np.int32, "entire": np.int32, "nr_mapped": np.int16, "mm0": np.int32,
        "mm1": np.int32, "mmc0": np.int16, "mmc1": np.int16, "umc": np.int32,
    }

    def __init__(self, capacity: int = 1024, limit: int = 0) -> None:
        """``limit``: the most folio ids ever needed at once (one per page of memory: every
        live folio holds a page, freed ids are reused); 0 if unknown."""
        self.cap = capacity
        self.limit = limit
        self.no_reserve = False
        for name, dt in self._COLS.items():
            setattr(self, name, np.zeros(capacity, dt))
        self.index = IndexColumn(self)
        self.val = ValueColumn(self)
        self.swap = SwapColumn()
        self.lcap = 64
        for name, dt in self._LARGE.items():
            setattr(self, name, LargeColumn(self, np.zeros(self.lcap, dt)))
        self.next_lid = 1  # row 0: every order-0 folio's, always zero
        self.free_lids = FreeIds()
        self.pages: dict[int, PageArrays] = {}
        self.free_ids = FreeIds()
        self.next_id = 0
        self.live = 0

    def new(self, pfn: int, order: int) -> int:
        """A fresh folio: refcount 1, nothing mapped, per-page state uniform."""
        if self.free_ids:
            f = self.free_ids.pop()
        else:
            f = self.next_id
            self.next_id += 1
            if f >= self.cap:
                self._grow()
        for name in self._ZEROED:
            getattr(self, name)[f] = 0
        self._fill(f, pfn, order)
        if order:
            self.lid[f] = self._new_lids(1)[0]
        self.live += 1
        return f

    def new_many(self, pfns: list[int] | np.ndarray, order: int = 0, ref: Any = 1,
                 anon_vma: int = -1, flags: int = 0) -> np.ndarray:
        """Fresh folios of ``order`` at ``pfns`` (vectorised :meth:`new`); returns their ids.
        ``ref``, ``anon_vma`` and ``flags`` are what they start with (the caller's, at once,
        rather than the defaults overwritten)."""
        n = len(pfns)
        reused, fresh = self._take_ids(n)
        rest = fresh.stop - fresh.start
        if not len(reused):  # a contiguous block of rows never used, so still zero: slices
            rows: slice | np.ndarray = fresh
            ids = np.arange(fresh.start, fresh.stop, dtype=np.int64)
        else:
            for name in self._ZEROED:
                if not (flags and name == "flags"):  # else set below
                    getattr(self, name)[reused] = 0
            ids = rows = np.concatenate(
                (reused, np.arange(fresh.start, fresh.stop, dtype=np.int64))) if rest else reused
        self._fill(rows, pfns, order, ref, anon_vma)
        if flags:
            self.flags[rows] = flags
        if order:
            self.lid[rows] = self._new_lids(n)
        self.live += n
        return ids

    def _take_ids(self, n: int) -> tuple[np.ndarray, slice]:
        """The ids of ``n`` new folios: released ones first (the last released first), then
        the rows after ``next_id`` (the columns grown to hold them)."""
        reused = self.free_ids.pop_many(n)
        rest = n - len(reused)
        while self.next_id + rest > self.cap:
            self._grow()
        fresh = slice(self.next_id, self.next_id + rest)
        self.next_id += rest
        return reused, fresh

    def cycle_ids(self, n: int) -> np.ndarray:
        """Take the ids :meth:`new_many` of ``n`` folios would take and free them again in
        order, making no folio: for folios that would be freed as soon as made, so that
        later folios get the same ids as if they had been. Returns the ids."""
        reused, fresh = self._take_ids(n)
        ids = np.concatenate((reused, np.arange(fresh.start, fresh.stop, dtype=np.int64)))
        self.flags[ids] = PG_FREE
        self.free_ids.extend(ids)
        return ids

    def _fill(self, rows: Any, pfns: Any, order: int, ref: Any = 1, anon_vma: int = -1
              ) -> None:
        """What new folios start with besides zeroed columns: their PFNs and order,
        refcount 1 (or ``ref``), no anon_vma (or ``anon_vma``), no swap slot and no high
        value bits."""
        self.pfn[rows] = pfns
        self.order[rows] = order
        self.ref[rows] = ref
        self.anon_vma[rows] = anon_vma
        self.swap.drop(rows)
        self.val.drop(rows)

    def _new_lids(self, n: int) -> np.ndarray:
        """``n`` zeroed rows of the large-folio side table."""
        lids = self.free_lids.pop_many(n)
        rest = n - len(lids)
        if rest:
            while self.next_lid + rest > self.lcap:
                self.lcap = max(self.lcap * 3 // 2, self.next_lid + rest)
                for name in self._LARGE:
                    col = getattr(self, name)
                    a = np.zeros(self.lcap, col.a.dtype)
                    a[: len(col.a)] = col.a
                    col.a = a
            lids = np.concatenate((lids, np.arange(self.next_lid, self.next_lid + rest)))
            self.next_lid += rest
        for name in self._LARGE:
            getattr(self, name).a[lids] = 0
        return lids

    def _drop_lids(self, ids: np.ndarray | int) -> None:
        """Give back the side-table rows of folios being released."""
        lids = np.atleast_1d(self.lid[ids])
        lids = lids[lids > 0]
        if len(lids):
            self.free_lids.extend(lids)
            self.lid[ids] = 0

    def pages_drop(self, ids: np.ndarray) -> None:
        """Forget the per-page arrays of folios being freed."""
        P = self.pages
        if not P:
            return
        if len(ids) > 4 * len(P):  # look the few arrays up among the many ids
            keys = np.fromiter(P, np.int64, len(P))
            for f in keys[np.isin(keys, ids)].tolist():
                del P[f]
        else:
            for f in ids.tolist():
                P.pop(f, None)

    def release(self, f: int) -> None:
        self.flags[f] = PG_FREE
        self.pages.pop(f, None)
        lid = int(self.lid[f])
        if lid:
            self.free_lids.append(lid)
            self.lid[f] = 0
        self.swap.drop(f)
        self.val.drop(f)
        self.free_ids.append(f)
        self.live -= 1

    def release_many(self, ids: np.ndarray) -> None:
        """:meth:`release` of many folio ids at once (the pages are the caller's to free)."""
        self.flags[ids] = PG_FREE
        self.pages_drop(ids)
        self._drop_lids(ids)
        self.swap.drop(ids)
        self.val.drop(ids)
        self.free_ids.extend(ids)
        self.live -= len(ids)

    def _grow(self) -> None:
        """Room for more rows: by half while small (the copy of each column briefly holds
        old and new at once); past :data:`RESERVE_FROM` rows, once, to ``limit`` rows of
        reserved address space (and by half beyond, should ``limit`` be passed)."""
        new = max(self.cap + 1024, self.cap * 3 // 2)
        cols = None
        if new > RESERVE_FROM and not self.no_reserve:
            room = max(new, self.limit)
            cols = {name: reserved(room, dt, huge=name not in self._SPARSE)
                    for name, dt in self._COLS.items()}
            if any(a is None for a in cols.values()):
                cols = None
                self.no_reserve = True  # refused once: plain arrays from now on
            else:
                new = room
        for name, dt in self._COLS.items():
            old = getattr(self, name)
            arr = cols[name] if cols else np.zeros(new, dt)
            arr[: self.cap] = old
            setattr(self, name, arr)
        self.cap = new

    # -- per-page state -------------------------------------------------------------------
    def nr(self, f: int) -> int:
        return 1 << self.order.item(f)

    def arrays(self, f: int) -> PageArrays:
        """The per-page arrays of a large folio, materialised from the uniform state."""
        pa = self.pages.get(f)
        if pa is None:
            pa = PageArrays(self.nr(f), bool(self.flags[f] & PG_ANON_EXCLUSIVE),
                            int(self.val[f]))
            pa.mapcount[:] = self.umc[f]
            self.pages[f] = pa
        return pa

    def page_mapcount(self, f: int, i: int) -> int:
        """PTE mapcount of page ``i`` (not counting PMD mappings)."""
        if self.order[f] == 0:
            return int(self.large[f])
        pa = self.pages.get(f)
        return int(pa.mapcount[i]) if pa is not None else int(self.umc[f])

    def precise_mapcount(self, f: int, i: int) -> int:
        """``folio_precise_page_mapcount``: PTE mapcount + entire mapcount (/proc/kpagecount)."""
        if self.order[f] == 0:
            return int(self.large[f])
        return self.page_mapcount(f, i) + int(self.entire[f])

    def pae(self, f: int, i: int) -> bool:
        """PageAnonExclusive of page ``i``."""
        pa = self.pages.get(f)
        if pa is not None:
            return bool(pa.pae[i])
        return bool(self.flags[f] & PG_ANON_EXCLUSIVE)

    def pae_many(self, fids: np.ndarray, idxs: np.ndarray) -> np.ndarray:
        """:meth:`pae` of many (folio id >= 0, page index) pairs at once."""
        out = (self.flags[fids] & PG_ANON_EXCLUSIVE) != 0
        if self.pages and len(fids):
            big = self.order[fids] > 0
            for f in np.unique(fids[big]).tolist():
                pa = self.pages.get(f)
                if pa is not None:
                    m = fids == f
                    out[m] = pa.pae[idxs[m]]
        return out

    def set_pae(self, f: int, i: int, n: int, on: bool) -> None:
        """Set or clear PageAnonExclusive on pages ``[i, i + n)``."""
        if self.order[f] == 0 or (i == 0 and n == self.nr(f) and f not in self.pages):
            if on:
                self.flags[f] |= PG_ANON_EXCLUSIVE
            else:
                self.flags[f] &= ~PG_ANON_EXCLUSIVE
            return
        pa = self.arrays(f)
        pa.pae[i:i + n] = on
        if i == 0:
            if on:
                self.flags[f] |= PG_ANON_EXCLUSIVE
            else:
                self.flags[f] &= ~PG_ANON_EXCLUSIVE

    def value(self, f: int, i: int) -> int:
        pa = self.pages.get(f)
        return int(pa.val[i]) if pa is not None else int(self.val[f])

    def set_value(self, f: int, i: int, n: int, v: int) -> None:
        if self.order[f] == 0 or (i == 0 and n == self.nr(f) and f not in self.pages):
            self.val[f] = v
            return
        self.arrays(f).val[i:i + n] = v

    def values(self, f: int) -> np.ndarray:
        pa = self.pages.get(f)
        if pa is not None:
            return pa.val
        return np.full(self.nr(f), self.val[f], np.uint64)

    def test(self, f: int, flag: int) -> bool:
        return bool(self.flags[f] & flag)

    def set(self, f: int, flag: int) -> None:
        self.flags[f] |= flag

    def clear(self, f: int, flag: int) -> None:
        self.flags[f] &= ~flag

    def maybe_dma_pinned(self, f: int) -> bool:
        """``folio_maybe_dma_pinned``: pincount for large folios, refcount >=
        :data:`GUP_PIN_COUNTING_BIAS` for small."""
        if self.order[f] > 0:
            return int(self.pin[f]) > 0
        return int(self.ref[f]) >= GUP_PIN_COUNTING_BIAS

    def maybe_mapped_shared(self, f: int) -> bool:
        """``folio_maybe_mapped_shared``: the MM-ids shared bit (large) or mapcount > 1."""
        if self.order[f] == 0:
            return int(self.large[f]) > 1
        if int(self.large[f]) <= 1:
            return False
        return bool(self.flags[f] & PG_MM_SHARED)
