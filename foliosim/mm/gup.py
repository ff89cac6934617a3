"""get_user_pages: populating ranges and long-term FOLL_PIN pins, with io_uring's fixed-buffer
registration on top (follows mm/gup.c and io_uring/rsrc.c)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from foliosim.mm import memory
from foliosim.mm.folio import GUP_PIN_COUNTING_BIAS, HUGE_ZERO_FID, PG_DIRTY, ZERO_FID
from foliosim.mm.mm_types import MM, VM_LOCKONFAULT, VM_READ, VM_WRITE, VMA
from foliosim.mm.pgtable import P_DIRTY, P_SWAP, P_WRITE, PmdLeaf, PteTable

if TYPE_CHECKING:
    from foliosim.mm.system import System

EFAULT, ENOMEM = -14, -12


def follow_page(s: System, mm: MM, addr: int) -> tuple[int, int, bool]:
    """The folio, page index and writability mapped at ``addr`` ((-1, 0, False) if none)."""
    ent = mm.pmd.get(addr >> 21)
    if ent is None:
        return -1, 0, False
    if isinstance(ent, PmdLeaf):
        return ent.fid, (addr >> 12) & 511, bool(ent.bits & P_WRITE)
    i = (addr >> 12) & 511
    if ent.bits[i] & P_SWAP:
        return -1, 0, False
    return int(ent.fid[i]), int(ent.idx[i]), bool(ent.bits[i] & P_WRITE)


def faultin_page(s: System, vma: VMA, addr: int, write: bool) -> int:
    """``faultin_page``: fault until the page is present (and writable for FOLL_WRITE; an
    exclusive page for a read pin, via unshare)."""
    f, _, w = follow_page(s, vma.mm, addr)
    if f == -1 or (write and not w) or (write and f in (ZERO_FID, HUGE_ZERO_FID)):
        r = memory.handle_mm_fault(s, vma, addr, write)
        if r:
            return r
    return 0


def follow_touch(s: System, mm: MM, addr: int, write: bool) -> None:
    """The FOLL_TOUCH part of following the page at ``addr`` once it is mapped as needed.
    With FOLL_WRITE: a PMD mapping is made dirty (``follow_huge_pmd`` -> ``touch_pmd``); a
    present, writable PTE that is clean marks its folio dirty (``follow_page_pte``:
    ``folio_mark_dirty`` unless the PTE or the folio already is), so a MADV_FREE'd folio is
    no longer lazily freeable. A read follow only makes the entry young / the folio accessed,
    which the model does not keep."""
    if not write:
        return
    ent = mm.pmd.get(addr >> 21)
    if isinstance(ent, PmdLeaf):
        if ent.fid >= 0 and ent.bits & P_WRITE:
            ent.bits |= P_DIRTY
        return
    if ent is None:
        return
    i = (addr >> 12) & 511
    f = int(ent.fid[i])
    if f >= 0 and (ent.bits[i] & (P_WRITE | P_SWAP | P_DIRTY)) == P_WRITE:
        s.folios.flags[f] |= PG_DIRTY


def _touch_ptes(s: System, pt: PteTable, i: int, n: int) -> None:
    """:func:`follow_touch` with FOLL_WRITE on the PTEs ``[i, i + n)`` that need no fault."""
    fid, bits = pt.fid[i:i + n], pt.bits[i:i + n]
    clean = (fid >= 0) & ((bits & (P_WRITE | P_SWAP | P_DIRTY)) == P_WRITE)
    if clean.any():
        s.folios.flags[fid[clean]] |= PG_DIRTY


def populate_vma_page_range(s: System, vma: VMA, start: int, end: int) -> int:
    """``populate_vma_page_range``: write faults for private writable VMAs, read faults
    otherwise; nothing at all for a VM_LOCKONFAULT VMA (whether or not the caller is mlock);
    PROT_NONE cannot be populated. Walks a PMD slot at a time and faults only the pages that
    need it (runs of order-0 faults at once). ``__get_user_pages`` follows every page with
    FOLL_TOUCH, so a write populate re-dirties what is already mapped writable
    (:func:`follow_touch_range`)."""
    if vma.flags & VM_LOCKONFAULT:
        return 0
    if not vma.flags & (VM_READ | VM_WRITE):
        return EFAULT
    write = bool(vma.flags & VM_WRITE)
    mm = vma.mm
    addr = start
    while addr < end:
        slot = addr >> 21
        nxt = min((slot + 1) << 21, end)
        ent = mm.pmd.get(slot)
        if isinstance(ent, PmdLeaf):
            if not write or (ent.fid >= 0 and ent.bits & P_WRITE):
                follow_touch(s, mm, addr, write)
                addr = nxt
                continue
        elif isinstance(ent, PteTable):
            i = (addr >> 12) & 511
            n = (nxt - addr) >> 12
            if write:
                _touch_ptes(s, ent, i, n)
            fid, bits = ent.fid[i:i + n], ent.bits[i:i + n]
            need = (fid == -1) | ((bits & P_SWAP) != 0)
            if write:
                need |= ((bits & P_WRITE) == 0) | (fid < 0)
            if not need.any():
                addr = nxt
                continue
            j = int(need.argmax())
            addr += j << 12
            if fid[j] == -1:
                run = int((fid[j:] == -1).argmin()) if not (fid[j:] == -1).all() else n - j
                if not write:
                    ent.fid[i + j:i + j + run] = ZERO_FID  # read faults map the zero page
                    ent.bits[i + j:i + j + run] = 0
                    addr += run << 12
                    continue
                m = memory.bulk_fault(s, vma, addr, nxt, 0)
                if m:
                    addr += m << 12
                    continue
            elif write and (fid[j] >= 0 or fid[j] == ZERO_FID):
                m = memory.do_wp_pages_bulk(s, vma, ent, addr, nxt)
                if m:  # now writable and dirty: nothing left to touch
                    addr += m << 12
                    continue
        r = faultin_page(s, vma, addr, write)
        if r:
            return r
        follow_touch(s, mm, addr, write)
        addr += 4096
    return 0


def mm_populate(s: System, mm: MM, start: int, end: int, ignore_errors: bool) -> int:
    """``__mm_populate``: populate every VMA of the range."""
    for vma in list(mm.vmas_in(start, end)):
        if vma.guard and not ignore_errors:
            continue
        if vma.guard:
            continue
        r = populate_vma_page_range(s, vma, max(start, vma.start), min(end, vma.end))
        if r and not ignore_errors:
            return r
    return 0


def try_grab_folio(s: System, f: int, refs: int = 1) -> None:
    """``try_grab_folio`` with FOLL_PIN: +refs to refcount and pincount for a large folio,
    +GUP_PIN_COUNTING_BIAS*refs to the refcount of a small one."""
    F = s.folios
    if F.order[f] > 0:
        F.ref[f] += refs
        F.pin[f] += refs
    else:
        F.ref[f] += GUP_PIN_COUNTING_BIAS * refs


def unpin_folio(s: System, f: int, refs: int = 1) -> None:
    """``gup_put_folio`` for FOLL_PIN."""
    F = s.folios
    if F.order[f] > 0:
        F.pin[f] -= refs
        memory.folio_put(s, f, refs)
    else:
        memory.folio_put(s, f, GUP_PIN_COUNTING_BIAS * refs)


@dataclass
class IoBuffer:
    """An io_uring registered buffer: the pinned folios (one pin per folio when coalesced,
    else one per page) and the pages charged to the registering mm's pinned_vm."""

    mm: MM
    pins: list[tuple[int, int]] = field(default_factory=list)  # (folio, pins held)
    pages: list[tuple[int, int]] = field(default_factory=list)  # (folio, page) the buffer covers
    acct_pages: int = 0
    sharers: set[str] = field(default_factory=set)


def io_sqe_buffer_register(s: System, mm: MM, start: int, length: int) -> IoBuffer | int:
    """``io_sqe_buffer_register``: ``pin_user_pages_fast(FOLL_WRITE | FOLL_LONGTERM)`` of the
    range (faulting and breaking COW as a write does), then ``io_coalesce_buffer`` keeps one
    pin per folio when the pages form whole runs of equal-size large folios; pinned_vm is
    charged by whole folios (``io_buffer_account_pin``)."""
    end = start + length
    if length == 0 or length > 1 << 30:  # io_validate_user_buf_range: at most 1 GiB
        return EFAULT
    # gup_fast pins the leading pages mapped present and writable as they are; from the first
    # other page on, __get_user_pages runs with FOLL_TOUCH (follow_touch_range below)
    slow = _first_not_present_writable(mm, start, end, False)
    got = None if s.tracing else _pin_range_at_once(s, mm, start, end)
    if isinstance(got, int):
        follow_touch_range(s, mm, slow, _writable_end(mm, start, end))
        return got
    pages: list[tuple[int, int]] = got or []
    for addr in range(start, end, 4096) if got is None else ():
        # __get_user_pages: fault and pin page by page; the first page it cannot get (a hole,
        # a VMA without write permission) ends it, and io_pin_pages drops what it pinned
        # (the pages faulted in on the way stay)
        vma = mm.vma_at(addr)
        bad = vma is None or not vma.flags & VM_WRITE or vma.guard
        if bad or faultin_page(s, vma, addr, True):
            for f, _ in pages:
                unpin_folio(s, f)
            return EFAULT
        if addr >= slow:
            follow_touch(s, mm, addr, True)
        f, k, _ = follow_page(s, mm, addr)
        try_grab_folio(s, f)
        pages.append((f, k))
    if got is not None:
        follow_touch_range(s, mm, slow, end)
    mm.has_pinned = True
    buf = IoBuffer(mm, pages=list(pages))
    if len(pages) > 1 and _check_coalesce(s, pages):
        folios: dict[int, int] = {}
        for f, _ in pages:
            folios[f] = folios.get(f, 0) + 1
        for f, n in folios.items():
            if n > 1:
                unpin_folio(s, f, n - 1)
            buf.pins.append((f, 1))
    else:
        buf.pins = [(f, 1) for f, _ in pages]
    charged: set[int] = set()  # headpage_already_acct: a large folio counts once a buffer
    for f, _ in buf.pins:
        if s.folios.order[f] == 0:
            buf.acct_pages += 1
        elif f not in charged:
            buf.acct_pages += s.folios.nr(f)
            charged.add(f)
    mm.pinned_vm += buf.acct_pages
    return buf


def _first_not_present_writable(mm: MM, start: int, end: int, empty_ok: bool) -> int:
    """The first page of ``[start, end)`` not mapped present and writable (by a PTE or a
    PMD), ``end`` if none; with ``empty_ok`` a page nothing maps passes too."""
    a = start
    while a < end:
        ent = mm.pmd.get(a >> 21)
        nxt = min(((a >> 21) + 1) << 21, end)
        if isinstance(ent, PmdLeaf):
            if ent.fid < 0 or not ent.bits & P_WRITE:
                return a
        elif isinstance(ent, PteTable):
            i, n = (a >> 12) & 511, (nxt - a) >> 12
            fid, bits = ent.fid[i:i + n], ent.bits[i:i + n]
            ok = (fid >= 0) & ((bits & (P_WRITE | P_SWAP)) == P_WRITE)
            if empty_ok:
                ok |= fid == -1
            if not ok.all():
                return a + (int(ok.argmin()) << 12)
        elif not empty_ok:
            return a
        a = nxt
    return end


def _writable_end(mm: MM, start: int, end: int) -> int:
    """The end of the run of writable, non-guard VMAs from ``start`` (where a pin's faults
    stop)."""
    stop = start
    for vma in mm.vmas_in(start, end):
        if vma.start > stop or not vma.flags & VM_WRITE or vma.guard:
            break
        stop = min(vma.end, end)
    return stop


def follow_touch_range(s: System, mm: MM, start: int, end: int) -> None:
    """:func:`follow_touch` with FOLL_WRITE on every page of ``[start, end)``: a PMD mapping
    once per slot, PTEs a page table at a time."""
    a = start
    while a < end:
        ent = mm.pmd.get(a >> 21)
        nxt = min(((a >> 21) + 1) << 21, end)
        if isinstance(ent, PmdLeaf):
            follow_touch(s, mm, a, True)
        elif isinstance(ent, PteTable):
            _touch_ptes(s, ent, (a >> 12) & 511, (nxt - a) >> 12)
        a = nxt


def _pin_range_at_once(s: System, mm: MM, start: int, end: int
                       ) -> list[tuple[int, int]] | int | None:
    """The page-by-page loop of :func:`io_sqe_buffer_register` at once where every page up
    to the first one outside a writable VMA is empty or mapped present and writable: the
    write faults of the empty ones do not depend on the references the loop takes on the
    pages before them (a COW reuse, a swap-in or a zero-page break would: a range with any
    such page goes to the loop, None). So the faults come first, a page table at a time
    (:func:`_faultin_empty`), then the grabs (:func:`_grab_present_range`). Returns the
    (folio, page) pairs, -EFAULT as the loop would (the pages faulted in stay), or None."""
    stop = _writable_end(mm, start, end)
    if _first_not_present_writable(mm, start, stop, True) < stop:
        return None
    if stop > start and _faultin_empty(s, mm, start, stop):
        return EFAULT
    if stop < end:
        return EFAULT
    return _grab_present_range(s, mm, start, end)


def _faultin_empty(s: System, mm: MM, start: int, end: int) -> int:
    """Write faults (``faultin_page``) on the empty pages of ``[start, end)``, in address order,
    with the model's many-at-once fault paths; every other page is mapped present and
    writable already. Returns 0 or the first fault's error."""
    a = start
    while a < end:
        vma = mm.vma_at(a)
        nxt = min(((a >> 21) + 1) << 21, end, vma.end)
        ent = mm.pmd.get(a >> 21)
        if isinstance(ent, PmdLeaf):
            a = nxt
            continue
        if isinstance(ent, PteTable):
            i, n = (a >> 12) & 511, (nxt - a) >> 12
            none = ent.fid[i:i + n] == -1
            if not none.any():
                a = nxt
                continue
            a += int(none.argmax()) << 12
            m = memory.bulk_fault(s, vma, a, nxt, 0) or memory.do_anonymous_mthp_bulk(
                s, vma, a, nxt)
            if m > 0:
                a += m << 12
                continue
        r = memory.handle_mm_fault(s, vma, a, True)
        if r:
            return r
        a += 4096
    return 0


def _grab_present_range(s: System, mm: MM, start: int, end: int
                        ) -> list[tuple[int, int]] | None:
    """Every page of ``[start, end)`` being mapped present and writable, each page's
    :func:`try_grab_folio` counted per folio at once. Returns the (folio, page) pairs, or
    None if some page is not."""
    fids: list[np.ndarray] = []
    ks: list[np.ndarray] = []
    a = start
    while a < end:
        ent = mm.pmd.get(a >> 21)
        nxt = min(((a >> 21) + 1) << 21, end)
        n = (nxt - a) >> 12
        i = (a >> 12) & 511
        if isinstance(ent, PmdLeaf):
            if ent.fid < 0 or not ent.bits & P_WRITE:
                return None
            fids.append(np.full(n, ent.fid, np.int64))
            ks.append(np.arange(i, i + n, dtype=np.int64))
        elif isinstance(ent, PteTable):
            fid, bits = ent.fid[i:i + n], ent.bits[i:i + n]
            if not ((fid >= 0) & ((bits & (P_WRITE | P_SWAP)) == P_WRITE)).all():
                return None
            fids.append(fid.astype(np.int64))
            ks.append(ent.idx[i:i + n].astype(np.int64))
        else:
            return None
        a = nxt
    fid = np.concatenate(fids)
    F = s.folios
    g, cnt = np.unique(fid, return_counts=True)
    big = F.order[g] > 0
    F.ref[g] += np.where(big, cnt, GUP_PIN_COUNTING_BIAS * cnt)
    F.pin[g[big]] += cnt[big]
    return list(zip(fid.tolist(), np.concatenate(ks).tolist(), strict=True))


def _check_coalesce(s: System, pages: list[tuple[int, int]]) -> bool:
    """``io_check_coalesce_buffer``: pages contiguous inside folios of one size, only the first
    and last folio partial; order-0 folios are never coalesced."""
    F = s.folios
    f0, k0 = pages[0]
    mid = F.nr(f0)
    if mid == 1:
        return False
    count, nfolios, cur, prev_k = 1, 1, f0, k0
    for f, k in pages[1:]:
        if f == cur and k == prev_k + 1:
            count += 1
            prev_k = k
            continue
        if nfolios == 1:
            if prev_k != mid - 1:
                return False
        elif count != mid:
            return False
        if F.nr(f) != mid or k != 0:
            return False
        cur, prev_k, count = f, k, 1
        nfolios += 1
    return True


def io_buffer_unmap(s: System, buf: IoBuffer) -> None:
    """``io_buffer_unmap``: drop the pins and the pinned_vm charge."""
    for f, n in buf.pins:
        unpin_folio(s, f, n)
    buf.pins = []
    buf.mm.pinned_vm -= buf.acct_pages
    buf.acct_pages = 0
