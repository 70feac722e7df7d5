"""Fuzz suite settings (hypothesis, imported by every fuzz module). CI runs the "ci" profile: a fixed number of examples, derandomized,
so a failure reproduces run after run. ``EDGEDEPTH_FUZZ=long`` explores afresh with 20x the examples
(``EDGEDEPTH_FUZZ_EXAMPLES=N`` to choose), for a developer's machine or a nightly job."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("fuzz-ci", deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("fuzz-long", deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
LONG = os.environ.get("EDGEDEPTH_FUZZ") == "long"


def examples(ci: int) -> int:
    """Examples for a property: ``ci`` in CI, 20x (or EDGEDEPTH_FUZZ_EXAMPLES) in a long run."""
    if not LONG:
        return ci
    return int(os.environ.get("EDGEDEPTH_FUZZ_EXAMPLES", 20 * ci))


def fuzz(ci: int):
    """The settings decorator of a fuzz property with ``ci`` examples in CI."""
    return settings(settings.get_profile("fuzz-long" if LONG else "fuzz-ci"), max_examples=examples(ci))
