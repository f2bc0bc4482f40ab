#!/usr/bin/env bash
# The one prepared GPU check (issue 25): TensorRT engines of the shipped students with every available
# builder (torch-tensorrt, the TensorRT Python API, trtexec), fp16 and INT8, each verified against ONNX
# Runtime on the evaluation faces and timed (p50/p99, spin-wait), then pkdn-bench's GPU section and the
# webcam loop with --backend tensorrt; one Markdown report. Budget: < 10 minutes on one NVIDIA GPU.
#
#   bash benchmarks/gpu_check.sh            # report: benchmarks/report/gpu_check/gpu_check.md
#
# Environment: PKDN_GPU_CHECK_OUT (report folder), PKDN_GPU_VENV (default .venv-gpu: created with
# --system-site-packages so JetPack's TensorRT or a preinstalled CUDA torch are used), PKDN_GPU_PIP
# (what to pip install; "" installs nothing), PKDN_GPU_CLIP (webcam source, default the demo clip),
# PKDN_GPU_SCALES ("4 8"), PKDN_GPU_PRECISIONS ("fp16 int8").
# Without an NVIDIA GPU it says so and exits 0 (nothing measured, nothing written).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${PKDN_GPU_CHECK_OUT:-benchmarks/report/gpu_check}
START=$(date +%s)

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none): nothing was measured and nothing was written."
    echo "gpu_check: run this script on a machine with an NVIDIA GPU (x86 + CUDA, or a Jetson); see docs/export.md."
    exit 0
fi
nvidia-smi -L

# 1. a Python with the package, CUDA torch, torch-tensorrt, TensorRT and cuda-python (pip, time-boxed) -----
VENV=${PKDN_GPU_VENV:-.venv-gpu}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv --system-site-packages "$VENV" || { echo "gpu_check: cannot create $VENV"; exit 1; }
fi
PY="$VENV/bin/python"
PIP_SPEC=${PKDN_GPU_PIP-"-e .[export,tensorrt] torch-tensorrt tensorrt"}
if [ -n "$PIP_SPEC" ]; then
    echo "gpu_check: pip install $PIP_SPEC (at most 240 s; offline machines keep what is installed)"
    # shellcheck disable=SC2086
    timeout 240 "$PY" -m pip install -q $PIP_SPEC || echo "gpu_check: pip install failed or timed out; continuing with what is installed"
fi
"$PY" - <<'PYEOF' || { echo "gpu_check: pkdn-edge does not import in $VENV"; exit 1; }
import importlib.util as u
import pkdn_edge  # noqa: F401
for m in ("torch", "torch_tensorrt", "tensorrt", "cuda", "nncf", "onnx"):
    print(f"gpu_check: {m:15s} {'installed' if u.find_spec(m) else 'MISSING'}")
PYEOF

# 2. engines, parity, timings, pkdn-bench GPU section, webcam loop: the driver (deadline: 9.5 min in all) ---
USED=$(( $(date +%s) - START ))
LEFT=$(( 570 - USED ))
if [ "$LEFT" -lt 120 ]; then
    echo "gpu_check: only ${LEFT} s of the 10-minute budget left after the install; stopping (rerun: installed now)"
    exit 0
fi
# shellcheck disable=SC2086
timeout "$LEFT" "$PY" benchmarks/gpu_check.py --out "$OUT" --budget-s $(( LEFT - 40 )) \
    --scales ${PKDN_GPU_SCALES:-4 8} --precisions ${PKDN_GPU_PRECISIONS:-fp16 int8} --clip "${PKDN_GPU_CLIP:-demo}"
rc=$?
echo "gpu_check: done in $(( $(date +%s) - START )) s (exit $rc); report: $OUT/gpu_check.md"
exit $rc
