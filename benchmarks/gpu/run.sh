#!/usr/bin/env bash
# The GPU path, measured in one run on a machine with an NVIDIA GPU (issue 12):
#   1. builds edgedepth._native_cuda (pip install --no-build-isolation --no-deps -e ., EDGEDEPTH_CUDA=1);
#   2. runs tests/cuda;
#   3. the tile benchmark on CUDA: engine vs per-tile torch on CUDA vs a device-to-device copy
#      (benchmarks/bench_tiling.py --device cuda);
#   4. the whole frame on the torch CUDA backend at 1080p and 4K with a DA-V2-Small-sized coarse
#      model (benchmarks/gpu/frame.py);
#   5. the refiner alone per precision and way of running it: fp32, fp16, channels_last,
#      cudnn.benchmark, CUDA graphs (benchmarks/gpu/refiner.py);
#   6. where a refiner training step's time goes: loader alone, step alone, host synchronisations
#      (benchmarks/gpu/train_step.py);
#   7. the same with the refiner torch.compile'd (train_step.py --compile).
# Needs Python with torch (CUDA), pybind11, CMake, ninja, onnx, onnxruntime; no network.
#
#   bash benchmarks/gpu/run.sh OUT_DIR
#
# Writes to OUT_DIR (10 files, all small): run.log, build.log, tests_cuda.log, tiling/figures.json,
# frame.json, refiner.json, train_step.json, train_step_compiled.json, gpu.txt, summary.json (every
# step's status, exit code and seconds). The whole run keeps within EDGEDEPTH_GPU_BUDGET_S seconds (default 450); a step that would overrun is cut off
# by `timeout` and reported. Without a GPU it says so and exits 2; a failed step makes it exit 1.
set -u -o pipefail

if [ $# -ne 1 ]; then
    echo "usage: bash benchmarks/gpu/run.sh OUT_DIR" >&2
    exit 2
fi
OUT=$1
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUDGET_S=${EDGEDEPTH_GPU_BUDGET_S:-450}
PY=${PYTHON:-python}
START=$(date +%s)
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
cd "$REPO" || exit 2
: > "$OUT/run.log"
STEPS=()

log() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/run.log"; }

summary() {  # summary.json from the STEPS entries "name rc seconds"; $1: gpu true|false, $2: note
    local note
    note=$(printf '%s' "$2" | tr '"\\' "''")  # a driver message may hold quotes: keep the JSON valid
    {
        echo "{"
        echo "  \"gpu\": $1,"
        echo "  \"note\": \"$note\","
        echo "  \"budget_s\": $BUDGET_S,"
        echo "  \"elapsed_s\": $(( $(date +%s) - START )),"
        echo "  \"steps\": ["
        local first=1 name rc secs
        for entry in "${STEPS[@]+"${STEPS[@]}"}"; do
            read -r name rc secs <<< "$entry"
            [ $first -eq 1 ] || echo ","
            first=0
            printf '    {"step": "%s", "rc": %s, "seconds": %s, "status": "%s"}' "$name" "$rc" "$secs" \
                "$( [ "$rc" -eq 0 ] && echo ok || { [ "$rc" -eq 124 ] && echo "timed out" || echo failed; } )"
        done
        echo ""
        echo "  ]"
        echo "}"
    } > "$OUT/summary.json"
}

# step NAME MAX_SECONDS LOGFILE COMMAND...: runs COMMAND under the smaller of MAX_SECONDS and the
# budget left, output to LOGFILE (and run.log), records its exit code.
step() {
    local name=$1 cap=$2 logfile=$3
    shift 3
    local left=$(( BUDGET_S - ($(date +%s) - START) ))
    local limit=$(( cap < left ? cap : left ))
    if [ "$limit" -le 5 ]; then
        log "$name: skipped, the time budget (${BUDGET_S}s) is spent"
        STEPS+=("$name 124 0")
        return 1
    fi
    log "$name: start (limit ${limit}s)"
    local t0 rc
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$logfile" 2>&1
    rc=$?
    tail -n 25 "$logfile" >> "$OUT/run.log"
    STEPS+=("$name $rc $(( $(date +%s) - t0 ))")
    log "$name: exit $rc after $(( $(date +%s) - t0 ))s"
    return $rc
}

# --- a GPU, or a clear refusal ---------------------------------------------------------------
reason=""
if ! command -v nvidia-smi > /dev/null 2>&1; then
    reason="no nvidia-smi on PATH (no NVIDIA driver)"
elif ! nvidia-smi -L > "$OUT/gpu.txt" 2>&1; then
    reason="nvidia-smi sees no GPU: $(head -n 1 "$OUT/gpu.txt")"
elif ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >> "$OUT/run.log" 2>&1; then
    reason="torch sees no CUDA device (torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null))"
fi
if [ -n "$reason" ]; then
    echo "run.sh: no usable NVIDIA GPU: $reason; nothing measured" | tee -a "$OUT/run.log" >&2
    summary false "no GPU: $reason"
    exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv >> "$OUT/gpu.txt" 2>&1
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" \
    >> "$OUT/gpu.txt" 2>&1
log "GPU: $(head -n 1 "$OUT/gpu.txt")"

failed=0
# --- 1. build --------------------------------------------------------------------------------
if step build 240 "$OUT/build.log" env EDGEDEPTH_CUDA=1 "$PY" -m pip install --no-build-isolation --no-deps -e .; then
    step cuda_module 30 "$OUT/build.log.check" "$PY" -c \
        "from edgedepth import native; assert native.cuda is not None, native.cuda_error; n = native.cuda_device_count(); assert n > 0, 'the CUDA module sees no device'; print('CUDA module:', n, 'device(s), runtime', native.cuda.cuda_runtime_version)" \
        || failed=1
    cat "$OUT/build.log.check" >> "$OUT/build.log" 2>/dev/null
    rm -f "$OUT/build.log.check"
else
    failed=1
fi

if [ $failed -eq 0 ]; then
    # --- 2. tests/cuda ---------------------------------------------------------------------
    step tests_cuda 120 "$OUT/tests_cuda.log" env EDGEDEPTH_REQUIRE_NATIVE=1 "$PY" -m pytest -q -rs tests/cuda || failed=1
    # --- 3. tile benchmark on CUDA ---------------------------------------------------------
    step bench_tiling_cuda 90 "$OUT/tiling.log" "$PY" benchmarks/bench_tiling.py --device cuda --repeat 20 \
        --out "$OUT/tiling" || failed=1
    cat "$OUT/tiling.log" >> "$OUT/run.log" 2>/dev/null
    rm -f "$OUT/tiling.log"
    # --- 4. whole frame on the torch CUDA backend ------------------------------------------
    WORK=$(mktemp -d)
    step frame_torch_cuda 240 "$OUT/frame.log" "$PY" benchmarks/gpu/frame.py "$OUT" --work "$WORK" \
        --sizes 1080p,4K --repeat 10 || failed=1
    cat "$OUT/frame.log" >> "$OUT/run.log" 2>/dev/null
    rm -rf "$OUT/frame.log" "$WORK"
    # --- 5. the refiner alone -----------------------------------------------------------------
    step refiner_cuda 90 "$OUT/refiner.log" "$PY" benchmarks/gpu/refiner.py "$OUT" --repeat 20 || failed=1
    cat "$OUT/refiner.log" >> "$OUT/run.log" 2>/dev/null
    rm -f "$OUT/refiner.log"
    # --- 6. a refiner training step on the GPU ------------------------------------------------
    step train_step_cuda 120 "$OUT/train_step.log" "$PY" benchmarks/gpu/train_step.py "$OUT" --steps 20 || failed=1
    cat "$OUT/train_step.log" >> "$OUT/run.log" 2>/dev/null
    rm -f "$OUT/train_step.log"
    # --- 7. the same step with the refiner torch.compile'd (train.compile) ---------------------
    step train_step_compiled_cuda 180 "$OUT/train_step.log" "$PY" benchmarks/gpu/train_step.py "$OUT" --steps 20 \
        --compile || failed=1
    cat "$OUT/train_step.log" >> "$OUT/run.log" 2>/dev/null
    rm -f "$OUT/train_step.log"
fi

summary true "$( [ $failed -eq 0 ] && echo "all steps passed" || echo "a step failed: see run.log" )"
log "done in $(( $(date +%s) - START ))s, figures in $OUT"
exit $failed
