"""Test-wide environment: DDS never leaves the machine, nothing reaches a model hub.

These are set here (not only by the Makefile/.ci/run) so `pytest` run by hand is just as safe.
"""
import os
import random

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
venv = REPO / ".venv"
if venv.is_dir():
    os.environ.setdefault("AMENT_PREFIX_PATH", str(venv))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A complete tiny model directory (SAM segmenter), built once per session, offline."""
    from earl_ros.model.tiny import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("earl-tiny-sam"), seed=0, segmenter="sam")


@pytest.fixture(scope="session")
def tiny_model_dir_sam2(tmp_path_factory):
    """Same, with a SAM 2 segmenter."""
    from earl_ros.model.tiny import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("earl-tiny-sam2"), seed=0, segmenter="sam2")


# ---- a run whose ROS tests all skipped has not tested the node: it fails instead of passing
_ros_outcomes: dict[str, int] = {"passed": 0, "skipped": 0, "failed": 0}
_skip_reasons: list[str] = []


def _is_ros(nodeid: str) -> bool:
    return nodeid.replace("\\", "/").startswith("tests/ros/")


def pytest_collectreport(report):
    if _is_ros(report.nodeid) and report.skipped:  # a module-level skip (e.g. messages not built)
        _ros_outcomes["skipped"] += 1
        _skip_reasons.append(str(report.longrepr)[-300:])


def pytest_runtest_logreport(report):
    if not _is_ros(report.nodeid):
        return
    if report.when == "call" or report.outcome != "passed":
        _ros_outcomes[report.outcome] = _ros_outcomes.get(report.outcome, 0) + 1
        if report.skipped:
            _skip_reasons.append(str(report.longrepr)[-300:])


def _all_ros_skipped() -> str | None:
    o = _ros_outcomes
    if o["skipped"] and not o["passed"] and not o["failed"] and os.environ.get("EARL_ALLOW_ROS_SKIP") != "1":
        return (f"every ROS test skipped ({o['skipped']}): the node was not tested. First reason: "
                f"{_skip_reasons[0] if _skip_reasons else '?'} -- run `make setup`, or set EARL_ALLOW_ROS_SKIP=1")
    return None


def pytest_sessionfinish(session, exitstatus):
    """EARL_ALLOW_ROS_SKIP=1 accepts such a run (a machine without ROS, on purpose)."""
    if _all_ros_skipped():
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    msg = _all_ros_skipped()
    if msg:
        terminalreporter.write_line("error: " + msg, red=True)
