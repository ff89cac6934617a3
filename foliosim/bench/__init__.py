"""Benchmarks of the simulator (issue 6): the corpus beside the live kernel
(:mod:`~foliosim.bench.corpus`), the seeded churn workload at up to 1 TiB
(:mod:`~foliosim.bench.churn`), whole-folio fault+unmap throughput
(:mod:`~foliosim.bench.faultunmap`), the hot spots (:mod:`~foliosim.bench.profile`) and the
figures (:mod:`~foliosim.bench.results`). The command is ``foliosim bench``."""
