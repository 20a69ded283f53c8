"""The errors training code raises, and the one place that turns them into a CLI exit.

Library functions (the recipe and every command's function included) raise; they never exit, so
the recipe, report and tests can call them in-process and a failure stays an exception with its
message. Only the command-line entry points (`training.cli.main`, `training.recipe.main`) go
through `run_reporting_errors`, which prints one `PROG: error: ...` line and returns exit code 2,
the code argparse uses for bad options (README, "Command-line tools").
"""
from __future__ import annotations

import sys


class TrainingError(ValueError):
    """A training run cannot go on: bad input data, a model dir of the wrong kind, a failed stage."""


class SettingsError(TrainingError):
    """Options that contradict each other or are out of range, found before any work starts."""


def run_reporting_errors(prog: str, fn, *args, **kwargs) -> int:
    """fn(*args, **kwargs) as a CLI step: 0 (or fn's int result) on success, 2 after a `PROG: error:` line.

    Only expected errors are reported this way (TrainingError and the model layer's EarlError); any
    other exception is a bug and keeps its traceback. EARL_DEBUG=1 prints the traceback of an expected
    error too, before the same line."""
    import traceback

    from earl_ros.model.errors import EarlError, debug_tracebacks

    try:
        rc = fn(*args, **kwargs)
    except (TrainingError, EarlError) as e:
        if debug_tracebacks():
            traceback.print_exc()
        print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        return 2
    return rc if isinstance(rc, int) else 0
