"""How many examples each property test draws.

Every ``@settings`` names its full count; the fast suite (the README's ``pytest -q``) draws a
quarter of it (at least 10), and ``APP_TEST_EXAMPLES=full`` draws all of it: ``.ci/run`` runs
the property tests so, after the fast suite. Hypothesis keeps the failing examples it finds in
its database, so a short run still replays them first.
"""

from __future__ import annotations

import os

FULL = os.environ.get("APP_TEST_EXAMPLES") == "full"


def examples(full: int) -> int:
    """The number of examples for a property test whose full count is ``full``."""
    return full if FULL else max(10, full // 4)
