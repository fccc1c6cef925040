"""Run a benchmark process the way the `chiquito` command runs: with its glibc malloc thresholds."""

import os
import sys


def as_chiquito_runs():
    """Re-execute this script once with the environment `chiquito` sets for itself (see cli.run), so a
    benchmark measures the code as users run it, on both sides of the comparison."""
    from chiquito_or_not.cli import _MALLOC_ENV

    if sys.platform.startswith("linux") and not all(k in os.environ for k in _MALLOC_ENV):
        os.environ.update({k: os.environ.get(k, v) for k, v in _MALLOC_ENV.items()})
        os.execv(sys.executable, [sys.executable, *sys.argv])
