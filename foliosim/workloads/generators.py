"""The five seeded workloads. Each generator returns a scenario whose every step succeeds with
THP disabled, so any step that fails with THP enabled is a failure THP caused (rule 1).

``scale`` multiplies the number of rounds (the presets use 1, 3 and 8).
"""

from __future__ import annotations

from foliosim.scenario.model import Scenario
from foliosim.workloads.builder import Builder, KiB, MiB

__all__ = ["allocator_churn", "fork_snapshot", "guard_pages", "mlock_slices", "pinned_buffers"]

THP = {"enabled": "madvise"}


def mlock_slices(seed: int, scale: int = 1) -> Scenario:
    """Secrets locked in slices of THP-backed heaps: each round stores a secret in a random
    slice of a heap and mlocks the slice; some slices are unlocked again later."""
    b = Builder(f"mlock-slices-s{seed}", seed, "secrets mlocked in slices of THP-backed heaps",
                THP)
    rng = b.rng
    heaps = [b.mmap(rng.choice((4, 6, 8)) * MiB) for _ in range(rng.randint(2, 3))]
    locked: list[tuple] = []
    for r in range(24 * scale):
        h = rng.choice(heaps)
        if (ext := b.pick(h, (4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB))) is not None:
            b.write(h, *ext)
            b.range_op("mlock", h, *ext)
            locked.append((h, *ext))
        if rng.random() < 0.25 and len(locked) > 1:
            lh, loff, llen = locked.pop(rng.randrange(len(locked) - 1))
            b.range_op("munlock", lh, loff, llen)
        if rng.random() < 0.3:
            h = rng.choice(heaps)
            if (ext := b.pick(h, (16 * KiB, 128 * KiB, 512 * KiB))) is not None:
                b.write(h, *ext)
        if r % 6 == 5:
            b.add("shrink")
    b.add("shrink")
    return b.scenario()


def allocator_churn(seed: int, scale: int = 1) -> Scenario:
    """jemalloc-like arenas: extents are allocated (written), purged with MADV_DONTNEED or
    MADV_FREE, and returned with munmap; arenas are misaligned, so their edges get 64K mTHPs."""
    b = Builder(f"allocator-churn-s{seed}", seed,
                "jemalloc-like arenas freeing parts with DONTNEED, FREE and munmap",
                {**THP, "sizes": {"64K": "madvise"}})
    rng = b.rng

    def new_arena() -> None:
        b.mmap(rng.choice((4, 8)) * MiB, "arena", misalign=rng.choice((0, 64, 256, 832)) * KiB)

    for _ in range(3):
        new_arena()
    extents = (16 * KiB, 64 * KiB, 128 * KiB, 512 * KiB, 1 * MiB)
    for r in range(30 * scale):
        a = b.any_region()
        x = rng.random()
        if x < 0.4:
            if (ext := b.pick(a, extents)) is not None:
                b.write(a, *ext)
        elif x < 0.65:
            if (ext := b.pick(a, extents)) is not None:
                b.range_op("madvise", a, *ext, advice="dontneed")
        elif x < 0.75:
            if (ext := b.pick(a, extents)) is not None:
                b.range_op("madvise", a, *ext, advice="free")
        elif x < 0.9:
            if (ext := b.pick(a, (64 * KiB, 256 * KiB, 1 * MiB))) is not None:
                b.range_op("munmap", a, *ext)
        elif len(b.regions) < 6:
            new_arena()
        if r % 8 == 7:
            b.add("shrink")
    b.add("shrink")
    return b.scenario()


def fork_snapshot(seed: int, scale: int = 1) -> Scenario:
    """Redis-like BGSAVE: fork, the child reads the heap (the dump) and exits while the parent
    keeps writing, protecting and expiring parts of it."""
    b = Builder(f"fork-snapshot-s{seed}", seed,
                "Redis-like BGSAVE: fork, parent keeps writing, child dumps and exits", THP)
    rng = b.rng
    heaps = [b.mmap(rng.choice((4, 8)) * MiB) for _ in range(rng.randint(1, 2))]
    small = (4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB)
    for n in range(6 * scale):
        child = b.fresh("snap")
        b.add("fork", child=child)
        for _ in range(rng.randint(3, 8)):
            h = rng.choice(heaps)
            if (ext := b.pick(h, small, writable=True)) is not None:
                b.write(h, *ext)
        if rng.random() < 0.5:
            h = rng.choice(heaps)
            if (ext := b.pick(h, (4 * KiB, 64 * KiB, 1 * MiB), writable=True)) is not None:
                b.range_op("mprotect", h, *ext, prot="r")
                b.range_op("mprotect", h, *ext, prot="rw")
        if rng.random() < 0.3:
            h = rng.choice(heaps)
            if (ext := b.pick(h, small)) is not None:
                b.range_op("madvise", h, *ext, advice="dontneed")
        for h in heaps:
            b.add("read", proc=child, region=h.name, offset=0, length=h.size)
        b.add("exit", proc=child)
        h = rng.choice(heaps)
        if (ext := b.pick(h, small, writable=True)) is not None:
            b.write(h, *ext)
        if n % 2:
            b.add("shrink")
    b.add("shrink")
    return b.scenario()


def pinned_buffers(seed: int, scale: int = 1) -> Scenario:
    """Long-term pinned I/O buffers (io_uring fixed buffers) inside THP-backed regions, a device
    writing into them at any moment, beside mprotect, munmap and mlock of neighbouring ranges."""
    b = Builder(f"pinned-buffers-s{seed}", seed,
                "io_uring buffers pinned in THP regions; DMA writes; neighbours cut", THP)
    rng = b.rng
    for _ in range(2):
        b.mmap(4 * MiB, "io")
    active: list[tuple[str, object, int, int]] = []
    protected: list[tuple[object, int, int]] = []
    forked = False
    for r in range(20 * scale):
        x = rng.random()
        if x < 0.22 and len(active) < 4:
            reg = b.any_region()
            ext = b.pick(reg, (64 * KiB, 128 * KiB, 256 * KiB, 512 * KiB), writable=True)
            if ext is not None:
                pid = b.fresh("buf")
                b.add("pin", region=reg.name, offset=ext[0], length=ext[1], id=pid)
                reg.pinned[reg.pages(*ext)] = True
                active.append((pid, reg, *ext))
        elif x < 0.47 and active:
            b.add("dma_write", id=rng.choice(active)[0], value=b.value())
        elif x < 0.77:
            _neighbour_cut(b, active, protected)
        elif x < 0.92:
            reg = b.any_region()
            if (ext := b.pick(reg, (16 * KiB, 128 * KiB, 512 * KiB), writable=True)) is not None:
                b.write(reg, *ext)
        elif active:
            pid, reg, off, length = active.pop(0)
            b.add("unpin", id=pid)
            reg.pinned[reg.pages(off, length)] = False
        if not forked and r >= 10 * scale and active:
            forked = True
            child = b.fresh("worker")
            b.add("fork", child=child)
            reg = b.any_region()
            if (ext := b.pick(reg, (16 * KiB, 64 * KiB), writable=True)) is not None:
                b.write(reg, *ext, proc=child)
            b.add("dma_write", id=active[-1][0], value=b.value())
            b.add("exit", proc=child)
        if r % 6 == 5:
            b.add("shrink")
    if active:
        b.add("dma_write", id=active[0][0], value=b.value())
    b.add("shrink")
    return b.scenario()


def _neighbour_cut(b: Builder, active: list, protected: list) -> None:
    """mprotect, munmap or mlock of a range right next to a pinned buffer (or anywhere when
    none is pinned), or undo an earlier mprotect."""
    rng = b.rng
    if protected and rng.random() < 0.25:
        reg, off, length = protected.pop(rng.randrange(len(protected)))
        if reg.mapped[reg.pages(off, length)].all():
            b.range_op("mprotect", reg, off, length, prot="rw")
        return
    length = rng.choice((4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB))
    if active:
        _, reg, boff, blen = rng.choice(active)
        off = boff + blen if rng.random() < 0.5 else boff - length
    else:
        reg = b.any_region()
        off = rng.randrange(0, reg.size - length + 1, 4096)
    if off < 0 or off + length > reg.size:
        return
    pages = reg.pages(off, length)
    if not reg.mapped[pages].all() or reg.pinned[pages].any():
        return
    op = rng.choice(("mprotect", "munmap", "mlock"))
    if op == "mprotect":
        b.range_op("mprotect", reg, off, length, prot="r")
        protected.append((reg, off, length))
    else:
        b.range_op(op, reg, off, length)


def guard_pages(seed: int, scale: int = 1) -> Scenario:
    """JVM-like heaps with guard pages: small ranges inside THP-backed heaps are mprotected
    PROT_NONE (stack and card guards), some are opened again; the heap keeps being written and
    parts are uncommitted with MADV_DONTNEED."""
    b = Builder(f"guard-pages-s{seed}", seed, "JVM-like guard pages mprotected inside heaps", THP)
    rng = b.rng
    heaps = [b.mmap(8 * MiB) for _ in range(rng.randint(2, 3))]
    guards: list[tuple] = []
    for r in range(24 * scale):
        h = rng.choice(heaps)
        x = rng.random()
        if x < 0.4:
            if (ext := b.pick(h, (4 * KiB, 8 * KiB, 16 * KiB, 64 * KiB), writable=True)):
                b.range_op("mprotect", h, *ext, prot="none")
                guards.append((h, *ext))
        elif x < 0.55 and guards:
            g, off, length = guards.pop(rng.randrange(len(guards)))
            b.range_op("mprotect", g, off, length, prot="rw")
        elif x < 0.9:
            if (ext := b.pick(h, (16 * KiB, 128 * KiB, 512 * KiB), writable=True)):
                b.write(h, *ext)
        elif (ext := b.pick(h, (64 * KiB, 512 * KiB, 2 * MiB), writable=True)):
            b.range_op("madvise", h, *ext, advice="dontneed")
        if r % 6 == 5:
            b.add("shrink")
    b.add("shrink")
    return b.scenario()
