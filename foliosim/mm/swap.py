"""A swap file: order-0 slots only, pages kept in the swap cache after write-out until reclaim
drops a clean one, then read back from the device at the next fault (follows mm/swapfile.c,
mm/swap_state.c, mm/page_io.c and mm/memory.c:do_swap_page).

Not modelled: swap readahead. On this machine the swap file sits on a rotational disk, so the
kernel uses ``swap_cluster_readahead``, whose window depends on machine-wide history
(``swapin_nr_pages``: the previous fault's offset and window, readahead hits of any process);
a fault here reads its own page only. Writeback is taken as finished at once."""

from __future__ import annotations

from typing import TYPE_CHECKING

from foliosim.mm import rmap
from foliosim.mm.folio import PG_DIRTY, PG_MLOCKED, PG_SWAPCACHE
from foliosim.mm.mm_types import VM_LOCKED, VM_WRITE, VMA
from foliosim.mm.pgtable import P_DIRTY, P_WRITE, PteTable

if TYPE_CHECKING:
    from foliosim.mm.system import System

SWAP_FILE_PAGES = (128 << 20) >> 12


class SwapFile:
    """Slots of a swap file: the count of swap PTEs and the swapcache folio of each slot."""

    def __init__(self, nr_pages: int = SWAP_FILE_PAGES) -> None:
        self.nr = nr_pages
        self.next = 1  # slot 0 is the header
        self.free: list[int] = []
        self.count: dict[int, int] = {}
        self.cache: dict[int, int] = {}    # slot -> folio in the swap cache
        self.exclusive: dict[int, bool] = {}
        # slot -> the page value written to the device; a zero-filled page is not written
        # (``swap_writeout`` notes it in the zeromap), so an absent slot reads as zeros
        self.data: dict[int, int] = {}

    def full(self) -> bool:
        """``vm_swap_full``: fewer than half the slots are free (slot 0, the header, is not a
        slot)."""
        total = self.nr - 1
        used = self.next - 1 - len(self.free)
        return (total - used) * 2 < total

    def alloc(self) -> int | None:
        if self.free:
            return self.free.pop()
        if self.next >= self.nr:
            return None
        self.next += 1
        return self.next - 1

    def alloc_many(self, n: int) -> list[int]:
        """The slots ``n`` calls of :meth:`alloc` would return, in order (fewer once the file
        is full: the calls after that get none)."""
        k = min(n, len(self.free))
        out = self.free[len(self.free) - k:][::-1]
        del self.free[len(self.free) - k:]
        rest = min(n - k, self.nr - self.next)
        out.extend(range(self.next, self.next + rest))
        self.next += rest
        return out

    def entries_free(self, slot: int) -> None:
        """``swap_entries_free``: the slot is free again; what the device held for it (its
        data or zeromap bit) and its exclusive marker are forgotten."""
        self.free.append(slot)
        self.data.pop(slot, None)
        self.exclusive.pop(slot, None)


def free_swap_entry(s: System, slot: int) -> None:
    """``free_swap_and_cache_nr`` of one entry: one swap PTE less. When the last one goes, a
    slot no folio caches is freed; a swap-cache folio holding it is reclaimed
    (``__try_to_reclaim_swap`` with ``TTRS_UNMAPPED | TTRS_FULL``: dropped from the swap
    cache and dirtied, the slot freed, :func:`folio_free_swap`) only when nothing maps it or
    the swap space is more than half used (``vm_swap_full``); otherwise it stays cached and
    keeps the slot."""
    sw = s.swap
    sw.count[slot] -= 1
    if sw.count[slot] > 0:
        return
    del sw.count[slot]
    f = sw.cache.get(slot)
    if f is None:
        sw.entries_free(slot)
    elif not rmap.folio_mapped(s, f) or sw.full():
        folio_free_swap(s, f)


def swap_duplicate(s: System, slot: int) -> None:
    """``swap_duplicate`` at fork: one more swap PTE; both sides' entries lose their
    exclusive marker (``copy_nonpresent_pte``)."""
    s.swap.count[slot] += 1
    s.swap.exclusive[slot] = False


def swap_cache_del_folio(s: System, f: int) -> None:
    """``swap_cache_del_folio``: the folio leaves the swap cache, which drops its reference
    (the last one frees the folio); the slot is the caller's."""
    from foliosim.mm.memory import folio_put

    F = s.folios
    s.swap.cache.pop(int(F.swap[f]), None)
    F.flags[f] &= ~PG_SWAPCACHE
    F.swap[f] = -1
    folio_put(s, f, 1)


def folio_free_swap(s: System, f: int) -> bool:
    """``folio_free_swap``: drop the swap cache copy when no swap PTE refers to it any more;
    the folio becomes dirty, its only copy now being in memory."""
    F = s.folios
    slot = int(F.swap[f])
    if slot < 0 or s.swap.count.get(slot, 0) > 0:
        return False
    s.swap.entries_free(slot)
    F.flags[f] |= PG_DIRTY
    swap_cache_del_folio(s, f)
    return True


def free_swap_cache(s: System, f: int) -> None:
    """``free_swap_cache`` after a zap or a collapse took a mapping away: a swap-cache folio
    that nothing maps any more drops its swap copy if no swap entry needs it
    (:func:`folio_free_swap`)."""
    if s.folios.flags[f] & PG_SWAPCACHE and not rmap.folio_mapped(s, f):
        folio_free_swap(s, f)


def do_swap_page(s: System, vma: VMA, pt: PteTable, addr: int, write: bool) -> int:
    """``do_swap_page``: map back the swap cache folio of the entry, read from the device first
    when the cache has none (:func:`swap_read_folio`). The swap slot loses this reference; the
    swap cache is dropped when the mapping is locked, the swap space is more than half used
    (``mem_cgroup_swap_full`` -> ``vm_swap_full``) or a write will likely be exclusive
    (``should_try_to_free_swap``). The page is mapped exclusive (and writable) if the entry
    was exclusive or no one else holds the folio; otherwise read-only, and a write goes on to
    ``do_wp_page``."""
    F = s.folios
    mm = vma.mm
    i = (addr >> 12) & 511
    slot = int(pt.fid[i])
    f = s.swap.cache.get(slot)
    fresh = f is None
    if fresh:
        f = swap_read_folio(s, slot)
        if f is None:
            return -12  # VM_FAULT_OOM
    excl = s.swap.exclusive.get(slot, False)
    F.ref[f] += 1  # the lookup's reference, which becomes the mapping's
    s.swap.count[slot] -= 1
    if s.swap.count[slot] == 0:
        del s.swap.count[slot]
    if vma.flags & VM_LOCKED or F.flags[f] & PG_MLOCKED or s.swap.full() or (
            write and int(F.ref[f]) == 1 + F.nr(f)):
        folio_free_swap(s, f)
    mm.anon_pages += 1
    mm.swap_ents -= 1
    pt.fid[i] = f
    pt.clear_idx(i)
    pt.bits[i] = 0
    if excl or int(F.ref[f]) == 1:
        if vma.flags & VM_WRITE:
            pt.bits[i] = P_WRITE | (P_DIRTY if write else 0)
        excl = True
    if fresh:  # not anon yet: no mlock here (folio_add_new_anon_rmap)
        rmap.folio_add_new_anon_rmap(s, f, vma, addr, False, excl)
    else:
        rmap.folio_add_anon_rmap_ptes(s, f, 0, 1, vma, excl)
    return 0


def swap_read_folio(s: System, slot: int) -> int | None:
    """A swap cache miss (``swapin_readahead`` -> ``__read_swap_cache_async``,
    ``swap_read_folio``): a new order-0 folio joins the swap cache holding what the slot holds
    on the device; ``pswpin`` counts the read unless the slot is in the zeromap (a zero-filled
    page, :attr:`SwapFile.data`). None when no page can be had."""
    from foliosim.mm.memory import folio_alloc

    f = folio_alloc(s, 0)
    if f is None:
        return None
    F = s.folios
    value = s.swap.data.get(slot, 0)
    F.val[f] = value
    F.flags[f] |= PG_SWAPCACHE
    F.swap[f] = slot
    s.swap.cache[slot] = f  # the new folio's reference is the swap cache's
    if value:
        s.vmstat.count("pswpin")
    return f
