"""The data-integrity oracle: what every process must read, checked against the model after
every step (rule 3 of the 2023 thread made observable)."""

from foliosim.oracle.memory import ExpectedMemory
from foliosim.oracle.oracle import NO_POLICY_ACTION, Corruption, Oracle
from foliosim.oracle.reader import read_slot

__all__ = ["NO_POLICY_ACTION", "Corruption", "ExpectedMemory", "Oracle", "read_slot"]
