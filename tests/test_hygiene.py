"""Project-wide rules that no single module test would catch."""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE_DIRS = ["earl_ros", "training", "bench"]
# Hub ids look like "Org/model-name"; the code path must load only local directories.
HUB_ID = re.compile(r"""["'](Qwen|facebook|meta-llama|google|openai|microsoft)/[\w.\-]+["']""")


def _python_files():
    for d in CODE_DIRS:
        yield from (REPO / d).rglob("*.py")


def test_no_module_imports_torchvision():
    offenders = []
    for f in _python_files():
        tree = ast.parse(f.read_text(), filename=str(f))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "torchvision" or n.startswith("torchvision.") for n in names):
                offenders.append(str(f.relative_to(REPO)))
    assert offenders == []


def test_no_model_hub_ids_in_code():
    offenders = [str(f.relative_to(REPO)) for f in _python_files() if HUB_ID.search(f.read_text())]
    assert offenders == []


def test_model_layer_never_imports_ros_or_training():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    code = (
        "import sys, importlib, pkgutil, earl_ros.model as m\n"
        "for i in pkgutil.iter_modules(m.__path__):\n"
        "    importlib.import_module('earl_ros.model.' + i.name)\n"
        "bad = [k for k in sys.modules if k.split('.')[0] in ('rclpy', 'training', 'torchvision')"
        " or k.startswith('earl_ros.ros')]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in readme.split("\n## ")[0], "README's top must show the test command"
    assert re.search(r"^make test$", ci, re.M)


def test_ci_and_makefile_confine_dds_to_localhost():
    for f in (REPO / ".ci" / "run", REPO / "Makefile"):
        text = f.read_text()
        assert "ROS_AUTOMATIC_DISCOVERY_RANGE" in text and "LOCALHOST" in text, f
        assert "ROS_DOMAIN_ID" in text, f
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
