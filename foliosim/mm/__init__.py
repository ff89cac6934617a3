"""The model: one module per kernel file whose behaviour it follows (mm/memory.c -> memory.py, ...).

The model knows nothing of scenario files, the CLI or the live runner; those depend on it.
"""

from foliosim.mm.system import Process, System

__all__ = ["Process", "System"]
