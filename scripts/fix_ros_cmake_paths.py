"""Rewrite the wheel builder's Python paths baked into the ROS wheels' CMake exports.

The PyPI ROS 2 wheels were built under /opt/python/cp3XX-*, and their exported CMake files name
that interpreter's include dir and numpy's include dir; building an interface package against
them fails until those paths point at this venv's interpreter. Idempotent.
"""
import re
import sys
import sysconfig
from pathlib import Path

import numpy


def main(prefix: str) -> int:
    py_inc = sysconfig.get_paths()["include"]
    np_inc = numpy.get_include()
    # e.g. /opt/python/cp311-cp311/include/python3.11 and .../site-packages/numpy/_core/include
    np_pat = re.compile(r"/opt/python/cp3\d+-cp3\d+t?/lib/python3\.\d+t?/site-packages/numpy/(_core|core)/include")
    py_pat = re.compile(r"/opt/python/cp3\d+-cp3\d+t?/include/python3\.\d+t?")
    changed = 0
    for f in Path(prefix, "share").rglob("*.cmake"):
        text = f.read_text(errors="replace")
        new = py_pat.sub(py_inc, np_pat.sub(np_inc, text))
        if new != text:
            f.write_text(new)
            changed += 1
    print(f"[setup] rewrote builder paths in {changed} CMake files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
