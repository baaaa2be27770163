#!/usr/bin/env bash
# Desktop or server with an NVIDIA GPU (x86_64 or SBSA): the project's .venv plus TensorRT, cuda-python and,
# with ORT_GPU=1, ONNX Runtime's CUDA build.
#
# - The TensorRT wheel and cuda-python must match the CUDA major version of the installed torch build (cu12x or
#   cu13x), which the driver must support: CUDA_MAJOR=12|13 overrides the detection.
# - TENSORRT=<pip requirement> picks the release, e.g. TENSORRT='tensorrt-cu12==10.15.*' (default: the newest
#   tensorrt-cu<major>). The builder needs TensorRT >= 10.3.
# - ORT_GPU=1 replaces onnxruntime by onnxruntime-gpu (the same module with the CUDA execution provider; the two
#   cannot be installed together). Note that scripts/setup.sh reinstalls the CPU package.
# Usage: scripts/setup_gpu.sh   (runs scripts/setup.sh first when .venv does not exist)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "[setup_gpu] $*" >&2; exit 1; }

command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: install the NVIDIA driver first"
[ -x .venv/bin/python ] || scripts/setup.sh
CUDA_MAJOR="${CUDA_MAJOR:-$(.venv/bin/python -c 'import torch; print((torch.version.cuda or "").split(".")[0])')}"
[ -n "$CUDA_MAJOR" ] || fail "the installed torch is a CPU build, so the CUDA version cannot be read from it: set CUDA_MAJOR=12 or 13"
if [ "$CUDA_MAJOR" = 12 ]; then CUDA_PYTHON="cuda-python>=12.6,<13"; else CUDA_PYTHON="cuda-python>=${CUDA_MAJOR},<$((CUDA_MAJOR + 1))"; fi
TENSORRT="${TENSORRT:-tensorrt-cu${CUDA_MAJOR}}"
echo "[setup_gpu] CUDA $CUDA_MAJOR: installing $TENSORRT and $CUDA_PYTHON"
.venv/bin/python -m pip install --quiet "$TENSORRT" "$CUDA_PYTHON"
if [ "${ORT_GPU:-0}" = 1 ]; then
  echo "[setup_gpu] replacing onnxruntime by onnxruntime-gpu"
  .venv/bin/python -m pip uninstall --quiet -y onnxruntime
  .venv/bin/python -m pip install --quiet onnxruntime-gpu
fi
echo "[setup_gpu] check:"
.venv/bin/python - <<'EOF'
import onnxruntime
import tensorrt

from mgcda_core.utils.cuda_memory import device_identity

name, capability = device_identity("cuda:0")
print(f"TensorRT {tensorrt.__version__} on {name} (compute capability {capability}); "
      f"onnxruntime providers {onnxruntime.get_available_providers()}")
EOF
echo "[setup_gpu] done: scripts/gpu_check.sh verifies the GPU paths"
