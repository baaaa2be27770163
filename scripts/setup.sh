#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with everything the package, demo and tests need.
# torch/torchvision and the ROS 2 Kilted wheels come from the package registry; nothing else is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
echo "[setup] installing requirements (torch, ROS 2 Kilted wheels, onnxruntime, ...) and CI's checkers"
.venv/bin/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
echo "[setup] done: $(.venv/bin/python -c 'import torch, rclpy; print("torch", torch.__version__, "| rclpy ok")')"
