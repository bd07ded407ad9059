#!/usr/bin/env bash
# Create (or reuse) the local virtual environment .venv with everything CloudyPoints needs on CPU:
# PyTorch 2.13.0 CPU, ONNX Runtime, OpenCV headless, rosbags, MLflow and ROS 2 (rclpy, Fast DDS)
# from PyPI. Idempotent: it reinstalls only when requirements.txt changed since the last run.
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
