"""The live-kernel runner against the ground truth (shared/reference/live-kernel-ground-truth.md).

Tests that need the live kernel skip with :func:`foliosim.targets.live.unavailable_reason`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from foliosim.compare import load_observations
from foliosim.observation import expand_runs
from foliosim.scenario import load_scenario_text
from foliosim.scenario.model import Settings
from foliosim.targets import live
from foliosim.targets.live import readers, sysfs

REASON = live.unavailable_reason()
needs_live = pytest.mark.skipif(REASON is not None, reason=REASON or "")
VOLATILE = {"lru", "active"}


def run(text: str) -> dict:
    return live.run(load_scenario_text(text))


def obs(doc: dict, label: str) -> dict:
    return next(o for o in doc["observations"] if o["label"] == label)


def pages(observation: dict, proc: str, region: str) -> list:
    return [p for _, p in expand_runs(observation["processes"][proc]["regions"][region]["pages"])]


def flags(page) -> set[str]:
    return set(page.flags) - VOLATILE


S0A = """
name: s0a
steps:
  - {op: mmap, region: a, size: 2M}
  - {op: madvise, region: a, advice: hugepage}
  - {op: write, region: a}
  - {op: observe, label: faulted}
"""


@needs_live
def test_write_fault_gives_pmd_mapped_order9_folio(tmp_path: Path) -> None:
    """S0a: one PMD-mapped order-9 folio, anon|thp|swapbacked|anon_exclusive, thp_fault_alloc 1."""
    doc = run(S0A)
    assert doc["target"] == "live" and doc["system"]["model"] == "live"
    assert [s["result"] for s in doc["steps"]] == [0, 0, 0, 0]
    assert all(s["errno"] is None and s["ns"] >= 0 for s in doc["steps"])
    o = obs(doc, "faulted")
    region = o["processes"]["main"]["regions"]["a"]
    assert region["vmas"] == [{
        "start": 0, "end": 2 << 20, "perms": "rw-p", "vmflags": ["hg"], "rss_kb": 2048,
        "anonymous_kb": 2048, "anon_huge_pages_kb": 2048, "locked_kb": 0, "swap_kb": 0,
        "lazyfree_kb": 0, "thp_eligible": True}]
    ps = pages(o, "main", "a")
    assert len(ps) == 512
    head = ps[0].pfn
    for k, p in enumerate(ps):
        assert p.state == "present" and p.pfn == head + k and p.folio_pfn == head
        assert p.folio_order == 9 and p.exclusive and p.mapcount == 1 and p.value == 3
        assert flags(p) == {"anon", "thp", "swapbacked", "anon_exclusive"}
    assert o["processes"]["main"]["status"] == {"vm_lck_kb": 0, "vm_pin_kb": 0, "vm_swap_kb": 0}
    assert o["counters"]["vmstat"] == {"thp_fault_alloc": 1, "nr_anon_transparent_hugepages": 1}
    assert o["counters"]["mthp"] == {"2048kB": {"anon_fault_alloc": 1, "nr_anon": 1}}
    end = doc["observations"][-1]
    assert end["label"] == "end" and end["step"] == 4 and end["processes"] == {}
    assert end["counters"]["vmstat"] == {"thp_fault_alloc": 1}
    # the document follows the observation format
    path = tmp_path / "obs.json"
    path.write_text(json.dumps(doc))
    load_observations(path)


@needs_live
def test_mlock_first_half_splits_pmd_not_folio() -> None:
    """S1 step 1: VMA split, PMD split, folio intact and not mlocked, Locked/VmLck 1024."""
    doc = run("""
name: s1
steps:
  - {op: mmap, region: thp, size: 2M}
  - {op: madvise, region: thp, advice: hugepage}
  - {op: write, region: thp}
  - {op: mlock, region: thp, length: 1M}
  - {op: observe, label: after-mlock}
""")
    o = obs(doc, "after-mlock")
    vmas = o["processes"]["main"]["regions"]["thp"]["vmas"]
    assert [(v["start"], v["end"], v["vmflags"], v["locked_kb"], v["rss_kb"],
             v["anon_huge_pages_kb"], v["thp_eligible"]) for v in vmas] == [
        (0, 1 << 20, ["hg", "lo"], 1024, 1024, 0, False),
        (1 << 20, 2 << 20, ["hg"], 0, 1024, 0, False)]
    ps = pages(o, "main", "thp")
    assert {(p.folio_order, p.exclusive, p.mapcount) for p in ps} == {(9, True, 1)}
    assert {p.folio_pfn for p in ps} == {ps[0].pfn}
    assert all(flags(p) == {"anon", "thp", "dirty", "swapbacked", "anon_exclusive"} for p in ps)
    assert o["processes"]["main"]["status"]["vm_lck_kb"] == 1024
    assert o["counters"]["vmstat"] == {"thp_fault_alloc": 1, "thp_split_pmd": 1}
    assert o["counters"]["mthp"] == {"2048kB": {"anon_fault_alloc": 1, "nr_anon": 1}}


@needs_live
def test_io_uring_pin_shows_in_vm_pin() -> None:
    """S9a: a 64 KiB io_uring fixed buffer inside a THP charges the whole folio to VmPin; a
    failed pin holds nothing and unpinning it is ENXIO; read/write outside VMAs is EFAULT."""
    doc = run("""
name: pin
steps:
  - {op: mmap, region: thp, size: 2M}
  - {op: madvise, region: thp, advice: hugepage}
  - {op: write, region: thp}
  - {op: pin, region: thp, offset: 1M, length: 64K, id: p}
  - {op: observe, label: pinned}
  - {op: unpin, id: p}
  - {op: observe, label: unpinned}
  - {op: munmap, region: thp, offset: 1536K}
  - {op: pin, region: thp, offset: 1536K, length: 64K, id: bad}
  - {op: unpin, id: bad}
  - {op: read, region: thp}
  - {op: write, region: thp, offset: 1532K, length: 8K}
""")
    assert obs(doc, "pinned")["processes"]["main"]["status"]["vm_pin_kb"] == 2048
    assert obs(doc, "unpinned")["processes"]["main"]["status"]["vm_pin_kb"] == 0
    ps = pages(obs(doc, "pinned"), "main", "thp")
    assert {(p.folio_order, p.mapcount) for p in ps} == {(9, 1)}  # pins are invisible here
    results = [(s["op"], s["result"], s["errno"]) for s in doc["steps"][8:]]
    assert results == [("pin", -1, "EFAULT"), ("unpin", -1, "ENXIO"), ("read", -1, "EFAULT"),
                       ("write", -1, "EFAULT")]


@needs_live
def test_fork_child_has_regions_and_leaves_observations_at_exit() -> None:
    """S8a: after fork both map the THP (kpagecount 2, bit 56 clear); the child's COW write
    splits only its PMD and copies 4 KiB; an exited process is no longer observed."""
    doc = run("""
name: fork
steps:
  - {op: mmap, region: thp, size: 2M}
  - {op: madvise, region: thp, advice: hugepage}
  - {op: write, region: thp}
  - {op: fork, child: child}
  - {op: write, region: thp, proc: child, offset: 20K, length: 4K, value: 77}
  - {op: observe, label: cow}
  - {op: exit, proc: child}
  - {op: observe, label: gone}
""")
    o = obs(doc, "cow")
    assert list(o["processes"]) == ["main", "child"]
    parent, child = pages(o, "main", "thp"), pages(o, "child", "thp")
    assert child[5].folio_order == 0 and child[5].value == 77 and child[5].mapcount == 1
    assert parent[5].folio_pfn == parent[0].folio_pfn and parent[5].mapcount == 1
    assert parent[0].mapcount == 2 and not parent[0].exclusive and parent[0].value == 3
    assert o["processes"]["main"]["regions"]["thp"]["vmas"][0]["anon_huge_pages_kb"] == 2048
    assert o["processes"]["child"]["regions"]["thp"]["vmas"][0]["anon_huge_pages_kb"] == 0
    assert o["counters"]["vmstat"]["thp_split_pmd"] == 1
    assert list(obs(doc, "gone")["processes"]) == ["main"]


@needs_live
def test_observations_follow_a_drain_of_the_cpu_batches() -> None:
    """S13b after a drain: the order-0 page faulted in the MLOCK_ONFAULT half is MLOCKED and,
    once the per-CPU mlock batch is drained, UNEVICTABLE; the other one is neither."""
    calls: list[tuple[int, int]] = []
    doc = live.run(load_scenario_text("""
name: s13b
steps:
  - {op: mmap, region: thp, size: 2M}
  - {op: madvise, region: thp, advice: hugepage}
  - {op: mlock, region: thp, length: 1M, onfault: true}
  - {op: write, region: thp, length: 4K}
  - {op: write, region: thp, offset: 1M, length: 4K}
  - {op: observe, label: x}
"""), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(k, 6) for k in range(1, 7)]
    ps = pages(obs(doc, "x"), "main", "thp")
    assert ps[0].folio_order == 0 and {"mlocked", "unevictable"} <= set(ps[0].flags)
    assert ps[256].folio_order == 0 and not {"mlocked", "unevictable"} & set(ps[256].flags)
    assert {p.state for k, p in enumerate(ps) if k not in (0, 256)} == {"none"}
    assert obs(doc, "x")["processes"]["main"]["status"]["vm_lck_kb"] == 1024


@needs_live
def test_memory_limit() -> None:
    with pytest.raises(live.MemoryLimitExceeded, match="memory limit"):
        live.run(load_scenario_text("""
name: too-big
steps:
  - {op: mmap, region: a, size: 64M}
  - {op: write, region: a}
"""), memory_limit=32 << 20)


def test_sim_only_ops_are_refused() -> None:
    if REASON is not None:
        with pytest.raises(live.LiveUnavailable):
            live.run(load_scenario_text("name: x\nsteps: []\n"))
        return
    with pytest.raises(live.LiveUnavailable, match="dma_write"):
        live.run(load_scenario_text("""
name: dma
steps:
  - {op: mmap, region: a, size: 2M}
  - {op: pin, region: a, id: p}
  - {op: dma_write, id: p}
"""))


# --- without the live kernel -------------------------------------------------------------------

def test_range_accessible() -> None:
    vmas = [readers.Vma(0x1000, 0x3000, "rw-p"), readers.Vma(0x3000, 0x4000, "r--p")]
    assert readers.range_accessible(vmas, 0x1000, 0x2000, "w")
    assert not readers.range_accessible(vmas, 0x1000, 0x3000, "w")
    assert readers.range_accessible(vmas, 0x1000, 0x3000, "r")
    assert not readers.range_accessible(vmas, 0x0, 0x2000, "r")
    assert not readers.range_accessible(vmas, 0x3000, 0x2000, "r")
    assert readers.range_accessible(vmas, 0x5000, 0, "w")


def test_counter_deltas_drop_zeros() -> None:
    base = {"vmstat": {"thp_fault_alloc": 5, "pswpin": 1},
            "mthp": {"2048kB": {"nr_anon": 2, "split": 0}, "64kB": {"nr_anon": 1}}}
    now = {"vmstat": {"thp_fault_alloc": 6, "pswpin": 1},
           "mthp": {"2048kB": {"nr_anon": 1, "split": 0}, "64kB": {"nr_anon": 1}}}
    assert readers.counter_deltas(base, now) == {"vmstat": {"thp_fault_alloc": 1},
                                                 "mthp": {"2048kB": {"nr_anon": -1}}}


def test_region_vmas_clip_and_filter() -> None:
    v = readers.Vma(0x10000, 0x30000, "rw-p", {"Rss": 8, "Locked": 4}, ("rd", "wr", "lo", "hg"),
                    True)
    out = readers.region_vmas([v], 0x20000, 0x20000)
    assert out == [{"start": 0, "end": 0x10000, "perms": "rw-p", "vmflags": ["hg", "lo"],
                    "rss_kb": 8, "anonymous_kb": 0, "anon_huge_pages_kb": 0, "locked_kb": 4,
                    "swap_kb": 0, "lazyfree_kb": 0, "thp_eligible": True}]
    assert readers.locked_kb([v], [(0x20000, 0x20000)]) == 64


def test_size_names() -> None:
    assert sysfs.size_name(2048) == "2M" and sysfs.size_name(64) == "64K"
    assert sysfs.size_name(1024) == "1M"
    assert Settings().size_mode(sysfs.size_name(2048)) == "inherit"
