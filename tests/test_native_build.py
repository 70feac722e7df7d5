"""The native extension builds: the modules exist, their own boundary checks hold, CUDA compiles."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgedepth
from edgedepth import native, tiling

PKG = Path(edgedepth.__file__).parent
needs_native = pytest.mark.skipif(native.cpu is None, reason=f"native CPU engine not built: {native.cpu_error}")


def test_cpu_module_built() -> None:
    if os.environ.get("EDGEDEPTH_NATIVE") == "0":
        pytest.skip("EDGEDEPTH_NATIVE=0: native build switched off")
    assert list(PKG.glob("_native.*")), "edgedepth/_native.*.so missing: pip install --no-build-isolation -e ."
    assert native.cpu is not None, native.cpu_error


@pytest.mark.skipif(shutil.which("nvcc") is None and not os.environ.get("CUDA_HOME"), reason="no nvcc on this machine")
def test_cuda_module_compiled_when_nvcc_present() -> None:
    if os.environ.get("EDGEDEPTH_CUDA", "auto") == "0" or os.environ.get("EDGEDEPTH_NATIVE") == "0":
        pytest.skip("CUDA build switched off by EDGEDEPTH_CUDA=0 / EDGEDEPTH_NATIVE=0")
    assert list(PKG.glob("_native_cuda.*")), "nvcc is present but edgedepth/_native_cuda.*.so was not built"
    # cudart is static: the module imports (and counts devices) without a GPU or driver.
    assert native.cuda is not None, native.cuda_error
    assert native.cuda.device_count() >= 0
    assert native.cuda.cuda_runtime_version >= 12000


def test_cpu_module_does_not_link_cuda() -> None:
    so = next(PKG.glob("_native.cpython*"), None) or next(PKG.glob("_native.*"), None)
    if so is None or shutil.which("ldd") is None:
        pytest.skip("no CPU module or no ldd")
    assert "cuda" not in subprocess.run(["ldd", str(so)], capture_output=True, text=True).stdout.lower()


@pytest.mark.skipif(native.cuda is None or native.cuda_device_count() > 0, reason="needs the CUDA module without a GPU")
def test_cuda_module_rejects_host_pointers() -> None:
    host = np.zeros((4, 4, 3), np.uint8)
    out = np.zeros((1, 3, 2, 2), np.float32)
    with pytest.raises(ValueError, match="src"):
        native.cuda.crop_rgb(host.ctypes.data, 4, 4, np.array([[0.0, 0, 2, 2]]), out.ctypes.data, 2, 2,
                             [1, 1, 1], [0, 0, 0], False, 0)
    with pytest.raises(ValueError, match="boxes"):
        native.cuda.stitch(host.ctypes.data, False, 1, 1, 2, 2, np.array([[0.0, 0, 9, 2]]), out.ctypes.data, 4, 4, 2, 0)
    depth, guide, valid = np.zeros((2, 2), np.float32), np.zeros((3, 2, 2), np.float32), np.zeros((4, 4), bool)
    joint = (depth.ctypes.data, guide.ctypes.data, 2, 2, host.ctypes.data, 4, 4)
    with pytest.raises(ValueError, match="depth"):
        native.cuda.joint_upsample(*joint, 0.05, 1.0, 80.0, out.ctypes.data, valid.ctypes.data, 0)
    with pytest.raises(ValueError, match="sigma"):  # arguments first, before any pointer is looked at
        native.cuda.joint_upsample(*joint, float("nan"), 1.0, 80.0, out.ctypes.data, valid.ctypes.data, 0)
    with pytest.raises(ValueError, match="scale"):
        native.cuda.joint_upsample(*joint, 0.05, 0.0, 80.0, out.ctypes.data, valid.ctypes.data, 0)
    guided = (depth.ctypes.data, guide.ctypes.data, 2, 2, 2, host.ctypes.data, 4, 4)
    with pytest.raises(ValueError, match="depth"):
        native.cuda.guided_upsample(*guided, 3, 1e-5, 1.0, 80.0, out.ctypes.data, valid.ctypes.data, 0)
    with pytest.raises(ValueError, match="radius"):
        native.cuda.guided_upsample(*guided, 65, 1e-5, 1.0, 80.0, out.ctypes.data, valid.ctypes.data, 0)
    with pytest.raises(ValueError, match="eps"):
        native.cuda.guided_upsample(*guided, 3, 0.0, 1.0, 80.0, out.ctypes.data, valid.ctypes.data, 0)
    with pytest.raises(ValueError, match="step"):
        native.cuda.guided_upsample(depth.ctypes.data, guide.ctypes.data, 2, 2, 0, host.ctypes.data, 4, 4, 3, 1e-5,
                                    1.0, 80.0, out.ctypes.data, valid.ctypes.data, 0)
    with pytest.raises(ValueError, match="valid_max"):
        native.cuda.guided_upsample(*guided, 3, 1e-5, 1.0, float("nan"), out.ctypes.data, valid.ctypes.data, 0)
    with pytest.raises(ValueError, match="depth"):
        native.cuda.finish(depth.ctypes.data, 4, 1.0, 80.0, valid.ctypes.data, 0)
    with pytest.raises(ValueError, match="n must"):
        native.cuda.finish(depth.ctypes.data, 0, 1.0, 80.0, valid.ctypes.data, 0)


@needs_native
@pytest.mark.parametrize("call, match", [
    (lambda c: c.crop_map(np.zeros((2, 8, 8), np.float32)[:, ::2], np.array([[0.0, 0, 2, 2]]), 2, 2, False, 1), "contiguous"),
    (lambda c: c.crop_map(np.zeros((2, 8, 8), np.float64), np.array([[0.0, 0, 2, 2]]), 2, 2, False, 1), "float32"),
    (lambda c: c.crop_map(np.zeros((2, 8, 8), np.float32), np.array([[0.0, 0, 9, 2]]), 2, 2, False, 1), "outside"),
    (lambda c: c.crop_map(np.zeros((2, 8, 8), np.float32), np.array([[np.nan, 0, 2, 2]]), 2, 2, False, 1), "finite"),
    (lambda c: c.crop_map(np.zeros((2, 8, 8), np.float32), np.array([[0, 0, 2, 2]], np.float32), 2, 2, False, 1), "float64"),
    (lambda c: c.crop_map(np.zeros((2, 8, 8), np.float32), np.array([[0.0, 0, 2, 2]]), 0, 2, False, 1), "out_h"),
    (lambda c: c.crop_rgb(np.zeros((8, 8, 4), np.uint8), np.array([[0.0, 0, 2, 2]]), 2, 2, [1] * 3, [0] * 3, False, 1), "RGB"),
    (lambda c: c.crop_rgb(np.zeros((8, 8, 3), np.uint8), np.array([[0.0, 0, 2, 2]]), 2, 2, [1] * 3, [0] * 3, False, 0), "threads"),
    (lambda c: c.stitch(np.zeros((2, 1, 4, 4), np.float32), np.array([[0.0, 0, 2, 2]]), 4, 4, 2, 1), "2 tiles"),
    (lambda c: c.stitch(np.zeros((1, 1, 4, 4), np.float32), np.array([[0.0, 0, 2, 2]]), 4, 4, 7, 1), "window"),
    (lambda c: c.window(3, -1, 0), "w"),
])
def test_cpu_module_checks_its_own_arguments(call, match) -> None:
    with pytest.raises(ValueError, match=match):
        call(native.cpu)


def test_require_native_raises_when_missing() -> None:
    code = ("import sys; sys.modules['edgedepth._native'] = None\n"
            "try:\n import edgedepth.tiling\nexcept ImportError as e:\n print('IMPORTERROR', e)\n")
    env = dict(os.environ, EDGEDEPTH_REQUIRE_NATIVE="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "IMPORTERROR" in out.stdout and "EDGEDEPTH_REQUIRE_NATIVE" in out.stdout, out.stderr


def test_native_status_reports_engines() -> None:
    status = native.native_status()
    assert status["cpu"] == (native.cpu is not None)
    assert set(status) >= {"cpu", "cpu_error", "cuda", "cuda_error", "cuda_devices"}
    # edgedepth.tiling adds its thread default (native.py does not import tiling: no import cycle).
    assert tiling.native_status() == {**status, "threads": tiling.get_num_threads()}


def _load_setup_py():
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("edgedepth_setup", root / "setup.py")
    if spec is None or not (root / "CMakeLists.txt").is_file():
        pytest.skip("not a source checkout")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the helpers; setup() runs only as __main__
    return module, root


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("ninja") is None, reason="needs cmake and ninja")
def test_rebuild_after_pip_deleted_its_build_environment(tmp_path) -> None:
    # `pip install .` twice: the first build configured CMake with the ninja of pip's temporary build
    # environment, which pip then deleted; the second build must configure afresh, not run that ninja.
    setup_py, root = _load_setup_py()
    pybind11 = pytest.importorskip("pybind11")
    gone = tmp_path / "pip-build-env" / "bin"
    gone.mkdir(parents=True)
    shutil.copy2(shutil.which("ninja"), gone / "ninja")
    build = tmp_path / "build"
    build.mkdir()
    common = [f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
              "-DEDGEDEPTH_BUILD_CUDA=OFF", "-GNinja"]
    setup_py.configure(root, build, [*common, f"-DCMAKE_MAKE_PROGRAM={gone / 'ninja'}"])
    shutil.rmtree(gone.parent)
    assert setup_py.stale_cmake_cache(build, {})
    setup_py.configure(root, build, [*common, f"-DCMAKE_MAKE_PROGRAM={shutil.which('ninja')}"])
    assert not setup_py.stale_cmake_cache(build, {})
    cache = (build / "CMakeCache.txt").read_text()
    assert re.search(rf"^CMAKE_MAKE_PROGRAM:\w+={re.escape(shutil.which('ninja'))}$", cache, re.M), cache


@pytest.mark.skipif(native.cuda is None or native.cuda_device_count() > 0, reason="needs the CUDA module without a GPU")
def test_cuda_map_crops_refuse_bad_arguments_and_host_pointers() -> None:
    src, out = np.zeros((1, 4, 4), np.float32), np.zeros((2, 1, 2, 2), np.float32)
    ok = np.array([[[0.0, 0, 2, 2], [1, 1, 3, 3]]] * 2)

    def call(count=2, shapes=None, boxes=ok, sizes=None, srcs=None):
        return native.cuda.crop_maps(srcs or [src.ctypes.data] * count, shapes or [(1, 4, 4)] * count, False, boxes,
                                     [out.ctypes.data] * count, sizes or [(2, 2)] * count, False, 0)

    with pytest.raises(ValueError, match="1 to 8 maps, got 0"):
        call(count=0, boxes=np.zeros((0, 2, 4)))
    with pytest.raises(ValueError, match="1 to 8 maps, got 9"):
        call(count=9, boxes=np.concatenate([ok] * 5)[:9])
    with pytest.raises(ValueError, match="one entry per map"):
        call(sizes=[(2, 2)])
    with pytest.raises(ValueError, match=r"shape \(K, N, 4\)"):
        call(boxes=ok[:1])
    with pytest.raises(ValueError, match="float64"):
        call(boxes=ok.astype(np.float32))
    bad = ok.copy()
    bad[0, 1, 2] = 9.0
    with pytest.raises(ValueError, match=r"maps\[0\] boxes\[1\] lies outside"):
        call(boxes=bad)
    with pytest.raises(ValueError, match=r"maps\[0\] out_w"):
        call(sizes=[(2, 0), (2, 2)])
    with pytest.raises(ValueError, match=r"maps\[0\] src"):  # a map's sizes and boxes, then its pointers
        call()
