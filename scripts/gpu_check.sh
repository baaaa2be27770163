#!/usr/bin/env bash
# Verify every GPU path in one go, on any machine with an NVIDIA GPU (after scripts/setup_gpu.sh or
# scripts/setup_jetson.sh); minutes, most of them TensorRT builds:
#   1. every GPU test: TensorRT engines fp32/fp16 against PyTorch (tiny graph, dynamic shapes, the default pipeline),
#      engine and timing caches, auto picking TensorRT, mixed-precision training and a CPU checkpoint resumed on
#      CUDA; the check fails if any of them was skipped (a skip here means the GPU setup is incomplete);
#   2. the gpu_runtimes benchmark: torch CUDA vs ONNX Runtime CUDA vs TensorRT fp32/fp16 (--quick: 256x512 only);
#   3. a 20-step mixed-precision (AMP) training on CUDA on procedural data.
# Without a CUDA build of PyTorch (a Jetson without NVIDIA's torch wheel) the training test and step 3 are left
# out, saying so.
# Results go to $OUT_DIR (default: a new temporary folder): pytest.log, gpu_runtimes.json, train.log.
# Usage: scripts/gpu_check.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
OUT_DIR="${OUT_DIR:-$(mktemp -d -t mgcda-gpu-check.XXXXXX)}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
QUICK=()
[ "${1:-}" = --quick ] && QUICK=(--quick)

echo "== GPU and packages"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
if "$PY" - <<'EOF'
import onnxruntime
import tensorrt
import torch

from mgcda_core.utils.cuda_memory import device_identity

name, capability = device_identity("cuda:0")
print(f"{name}, compute capability {capability}; TensorRT {tensorrt.__version__}; torch {torch.__version__} "
      f"(CUDA {torch.version.cuda}, available {torch.cuda.is_available()}); onnxruntime {onnxruntime.__version__} "
      f"{onnxruntime.get_available_providers()}")
EOF
then :; else
  echo "gpu_check: TensorRT, cuda-python or a usable GPU is missing (see above); run scripts/setup_gpu.sh or scripts/setup_jetson.sh"
  exit 1
fi

# Training and torch-eager tests need a CUDA build of PyTorch, which a Jetson has only with NVIDIA's wheel.
TORCH_CUDA=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')

echo "== 1. GPU tests"
GPU_TESTS=(
  test/test_runtime_backends.py::test_tensorrt_engine_matches_torch_and_is_cached
  test/test_runtime_backends.py::test_tensorrt_dynamic_engine_runs_every_shape_in_its_profile
  test/test_runtime_backends.py::test_tensorrt_runs_the_default_pipeline_within_its_tolerance
  test/test_runtime_backends.py::test_tensorrt_refuses_an_engine_without_a_valid_sidecar
  test/test_runtime_backends.py::test_auto_on_a_gpu_picks_tensorrt
)
TORCH_CUDA_TESTS=(
  test/test_training_trainer.py::test_mixed_precision_steps_on_cuda_reduce_loss
  test/test_training_amp_resume.py::test_cpu_checkpoint_resumes_on_cuda_with_mixed_precision
)
if [ "$TORCH_CUDA" = 1 ]; then
  GPU_TESTS+=("${TORCH_CUDA_TESTS[@]}")
else
  echo "PyTorch has no CUDA here: left out ${TORCH_CUDA_TESTS[*]} and the AMP training (step 3)"
fi
status=0
"$PY" -m pytest -q -p no:cacheprovider -rs "${GPU_TESTS[@]}" 2>&1 | tee "$OUT_DIR/pytest.log" || status=1
if grep -q '^SKIPPED' "$OUT_DIR/pytest.log"; then
  echo "gpu_check: GPU tests were skipped (see the reasons above): the GPU setup is incomplete"
  status=1
fi

echo "== 2. gpu_runtimes benchmark"
"$PY" -m mgcda_core.benchmark gpu_runtimes "${QUICK[@]}" --out "$OUT_DIR/gpu_runtimes.json" || status=1

echo "== 3. 20-step AMP training on procedural data"
if [ "$TORCH_CUDA" = 1 ]; then
  DATA="$OUT_DIR/data"
  "$PY" -m mgcda_core.data.procedural --out "$DATA/raw" --frames 8 --size 64x128
  "$PY" -m mgcda_core.prepare --cityscapes "$DATA/raw/cityscapes" --coco "$DATA/raw/coco" --coco-min-size 38 \
    --out "$DATA/domains" --size 64x128 --device cuda
  # The tiny settings of test/test_training_trainer.py, on CUDA with train.amp=true (refused without CUDA).
  "$PY" -m mgcda_core.train --config config/train.yaml --no-progress \
    --set "data.domain_v=$DATA/domains/voidclass" --set "data.domain_a=$DATA/domains/anomalymix" \
    --set model.width=0.125 --set model.pretrained=false --set "data.input_size=[64, 128]" --set data.num_workers=0 \
    --set train.batch_size=4 --set mdat.do_base_channels=4 --set cacl.n_anchor=8 --set train.epochs=20 \
    --set train.stop_at_step=20 --set train.log_every=5 --set train.device=cuda --set train.amp=true \
    --set "checkpoint.out_dir=$OUT_DIR/train" 2>&1 | tee "$OUT_DIR/train.log" || status=1
else
  echo "not run: PyTorch has no CUDA here"
fi

echo "== gpu_check: $([ $status = 0 ] && echo PASSED || echo FAILED); logs in $OUT_DIR"
exit $status
