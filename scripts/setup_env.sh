#!/usr/bin/env bash
# Create (or reuse) the local virtual environment .venv with everything CloudyPoints needs on CPU:
# PyTorch 2.13.0 CPU, ONNX Runtime, OpenCV headless, rosbags, MLflow and ROS 2 (rclpy, Fast DDS)
# from PyPI, and this checkout installed in editable mode, which puts the `cloudypoints` and
# `depth_node` commands in .venv/bin. Idempotent and cheap on reruns: it reinstalls the
# requirements only when requirements.txt changed, and the checkout only when setup.py/setup.cfg
# changed or the venv's install points elsewhere.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CLOUDYPOINTS_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.requirements.sha256"
WANT="$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1)"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[setup] creating virtual environment $VENV" >&2
  "$PY" -m venv "$VENV"
fi
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
  echo "[setup] installing requirements (first run takes a few minutes)" >&2
  "$VENV/bin/python" -m pip install --quiet -r "$ROOT/requirements.txt" >&2
  echo "$WANT" > "$STAMP"
else
  echo "[setup] environment $VENV is up to date" >&2
fi

# The commands: this checkout in editable mode, without dependencies (the requirements above are
# them). A venv outside the checkout (CLOUDYPOINTS_VENV) may be shared by several checkouts: it is
# left alone unless CLOUDYPOINTS_EDITABLE=1, so checkouts do not re-point one install in turn;
# scripts/env.sh puts this checkout first on PYTHONPATH, so its commands run this checkout's code.
EDITABLE_STAMP="$VENV/.cloudypoints_editable"
EDITABLE_WANT="$ROOT $(cat "$ROOT/setup.py" "$ROOT/setup.cfg" | sha256sum | cut -d' ' -f1)"
if [[ "$VENV" != "$ROOT/.venv" && "${CLOUDYPOINTS_EDITABLE:-0}" != "1" ]]; then
  echo "[setup] $VENV is not this checkout's .venv: commands not (re)installed" \
    "(CLOUDYPOINTS_EDITABLE=1 installs them; python -m cloudypoints_core.cli always works)" >&2
elif [[ ! -f "$EDITABLE_STAMP" || "$(cat "$EDITABLE_STAMP")" != "$EDITABLE_WANT" \
        || ! -x "$VENV/bin/cloudypoints" ]]; then
  echo "[setup] installing the cloudypoints and depth_node commands (editable: $ROOT)" >&2
  # A setuptools that builds editable wheels by itself (>= 71) is used as it is; an older one
  # (a fresh Python 3.11 venv has 65) makes pip fetch a current one for the build.
  isolation=()
  if "$VENV/bin/python" -c 'import setuptools as s, sys; sys.exit(int(s.__version__.split(".")[0]) < 71)' \
      2>/dev/null; then
    isolation=(--no-build-isolation)
  fi
  "$VENV/bin/python" -m pip install --quiet --no-deps "${isolation[@]}" -e "$ROOT" >&2
  echo "$EDITABLE_WANT" > "$EDITABLE_STAMP"
else
  echo "[setup] commands cloudypoints and depth_node are installed" >&2
fi
