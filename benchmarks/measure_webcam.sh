#!/bin/bash
# Webcam loop measurements (issue 6): OpenVINO INT8 x4, clips from ../shared/video.
set -e
cd "$(dirname "$0")/.."
mkdir -p out
B=.venv/bin
$B/pkdn-export --target openvino --precision int8 --scale 4 --dynamic  # always: an old export would run old weights
$B/python - <<'PY'
import cv2, numpy as np
caps = [cv2.VideoCapture(f"../shared/video/{n}.mp4") for n in ("d6", "d10", "d14")]
out = cv2.VideoWriter("out/three_faces.mp4", cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (1440, 480))
for _ in range(448):
    fr = [c.read()[1] for c in caps]
    out.write(np.hstack([cv2.resize(f, (480, 480), interpolation=cv2.INTER_AREA) for f in fr]))
out.release()
PY
mkdir -p reports/webcam
for be in openvino onnxruntime; do
  p=int8; [ $be = onnxruntime ] && p=fp32
  $B/python -m pkdn_edge.webcam --source ../shared/video/d6.mp4 --frames 300 --downscale 4 --backend $be --precision $p --scale 4 --detect-every 5 --threads 2 --max-faces 3 --headless --output none --stats-json reports/webcam/${be}_${p}_x4_1face.json
done
$B/python -m pkdn_edge.webcam --source out/three_faces.mp4 --frames 300 --downscale 4 --backend openvino --precision int8 --scale 4 --detect-every 5 --threads 2 --max-faces 3 --headless --output none --stats-json reports/webcam/openvino_int8_x4_3faces.json
