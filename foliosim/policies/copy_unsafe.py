"""``copy-unsafe``: the negative control. As ``split-or-copy``, but it replaces the pages
regardless of PageAnonExclusive and pins, so a device writing through a pin lands in a page the
process no longer maps (the thread's rule 3: "Replacing an exclusive anon page that maybe pinned
will result in memory corruptions"). The oracle must catch it."""

from __future__ import annotations

from foliosim.policies.split_or_copy import SplitOrCopy

__all__ = ["CopyUnsafe"]


class CopyUnsafe(SplitOrCopy):
    """Split a cut folio; if that fails, replace its pages with copies, pinned or not."""

    name = "copy-unsafe"
    summary = "negative control: replace a cut folio's pages with copies even if pinned"
    respect_exclusive = False
