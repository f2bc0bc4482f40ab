#!/bin/bash
# Same frames through the webcam loop with each backend (fp32): composited outputs must agree.
set -e
cd "$(dirname "$0")/.."
B=.venv/bin
for be in torch onnxruntime openvino; do
  rm -rf out/parity_$be
  $B/python -m pkdn_edge.webcam --source ../shared/video/d6.mp4 --frames 30 --downscale 4 --backend $be \
    --precision fp32 --scale 4 --headless --no-overlay --view output --output out/parity_$be
done
$B/python - <<'PY'
import glob, cv2, numpy as np
fs = sorted(glob.glob("out/parity_torch/*.png"))
for be in ("onnxruntime", "openvino"):
    d = [np.abs(cv2.imread(f).astype(int) - cv2.imread(f.replace("parity_torch", f"parity_{be}")).astype(int)) for f in fs]
    print(f"{be} vs torch over {len(fs)} frames: max abs diff {max(x.max() for x in d)} (uint8 levels), mean {np.mean([x.mean() for x in d]):.2e}")
PY
