#!/usr/bin/env bash
# The native tile engine's tests under AddressSanitizer + UBSan, float-cast-overflow included
# (docs/native.md, "Sanitizers"); CI runs this after the test suite (.ci/run).
#
# Builds a second, sanitized copy of edgedepth._native in a temporary folder (the installed module
# is left as it is), copies the package and the tests beside it, and runs the tile-engine tests
# against that copy with the ASan runtime preloaded (Python itself is not instrumented). Needs the
# active environment's `.[test]` install (pybind11, cmake, ninja, pytest, hypothesis) and gcc or clang.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cmake -S "$root" -B "$work/build" -GNinja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEDGEDEPTH_SANITIZE=ON \
  -DPython_EXECUTABLE="$(command -v python)" -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$work/lib" >"$work/configure.log" || { cat "$work/configure.log"; exit 1; }
grep "edgedepth: sanitizers" "$work/configure.log"
cmake --build "$work/build" --target _native >"$work/build.log" || { cat "$work/build.log"; exit 1; }

# The package and tests, without the normal build's modules, plus the sanitized one.
mkdir -p "$work/src"
cp -r "$root/edgedepth" "$root/tests" "$root/pyproject.toml" "$work/src/"
find "$work/src/edgedepth" -maxdepth 1 -name '_native.*' -delete
cp "$work/lib"/_native.* "$work/src/edgedepth/"

# The ASan runtime of the compiler that built the module, and libstdc++ (ASan must see __cxa_throw:
# the argument checks throw). protect_shadow_gap=0 lets a CUDA runtime initialise in the process.
cxx="$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$work/build/CMakeCache.txt")"
if "$cxx" --version | grep -qi clang; then
  asan="$("$cxx" -print-file-name="libclang_rt.asan-$(uname -m).so")"
else
  asan="$("$cxx" -print-file-name=libasan.so)"
fi
export LD_PRELOAD="$asan $("$cxx" -print-file-name=libstdc++.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:protect_shadow_gap=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export PYTHONPATH="$work/src" EDGEDEPTH_REQUIRE_NATIVE=1
cd "$work/src"
python -c "import edgedepth._native as n, sys; sys.exit(0 if n.sanitized else 'the sanitized module did not load')"
python -m pytest -q -p no:cacheprovider tests/test_tiling.py tests/test_tiling_torch.py tests/test_joint_upsample.py \
  tests/test_guided_upsample.py tests/test_native_build.py \
  tests/test_tiling_safety.py tests/test_snap_edges.py tests/fuzz/test_fuzz_tiling.py "$@"
