#!/usr/bin/env bash
# Creates .venv (python3.11), installs the pinned requirements, the project (editable) and the
# earl_interfaces messages into the venv. Idempotent: every step is skipped when its inputs are
# unchanged, so a second run takes a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=${PYTHON:-python3.11}
STAMPS=$VENV/.earl-stamps
say() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  command -v "$PY" >/dev/null || { echo "[setup] error: $PY not found; install Python 3.11 or set PYTHON=" >&2; exit 1; }
  say "creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
mkdir -p "$STAMPS"
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
hash_of() { { cat "$@" 2>/dev/null || true; } | sha256sum | cut -c1-16; }

REQ_HASH=$(hash_of requirements.txt setup.py setup.cfg)
if ! stamp_ok pip "$REQ_HASH"; then
  say "installing pinned requirements (first run: about a minute)"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v 'is ignored' || true
  "$VENV/bin/python" -m pip install -q -r requirements.txt 2>&1 | grep -v 'is ignored' || true
  "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v 'is ignored' || true
  "$VENV/bin/python" -c "import torch, transformers, rclpy, onnxruntime" \
    || { echo "[setup] error: requirements did not install" >&2; exit 1; }
  # The ROS wheels' CMake exports name the wheel builder's Python paths; point them at ours.
  "$VENV/bin/python" scripts/fix_ros_cmake_paths.py "$VENV"
  echo "$REQ_HASH" > "$STAMPS/pip"
fi

IFACE_HASH=$(hash_of earl_interfaces/CMakeLists.txt earl_interfaces/package.xml earl_interfaces/msg/* earl_interfaces/srv/* earl_interfaces/action/*)
if [ -f earl_interfaces/CMakeLists.txt ] && ! stamp_ok iface "$IFACE_HASH"; then
  say "building earl_interfaces into the venv (cmake, about 10 s)"
  BUILD=$ROOT/build/earl_interfaces
  rm -rf "$BUILD"; mkdir -p "$ROOT/build"
  export AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV
  cmake -S earl_interfaces -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$VENV" \
        -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF >"$BUILD.log" 2>&1 \
    && cmake --build "$BUILD" -j2 >>"$BUILD.log" 2>&1 \
    && cmake --install "$BUILD" >>"$BUILD.log" 2>&1 \
    || { echo "[setup] error: earl_interfaces build failed; see $BUILD.log" >&2; tail -20 "$BUILD.log" >&2; exit 1; }
  echo "$IFACE_HASH" > "$STAMPS/iface"
fi

# WordNet for METEOR comes from Debian (no download at run time).
if [ ! -f /usr/share/wordnet/data.noun ] && [ ! -f "$STAMPS/wordnet-tried" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's wordnet-base (METEOR)"
    (apt-get install -y -q wordnet-base >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q wordnet-base >/dev/null 2>&1; }) \
      || say "warning: wordnet-base could not be installed; METEOR tests will skip"
  else
    say "warning: /usr/share/wordnet missing; run 'sudo apt-get install wordnet-base' for METEOR"
  fi
  touch "$STAMPS/wordnet-tried"
fi
say "ready: $VENV"
