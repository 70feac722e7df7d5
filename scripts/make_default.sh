#!/usr/bin/env bash
# Rebuild what ships in edgedepth/assets/: the sample frame and the default bundle, with our own
# pipelines only (procedural scenes -> edgedepth train x3 -> edgedepth export). About 30 minutes on
# a quiet 2-core CPU. Needs the [train,export] extras.
set -euo pipefail
cd "$(dirname "$0")/.."
assets=edgedepth/assets

# The sample: a held-out street scene (seed far outside the training streams) with thin structures.
python - <<'PY'
from PIL import Image
from edgedepth.datasets import render_scene
s = render_scene(900004, 1080, 1920, layout="street")
Image.fromarray(s["image"]).save("edgedepth/assets/sample.png", optimize=True)
PY

edgedepth train configs/default-coarse.yaml --resume never
edgedepth train configs/default-noisy.yaml --resume never
edgedepth train configs/default-refiner.yaml --resume never

# 4x4 tiles at 25 % overlap as trained; calibration and parity on procedural frames of the refiner's
# training size; INT8 must stay within +2 % AbsRel of float32 or the export fails. ONNX only: OpenVINO
# compiles the same files (Q/DQ included) and TensorRT builds its engines from them, so the bundle stays small.
edgedepth export runs/default-refiner/final --out "$assets/default.edgedepth" --overwrite \
    --targets onnx --precision fp32,fp16,int8 \
    --frame-size 1024x576 --tiles 4x4 --overlap 0.25 --calib procedural:16 --heldout procedural:8
du -sh "$assets"/*
