"""``linux-6.18``: the kernel as it is. The model's default hooks
(:class:`foliosim.mm.policy.Linux618`, re-exported here) plus the experiments' fault injection."""

from __future__ import annotations

from foliosim.mm.policy import Linux618
from foliosim.policies.base import Policy

__all__ = ["Linux618", "Linux618Policy"]


class Linux618Policy(Policy):
    """Linux 6.18: PMD split only when a VMA operation cuts a folio; the deferred queue with
    partially_mapped and the underused check; mlock only of folios wholly inside the range."""

    name = "linux-6.18"
    summary = "the kernel as it is: PMD split only, deferred queue, mlock of whole folios"
