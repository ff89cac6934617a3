"""Differential fuzzing: random valid scenarios (:mod:`.generate`), run on the simulator and
the live kernel and compared (:mod:`.runner`), disagreements shrunk to their fewest steps
(:mod:`.shrink`)."""
