#!/usr/bin/env bash
# One run on a GPU machine makes the default model from nothing: render the training scenes on every
# core (the refiner's while the first two stages train), train the coarse model, Noisy Pretraining
# and the refiner for a fixed wall-clock budget, take the refiner's constant lean off
# (scripts/calibrate_refiner.py, 16 + 4 tuning frames), export the bundle, and leave it with the
# training curves in OUT_DIR.
#
#   scripts/train_default_gpu.sh OUT_DIR [BUDGET_MINUTES]      (default budget: 8 minutes of training)
#
# Needs only what the project installs (torch, numpy, onnx, onnxruntime, safetensors, pyyaml, tqdm;
# onnxsim for the export, else the checkpoint comes back and `edgedepth export` runs elsewhere).
# Frames are rendered where it runs (nothing to carry) into $EDGEDEPTH_DATA (default a temporary
# folder), never into OUT_DIR. OUT_DIR gets at most six files: default.edgedepth.tar (the bundle),
# checkpoint.tar (coarse + refiner, what the bundle was exported from), curves.png, curves.json,
# summary.json and train.log.
# EDGEDEPTH_TINY=1 shrinks every count and budget so the CPU path runs in a minute or two (tested).
# EDGEDEPTH_TRAIN_COMPILE=1 trains every stage with train.compile (scripts/gpu_session.sh sets it
# when this machine's benchmarks say compiling pays for itself: benchmarks/gpu/choose_compile.py).
# EDGEDEPTH_RENDER_ONLY=1 renders into $EDGEDEPTH_DATA and stops (log: OUT_DIR/render.log), so a
# caller can render on spare cores while other work runs; the full run then finds the frames there
# (a finished or interrupted render resumes) and goes straight to training.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 OUT_DIR [BUDGET_MINUTES]" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)
budget=${2:-8}
render_only=${EDGEDEPTH_RENDER_ONLY:-0}
data=${EDGEDEPTH_DATA:-}
if [ -z "$data" ]; then
    [ "$render_only" != 1 ] || { echo "EDGEDEPTH_RENDER_ONLY=1 needs EDGEDEPTH_DATA, where the frames stay" >&2; exit 2; }
    data=$(mktemp -d)
    own_data=$data
fi
work=$(mktemp -d)
# The frames (gigabytes at full counts) and the stages' checkpoints go with the run unless the caller
# named a data folder: what is kept has been copied to OUT_DIR by then.
cleanup() { rm -rf "$work" ${own_data:+"$own_data"}; }
trap cleanup EXIT
log="$out/train.log"
[ "$render_only" = 1 ] && log="$out/render.log"
: > "$log"
say() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$log" >&2; }

cd "$repo"
python3 -c "import edgedepth._native" 2>/dev/null || {
    say "building the native tile engine"
    python3 -m pip install -q --no-build-isolation --no-deps -e . >> "$log" 2>&1
}
read -r device cores <<<"$(python3 -c "
import os, torch
print('cuda' if torch.cuda.is_available() else 'cpu', len(os.sched_getaffinity(0)))")"
# Frame counts, batch sizes and loader workers per machine; the step counts are ceilings, the
# budget decides (train.max_minutes drives the schedule too).
if [ "${EDGEDEPTH_TINY:-0}" = 1 ]; then
    n1080=4; size1080=512x288; n4k=2; size4k=1024x576; n512=16; size512=256x144; budget=${2:-0.3}
    calib_frames=1080p:1
    cb=4; nb=4; rb=2; workers=0; val=1; tile="[64, 96]"; cin="[64, 96]"; shrink=1.2
elif [ "$device" = cuda ]; then
    n1080=640; size1080=1920x1080; n4k=96; size4k=3840x2160; n512=6000; size512=512x288
    cb=64; nb=64; rb=16; workers=$(( cores > 2 ? cores - 2 : 1 )); val=6; tile="[128, 224]"; cin="[128, 224]"; shrink=2.4
else
    n1080=64; size1080=1920x1080; n4k=8; size4k=3840x2160; n512=600; size512=512x288
    cb=8; nb=8; rb=2; workers=0; val=2; tile="[128, 224]"; cin="[128, 224]"; shrink=2.4
fi
python3 - "$budget" > "$work/minutes" <<'PY'
import sys
b = float(sys.argv[1])
print(round(0.35 * b, 3), round(0.10 * b, 3), round(0.55 * b, 3))  # coarse, noisy, refiner
PY
read -r m_coarse m_noisy m_refiner < "$work/minutes"
say "device $device, $cores cores, training budget $budget min, data in $data"

render_tiles() {  # the refiner's frames, on $1 render processes
    edgedepth train-data "$data/train1080" --count "$n1080" --size "$size1080" --seed 0 --workers "$1" &&
    edgedepth train-data "$data/train2160" --count "$n4k" --size "$size4k" --seed 2 --shard-size 4 --workers "$1"
}
say "rendering $n512 frames of $size512 on $cores cores"
edgedepth train-data "$data/coarse512" --count "$n512" --size "$size512" --seed 7 --shard-size 32 >> "$log" 2>&1
if [ "$render_only" = 1 ]; then
    say "rendering $n1080 frames of $size1080 and $n4k of $size4k on $cores cores"
    render_tiles "$cores" >> "$log" 2>&1
    say "rendered into $data (EDGEDEPTH_RENDER_ONLY=1: no training)"
    exit 0
fi
# The refiner's frames (two thirds of the rendering) render on half the cores while the coarse model
# and Noisy Pretraining train on the other half; the refiner waits for them.
half=$(( cores > 1 ? cores / 2 : 1 ))
say "rendering $n1080 frames of $size1080 and $n4k of $size4k on $half cores, beside the first two stages"
render_tiles "$half" > "$work/render_tiles.log" 2>&1 &
render_pid=$!
# A failed stage leaves no renderer behind (and none writing into a folder being removed).
trap 'kill "$render_pid" 2>/dev/null || true; wait "$render_pid" 2>/dev/null || true; cleanup' EXIT
early_workers=$(( workers > half ? half : workers ))

common=(--resume never --set train.steps=1000000 --set train.progress=false --set train.tensorboard=false
        --set train.val_every=1000000 --set train.ckpt_every=200 --set train.log_every=20
        --set data.val_samples="$val")
if [ "${EDGEDEPTH_TRAIN_COMPILE:-0}" = 1 ]; then
    common+=(--set train.compile=true)
fi
say "coarse model: $m_coarse min"
edgedepth train configs/default-coarse.yaml "${common[@]}" --set data.num_workers="$early_workers" --out "$work/coarse" \
    --set data.shards="[$data/coarse512]" --set train.batch_size="$cb" --set train.max_minutes="$m_coarse" \
    --set "model.coarse_kwargs.input_size=$cin" >> "$log" 2>&1
say "Noisy Pretraining: $m_noisy min"
edgedepth train configs/default-noisy.yaml "${common[@]}" --set data.num_workers="$early_workers" --out "$work/noisy" \
    --set data.shards="[$data/coarse512]" --set model.coarse_checkpoint="$work/coarse/final" \
    --set train.batch_size="$nb" --set train.max_minutes="$m_noisy" --set "model.tile_size=$tile" >> "$log" 2>&1
if ! wait "$render_pid"; then
    cat "$work/render_tiles.log" >> "$log"
    say "rendering the refiner's frames failed: see $log"
    exit 1
fi
cat "$work/render_tiles.log" >> "$log"
say "refiner: $m_refiner min"
edgedepth train configs/default-refiner.yaml "${common[@]}" --set data.num_workers="$workers" --out "$work/refiner" \
    --set data.shards="[$data/train1080, $data/train2160]" --set model.coarse_checkpoint="$work/coarse/final" \
    --set model.init_refiner="$work/noisy/final" --set train.batch_size="$rb" --set train.max_minutes="$m_refiner" \
    --set "model.tile_size=$tile" --set tiling.shrink="$shrink" >> "$log" 2>&1

python3 -m edgedepth.train.curves "$out/curves.png" "$work/coarse" "$work/noisy" "$work/refiner" >> "$log"
python3 - "$work" "$out" <<'PY' >> "$log"
import json, sys
from pathlib import Path
from edgedepth.train.curves import load_runs
work, out = Path(sys.argv[1]), Path(sys.argv[2])
runs = load_runs([work / n for n in ("coarse", "noisy", "refiner")])
(out / "curves.json").write_text(json.dumps(runs, indent=1))
summary = {name: {"steps": rows["train"][-1]["step"] if rows["train"] else 0,
                  "tiles_seen": rows["train"][-1].get("train/tiles_seen") if rows["train"] else None,
                  "val": rows["val"][-1] if rows["val"] else {}} for name, rows in runs.items()}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary))
PY
say "calibrating the refiner's lean on ${calib_frames:=1080p:16,4K:4} tuning frames"
mkdir -p "$work/calibrated"
python3 scripts/calibrate_refiner.py "$work/refiner/final" "$work/calibrated/final" --frames "$calib_frames" \
    --data "$work/calib_data" >> "$log" 2>&1
tar -C "$work/calibrated" -cf "$out/checkpoint.tar" final

if python3 -c "import onnx, onnxsim, onnxruntime" 2>/dev/null; then
    say "exporting the bundle"
    edgedepth export "$work/calibrated/final" --out "$work/default.edgedepth" --targets onnx \
        --precision fp32,fp16,int8 --max-side 1920 --calib procedural:4 --heldout procedural:2 --overwrite \
        >> "$log" 2>&1
    tar -C "$work" -cf "$out/default.edgedepth.tar" default.edgedepth
else
    say "onnxsim is not installed here: export from checkpoint.tar elsewhere (tar -xf checkpoint.tar;" \
        "edgedepth export final --out default.edgedepth --targets onnx --precision fp32,fp16,int8 --max-side 1920)"
fi
say "done: $(ls "$out" | tr '\n' ' ')"
