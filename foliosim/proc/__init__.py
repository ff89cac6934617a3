"""The kernel's views computed from the model: smaps, status, pagemap + kpageflags +
kpagecount, and the THP counters (follows fs/proc/task_mmu.c and fs/proc/page.c)."""
