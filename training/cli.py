"""`python -m training <command>`: synth | vision-pretrain | sft-coarse | descriptors | segmenter-ft | video-memory |
segmenter-eval |
sft-response | grpo | eval | export | recipe | plot.

Every command takes `--config FILE` (YAML of option: value, keys spelled like the options); explicit
flags override the file. See docs/training.md for the full recipe.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from training.commands import COMMANDS as _TABLE
from training.common import env_offline
from training.errors import run_reporting_errors
from training.settings import build_parser, from_namespace, parse_namespace

COMMANDS = (*_TABLE, "recipe", "plot")


def parser_for(cmd: str) -> argparse.ArgumentParser:
    """`python -m training CMD`'s parser: --config plus one option per field of the command's settings."""
    c = _TABLE[cmd]
    return build_parser(c.settings, prog=f"python -m training {cmd}", description=c.description)


PARSERS = {cmd: (lambda cmd=cmd: parser_for(cmd)) for cmd in _TABLE}


def parse_settings(cmd: str, argv: Sequence[str] | None):
    """The settings object `python -m training CMD ARGV...` runs with (`--config` applied; missing
    required options are an argparse error, exit code 2)."""
    parser = parser_for(cmd)
    settings = from_namespace(_TABLE[cmd].settings, parse_namespace(parser, argv))
    missing = _TABLE[cmd].missing(settings)
    if missing:
        parser.error(f"missing {', '.join(missing)} (on the command line or in --config)")
    return settings


def _run(cmd: str, argv: list[str]) -> int:
    _TABLE[cmd].run(parse_settings(cmd, argv))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\ncommands: " + " | ".join(COMMANDS) + "\n`python -m training COMMAND --help` for the options.")
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"python -m training: error: unknown command {argv[0]!r} (commands: {', '.join(COMMANDS)})",
              file=sys.stderr)
        return 2
    env_offline()
    cmd, rest = argv[0], argv[1:]
    if cmd == "recipe":
        from training.recipe import main as recipe_main

        return recipe_main(rest)
    if cmd == "plot":
        from training.plot import main as plot_main

        return plot_main(rest)
    return run_reporting_errors(f"python -m training {cmd}", _run, cmd, rest)


if __name__ == "__main__":
    sys.exit(main())
