#!/bin/bash
# Webcam whole-loop FPS at real camera sizes (issue 20): 640x480, 1280x720, 1920x1080 camera frames
# with 1 and 3 small faces (eyes 12 px apart, real faces from ../shared/video), the default model vs
# --backend bicubic (and the default model writing H.264), alternated in blocks, 3 repeats, min/median.
# Run it on an otherwise idle machine; it writes reports/webcam_sizes/webcam.{md,json}.
# The detector's recall by face size: benchmarks/small_face_recall.py (reports/webcam_sizes/recall.md).
set -e
cd "$(dirname "$0")/.."
B=.venv/bin
$B/python benchmarks/measure_webcam.py --sizes 640x480,1280x720,1920x1080 --faces 1,3 \
  --configs default,bicubic,default_h264 --frames 150 --repeats 3 --out reports/webcam_sizes "$@"
