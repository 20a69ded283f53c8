"""Progress bars with the time left for the long training commands, off with `--quiet` and in CI.

A CI log (or a recipe lane's log file) is not a terminal: tqdm's carriage-return redraws would fill it
with thousands of partial lines, so `CI` in the environment switches bars off as `--quiet` does.
"""
from __future__ import annotations

import os


def bars_enabled(quiet: bool = False) -> bool:
    return not quiet and os.environ.get("CI", "").lower() not in ("1", "true", "yes")


def progress(iterable=None, *, desc: str, quiet: bool = False, unit: str = "step", **kw):
    """tqdm over `iterable` (or a manual bar with total=...); its right side shows elapsed<remaining."""
    from tqdm import tqdm

    off = kw.pop("disable", False) or not bars_enabled(quiet)
    return tqdm(iterable, desc=desc, unit=unit, disable=off, dynamic_ncols=True, **kw)
