"""The alternatives of the 2023 thread as policies for the model's hooks, by name.

Example::

    from foliosim.mm import System
    from foliosim.policies import make_policy

    system = System(policy=make_policy("split-on-cut", transient_p=0.1, seed=1))
"""

from __future__ import annotations

from foliosim.policies.base import Action, Policy
from foliosim.policies.copy_unsafe import CopyUnsafe
from foliosim.policies.deferred_rmap_check import DeferredRmapCheck
from foliosim.policies.linux_6_11 import Linux611
from foliosim.policies.linux_6_18 import Linux618, Linux618Policy
from foliosim.policies.mlock_split import MlockSplit
from foliosim.policies.split_on_cut import SplitOnCut
from foliosim.policies.split_or_copy import SplitOrCopy

__all__ = [
    "POLICIES", "Action", "CopyUnsafe", "DeferredRmapCheck", "Linux611", "Linux618",
    "Linux618Policy", "MlockSplit", "Policy", "SplitOnCut", "SplitOrCopy", "make_policy",
]

POLICIES: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (Linux618Policy, SplitOnCut, SplitOrCopy, CopyUnsafe, DeferredRmapCheck,
                MlockSplit, Linux611)
}
"""Every policy by its name, in the order reports list them."""


def make_policy(name: str, transient_p: float = 0.0, seed: int = 0) -> Policy:
    """A fresh policy object.

    :param name: a key of :data:`POLICIES`
    :param transient_p: probability that a split attempt meets a speculative reference
    :param seed: seed of those failures
    :raises KeyError: for an unknown name (the message lists the known ones)
    """
    try:
        cls = POLICIES[name]
    except KeyError:
        raise KeyError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}") from None
    return cls(transient_p=transient_p, seed=seed)
