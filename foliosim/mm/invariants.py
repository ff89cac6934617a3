"""The invariant checker: recompute every count the model keeps from the page tables of the live
processes, the io_uring pins and the swap cache, and compare them with the folio columns, the
deferred split queue, the gauges and the per-mm counters.

Each rule is named after the kernel field or check it stands for (``_refcount``,
``_large_mapcount``, ``PG_anon_exclusive``, ``MM_ANONPAGES``, ...), so a report reads like the
``VM_WARN_ON_FOLIO`` / ``dump_page`` output it replaces. The kernel rules behind them are in
``include/linux/mm_types.h`` (the fields), ``include/linux/rmap.h`` (the mapcount, per-mm and
PageAnonExclusive sanity checks), ``mm/huge_memory.c`` (the deferred split queue) and
``mm/mlock.c``; the reference is ``shared/reference/linux-6.18-anon-large-folios.md``
sections 1, 4, 5, 7 and 12.

The checker only reads: it never materialises per-page arrays or touches the model's state.

Example::

    from foliosim.mm.invariants import assert_invariants, check_invariants

    p.write(a, 2 << 20, 7)
    assert_invariants(system, "write")   # raises InvariantError naming step, folio and rule
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from foliosim.mm.folio import (
    GUP_PIN_COUNTING_BIAS,
    HUGE_ZERO_FID,
    PG_ANON,
    PG_ANON_EXCLUSIVE,
    PG_FREE,
    PG_LRU,
    PG_MLOCKED,
    PG_MM_SHARED,
    PG_PARTIALLY_MAPPED,
    PG_QUEUED,
    PG_SWAPCACHE,
    PG_UNEVICTABLE,
    ZERO_FID,
)
from foliosim.mm.mm_types import MM, VM_LOCKED, VM_WRITE, VMA
from foliosim.mm.pgtable import NONE, P_SWAP, P_WRITE, PMD_SIZE, PmdLeaf, PteTable
from foliosim.mm.vmstat import MTHP_ORDERS

if TYPE_CHECKING:
    from foliosim.mm.system import System

__all__ = ["InvariantError", "Violation", "assert_invariants", "check_invariants"]

_KEY = 1024                   # > pages of any folio: key = folio * _KEY + page


class Violation(NamedTuple):
    """One broken invariant.

    :param folio: the folio id (``None`` for a rule about an mm, a VMA or a gauge)
    :param pfn: the folio's first page frame
    :param order: the folio's order
    :param rule: the kernel name of the field or check (``_refcount``, ``PG_anon_exclusive``)
    :param expected: the value recomputed from the page tables, pins and swap cache
    :param found: the value the model holds
    :param where: which mm, address or page the difference was seen at
    """

    folio: int | None
    pfn: int | None
    order: int | None
    rule: str
    expected: Any
    found: Any
    where: str = ""

    def describe(self) -> str:
        """One line: ``folio 3 (pfn 0x40000, order 9): _refcount expected 512, found 513``."""
        if self.folio is None:
            who = "system"
        else:
            pfn = f"{self.pfn:#x}" if self.pfn is not None else "?"
            who = f"folio {self.folio} (pfn {pfn}, order {self.order})"
        at = f" [{self.where}]" if self.where else ""
        return f"{who}: {self.rule}: expected {self.expected}, found {self.found}{at}"


class InvariantError(AssertionError):
    """Raised by :func:`assert_invariants`; ``violations`` holds what was found."""

    def __init__(self, step: str, violations: list[Violation]) -> None:
        self.step = step
        self.violations = violations
        lines = [v.describe() for v in violations[:20]]
        more = f"\n  ... and {len(violations) - 20} more" if len(violations) > 20 else ""
        super().__init__(f"after step {step}: {len(violations)} invariant violation"
                         f"{'s' if len(violations) != 1 else ''}:\n  " + "\n  ".join(lines)
                         + more)


def assert_invariants(system: System, step: str) -> None:
    """Raise :class:`InvariantError` naming ``step``, the folio and the rule if any invariant
    is broken."""
    violations = check_invariants(system)
    if violations:
        raise InvariantError(step, violations)


def check_invariants(system: System) -> list[Violation]:
    """Every invariant violation of ``system``'s current state (empty when consistent)."""
    return _Checker(system).run()


# -- the checker ------------------------------------------------------------------------------
class _Checker:
    def __init__(self, s: System) -> None:
        self.s = s
        self.F = s.folios
        self.n = int(self.F.next_id)
        self.out: list[Violation] = []
        n = self.n
        self.flags = self.F.flags[:n].astype(np.int64)
        self.order = self.F.order[:n].astype(np.int64)
        self.alive = (self.flags & PG_FREE) == 0
        # mapping records, filled by the page-table walk
        self.pte_f: list[np.ndarray] = []
        self.pte_k: list[np.ndarray] = []
        self.pte_mm: list[np.ndarray] = []
        self.wr_f: list[np.ndarray] = []   # writable PTEs: folio, page
        self.wr_k: list[np.ndarray] = []
        self.wr_where: list[tuple[MM, int]] = []
        self.pmd_f: list[int] = []
        self.pmd_mm: list[int] = []
        self.pmd_w: list[tuple[int, MM, int]] = []
        self.swap_refs: defaultdict[int, int] = defaultdict(int)
        self.locked_f: list[np.ndarray] = []   # folios with a mapping in a VM_LOCKED VMA

    # reporting
    def folio(self, f: int, rule: str, expected: Any, found: Any, where: str = "") -> None:
        F = self.F
        ok = 0 <= f < self.n
        self.out.append(Violation(int(f), int(F.pfn[f]) if ok else None,
                                  int(F.order[f]) if ok else None, rule, expected, found, where))

    def system(self, rule: str, expected: Any, found: Any, where: str = "") -> None:
        self.out.append(Violation(None, None, None, rule, expected, found, where))

    def run(self) -> list[Violation]:
        mms = [p.mm for p in self.s.processes.values() if p.mm.alive]
        for mm in mms:
            self.check_vmas(mm)
            self.walk_mm(mm)
        self.aggregate()
        self.check_folios()
        self.check_large_folios()
        self.check_queue_and_gauges()
        self.check_mlock()
        self.check_swap()
        self.check_memory()
        self.check_pins(mms)
        return self.out

    # -- VMAs ---------------------------------------------------------------------------------
    def check_vmas(self, mm: MM) -> None:
        """The VMA tree: sorted, page aligned, non-overlapping; the anon_vma chain links both
        ways; ``locked_vm`` is the size of the VM_LOCKED VMAs (mm/mlock.c:mlock_fixup)."""
        prev_end = -1
        locked = 0
        if [v.start for v in mm.vmas] != list(mm._starts):
            self.system("vma tree (mm->mm_mt)", "index of VMA starts", "stale", f"mm {mm.name}")
        for v in mm.vmas:
            where = f"mm {mm.name} {v!r}"
            if v.start % 4096 or v.end % 4096 or v.start >= v.end or v.start < prev_end:
                self.system("vma tree (mm->mm_mt)", "sorted, aligned, disjoint VMAs",
                            f"{v!r} after end {prev_end:#x}", where)
            prev_end = v.end
            if v.mm is not mm:
                self.system("vm_mm", mm.name, getattr(v.mm, "name", None), where)
            if v.anon_vma is not None and v.anon_vma not in v.chain:
                self.system("anon_vma_chain", "vma->anon_vma on its chain", "missing", where)
            for av in v.chain:
                if v not in av.vmas:
                    self.system("anon_vma_chain", f"VMA linked from anon_vma {av.id}",
                                "missing", where)
            if v.flags & VM_LOCKED:
                locked += (v.end - v.start) >> 12
        if mm.locked_vm != locked:
            self.system("locked_vm", locked, mm.locked_vm, f"mm {mm.name}")

    # -- the page-table walk ------------------------------------------------------------------
    def walk_mm(self, mm: MM) -> None:
        anon_pages = 0
        swap_ents = 0
        for slot, ent in sorted(mm.pmd.items()):
            base = slot << 21
            if isinstance(ent, PmdLeaf):
                anon_pages += self.walk_pmd(mm, base, ent)
            elif isinstance(ent, PteTable):
                a, sw = self.walk_ptes(mm, base, ent)
                anon_pages += a
                swap_ents += sw
            else:
                self.system("pmd entry", "PmdLeaf or PteTable", type(ent).__name__,
                            f"mm {mm.name} @{base:#x}")
        if mm.anon_pages != anon_pages:
            self.system("MM_ANONPAGES", anon_pages, mm.anon_pages, f"mm {mm.name}")
        if mm.swap_ents != swap_ents:
            self.system("MM_SWAPENTS", swap_ents, mm.swap_ents, f"mm {mm.name}")

    def walk_pmd(self, mm: MM, base: int, ent: PmdLeaf) -> int:
        """A PMD leaf: only in a 2 MiB slot wholly inside one VMA (thp_vma_suitable_order),
        mapping an order-9 folio (or the huge zero folio, never writable)."""
        where = f"mm {mm.name} PMD @{base:#x}"
        vma = mm.vma_at(base)
        if vma is None or vma.end < base + PMD_SIZE:
            self.system("pmd leaf in one VMA (thp_vma_suitable_order)", "a VMA covering the "
                        "whole 2 MiB", repr(vma), where)
        f = int(ent.fid)
        if f == HUGE_ZERO_FID:
            if not self.s.huge_zero_allocated:
                self.system("huge_zero_folio", "allocated before mapped", "not allocated", where)
            if ent.bits & P_WRITE:
                self.system("pmd_write", "huge zero PMD read-only", "writable", where)
            return 0
        if not self.valid_folio(f, where):
            return 0
        if self.order[f] != 9:
            self.folio(f, "pmd leaf order (HPAGE_PMD_ORDER)", 9, int(self.order[f]), where)
        if vma is not None:
            self.check_rmap(f, np.zeros(1, np.int64), vma, base, where)
            if ent.bits & P_WRITE and not vma.flags & VM_WRITE:
                self.folio(f, "pmd_write in a VMA without VM_WRITE", False, True, where)
        self.pmd_f.append(f)
        self.pmd_mm.append(mm.id)
        if vma is not None and vma.flags & VM_LOCKED:
            self.locked_f.append(np.array([f], np.int64))
        if ent.bits & P_WRITE:
            self.pmd_w.append((f, mm, base))
        return 512

    def walk_ptes(self, mm: MM, base: int, pt: PteTable) -> tuple[int, int]:
        fid, bits = pt.fid, pt.bits
        used = fid != NONE
        if not used.any():
            return 0, 0
        swap = used & ((bits & P_SWAP) != 0)
        present = used & ~swap
        covered = np.zeros(512, bool)
        anon = 0
        for vma in mm.vmas_in(base, base + PMD_SIZE):
            i0 = (max(vma.start, base) - base) >> 12
            i1 = (min(vma.end, base + PMD_SIZE) - base) >> 12
            covered[i0:i1] = True
            anon += self.walk_pte_segment(mm, vma, base, pt, i0, i1, present)
        outside = np.flatnonzero(used & ~covered)
        for i in outside[:4]:
            self.system("pte outside any VMA (free_pgtables/zap)", "pte_none",
                        f"fid {int(fid[i])} bits {int(bits[i]):#x}",
                        f"mm {mm.name} @{base + (int(i) << 12):#x}")
        if len(outside) > 4:
            self.system("pte outside any VMA (free_pgtables/zap)", "pte_none",
                        f"{len(outside)} entries", f"mm {mm.name} PTE table @{base:#x}")
        for slot_id in fid[swap]:
            self.swap_refs[int(slot_id)] += 1
        return anon, int(np.count_nonzero(swap))

    def walk_pte_segment(self, mm: MM, vma: VMA, base: int, pt: PteTable, i0: int, i1: int,
                         present: np.ndarray) -> int:
        fid = pt.fid[i0:i1]
        pos = np.flatnonzero(present[i0:i1])
        if len(pos) == 0:
            return 0
        fs = fid[pos]
        ks = pt.idx[i0:i1][pos].astype(np.int64)
        ws = (pt.bits[i0:i1][pos] & P_WRITE) != 0
        addr0 = base + (i0 << 12)
        zero = fs == ZERO_FID
        if zero.any():
            if (ws & zero).any():
                i = int(pos[np.argmax(ws & zero)])
                self.system("pte_write of the shared zero page", False, True,
                            f"mm {mm.name} @{addr0 + (i << 12):#x}")
        bad = (fs < 0) & ~zero
        for j in np.flatnonzero(bad)[:4]:
            self.system("pte entry", "none, zero page, swap or a folio", int(fs[j]),
                        f"mm {mm.name} @{addr0 + (int(pos[j]) << 12):#x}")
        real = fs >= 0
        dead = real & ((fs >= self.n) | ~self.alive[np.clip(fs, 0, self.n - 1)]) if self.n else real
        for j in np.flatnonzero(dead)[:4]:
            self.folio(int(fs[j]), "use after free (pte maps a freed folio)", "live folio",
                       "PG_FREE", f"mm {mm.name} @{addr0 + (int(pos[j]) << 12):#x}")
        ok = real & ~dead
        if not ok.any():
            return 0
        fs, ks, ws, pos = fs[ok], ks[ok], ws[ok], pos[ok]
        where = f"mm {mm.name} {vma!r}"
        nr = np.left_shift(1, self.order[fs])
        badk = (ks < 0) | (ks >= nr)
        for j in np.flatnonzero(badk)[:4]:
            self.folio(int(fs[j]), "pte page index within the folio", f"< {int(nr[j])}",
                       int(ks[j]), f"mm {mm.name} @{addr0 + (int(pos[j]) << 12):#x}")
        if badk.any():
            keep = ~badk
            fs, ks, ws, pos = fs[keep], ks[keep], ws[keep], pos[keep]
        self.check_rmap(fs, ks, vma, addr0 + (pos << 12), where)
        if ws.any() and not vma.flags & VM_WRITE:
            j = int(np.argmax(ws))
            self.folio(int(fs[j]), "pte_write in a VMA without VM_WRITE", False, True,
                       f"mm {mm.name} @{addr0 + (int(pos[j]) << 12):#x}")
        if ws.any():
            self.wr_f.append(fs[ws])
            self.wr_k.append(ks[ws])
            self.wr_where.extend((mm, addr0 + (int(p) << 12)) for p in pos[ws])
        self.pte_f.append(fs)
        self.pte_k.append(ks)
        if vma.flags & VM_LOCKED:
            self.locked_f.append(fs)
        self.pte_mm.append(np.full(len(fs), mm.id, np.int64))
        return len(fs)

    def valid_folio(self, f: int, where: str) -> bool:
        if f < 0 or f >= self.n or not self.alive[f]:
            self.folio(f, "use after free (pmd maps a freed folio)", "live folio", "PG_FREE",
                       where)
            return False
        return True

    def check_rmap(self, f: Any, k: np.ndarray, vma: VMA, addr: Any, where: str) -> None:
        """The rmap walk finds every mapping: the VMA is chained to the folio's anon_vma and
        ``linear_page_index(vma, addr) == folio->index + page`` (mm/rmap.c:vma_address)."""
        F = self.F
        fs = np.atleast_1d(np.asarray(f, np.int64))
        addrs = np.atleast_1d(np.asarray(addr, np.int64))
        expect = ((addrs - vma.start) >> 12) + vma.pgoff
        found = F.index[fs] + k
        for j in np.flatnonzero(expect != found)[:2]:
            self.folio(int(fs[j]), "folio->index (rmap: linear_page_index)", int(expect[j]),
                       int(found[j]), f"{where} @{int(addrs[j]):#x}")
        chain = np.array([av.id for av in vma.chain], np.int64)
        avs = F.anon_vma[fs].astype(np.int64)
        miss = ~np.isin(avs, chain)
        for g in np.unique(fs[miss])[:2]:
            self.folio(int(g), "folio->mapping (rmap: anon_vma chained to the VMA)",
                       f"one of {chain.tolist()}", int(F.anon_vma[g]), where)

    # -- per-folio counts ---------------------------------------------------------------------
    def aggregate(self) -> None:
        n = self.n
        cat = np.concatenate
        self.pf = cat(self.pte_f) if self.pte_f else np.zeros(0, np.int64)
        self.pk = cat(self.pte_k) if self.pte_k else np.zeros(0, np.int64)
        self.pm = cat(self.pte_mm) if self.pte_mm else np.zeros(0, np.int64)
        self.pmf = np.array(self.pmd_f, np.int64)
        self.pmm = np.array(self.pmd_mm, np.int64)
        self.pte_cnt = np.bincount(self.pf, minlength=n)[:n] if n else np.zeros(0, np.int64)
        self.pmd_cnt = np.bincount(self.pmf, minlength=n)[:n] if n else np.zeros(0, np.int64)
        # pins held by io_uring buffers
        self.pin_cnt = np.zeros(n, np.int64)
        self.pin_ref = np.zeros(n, np.int64)
        for pid, buf in self.s.pins.items():
            if buf is None:
                continue
            for f, k in buf.pins:
                if f < 0 or f >= n or not self.alive[f]:
                    self.folio(f, "use after free (pinned folio freed)", "live folio",
                               "PG_FREE", f"pin {pid}")
                    continue
                if self.order[f] > 0:
                    self.pin_cnt[f] += k
                    self.pin_ref[f] += k
                else:
                    self.pin_ref[f] += GUP_PIN_COUNTING_BIAS * k
        # per-page PTE mapcounts and per-(folio, mm) mapping counts
        key = self.pf * _KEY + self.pk
        self.page_keys, self.page_counts = np.unique(key, return_counts=True)
        mm_max = int(max(self.pm.max(initial=0), self.pmm.max(initial=0))) + 1
        self.mm_max = mm_max
        mkey = np.concatenate([self.pf * mm_max + self.pm, self.pmf * mm_max + self.pmm])
        self.mm_keys, self.mm_counts = np.unique(mkey, return_counts=True)

    def check_folios(self) -> None:
        """Vectorised over all live folios: refcount, pincount, large and entire mapcounts,
        leaks, and the order-0 rules."""
        F, n = self.F, self.n
        if n == 0:
            return
        alive = self.alive
        flags, order = self.flags, self.order
        nr = np.left_shift(1, order)
        ref = F.ref[:n].astype(np.int64)
        pin = F.pin[:n].astype(np.int64)
        large = F.large[:n].astype(np.int64)
        entire = F.entire[:n].astype(np.int64)
        swapcache = (flags & PG_SWAPCACHE) != 0
        expect_ref = self.pte_cnt + self.pmd_cnt + self.pin_ref + np.where(swapcache, nr, 0)
        mapped = (self.pte_cnt + self.pmd_cnt) > 0
        # a live folio nothing references: a leak; one with refcount <= 0: an underflow
        for f in np.flatnonzero(alive & (ref <= 0)):
            self.folio(f, "_refcount (live folio with refcount <= 0)", int(expect_ref[f]),
                       int(ref[f]))
        for f in np.flatnonzero(alive & (ref > 0) & (expect_ref == 0)):
            self.folio(f, "leak (live folio that no mapping, pin or swap cache holds)", 0,
                       int(ref[f]))
        for f in np.flatnonzero(alive & (ref > 0) & (expect_ref > 0) & (ref != expect_ref)):
            self.folio(f, "_refcount", int(expect_ref[f]), int(ref[f]),
                       f"{int(self.pte_cnt[f])} PTEs + {int(self.pmd_cnt[f])} PMDs + "
                       f"{int(self.pin_ref[f])} pin refs + swapcache {bool(swapcache[f])}")
        for f in np.flatnonzero(alive & (pin != self.pin_cnt)):
            self.folio(f, "_pincount", int(self.pin_cnt[f]), int(pin[f]))
        expect_large = self.pte_cnt + self.pmd_cnt
        for f in np.flatnonzero(alive & (large != expect_large)):
            rule = "_large_mapcount" if order[f] > 0 else "_mapcount (small folio)"
            self.folio(f, rule, int(expect_large[f]), int(large[f]))
        for f in np.flatnonzero(alive & (entire != self.pmd_cnt)):
            self.folio(f, "_entire_mapcount", int(self.pmd_cnt[f]), int(entire[f]))
        for f in np.flatnonzero(alive & mapped & ((flags & PG_ANON) == 0)):
            self.folio(f, "PG_anon (folio_test_anon of a mapped folio)", True, False)
        # order 0: no per-mm slots, and PageAnonExclusive only with a single mapping
        small = alive & (order == 0)
        slots = (F.mm0[:n] != 0) | (F.mm1[:n] != 0) | ((flags & PG_MM_SHARED) != 0)
        for f in np.flatnonzero(small & slots):
            self.folio(f, "_mm_id (small folios have no MM-id slots)", "empty",
                       (int(F.mm0[f]), int(F.mm1[f]), bool(flags[f] & PG_MM_SHARED)))
        # the side table of large-only fields: a row per live large folio, none shared, and
        # row 0 (every order-0 folio's) all zero
        lid = F.lid[:n]
        for f in np.flatnonzero(alive & ((order > 0) != (lid > 0))):
            self.folio(f, "lid (a side-table row exactly for large folios)", bool(order[f] > 0),
                       int(lid[f]))
        if (lid[~alive] != 0).any():  # new folios take free rows as they are
            self.system("lid of free folio rows (a released folio gives its row back)", 0,
                        int(lid[~alive].max()))
        big_lids = lid[alive & (lid > 0)]
        if len(np.unique(big_lids)) != len(big_lids):
            self.system("lid (side-table rows shared by two folios)", "unique", "shared")
        for name in F._LARGE:
            if getattr(F, name).a[0] != 0:
                self.system(f"{name} of order-0 folios (side-table row 0)", 0,
                            int(getattr(F, name).a[0]))
        pae = (flags & PG_ANON_EXCLUSIVE) != 0
        for f in np.flatnonzero(small & pae & (self.pte_cnt > 1)):
            self.folio(f, "PG_anon_exclusive (page mapped more than once)", False, True,
                       f"{int(self.pte_cnt[f])} PTEs")
        # gup_must_unshare: a mapped, pinned small folio is exclusive
        for f in np.flatnonzero(small & ~pae & (self.pin_ref > 0) & (self.pte_cnt > 0)):
            self.folio(f, "PG_anon_exclusive (pinned page not exclusive)", True, False)
        # writable PTEs map exclusive pages
        if self.wr_f:
            wf = np.concatenate(self.wr_f)
            wk = np.concatenate(self.wr_k)
            for j in np.flatnonzero(~self.pae_of(wf, wk))[:8]:
                mm, addr = self.wr_where[j]
                self.folio(int(wf[j]), "PG_anon_exclusive (pte_write of a non-exclusive page)",
                           True, False, f"mm {mm.name} @{addr:#x} page {int(wk[j])}")
        for f, mm, base in self.pmd_w:
            if not self.pae_of(np.array([f]), np.array([0]))[0]:
                self.folio(f, "PG_anon_exclusive (pmd_write of a non-exclusive head page)",
                           True, False, f"mm {mm.name} PMD @{base:#x}")

    def pae_of(self, fs: np.ndarray, ks: np.ndarray) -> np.ndarray:
        """PageAnonExclusive of pages ``(fs[i], ks[i])``, read without materialising arrays."""
        F = self.F
        out = (self.flags[fs] & PG_ANON_EXCLUSIVE) != 0
        if F.pages:
            for g in np.unique(fs):
                pa = F.pages.get(int(g))
                if pa is not None:
                    sel = fs == g
                    out[sel] = pa.pae[ks[sel]]
        return out

    def check_large_folios(self) -> None:
        """Per large folio: per-page PTE mapcounts, ``_nr_pages_mapped``, PageAnonExclusive of
        multiply mapped pages, the per-mm slots and the shared bit, partial mapping."""
        F, n = self.F, self.n
        self.partial_by_tables: set[int] = set()
        for f in np.flatnonzero(self.alive & (self.order > 0)):
            f = int(f)
            nr = 1 << int(self.order[f])
            lo = np.searchsorted(self.page_keys, f * _KEY)
            hi = np.searchsorted(self.page_keys, (f + 1) * _KEY)
            expect = np.zeros(nr, np.int64)
            expect[self.page_keys[lo:hi] - f * _KEY] = self.page_counts[lo:hi]
            pa = F.pages.get(f)
            if pa is not None:
                stored = pa.mapcount.astype(np.int64)
                pae = pa.pae
            else:
                stored = np.full(nr, int(F.umc[f]), np.int64)
                pae = np.full(nr, bool(self.flags[f] & PG_ANON_EXCLUSIVE))
            diff = np.flatnonzero(stored != expect)
            if len(diff):
                k = int(diff[0])
                self.folio(f, "page->_mapcount (PTE mapcount)", int(expect[k]), int(stored[k]),
                           f"page {k} ({len(diff)} pages differ)")
            nr_mapped = int(np.count_nonzero(expect))
            if int(F.nr_mapped[f]) != nr_mapped:
                self.folio(f, "_nr_pages_mapped", nr_mapped, int(F.nr_mapped[f]))
            pmds = int(self.pmd_cnt[f])
            # include/linux/rmap.h __folio_add_anon_rmap: a page mapped more than once is never
            # exclusive; under a PMD only the head page's bit means anything
            multi = (expect > 0) & (expect + pmds > 1)
            if pmds > 1:
                multi[0] = True
            bad = np.flatnonzero(multi & pae)
            if len(bad):
                k = int(bad[0])
                self.folio(f, "PG_anon_exclusive (page mapped more than once)", False, True,
                           f"page {k}: {int(expect[k])} PTEs + {pmds} PMDs "
                           f"({len(bad)} pages)")
            self.check_mm_slots(f, int(expect.sum()) + pmds)
            if (pmds == 0 and 0 < nr_mapped < nr and self.flags[f] & PG_ANON
                    and not self.flags[f] & PG_SWAPCACHE and self.order[f] > 1):
                self.partial_by_tables.add(f)
        del n

    def check_mm_slots(self, f: int, total: int) -> None:
        """``folio_add/sub_return_large_mapcount``: a slot holds an mm id with a positive count
        (never more than that mm's mappings), or is free with count 0; two mms mapping the
        folio set FOLIO_MM_IDS_SHARED_BIT; with the bit clear one slot owns every mapping."""
        F = self.F
        m = self.mm_max
        lo = np.searchsorted(self.mm_keys, f * m)
        hi = np.searchsorted(self.mm_keys, (f + 1) * m)
        per_mm = {int(k - f * m): int(c) for k, c in zip(self.mm_keys[lo:hi],
                                                         self.mm_counts[lo:hi], strict=True)}
        shared = bool(self.flags[f] & PG_MM_SHARED)
        slots = [(int(F.mm0[f]), int(F.mmc0[f])), (int(F.mm1[f]), int(F.mmc1[f]))]
        names = {p.mm.id: p.name for p in self.s.processes.values()}
        for i, (mm_id, cnt) in enumerate(slots):
            if mm_id == 0 and cnt != 0:
                self.folio(f, f"_mm_id_mapcount[{i}] (free slot)", 0, cnt)
            elif mm_id != 0 and cnt <= 0:
                self.folio(f, f"_mm_id_mapcount[{i}] (used slot)", "> 0", cnt,
                           f"mm {names.get(mm_id, mm_id)}")
            elif mm_id != 0 and cnt > per_mm.get(mm_id, 0):
                self.folio(f, f"_mm_id_mapcount[{i}]", f"<= {per_mm.get(mm_id, 0)} (mappings "
                           f"of that mm)", cnt, f"mm {names.get(mm_id, mm_id)}")
        if slots[0][0] != 0 and slots[0][0] == slots[1][0]:
            self.folio(f, "_mm_id (one mm in both slots)", "distinct", slots[0][0])
        if len(per_mm) > 1 and not shared:
            self.folio(f, "FOLIO_MM_IDS_SHARED_BIT (folio_maybe_mapped_shared)", True, False,
                       "mapped by " + ", ".join(f"{names.get(k, k)}: {c}"
                                                for k, c in sorted(per_mm.items())))
        if not shared:
            owners = [(mm_id, c) for mm_id, c in slots if mm_id != 0]
            if total == 0 and owners:
                self.folio(f, "_mm_id (unmapped folio with an owner)", "free slots", owners)
            elif total > 0 and (len(owners) != 1 or owners[0][1] != total):
                self.folio(f, "_mm_id_mapcount (exclusive folio: one slot owns all mappings)",
                           total, owners)
        elif total == 0:
            self.folio(f, "FOLIO_MM_IDS_SHARED_BIT (unmapped folio)", False, True)

    # -- deferred split queue and gauges ------------------------------------------------------
    def check_queue_and_gauges(self) -> None:
        s, n = self.s, self.n
        alive, flags, order = self.alive, self.flags, self.order
        queued = set()
        for f in s.deferred_queue:
            if f < 0 or f >= n or not alive[f]:
                self.folio(f, "_deferred_list (freed folio on the queue)", "not queued",
                           "queued")
                continue
            queued.add(int(f))
            if order[f] <= 1:
                self.folio(f, "_deferred_list (order <= 1 has none)", "not queued", "queued")
        flagged = {int(f) for f in np.flatnonzero(alive & ((flags & PG_QUEUED) != 0))}
        for f in sorted(queued - flagged):
            self.folio(f, "_deferred_list (on the queue without PG_QUEUED)", True, False)
        for f in sorted(flagged - queued):
            self.folio(f, "_deferred_list (PG_QUEUED but not on the queue)", False, True)
        pm = alive & ((flags & PG_PARTIALLY_MAPPED) != 0)
        for f in np.flatnonzero(pm & ((flags & PG_QUEUED) == 0)):
            self.folio(f, "PG_partially_mapped (set on an unqueued folio)", False, True)
        # deferred_split_folio(folio, false) is called only for new PMD THPs (underused
        # candidates): anything else on the queue got there partially mapped
        underused = alive & ((flags & PG_QUEUED) != 0) & ~pm
        for f in np.flatnonzero(underused & (order != 9)):
            self.folio(f, "_deferred_list (queued, not partially mapped, not a PMD THP)",
                       "not queued", "queued")
        for f in sorted(self.partial_by_tables):
            if not flags[f] & PG_PARTIALLY_MAPPED:
                self.folio(f, "PG_partially_mapped (deferred_split_folio: partially mapped "
                           "folio not flagged)", True, False)
        anon_large = alive & ((flags & PG_ANON) != 0)
        for o in MTHP_ORDERS:
            stats = s.vmstat.mthp[o]
            want = int(np.count_nonzero(anon_large & (order == o)))
            if stats.get("nr_anon", 0) != want:
                self.system("nr_anon", want, stats.get("nr_anon", 0), f"order {o}")
            want = int(np.count_nonzero(pm & (order == o)))
            if stats.get("nr_anon_partially_mapped", 0) != want:
                self.system("nr_anon_partially_mapped", want,
                            stats.get("nr_anon_partially_mapped", 0), f"order {o}")
        thps = int(np.count_nonzero(alive & (self.F.entire[:n] > 0)))
        got = s.vmstat.events.get("nr_anon_transparent_hugepages", 0)
        if got != thps:
            self.system("nr_anon_transparent_hugepages (NR_ANON_THPS)", thps, got)

    # -- mlock --------------------------------------------------------------------------------
    def check_mlock(self) -> None:
        """mm/mlock.c: a PG_mlocked folio on the LRU is unevictable; an unevictable anon folio
        is mlocked; mlock_count is never negative and only counts on the unevictable list;
        NR_MLOCK is the pages of PG_mlocked folios."""
        F, n = self.F, self.n
        alive, flags = self.alive, self.flags
        mlocked = alive & ((flags & PG_MLOCKED) != 0)
        unevictable = alive & ((flags & PG_UNEVICTABLE) != 0)
        lru = (flags & PG_LRU) != 0
        count = F.mlock_count[:n].astype(np.int64)
        for f in np.flatnonzero(mlocked & lru & ~unevictable):
            self.folio(f, "PG_unevictable (PG_mlocked folio on an evictable LRU)", True, False)
        for f in np.flatnonzero(unevictable & ~mlocked):
            self.folio(f, "PG_mlocked (unevictable folio not mlocked)", True, False)
        for f in np.flatnonzero(alive & (count < 0)):
            self.folio(f, "mlock_count", ">= 0", int(count[f]))
        for f in np.flatnonzero(alive & (count > 0) & ~unevictable):
            self.folio(f, "mlock_count (off the unevictable list)", 0, int(count[f]))
        # munlock_vma_folio on every unmap from a VM_LOCKED VMA, and the munlock walk of a
        # VMA losing VM_LOCKED, leave no mlocked folio without a VM_LOCKED mapping
        in_locked = np.zeros(n, bool)
        if self.locked_f:
            in_locked[np.concatenate(self.locked_f)] = True
        for f in np.flatnonzero(mlocked & ~in_locked):
            self.folio(f, "PG_mlocked (no mapping in a VM_LOCKED VMA)", False, True,
                       f"mlock_count {int(count[f])}")
        pages = int(np.left_shift(1, self.order[mlocked]).sum())
        got = self.s.vmstat.events.get("nr_mlock", 0)
        if got != pages:
            self.system("nr_mlock (NR_MLOCK)", pages, got)

    # -- swap ---------------------------------------------------------------------------------
    def check_swap(self) -> None:
        """Swap PTEs hold their slot's count; the swap cache and PG_swapcache agree; the
        device holds data only for slots in use."""
        s, F, n = self.s, self.F, self.n
        sw = s.swap
        if sw is None:
            if self.swap_refs:
                self.system("swap entry without a swap device", 0, sum(self.swap_refs.values()))
            for f in np.flatnonzero(self.alive & ((self.flags & PG_SWAPCACHE) != 0)):
                self.folio(f, "PG_swapcache without a swap device", False, True)
            return
        for slot in set(sw.count) | set(self.swap_refs):
            want = self.swap_refs.get(slot, 0)
            got = sw.count.get(slot, 0)
            if want != got:
                self.system("swap_map (swap count of a slot)", want, got, f"slot {slot}")
        for slot in set(sw.data) - set(sw.count) - set(sw.cache):
            self.system("swap device data of a slot nothing uses", "freed", "kept",
                        f"slot {slot}")
        for slot, f in sw.cache.items():
            if f < 0 or f >= n or not self.alive[f]:
                self.folio(f, "use after free (swap cache holds a freed folio)", "live folio",
                           "PG_FREE", f"slot {slot}")
                continue
            if not self.flags[f] & PG_SWAPCACHE or int(F.swap[f]) != slot:
                self.folio(f, "PG_swapcache / folio->swap", f"slot {slot}",
                           f"flag {bool(self.flags[f] & PG_SWAPCACHE)} swap {int(F.swap[f])}")
        for f in np.flatnonzero(self.alive & ((self.flags & PG_SWAPCACHE) != 0)):
            if sw.cache.get(int(F.swap[f])) != f:
                self.folio(f, "PG_swapcache (folio not in the swap cache)", "cached",
                           f"slot {int(F.swap[f])}")

    # -- physical memory ----------------------------------------------------------------------
    def check_memory(self) -> None:
        """The buddy allocator and the folios account for every page once; live folios do not
        overlap; the folio table's live count is right."""
        s, F, n = self.s, self.F, self.n
        alive = self.alive
        live = int(np.count_nonzero(alive))
        if F.live != live:
            self.system("folios.live", live, F.live)
        nr = np.left_shift(1, self.order[alive])
        used = int(nr.sum()) + (512 if s.huge_zero_allocated else 0)
        total = s.buddy.end - s.buddy.base_pfn
        if s.buddy.nr_free + used != total:
            self.system("nr_free_pages (buddy + folios = managed pages)", total - used,
                        s.buddy.nr_free)
        ids = np.flatnonzero(alive)
        pfn = F.pfn[:n][ids].astype(np.int64)
        sort = np.argsort(pfn, kind="stable")
        pfn, ids, nr = pfn[sort], ids[sort], nr[sort]
        for j in np.flatnonzero(pfn[:-1] + nr[:-1] > pfn[1:])[:4]:
            self.folio(int(ids[j + 1]), "pfn overlap (two live folios share a page)",
                       f">= {int(pfn[j] + nr[j]):#x}", f"{int(pfn[j + 1]):#x}",
                       f"overlaps folio {int(ids[j])}")

    def check_pins(self, mms: list[MM]) -> None:
        """``pinned_vm`` is what the live io_uring buffers charged to the mm."""
        charged: defaultdict[int, int] = defaultdict(int)
        for buf in self.s.pins.values():
            if buf is not None:
                charged[id(buf.mm)] += buf.acct_pages
        for mm in mms:
            if mm.pinned_vm != charged.get(id(mm), 0):
                self.system("pinned_vm", charged.get(id(mm), 0), mm.pinned_vm,
                            f"mm {mm.name}")
