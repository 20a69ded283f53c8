"""Every console script keeps the error contract (README, "Command-line tools"):
bad input -> exactly one `TOOL: error: ...` line on stderr, no traceback, exit 2;
EARL_DEBUG=1 -> the same line after the traceback.

Each case is a real process of the installed tool (or its module) with input a user gets wrong.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODULES = {"earl": "earl_ros.ros.node", "earl-infer": "earl_ros.cli.infer", "earl-export": "earl_ros.cli.export",
           "earl-launch": "earl_ros.cli.launch", "earl-query": "earl_ros.cli.query",
           "earl-replay": "earl_ros.cli.replay", "earl-demo": "earl_ros.cli.demo", "training": "training"}
MISSING = "/nonexistent/earl-model"


def _cmd(tool: str) -> list[str]:
    exe = BIN / tool
    return [str(exe)] if exe.exists() else [sys.executable, "-m", MODULES[tool]]


def _image(tmp_path: Path) -> str:
    from PIL import Image

    path = tmp_path / "frame.png"
    Image.new("RGB", (64, 48), (120, 90, 60)).save(path)
    return str(path)


# (tool, args, words the error line must contain); {img} / {tmp} are filled in per test
CASES = [
    ("earl", ["--ros-args", "-p", f"model_dir:={MISSING}"], "does not exist"),
    ("earl", ["--ros-args", "-p", "stale_policy:=sometimes"], "stale_policy"),
    ("earl-infer", ["--model", MISSING, "--image", "{img}", "--query", "which hand?"], "does not exist"),
    ("earl-infer", ["--model", str(REPO / "models" / "earl-tiny-synth"), "--image", "{tmp}/none.png",
                    "--query", "which hand?"], "none.png"),
    ("earl-infer", ["--model", MISSING, "--image", "{img}", "--query", "which hand?", "--bogus-flag"], "--bogus-flag"),
    ("earl-export", ["--model", MISSING, "--out", "{tmp}/x"], "does not exist"),
    ("earl-export", ["--model", MISSING, "--out", "{tmp}/x", "--boxes", "0"], "--boxes"),
    ("earl-launch", ["--params", "{tmp}/missing.yaml", "--print"], "missing.yaml"),
    ("earl-launch", ["--namespace"], "--namespace"),
    ("earl-query", ["   "], "empty"),
    ("earl-query", ["which hand?", "--timeout", "soon"], "--timeout"),
    ("earl-replay", ["{tmp}/no-such-clip"], "does not exist"),
    ("earl-replay", ["{tmp}", "--rate", "0"], "--rate"),
    ("earl-demo", ["--model", MISSING, "--out", "{tmp}/demo"], MISSING),
    ("earl-demo", ["--questions-per-scene", "many"], "many"),
    ("training", ["sft-coarse", "--model", MISSING, "--data", "{tmp}", "--out", "{tmp}/run"], "earl-model"),
    ("training", ["grpo", "--steps", "several"], "several"),
    ("training", ["no-such-command"], "no-such-command"),
]


def _run(tool, args, tmp_path, debug=False):
    filled = [a.format(img=_image(tmp_path), tmp=tmp_path) for a in args]
    env = dict(os.environ, EARL_DEBUG="1" if debug else "0", PYTHONPATH=str(REPO))
    return subprocess.run(_cmd(tool) + filled, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)


@pytest.mark.parametrize("tool,args,needle", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_error_line_and_exit_2(tool, args, needle, tmp_path):
    r = _run(tool, args, tmp_path)
    prog = f"python -m training {args[0]}".removesuffix(" no-such-command") if tool == "training" else tool
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ": error: " in ln]
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert len(errors) == 1 and errors[0].split(": error: ")[0].endswith(prog), r.stderr[-2000:]
    assert needle in errors[0], errors[0]
    assert "Traceback" not in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize("tool", sorted({c[0] for c in CASES if c[0] not in ("earl-query",)}))
def test_earl_debug_adds_the_traceback_before_the_same_line(tool, tmp_path):
    """The first case of each tool that fails past argument parsing (argparse errors have no traceback)."""
    tool_, args, needle = next(c for c in CASES if c[0] == tool)
    r = _run(tool_, args, tmp_path, debug=True)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" in r.stderr and needle in r.stderr.strip().splitlines()[-1], r.stderr[-2000:]
