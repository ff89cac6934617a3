"""Hypothesis profiles for the property tests.

- ``ci`` (the default): a bounded number of examples so that ``tests/test_properties.py`` runs in
  well under a minute on a 2-core machine; derandomized, so CI is reproducible.
- ``long``: many more and longer random runs, for hunting model bugs by hand:
  ``python -m pytest tests/test_properties.py --hypothesis-profile=long``.
- ``dev``: like ``ci`` but random (a new seed each run).

The hypothesis pytest plugin loads the profile named by ``--hypothesis-profile`` after this file,
so the option overrides the default chosen here (``HYPOTHESIS_PROFILE`` in the environment too).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much,
                              HealthCheck.data_too_large],
}

settings.register_profile("ci", max_examples=120, stateful_step_count=40, derandomize=True,
                          print_blob=True, **_COMMON)
settings.register_profile("dev", max_examples=25, stateful_step_count=30, print_blob=True,
                          **_COMMON)
settings.register_profile("long", max_examples=1000, stateful_step_count=80, print_blob=True,
                          **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
