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
