#!/usr/bin/env bash
# Jetson Orin with JetPack 6 (CUDA 12.6, TensorRT 10.3): the project's .venv, able to build and run TensorRT engines.
#
# - The venv is created with --system-site-packages: JetPack installs TensorRT's Python bindings (apt package
#   python3-libnvinfer) into the system dist-packages, and there is no pip wheel of them for Jetson.
# - Device buffers, copies and streams come from cuda-python, pinned to the CUDA major version of JetPack, so no
#   CUDA build of PyTorch is needed (the pinned torch release has none for JetPack 6; pip's torch runs on the CPU).
# - Optional: TORCH_WHEEL=<path or URL of NVIDIA's PyTorch wheel for your JetPack> installs it over the pinned torch
#   (torch eager on the GPU); exporting ONNX should then still be done on a workstation with the pinned torch.
# Usage: scripts/setup_jetson.sh        (PYTHON=python3.10 to pick the interpreter JetPack's bindings are for)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

fail() { echo "[setup_jetson] $*" >&2; exit 1; }

[ -f /etc/nv_tegra_release ] || fail "this is not a Jetson (/etc/nv_tegra_release missing); on a desktop GPU use scripts/setup_gpu.sh"
"$PYTHON" -c "import tensorrt" 2>/dev/null \
  || fail "$PYTHON cannot import JetPack's TensorRT: install it with 'sudo apt-get install python3-libnvinfer' (part of nvidia-jetpack)"
CUDA_MAJOR="${CUDA_MAJOR:-$("$PYTHON" -c 'import json; print(json.load(open("/usr/local/cuda/version.json"))["cuda"]["version"].split(".")[0])' 2>/dev/null || echo 12)}"  # JetPack 6: 12
[ "$CUDA_MAJOR" = 12 ] || echo "[setup_jetson] CUDA $CUDA_MAJOR found; this script was written for JetPack 6 (CUDA 12)"

if [ ! -x .venv/bin/python ]; then
  echo "[setup_jetson] creating .venv (--system-site-packages) with $($PYTHON --version)"
  "$PYTHON" -m venv --system-site-packages .venv
fi
.venv/bin/python -c "import tensorrt" 2>/dev/null \
  || fail ".venv cannot import tensorrt: it was created without --system-site-packages; remove .venv and rerun"
.venv/bin/python -m pip install --quiet --upgrade pip
echo "[setup_jetson] installing requirements"
.venv/bin/python -m pip install --quiet -r requirements.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
# cuda-python's major version must match CUDA's; 12.6 is the first with the cuda.bindings module.
if [ "$CUDA_MAJOR" = 12 ]; then CUDA_PYTHON="cuda-python>=12.6,<13"; else CUDA_PYTHON="cuda-python>=${CUDA_MAJOR},<$((CUDA_MAJOR + 1))"; fi
echo "[setup_jetson] installing $CUDA_PYTHON"
.venv/bin/python -m pip install --quiet "$CUDA_PYTHON"
if [ -n "${TORCH_WHEEL:-}" ]; then
  echo "[setup_jetson] installing NVIDIA's PyTorch wheel $TORCH_WHEEL over the pinned torch"
  .venv/bin/python -m pip install --quiet --no-deps "$TORCH_WHEEL"
fi
echo "[setup_jetson] check:"
.venv/bin/python - <<'EOF'
import tensorrt
import torch

from mgcda_core.utils.cuda_memory import device_identity

name, capability = device_identity("cuda:0")
print(f"TensorRT {tensorrt.__version__} on {name} (compute capability {capability}); "
      f"torch {torch.__version__} CUDA {'yes' if torch.cuda.is_available() else 'no (fine: TensorRT does not need it)'}")
EOF
echo "[setup_jetson] done: build engines with python -m mgcda_core.export --onnx model.onnx --engine model.engine --build-only"
