"""Project-wide rules that no single module test would catch."""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("package", ["earl_ros.model", "earl_ros.live"])
def test_model_and_live_layers_never_import_ros_or_training(package):
    """ARCHITECTURE.md: cli -> ros -> live -> model; the two lower floors run without ROS."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    code = (
        f"import sys, importlib, pkgutil, {package} as m\n"
        "for i in pkgutil.iter_modules(m.__path__):\n"
        f"    importlib.import_module('{package}.' + i.name)\n"
        "bad = [k for k in sys.modules if k.split('.')[0] in ('rclpy', 'training', 'torchvision')"
        " or k.startswith('earl_ros.ros')]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def _imports_of(path: Path, module: str) -> set[str]:
    """Project modules `path` imports, at any depth of the file (lazy imports make circles too)."""
    pkg = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def test_no_import_circles():
    """A circle between modules means neither can be understood (or changed) alone."""
    modules = {}
    for f in _python_files():
        rel = f.relative_to(REPO)
        if rel.parts[0] not in ("earl_ros", "training"):
            continue
        name = ".".join(rel.with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = f
    graph = {m: {i for i in _imports_of(f, m) if i in modules and i != m} for m, f in modules.items()}
    cycles = []
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1 and not n.startswith(m + "."):
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert cycles == []


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


def test_nothing_is_saved_or_loaded_with_pickle():
    """Checkpoints travel between machines; unpickling one runs whatever code it names."""
    pattern = re.compile(r"^\s*(import pickle|from pickle|import dill)|weights_only\s*=\s*False|\btorch\.load\(|"
                         r"\bnp\.load\([^)]*allow_pickle\s*=\s*True", re.M)
    offenders = [f"{f.relative_to(REPO)}:{m.group(0).strip()}" for f in _python_files()
                 for m in pattern.finditer(f.read_text())]
    assert offenders == []
