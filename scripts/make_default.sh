#!/usr/bin/env bash
# Rebuild what ships in edgedepth/assets/: the sample frame and the default bundle, with our own
# pipelines only (procedural shards -> edgedepth train x5 -> edgedepth export). Needs the
# [train,export] extras. On a 2-core CPU: about 50 minutes of rendering, then the five training
# stages (see the configs' step counts; the refiner is the long one), then a few minutes of export.
# Every step resumes where it stopped (shards per file, training from its newest checkpoint).
#
#   scripts/make_default.sh            # everything
#   SKIP_TRAIN=1 scripts/make_default.sh   # only the calibration and export of runs/default-refiner-640/final
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

if [ "${SKIP_TRAIN:-0}" != 1 ]; then
    # Training frames: 640 1080p and 96 4K scenes for the refiner (streams 0 and 2), 6000 small ones
    # for the coarse model and Noisy Pretraining (stream 7); validation renders stream 1000 on the fly, the accuracy
    # benchmark streams 3000/3001 (benchmarks/bench_accuracy.py).
    edgedepth train-data data/train1080 --count 640 --size 1920x1080 --seed 0
    edgedepth train-data data/train2160 --count 96 --size 3840x2160 --seed 2 --shard-size 4
    edgedepth train-data data/coarse512 --count 6000 --size 512x288 --seed 7 --shard-size 32
    edgedepth train configs/default-coarse.yaml
    edgedepth train configs/default-noisy.yaml
    edgedepth train configs/default-refiner.yaml
    edgedepth train configs/default-refiner-ft.yaml
    # Step 5 trains on 640x480 frames too (the photographs' and many robot cameras' size), beside
    # more 1080p and 4K ones: streams 0, 4, 2 and 6.
    edgedepth train-data data/ft1080 --count 320 --size 1920x1080 --seed 0
    edgedepth train-data data/ft1080s4 --count 320 --size 1920x1080 --seed 4
    edgedepth train-data data/ft2160 --count 192 --size 3840x2160 --seed 2 --shard-size 4
    edgedepth train-data data/ft480s6 --count 160 --size 640x480 --seed 6
    edgedepth train configs/default-refiner-640.yaml
fi
# The shadow and paint shapes of steps 4 and 5, drawn on the coarse input too, teach the refiner to
# read every frame 1-3 % farther than it should: that constant comes off its last bias, measured on
# the accuracy benchmark's tuning stream (1001).
rm -rf runs/default-refiner-cal
python scripts/calibrate_refiner.py runs/default-refiner-640/final runs/default-refiner-cal

# The bundle keeps the refiner's adaptive grid (from its checkpoint); calibration and parity on
# 1080p procedural frames; INT8 must stay within +2 % AbsRel of float32 or the export fails. ONNX,
# plus NNCF's INT8 refiner as OpenVINO IR (1.2 MB): OpenVINO compiles the float ONNX files as they
# are, but the Q/DQ file (TensorRT's) costs it accuracy; TensorRT builds its engines from the ONNX.
# Its tiling (max_side 1920: frames larger than 1080p keep its 4x4 grid with larger tiles, at 4K 16
# tiles instead of 72) and its upsampling, the fast guided filter (docs/native.md), are the
# checkpoint's, as configs/default-refiner-640.yaml trained it (step 4 trained with the joint
# bilateral one; the guided filter was chosen on the tuning frames: held-out edge AbsRel 1080p -8 %,
# 4K -9 %); --upsample says so explicitly.
edgedepth export runs/default-refiner-cal --out "$assets/default.edgedepth" --overwrite \
    --targets onnx,openvino --openvino-precision int8 --precision fp32,fp16,int8 \
    --calib procedural:8 --heldout procedural:4 --upsample guided
# The same default as one fused CoreML model for apps (fixed 1920x1080 input, fp16): coarse, the
# 4x4 grid, refiner and blend in one graph, beside the bundle (the bundle's own CoreML files would
# add ~10 MB to the repository for what the pipeline already covers).
coreml_tmp=$(mktemp -d)
trap 'rm -rf "$coreml_tmp"' EXIT
edgedepth export runs/default-refiner-cal --out "$coreml_tmp/coreml.edgedepth" \
    --targets coreml --precision fp16 --pipeline 1920x1080 --calib procedural:2 --heldout procedural:2
rm -rf "$assets/default_1920x1080.mlpackage.tmp"
cp -r "$coreml_tmp/coreml.edgedepth/coreml/pipeline_1920x1080.fp16.mlpackage" "$assets/default_1920x1080.mlpackage.tmp"
rm -rf "$assets/default_1920x1080.mlpackage"
mv "$assets/default_1920x1080.mlpackage.tmp" "$assets/default_1920x1080.mlpackage"

# The README's picture: the sample beside what `edgedepth predict` makes of it (look at it).
python scripts/readme_picture.py --out docs/images/sample_depth.png
du -sh "$assets"/*
