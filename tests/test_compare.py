"""Tests of foliosim.compare: the comparison rules of spec section 3 and observation loading."""

from __future__ import annotations

import copy
import json

import pytest

from foliosim.compare import (
    Difference,
    canonical_pages,
    compare,
    describe_folios,
    load_observations,
)
from foliosim.observation import Page, document, encode_runs
from foliosim.scenario import ScenarioError

THP_FLAGS = ("anon", "anon_exclusive", "dirty", "swapbacked", "thp")


def thp_pages(base: int, order: int = 9, flags: tuple[str, ...] = THP_FLAGS, *,
              mapcount: int = 1, value: int = 3) -> list[Page]:
    """The pages of one fully mapped folio starting at PFN ``base``."""
    return [Page("present", base + k, base, order, True, mapcount, flags, value)
            for k in range(1 << order)]


def small_pages(bases: list[int], flags: tuple[str, ...] = ("anon", "anon_exclusive", "lru"),
                value: int = 3) -> list[Page]:
    return [Page("present", b, b, 0, True, 1, flags, value) for b in bases]


def vma(start: int = 0, end: int = 2 << 20, **kw: object) -> dict:
    v = {"start": start, "end": end, "perms": "rw-p", "vmflags": ["hg"], "rss_kb": 2048,
         "anonymous_kb": 2048, "anon_huge_pages_kb": 2048, "locked_kb": 0, "swap_kb": 0,
         "lazyfree_kb": 0, "thp_eligible": True}
    v.update(kw)
    return v


def doc(pages: list[Page], *, target: str = "sim", vmas: list[dict] | None = None,
        counters: dict | None = None, status: dict | None = None,
        extra_regions: dict[str, list[Page]] | None = None) -> dict:
    """A one-observation document of scenario ``t`` with region ``a`` holding ``pages``."""
    regions = {"a": {"vmas": vmas if vmas is not None else [vma()],
                     "pages": encode_runs(pages)}}
    for name, more in (extra_regions or {}).items():
        regions[name] = {"vmas": [vma()], "pages": encode_runs(more)}
    steps = [{"index": 0, "op": "mmap", "proc": "main", "result": 0, "errno": None, "ns": 100},
             {"index": 1, "op": "write", "proc": "main", "result": 0, "errno": None, "ns": 900},
             {"index": 2, "op": "observe", "proc": "main", "result": 0, "errno": None, "ns": 5}]
    obs = [{"label": "after-write", "step": 2,
            "processes": {"main": {"status": status or {"vm_lck_kb": 0, "vm_pin_kb": 0,
                                                        "vm_swap_kb": 0},
                                   "regions": regions}},
            "counters": counters if counters is not None else {
                "vmstat": {"thp_fault_alloc": 1}, "mthp": {"2048kB": {"anon_fault_alloc": 1}}}},
           {"label": "end", "step": 3, "processes": {}, "counters": {}}]
    return document("t", target, {"kernel": "6.18.44"}, steps, obs)


def test_identical_documents_with_different_pfns_and_timings_agree() -> None:
    a = doc(thp_pages(0x100000) + small_pages([5, 9, 7]))
    b = doc(thp_pages(0x4400) + small_pages([70000, 12, 13]), target="live")
    b["steps"][1]["ns"] = 123456
    assert compare(a, b) == []


def test_mapcount_of_one_page_reported_with_its_page() -> None:
    a = doc(thp_pages(0x100000))
    pages = thp_pages(0x200000)
    pages[7] = pages[7]._replace(mapcount=2)  # splits the run in three
    b = doc(pages)
    assert len(b["observations"][0]["processes"]["main"]["regions"]["a"]["pages"]) == 3
    assert compare(a, b) == [
        Difference("after-write", "main", "a", "page 7", "mapcount", 1, 2)]


def test_consecutive_pages_with_same_difference_are_one_range() -> None:
    a = doc(thp_pages(0x100000))
    pages = thp_pages(0x200000)
    for i in range(12, 16):
        pages[i] = pages[i]._replace(value=99)
    assert compare(a, doc(pages)) == [
        Difference("after-write", "main", "a", "pages 12-15", "value", 3, 99)]


def test_state_difference_hides_fields_of_the_absent_page() -> None:
    a = doc(thp_pages(0x100000, order=0) + [Page("none")] * 3)
    b = doc([Page("none")] * 4)
    assert compare(a, b) == [Difference("after-write", "main", "a", "page 0", "state",
                                        "present", "none")]


def test_split_folio_is_one_folio_difference_per_range() -> None:
    a = doc(thp_pages(0x100000))
    b = doc(small_pages(list(range(0x300000, 0x300200)), flags=THP_FLAGS[:4]))
    diffs = compare(a, b)
    folio = [d for d in diffs if d.field == "folio"]
    assert folio == [Difference("after-write", "main", "a", "pages 0-511", "folio",
                                "F0[0-511] order 9", "F0..F511 order 0")]
    # swapbacked is left out on order-0 folios only, thp is not
    assert [(d.where, d.field, d.a, d.b) for d in diffs if d.field == "flags"] == [
        ("pages 0-511", "flags", "anon,anon_exclusive,dirty,swapbacked,thp",
         "anon,anon_exclusive,dirty")]


def test_vma_field_difference() -> None:
    a = doc(thp_pages(0x100000))
    b = doc(thp_pages(0x100000), vmas=[vma(locked_kb=1024, vmflags=["hg", "lo"])])
    assert compare(a, b) == [
        Difference("after-write", "main", "a", "vma 0-2097152", "vmflags", ["hg"], ["hg", "lo"]),
        Difference("after-write", "main", "a", "vma 0-2097152", "locked_kb", 0, 1024)]


def test_split_vma_reads_as_end_and_missing_vma() -> None:
    a = doc(thp_pages(0x100000))
    b = doc(thp_pages(0x100000), vmas=[vma(end=1 << 20), vma(start=1 << 20)])
    assert compare(a, b) == [
        Difference("after-write", "main", "a", "vma 0-2097152", "end", 2 << 20, 1 << 20),
        Difference("after-write", "main", "a", "vma 1048576-2097152", "vma", "missing",
                   "present")]


def test_counter_difference_and_missing_key_is_zero() -> None:
    a = doc(thp_pages(0x100000))
    b = doc(thp_pages(0x100000), counters={
        "vmstat": {"thp_fault_alloc": 1, "thp_split_pmd": 1, "pglazyfree": 0},
        "mthp": {"2048kB": {"anon_fault_alloc": 1}}})
    assert compare(a, b) == [
        Difference("after-write", "", "", "counters", "vmstat/thp_split_pmd", 0, 1)]


def _with_failed(vmstat: int, mthp: int) -> dict:
    return doc(thp_pages(0x100000), counters={
        "vmstat": {"thp_fault_alloc": 1, "thp_split_page_failed": vmstat},
        "mthp": {"2048kB": {"anon_fault_alloc": 1, "split_failed": mthp}}})


def test_split_failed_counters_agree_on_zero_or_not() -> None:
    assert compare(_with_failed(3, 3), _with_failed(5, 2)) == []
    diffs = compare(_with_failed(0, 0), _with_failed(2, 2))
    assert [(d.field, d.a, d.b) for d in diffs] == [
        ("mthp/2048kB/split_failed", 0, 2), ("vmstat/thp_split_page_failed", 0, 2)]


def test_thp_zero_page_alloc_is_ignored() -> None:
    a = doc(thp_pages(0x100000))
    b = doc(thp_pages(0x100000), counters={
        "vmstat": {"thp_fault_alloc": 1, "thp_zero_page_alloc": 1},
        "mthp": {"2048kB": {"anon_fault_alloc": 1}}})
    assert compare(a, b) == []


def test_order0_unevictable_swapbacked_lru_active_ignored() -> None:
    a = doc(small_pages([1, 2], flags=("anon", "mlocked", "unevictable", "swapbacked", "lru")))
    b = doc(small_pages([8, 9], flags=("active", "anon", "mlocked")))
    assert compare(a, b) == []


def test_order9_unevictable_swapbacked_compared_lru_active_not() -> None:
    a = doc(thp_pages(0x100000, flags=("anon", "mlocked", "thp", "unevictable", "lru")))
    b = doc(thp_pages(0x200000, flags=("active", "anon", "mlocked", "thp")))
    assert compare(a, b) == [
        Difference("after-write", "main", "a", "pages 0-511", "flags",
                   "anon,mlocked,thp,unevictable", "anon,mlocked,thp")]
    c = doc(thp_pages(0x100000, flags=("anon", "swapbacked", "thp")))
    d = doc(thp_pages(0x100000, flags=("anon", "thp")))
    assert [x.field for x in compare(c, d)] == ["flags"]


def test_zero_pages_keep_their_names_and_take_no_folio_number() -> None:
    zero = [Page("present", 77, 77, 0, False, 0, ("zero",), 0)] * 2
    hugezero = [Page("present", 4096 + k, 4096, 9, False, 0, ("thp", "zero"), 0)
                for k in range(512)]
    obs = doc(zero + thp_pages(0x100000, order=2),
              extra_regions={"b": hugezero})["observations"][0]
    pages = canonical_pages(obs)
    assert [p.folio for p in pages["main", "a"].values()] == ["zero", "zero"] + ["F0"] * 4
    assert {p.folio for p in pages["main", "b"].values()} == {"hugezero"}
    assert pages["main", "b"][5].offset == 5


def test_zero_page_differs_from_real_page() -> None:
    a = doc([Page("present", 77, 77, 0, False, 0, ("zero",), 0)])
    b = doc([Page("present", 12, 12, 0, False, 0, ("anon",), 0)])
    assert [(d.field, d.a, d.b) for d in compare(a, b)] == [
        ("folio", "zero order 0", "F0 order 0"), ("flags", "zero", "anon")]


def test_folio_names_follow_processes_then_regions_then_pages() -> None:
    d = doc(thp_pages(500, order=1), extra_regions={"b": thp_pages(100, order=1)})
    obs = d["observations"][0]
    obs["processes"]["child"] = copy.deepcopy(obs["processes"]["main"])
    obs["processes"]["child"]["regions"]["a"]["pages"] = encode_runs(thp_pages(900, order=1))
    pages = canonical_pages(obs)
    assert pages["child", "a"][0].folio == "F0"
    assert pages["child", "b"][0].folio == "F1"
    assert pages["main", "a"][0].folio == "F2"
    assert pages["main", "b"][0].folio == "F1"  # the same folio mapped in both


def test_shared_folio_vs_two_folios_differs() -> None:
    a = doc(thp_pages(500, order=1), extra_regions={"b": thp_pages(500, order=1)})
    b = doc(thp_pages(500, order=1), extra_regions={"b": thp_pages(700, order=1)})
    assert [(d.region, d.where, d.field, d.a, d.b) for d in compare(a, b)] == [
        ("b", "pages 0-1", "folio", "F0[0-1] order 1", "F1[0-1] order 1")]


def test_step_result_and_errno() -> None:
    a = doc(thp_pages(0x100000))
    b = doc(thp_pages(0x100000))
    b["steps"][1].update(result=-1, errno="EFAULT")
    assert compare(a, b) == [
        Difference("after-write", "main", "", "step 1", "result", 0, -1),
        Difference("after-write", "main", "", "step 1", "errno", None, "EFAULT")]


def test_missing_observation_process_region_status() -> None:
    a = doc(thp_pages(0x100000))
    b = doc(thp_pages(0x100000), status={"vm_lck_kb": 4, "vm_pin_kb": 0})
    del b["observations"][1]
    b["observations"][0]["processes"]["main"]["regions"]["z"] = {"vmas": [], "pages": []}
    b["observations"][0]["processes"]["child"] = {"status": {}, "regions": {}}
    assert [(d.observation, d.process, d.region, d.where, d.field, d.a, d.b)
            for d in compare(a, b)] == [
        ("after-write", "child", "", "process", "process", "missing", "present"),
        ("after-write", "main", "", "status", "vm_lck_kb", 0, 4),
        ("after-write", "main", "", "status", "vm_swap_kb", 0, "missing"),
        ("after-write", "main", "z", "region", "region", "missing", "present"),
        ("end", "", "", "observation 1", "label", "end", "missing")]


def test_label_mismatch_reported_once() -> None:
    a = doc(thp_pages(0x100000))
    b = doc([Page("none")] * 512)
    b["observations"][0]["label"] = "other"
    assert compare(a, b) == [
        Difference("after-write", "", "", "observation 0", "label", "after-write", "other")]


def test_describe_folios() -> None:
    assert describe_folios([("F0", k, 9) for k in range(512)]) == "F0[0-511] order 9"
    assert describe_folios([("F0", 3, 9)]) == "F0[3] order 9"
    assert describe_folios([("zero", 0, 0)] * 4) == "zero x4 order 0"
    assert describe_folios([(f"F{k}", 0, 0) for k in (1, 2, 3)]) == "F1..F3 order 0"
    many = [(f"F{k // 16}", k % 16, 4) for k in range(64)]
    assert describe_folios(many, orders=False) == "F0[0-15], F1[0-15], F2[0-15], ... 4 folios"


def test_load_observations_roundtrip(tmp_path) -> None:
    path = tmp_path / "o.json"
    d = doc(thp_pages(0x100000))
    path.write_text(json.dumps(d))
    assert load_observations(path) == d


@pytest.mark.parametrize("text, expected", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"format": "foliosim.scenario/1"}', "expected format 'foliosim.observations/1'"),
])
def test_load_observations_refuses(tmp_path, text: str, expected: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=expected) as e:
        load_observations(path)
    assert str(path) in str(e.value)


def test_load_observations_names_step_and_field(tmp_path) -> None:
    d = doc(thp_pages(0x100000))
    del d["steps"][1]["errno"]
    d["observations"][0]["processes"]["main"]["regions"]["a"]["pages"][0]["count"] = "x"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ScenarioError) as e:
        load_observations(path)
    assert e.value.step == 1 and e.value.field == "steps[1].errno"
    del d["steps"]
    path.write_text(json.dumps(d))
    with pytest.raises(ScenarioError) as e:
        load_observations(path)
    assert e.value.field == "steps"


def test_load_observations_present_run_needs_its_fields(tmp_path) -> None:
    d = doc(thp_pages(0x100000))
    del d["observations"][0]["processes"]["main"]["regions"]["a"]["pages"][0]["mapcount"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ScenarioError, match="mapcount") as e:
        load_observations(path)
    assert e.value.field.startswith("observations[0].processes.main.regions.a.pages[0]")
