"""Shrinking a failing scenario to the fewest steps that still fail (delta debugging).

The shrinker knows nothing of targets: it is given a predicate ``fails(doc)`` and tries smaller
variants of the scenario, keeping one only when the loader accepts it (a variant that lost the
``mmap`` of a region it still uses, or the ``fork`` of a process, is never run) and ``fails``
still holds. Steps go first (Zeller's ddmin over the step list, which ends 1-minimal: no single
step can be dropped), then optional arguments of the steps that are left (so that scenarios
with one cause tend to shrink to the same file), then every setting that differs from the
defaults.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from foliosim.fuzz.generate import load, scenario_yaml
from foliosim.scenario import ScenarioError

__all__ = ["Shrinker", "shrink"]

Doc = dict[str, Any]
#: arguments a step can do without (offset 0, the rest of the region, the default value, ...)
OPTIONAL_ARGS = ("offset", "length", "misalign", "value", "prot", "onfault", "to_offset",
                 "new_length", "future", "current")
PMD_SIZE = 2 << 20


class Shrinker:
    """Delta debugging of one scenario; :attr:`tests` counts the runs of ``fails``.

    :param fails: runs a valid scenario and says whether it still shows the failure
    :param max_tests: stop trying new variants after this many runs of ``fails``
    """

    def __init__(self, fails: Callable[[Doc], bool], *, max_tests: int = 200) -> None:
        self.fails = fails
        self.max_tests = max_tests
        self.tests = 0
        self._seen: dict[str, bool] = {}

    def still_fails(self, doc: Doc) -> bool:
        """Whether a variant is valid and fails (each distinct variant is run once)."""
        key = scenario_yaml(doc)
        if key not in self._seen:
            try:
                load(doc)
            except ScenarioError:
                self._seen[key] = False
            else:
                if self.tests >= self.max_tests:
                    return False
                self.tests += 1
                self._seen[key] = bool(self.fails(doc))
        return self._seen[key]

    def shrink(self, doc: Doc) -> Doc:
        """The smallest failing variant found: fewest steps, then fewest non-default settings.
        Default settings are tried first as well, since they make every later run cheaper
        (no THP mode to switch on the live kernel)."""
        doc = copy.deepcopy(doc)
        if doc.get("settings"):
            plain = {**doc, "settings": {}}
            if self.still_fails(plain):
                doc = plain
        doc = self.shrink_steps(doc)
        doc = self.shrink_arguments(doc)
        return self.shrink_settings(doc)

    def shrink_steps(self, doc: Doc) -> Doc:
        """ddmin over the steps: drop halves, quarters, ... down to single steps."""
        steps = list(doc["steps"])

        def with_steps(kept: list[Doc]) -> Doc:
            return {**doc, "steps": kept}

        n = 2
        while len(steps) >= 2:
            size = -(-len(steps) // n)
            chunks = [steps[i:i + size] for i in range(0, len(steps), size)]
            for k, chunk in enumerate(chunks):
                if len(chunks) > 2 and self.still_fails(with_steps(chunk)):
                    steps, n = chunk, 2
                    break
                rest = [s for j, c in enumerate(chunks) if j != k for s in c]
                if self.still_fails(with_steps(rest)):
                    steps, n = rest, max(n - 1, 2)
                    break
            else:
                if n >= len(steps):
                    break
                n = min(len(steps), 2 * n)
        if len(steps) == 1 and self.still_fails(with_steps([])):
            steps = []
        return with_steps(steps)

    def shrink_arguments(self, doc: Doc) -> Doc:
        """Drop each optional argument of each step, and bring regions down to 2 MiB, while
        the failure stays."""
        steps = list(doc["steps"])

        def attempt(i: int, step: Doc) -> None:
            trial = steps[:i] + [step] + steps[i + 1:]
            if self.still_fails({**doc, "steps": trial}):
                steps[i] = step

        for i in range(len(steps)):
            for key in OPTIONAL_ARGS:
                if key in steps[i]:
                    attempt(i, {k: v for k, v in steps[i].items() if k != key})
        for i in range(len(steps)):  # after the ranges inside the regions have shrunk
            if steps[i].get("size", 0) > PMD_SIZE:
                attempt(i, {**steps[i], "size": PMD_SIZE})
        return {**doc, "steps": steps}

    def shrink_settings(self, doc: Doc) -> Doc:
        """Reset each non-default setting (each mTHP size on its own) while the failure stays."""
        settings = copy.deepcopy(doc.get("settings") or {})
        for key in list(settings):
            if key == "sizes":
                for name in list(settings["sizes"]):
                    sizes = {k: v for k, v in settings["sizes"].items() if k != name}
                    trial = {**settings, "sizes": sizes} if sizes else {
                        k: v for k, v in settings.items() if k != "sizes"}
                    if self.still_fails({**doc, "settings": trial}):
                        settings = trial
                continue
            trial = {k: v for k, v in settings.items() if k != key}
            if self.still_fails({**doc, "settings": trial}):
                settings = trial
        return {**doc, "settings": settings}


def shrink(doc: Doc, fails: Callable[[Doc], bool], *, max_tests: int = 200) -> Doc:
    """The smallest variant of ``doc`` for which ``fails`` still holds (see :class:`Shrinker`);
    ``doc`` itself must fail."""
    return Shrinker(fails, max_tests=max_tests).shrink(doc)
