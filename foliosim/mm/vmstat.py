"""Event counters and gauges: /proc/vmstat items and the per-size ``hugepages-<N>kB/stats``
(follows mm/vmstat.c and the mthp_stats of mm/huge_memory.c)."""

from __future__ import annotations

from collections import defaultdict

MTHP_STATS = (
    "anon_fault_alloc", "anon_fault_fallback", "anon_fault_fallback_charge", "zswpout",
    "swpin", "swpin_fallback", "swpin_fallback_charge", "swpout", "swpout_fallback", "split",
    "split_failed", "split_deferred", "nr_anon", "nr_anon_partially_mapped",
)
MTHP_ORDERS = (2, 3, 4, 5, 6, 7, 8, 9)
VMSTAT_KEYS_PREFIX = "thp_"


def order_kb(order: int) -> str:
    """The stats directory key of an order: ``2048kB`` for 9."""
    return f"{4 << order}kB"


class VmStat:
    """Global counters. ``events`` are vmstat items; ``mthp[order][stat]`` the per-size stats."""

    def __init__(self) -> None:
        self.events: defaultdict[str, int] = defaultdict(int)
        self.mthp: dict[int, defaultdict[str, int]] = {o: defaultdict(int) for o in MTHP_ORDERS}

    def count(self, item: str, n: int = 1) -> None:
        """``count_vm_event`` / ``mod_node_page_state`` for a vmstat item (a counter never
        moved stays absent: absent reads as zero)."""
        if n:
            self.events[item] += n

    def count_mthp(self, order: int, stat: str, n: int = 1) -> None:
        """``count_mthp_stat`` / ``mod_mthp_stat``; orders below 2 have no stats."""
        if order >= 2 and n:
            self.mthp[order][stat] += n

    def snapshot(self) -> dict[str, dict]:
        """The counters in the observation's shape (absolute values)."""
        vm = {k: v for k, v in self.events.items()
              if k.startswith(VMSTAT_KEYS_PREFIX) or k in (
                  "nr_anon_transparent_hugepages", "pglazyfree", "pglazyfreed", "pswpin",
                  "pswpout")}
        return {"vmstat": vm,
                "mthp": {order_kb(o): dict(s) for o, s in self.mthp.items()}}


def delta(now: dict[str, dict], base: dict[str, dict]) -> dict[str, dict]:
    """Counter deltas ``now - base``, leaving out zero deltas."""
    vm = {}
    for k in set(now["vmstat"]) | set(base["vmstat"]):
        d = now["vmstat"].get(k, 0) - base["vmstat"].get(k, 0)
        if d:
            vm[k] = d
    mthp = {}
    for size in set(now["mthp"]) | set(base["mthp"]):
        a, b = now["mthp"].get(size, {}), base["mthp"].get(size, {})
        dd = {k: a.get(k, 0) - b.get(k, 0) for k in set(a) | set(b)}
        dd = {k: v for k, v in sorted(dd.items()) if v}
        if dd:
            mthp[size] = dd
    return {"vmstat": dict(sorted(vm.items())), "mthp": dict(sorted(mthp.items()))}
