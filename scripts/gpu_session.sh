#!/usr/bin/env bash
# A GPU lease in one call: benchmarks/gpu/run.sh on four cores while the training frames render on
# the others, then scripts/train_default_gpu.sh with whatever time is left, then OUT_DIR packed
# into two files (results.tgz, and checkpoint.tar when training got that far), for leases that
# return few files.
#
#   scripts/gpu_session.sh OUT_DIR [DEADLINE_SECONDS]     (default 480: everything ends by then)
#
# The training budget is what remains at the deadline after the benchmarks, the rendering and
# about 110 s of stage start-up and packing; below half a minute of training it is skipped. It
# trains with train.compile when the benchmarks' two training-step runs (eager, compiled) say the
# compiling pays for itself within that budget (benchmarks/gpu/choose_compile.py). On the
# first run (an H200, 2026-11-30) the benchmarks took 69 s and the rendering 238 s on 12 cores.
# Without a GPU, run.sh refuses (exit 2) and training runs on the CPU path; EDGEDEPTH_TINY=1 as in
# train_default_gpu.sh. Exit status: run.sh's if it failed, else the training's.
set -u -o pipefail
[ $# -ge 1 ] || { echo "usage: $0 OUT_DIR [DEADLINE_SECONDS]" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)
deadline=${2:-480}
work=$(mktemp -d)
data="$work/data"
start=$(date +%s)
log="$work/session.log"
say() { echo "[$(( $(date +%s) - start ))s] $*" | tee -a "$log" >&2; }
cd "$repo" || exit 2
export PYTHON=${PYTHON:-python3}
# CUDA code for this machine's GPU only (e.g. 90 on an H200): the default list builds six architectures.
if [ -z "${EDGEDEPTH_CUDA_ARCHS:-}" ]; then
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2> /dev/null | head -n 1 | tr -d ' .')
    [ -n "$cap" ] && export EDGEDEPTH_CUDA_ARCHS=$cap
fi

cores=$(nproc)
bench_cpus="" render_cpus=""
if command -v taskset > /dev/null && [ "$cores" -ge 8 ]; then
    bench_cpus="taskset -c 0-3"
    render_cpus="taskset -c 4-$(( cores - 1 ))"
fi
say "$cores cores; benchmarks ${bench_cpus:-on every core}, rendering ${render_cpus:-on every core}"
$bench_cpus bash benchmarks/gpu/run.sh "$work/bench" > "$work/bench.log" 2>&1 &
bench_pid=$!
# The render needs the package run.sh installs: it starts once the build step is over.
while kill -0 "$bench_pid" 2> /dev/null && ! grep -q "build: exit" "$work/bench/run.log" 2> /dev/null; do
    sleep 1
done
EDGEDEPTH_RENDER_ONLY=1 EDGEDEPTH_DATA="$data" $render_cpus bash scripts/train_default_gpu.sh "$work/render" \
    > "$work/render.log" 2>&1 &
render_pid=$!
wait "$bench_pid"
bench_rc=$?
say "benchmarks: exit $bench_rc"
wait "$render_pid"
say "rendering: exit $?"

left=$(( deadline - ($(date +%s) - start) ))
minutes=$("$PYTHON" -c "print(round(($left - 110) / 60, 2))")
train_rc=0
if "$PYTHON" -c "import sys; sys.exit(0 if $minutes >= 0.5 else 1)"; then
    # train.compile only where this machine's step benchmarks say it pays for the compiling
    compile=$("$PYTHON" benchmarks/gpu/choose_compile.py "$work/bench" "$minutes" 2>> "$log" || echo 0)
    say "training for $minutes min (deadline in $left s), train.compile $( [ "$compile" = 1 ] && echo on || echo off)"
    EDGEDEPTH_TRAIN_COMPILE="$compile" EDGEDEPTH_DATA="$data" timeout -k 5 "$(( left - 15 ))" bash scripts/train_default_gpu.sh "$work/train" "$minutes" \
        > "$work/train.log" 2>&1
    train_rc=$?
    say "training: exit $train_rc"
else
    say "no time left to train ($left s before the deadline)"
fi
[ -f "$work/train/checkpoint.tar" ] && mv "$work/train/checkpoint.tar" "$out/checkpoint.tar"
rm -rf "$data"
say "packing"
tar -C "$work" -czf "$out/results.tgz.tmp" . && mv "$out/results.tgz.tmp" "$out/results.tgz"
rm -rf "$work"
[ "$bench_rc" -ne 0 ] && [ "$bench_rc" -ne 2 ] && exit "$bench_rc"
exit "$train_rc"
