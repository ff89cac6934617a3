"""Every policy on small hand-built cases whose outcome follows from the policy's definition
(issue 4): a 2 MiB region backed by one PMD THP, then a VMA operation that cuts it."""

from __future__ import annotations

import errno

import pytest

from foliosim.experiments.device import Device
from foliosim.mm import System, gup, huge_memory
from foliosim.mm import policy as mm_policy
from foliosim.mm.folio import PG_FREE, PG_MLOCKED, PG_PARTIALLY_MAPPED, PG_QUEUED
from foliosim.mm.system import Process, ThpSettings
from foliosim.policies import POLICIES, Linux618, Policy, make_policy
from foliosim.policies.mechanics import queue_folio

MB = 1 << 20
NR = 512


def thp(policy: str, p: float = 0.0, value: int = 7) -> tuple[System, Process, int]:
    """A system under ``policy`` with one PMD-mapped THP at the returned address, every page
    holding ``value``."""
    s = System(ThpSettings(enabled="madvise"), policy=make_policy(policy, p, seed=1))
    proc = s.process("main")
    a = proc.mmap_region(2 * MB)
    proc.madvise(a, 2 * MB, "hugepage")
    proc.write(a, 2 * MB, value)
    assert len(large_folios(s)) == 1
    return s, proc, a


def large_folios(s: System) -> list[int]:
    F = s.folios
    return [f for f in range(F.next_id) if not F.flags[f] & PG_FREE and F.order[f] > 0]


def folio_at(s: System, proc: Process, addr: int) -> int:
    return gup.follow_page(s, proc.mm, addr)[0]


def mlocked(s: System, proc: Process, addr: int, n: int) -> int:
    """Pages of ``[addr, addr + n pages)`` whose folio is PG_mlocked."""
    return sum(1 for i in range(n)
               if (f := folio_at(s, proc, addr + i * 4096)) >= 0
               and s.folios.flags[f] & PG_MLOCKED)


def values(proc: Process, addr: int, n: int = NR) -> set[int | None]:
    return {proc.value_at(addr + i * 4096) for i in range(n)}


def pin(s: System, proc: Process, addr: int, length: int, pin_id: str = "buf") -> Device:
    assert proc.pin(addr, length, pin_id) == 0
    dev = Device(s)
    dev.attach(pin_id, proc.mm, addr, length)
    return dev


# -- the registry and the shared machinery ----------------------------------------------------
def test_registry_has_every_policy_of_issue_4() -> None:
    assert list(POLICIES) == ["linux-6.18", "split-on-cut", "split-or-copy", "copy-unsafe",
                              "deferred-rmap-check", "mlock-split", "linux-6.11"]
    for name in POLICIES:
        pol = make_policy(name)
        assert pol.name == name and isinstance(pol, Linux618)
    with pytest.raises(KeyError, match="known: linux-6.18"):
        make_policy("no-such-policy")


def test_linux_6_18_is_the_models_default_policy() -> None:
    assert Linux618 is mm_policy.DEFAULT_POLICY
    pol = make_policy("linux-6.18")
    for hook in ("vma_cut", "deferred_split_decision", "deferred_split_folio",
                 "split_remaps_zero_pages", "mlock_allow_large"):
        assert getattr(type(pol), hook) is getattr(Linux618, hook)


def test_speculative_reference_fails_every_split_at_p_1_and_none_at_p_0() -> None:
    for p, expect in ((1.0, -errno.EAGAIN), (0.0, 0)):
        s, proc, a = thp("linux-6.18", p)
        proc.munmap(a + MB, MB)  # partially mapped: nothing else stands in the split's way
        f = folio_at(s, proc, a)
        assert huge_memory.split_folio(s, f, "test") == expect
        if p:
            assert s.stats_split_failures == {"folio_ref_freeze": 1}


def test_speculative_references_are_seeded() -> None:
    policies = [Policy(0.5, seed=3), Policy(0.5, seed=3)]
    draws = [[pol.split_meets_transient_ref(None, 0) for _ in range(20)] for pol in policies]
    assert draws[0] == draws[1] and any(draws[0]) and not all(draws[0])


# -- linux-6.18 -------------------------------------------------------------------------------
def test_linux_6_18_mlock_of_half_a_thp_leaves_it_whole_and_unlocked() -> None:
    s, proc, a = thp("linux-6.18")
    assert proc.mlock(a, MB) == 0
    assert len(large_folios(s)) == 1
    assert mlocked(s, proc, a, NR) == 0


# -- split-on-cut -----------------------------------------------------------------------------
def test_split_on_cut_splits_a_thp_that_mlock_cuts() -> None:
    s, proc, a = thp("split-on-cut")
    assert proc.mlock(a, MB) == 0
    assert large_folios(s) == []
    assert s.vmstat.events["thp_split_page"] == 1
    # the locked half is now 256 small folios, each mlocked; the other half is not
    assert mlocked(s, proc, a, 256) == 256
    assert mlocked(s, proc, a + MB, 256) == 0
    assert values(proc, a) == {7}
    assert [x.kind for x in s.policy.actions] == ["split"]


def test_split_on_cut_leaves_a_thp_the_boundary_does_not_cut() -> None:
    s = System(ThpSettings(enabled="madvise"), policy=make_policy("split-on-cut"))
    proc = s.process("main")
    a = proc.mmap_region(4 * MB)
    proc.madvise(a, 4 * MB, "hugepage")
    proc.write(a, 4 * MB, 1)
    assert proc.mprotect(a, 2 * MB, "r") == 0  # the boundary falls between the two THPs
    assert len(large_folios(s)) == 2
    assert s.policy.actions == []


def test_split_on_cut_queues_a_pinned_thp_and_the_shrinker_splits_it_once_unpinned() -> None:
    s, proc, a = thp("split-on-cut")
    pin(s, proc, a + MB + 512 * 1024, 64 * 1024)
    assert proc.mprotect(a, MB, "r") == 0
    (f,) = large_folios(s)
    assert s.stats_split_failures == {"can_split_folio": 1}
    assert f in s.deferred_queue and s.folios.flags[f] & PG_PARTIALLY_MAPPED
    assert s.policy.actions[-1].kind == "queue"
    s.shrink()
    assert large_folios(s) == [f]  # still pinned: the split fails and the folio stays queued
    assert f in s.deferred_queue
    proc.unpin("buf")
    s.shrink()
    assert large_folios(s) == []
    assert values(proc, a) == {7}


# -- split-or-copy and copy-unsafe ------------------------------------------------------------
def test_split_or_copy_replaces_pages_when_a_speculative_reference_blocks_the_split() -> None:
    s, proc, a = thp("split-or-copy", p=1.0)
    assert proc.mlock(a, MB) == 0
    # the split failed; no pin, so each exclusive page could be marked maybe shared and copied:
    # the mapping holds 512 fresh small folios and the THP, unmapped, is freed
    assert s.stats_split_failures == {"folio_ref_freeze": 1}
    assert s.policy.pages_copied == NR
    assert large_folios(s) == []
    assert values(proc, a) == {7}
    assert mlocked(s, proc, a, 256) == 256  # the copies in the locked VMA are small: mlocked
    assert mlocked(s, proc, a + MB, 256) == 0


def test_split_or_copy_refuses_to_replace_exclusive_pages_of_a_pinned_thp() -> None:
    s, proc, a = thp("split-or-copy")
    pin(s, proc, a + MB + 512 * 1024, 64 * 1024)
    assert proc.mprotect(a, MB, "r") == 0
    (f,) = large_folios(s)
    assert s.policy.pages_copied == 0
    assert {folio_at(s, proc, a + i * 4096) for i in range(NR)} == {f}
    assert all(s.folios.pae(f, k) for k in range(NR))  # still exclusive: nothing was shared
    assert f in s.deferred_queue
    assert s.policy.actions[-1].kind == "queue"


def test_split_or_copy_copies_pages_shared_with_a_fork_child_without_touching_its_view() -> None:
    s, proc, a = thp("split-or-copy", p=1.0)
    child = proc.fork("child")
    assert proc.mprotect(a, MB, "r") == 0
    assert s.policy.pages_copied == NR  # the parent's mapping of the cut THP: all 512 pages
    (f,) = large_folios(s)  # the THP lives on in the child, mapped by its PMD
    assert {folio_at(s, child, a + i * 4096) for i in range(NR)} == {f}
    assert folio_at(s, proc, a) != f
    assert values(proc, a) == values(child, a) == {7}


def test_copy_unsafe_replaces_a_pinned_thp_so_device_writes_are_lost() -> None:
    s, proc, a = thp("copy-unsafe")
    buf = a + MB + 512 * 1024
    dev = pin(s, proc, buf, 64 * 1024)
    assert proc.mprotect(a, MB, "r") == 0
    assert s.policy.pages_copied == NR
    (f,) = large_folios(s)  # kept alive only by the pin, mapped nowhere
    assert folio_at(s, proc, buf) != f and s.folios.maybe_dma_pinned(f)
    assert dev.write("buf", 99) == 0
    assert proc.value_at(buf) == 7  # the device wrote into the old page
    assert s.folios.value(f, (buf - a) >> 12) == 99


def test_split_or_copy_under_the_same_pin_keeps_device_writes_visible() -> None:
    s, proc, a = thp("split-or-copy")
    buf = a + MB + 512 * 1024
    dev = pin(s, proc, buf, 64 * 1024)
    assert proc.mprotect(a, MB, "r") == 0
    assert dev.write("buf", 99) == 0
    assert proc.value_at(buf) == 99


# -- deferred-rmap-check ----------------------------------------------------------------------
def test_deferred_rmap_check_skips_a_fully_mapped_folio_inside_one_vma() -> None:
    for enabled, sizes in (("madvise", {}), ("never", {"64K": "always"})):
        s = System(ThpSettings(enabled=enabled, sizes=sizes),
                   policy=make_policy("deferred-rmap-check"))
        proc = s.process("main")
        a = proc.mmap_region(2 * MB)
        proc.madvise(a, 2 * MB, "hugepage")
        proc.write(a, 64 * 1024, 5)  # one PMD THP, or one 64K mTHP
        (f,) = large_folios(s)
        queue_folio(s, f)
        walks = s.stats_rmap_walks
        s.shrink()
        assert large_folios(s) == [f]
        assert f not in s.deferred_queue
        assert s.stats_rmap_walks == walks + 1
        assert s.policy.pages_scanned >= 1


def test_deferred_rmap_check_queues_a_cut_folio_and_splits_it_at_shrink() -> None:
    s, proc, a = thp("deferred-rmap-check")
    s.shrink()  # drops the THP from the queue (6.18 queued it at fault as underused candidate)
    (f,) = large_folios(s)
    assert f not in s.deferred_queue
    assert proc.mprotect(a, MB, "r") == 0
    assert large_folios(s) == [f]  # no split at the cut, queued instead
    assert f in s.deferred_queue and not s.folios.flags[f] & PG_PARTIALLY_MAPPED
    s.shrink()
    assert large_folios(s) == []
    assert s.vmstat.events["thp_split_page"] == 1
    assert values(proc, a) == {7}
    assert {x.kind for x in s.policy.actions} == {"queue", "deferred-split"}


def test_deferred_rmap_check_splits_a_partially_mapped_folio() -> None:
    s, proc, a = thp("deferred-rmap-check")
    assert proc.madvise(a, MB, "dontneed") == 0  # no VMA cut: 6.18's partial-unmap queueing
    s.shrink()
    assert large_folios(s) == []


def test_deferred_rmap_check_retries_a_pinned_cut_folio() -> None:
    s, proc, a = thp("deferred-rmap-check")
    pin(s, proc, a, 64 * 1024)
    assert proc.mprotect(a + MB, MB, "r") == 0
    s.shrink()
    (f,) = large_folios(s)
    assert f in s.deferred_queue
    proc.unpin("buf")
    s.shrink()
    assert large_folios(s) == []


def test_deferred_rmap_check_mlock_gap_closes_at_shrink() -> None:
    s, proc, a = thp("deferred-rmap-check")
    assert proc.mlock(a, MB) == 0
    assert mlocked(s, proc, a, NR) == 0
    s.shrink()
    # the split's remap maps each locked page as a small folio in a VM_LOCKED VMA: mlocked
    assert mlocked(s, proc, a, 256) == 256
    assert mlocked(s, proc, a + MB, 256) == 0


# -- mlock-split ------------------------------------------------------------------------------
def test_mlock_split_mlocks_the_locked_part_after_splitting() -> None:
    s, proc, a = thp("mlock-split")
    assert proc.mlock(a, MB) == 0
    assert large_folios(s) == []
    assert mlocked(s, proc, a, 256) == 256
    assert mlocked(s, proc, a + MB, 256) == 0
    # each locked page is mlocked once (one VM_LOCKED VMA maps it), not twice
    locked = {folio_at(s, proc, a + i * 4096) for i in range(256)}
    assert {int(s.folios.mlock_count[f]) for f in locked} == {1}
    assert s.vmstat.events["nr_mlock"] == 256
    assert proc.munlock(a, MB) == 0
    assert mlocked(s, proc, a, NR) == 0 and s.vmstat.events["nr_mlock"] == 0


def test_mlock_split_behaves_as_6_18_when_the_split_fails() -> None:
    s, proc, a = thp("mlock-split")
    pin(s, proc, a + MB + 512 * 1024, 64 * 1024)
    assert proc.mlock(a, MB) == 0
    assert len(large_folios(s)) == 1
    assert mlocked(s, proc, a, NR) == 0
    assert s.policy.actions[-1].kind == "split-failed"


def test_mlock_split_does_not_split_for_other_cuts() -> None:
    s, proc, a = thp("mlock-split")
    assert proc.mprotect(a, MB, "r") == 0
    assert len(large_folios(s)) == 1


# -- linux-6.11 -------------------------------------------------------------------------------
def test_linux_6_11_does_not_queue_a_new_thp() -> None:
    s618, _, _ = thp("linux-6.18")
    s611, _, _ = thp("linux-6.11")
    assert len(s618.deferred_queue) == 1  # 6.18: an underused candidate from the fault
    assert len(s611.deferred_queue) == 0


def test_linux_6_11_queues_a_partial_unmap_without_the_partially_mapped_flag() -> None:
    s, proc, a = thp("linux-6.11")
    assert proc.munmap(a + MB, MB) == 0
    (f,) = large_folios(s)
    assert s.folios.flags[f] & PG_QUEUED and not s.folios.flags[f] & PG_PARTIALLY_MAPPED
    assert s.vmstat.events["thp_deferred_split_page"] == 1
    assert s.vmstat.mthp[9]["split_deferred"] == 1
    assert s.vmstat.mthp[9].get("nr_anon_partially_mapped", 0) == 0


def test_linux_6_11_keeps_a_folio_queued_while_its_split_fails() -> None:
    s, proc, a = thp("linux-6.11")
    pin(s, proc, a, 64 * 1024)
    assert proc.munmap(a + MB, MB) == 0
    (f,) = large_folios(s)
    s.shrink()
    s.shrink()
    assert f in s.deferred_queue  # spliced back after every failed split
    assert s.stats_split_failures == {"can_split_folio": 2}
    proc.unpin("buf")
    s.shrink()
    assert large_folios(s) == []


def test_linux_6_11_split_keeps_zero_filled_pages_that_6_18_maps_to_the_zero_page() -> None:
    rss = {}
    for name in ("linux-6.18", "linux-6.11"):
        s, proc, a = thp(name, value=0)
        proc.write(a, 4096, 1)  # one page with data, 255 zero-filled ones in the first half
        proc.munmap(a + MB, MB)
        s.shrink()
        assert large_folios(s) == []
        rss[name] = proc.mm.anon_pages
        assert proc.value_at(a) == 1 and values(proc, a + 4096, 255) == {0}
    assert rss == {"linux-6.18": 1, "linux-6.11": 256}
