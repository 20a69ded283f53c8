"""The error contract every console script keeps (README, "Command-line tools").

Bad input prints one line `PROG: error: MESSAGE` on stderr and exits 2; with EARL_DEBUG=1 the
traceback comes first. A robot's launch scripts and CI logs read that one line; a stack trace is
for the person debugging, on request.
"""
from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable

EXIT_BAD_INPUT = 2


class CliError(Exception):
    """Bad input a tool found itself (a missing file, a flag out of range); the message is the line."""


class Parser(argparse.ArgumentParser):
    """argparse, whose own errors also obey the one-line contract (no usage block before them)."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def report(prog: str, error: BaseException) -> int:
    """Print the contract's line for `error` (and its traceback under EARL_DEBUG=1); returns 2."""
    from earl_ros.model.errors import EarlError, debug_tracebacks

    if debug_tracebacks():
        traceback.print_exception(error)
    known = isinstance(error, (CliError, EarlError))
    print(f"{prog}: error: {error if known else f'{type(error).__name__}: {error}'}", file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT


def run_reporting(prog: str, body: Callable[..., int], *args) -> int:
    """body(*args), with any exception turned into the contract's line and exit 2."""
    try:
        return body(*args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - every failure is one clear line
        return report(prog, e)
