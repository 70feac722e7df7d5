"""The TensorRT engine cache (keys, paths, timing cache), build options and the GPU name: plain Python,
tested everywhere. Building and running engines needs tensorrt and a GPU: tested where they exist."""
from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import pytest

from edgedepth.backends import BackendUnavailableError
from edgedepth.backends import tensorrt as trt_backend
from edgedepth.backends.tensorrt import (BuildOptions, batch_chunks, bundle_engines, dla_report, engine_cache_key,
                                         engine_path, ensure_engine, gpu_name, runtime_engines, timing_cache_path)
from edgedepth.backends.tensorrt_plan import plan_engines, strongly_typed, trtexec_command

SHA = "ab" * 32
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def test_engine_path_changes_with_every_key_part(tmp_path):
    base = dict(gpu_name="NVIDIA H100", trt_version="10.3.0", cache_dir=tmp_path)
    fp16 = BuildOptions(precision="fp16")
    ref = engine_path(Path("refiner.onnx"), SHA, fp16, **base)
    assert ref.parent == tmp_path and ref.name.startswith("refiner.fp16.") and ref.suffix == ".engine"
    assert engine_path(Path("elsewhere/refiner.onnx"), SHA, fp16, **base) == ref  # content, not location
    variants = [
        engine_path(Path("refiner.onnx"), "cd" * 32, fp16, **base),
        engine_path(Path("refiner.onnx"), SHA, BuildOptions(precision="int8"), **base),
        engine_path(Path("refiner.onnx"), SHA, BuildOptions(precision="fp32"), **base),
        engine_path(Path("refiner.onnx"), SHA, fp16, **{**base, "gpu_name": "NVIDIA Jetson AGX Orin"}),
        engine_path(Path("refiner.onnx"), SHA, fp16, **{**base, "trt_version": "10.4.0"}),
        engine_path(Path("refiner.onnx"), SHA, BuildOptions(dla_core=0), **base),
        engine_path(Path("refiner.onnx"), SHA, BuildOptions(dla_core=1), **base),
        engine_path(Path("refiner.onnx"), SHA, BuildOptions(min_batch=2), **base),
        engine_path(Path("refiner.onnx"), SHA, BuildOptions(opt_batch=9), **base),
        engine_path(Path("refiner.onnx"), SHA, BuildOptions(max_batch=32), **base),
    ]
    assert len({ref, *variants}) == 1 + len(variants)
    assert variants[5].name.startswith("refiner.fp16.dla0.")
    # The workspace cap only bounds scratch memory: same engine, same cache entry.
    assert engine_path(Path("refiner.onnx"), SHA, BuildOptions(workspace_mib=256), **base) == ref


def test_cache_key_is_stable():
    key = engine_cache_key(SHA, "10.3.0", "Orin", BuildOptions())
    assert key == engine_cache_key(SHA, "10.3.0", "Orin", BuildOptions()) and len(key) == 20
    assert int(key, 16) >= 0


def test_default_cache_root_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEDEPTH_CACHE", str(tmp_path / "c"))
    path = engine_path(Path("coarse.onnx"), SHA, BuildOptions(precision="fp32"), gpu_name="g", trt_version="10")
    assert path.parent == tmp_path / "c" / "tensorrt"
    timing = timing_cache_path("g", "10")
    assert timing.parent == path.parent and timing.suffix == ".cache"


def test_timing_cache_is_per_gpu_and_tensorrt_version(tmp_path):
    ref = timing_cache_path("Orin", "10.3.0", tmp_path)
    assert ref == timing_cache_path("Orin", "10.3.0", tmp_path)
    assert len({ref, timing_cache_path("H100", "10.3.0", tmp_path), timing_cache_path("Orin", "10.4.0", tmp_path)}) == 3


def test_build_options_for_tiles():
    assert BuildOptions.for_tiles("fp16", 4) == BuildOptions("fp16", 1, 4, 16)
    assert BuildOptions.for_tiles("int8", 36, 16) == BuildOptions("int8", 1, 16, 16)  # chunks of 16 tiles
    assert BuildOptions.for_tiles("fp16", 9, 32).key_fields() == {"precision": "fp16", "batch": [1, 9, 32],
                                                                   "dla_core": None}
    # The DLA runs static shapes: min = opt = max, and the key says so.
    assert BuildOptions.for_tiles("fp16", 9, 32, dla_core=1).key_fields() == \
        {"precision": "fp16", "batch": [9, 9, 9], "dla_core": 1}
    with pytest.raises(ValueError, match="tiles"):
        BuildOptions.for_tiles("fp16", 0)


@pytest.mark.parametrize("kw, exc, match", [
    ({"precision": "int4"}, ValueError, "precision"),
    ({"min_batch": 4, "opt_batch": 2}, ValueError, "min_batch"),
    ({"opt_batch": 32}, ValueError, "max_batch"),
    ({"max_batch": 8.0}, TypeError, "max_batch"),
    ({"workspace_mib": 0}, ValueError, "workspace"),
    ({"dla_core": -1}, ValueError, "dla_core"),
    ({"dla_core": True}, ValueError, "dla_core"),
    ({"precision": "fp32", "dla_core": 0}, ValueError, "DLA has no FP32"),
])
def test_build_options_validated(kw, exc, match):
    with pytest.raises(exc, match=match):
        BuildOptions(**kw)


def test_gpu_name_is_the_jetson_board_model(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")  # as the device tree stores it
    monkeypatch.setattr(trt_backend, "_BOARD_MODEL", model)
    assert gpu_name() == "NVIDIA Jetson AGX Orin Developer Kit"


def test_gpu_name_without_a_gpu_says_so(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        assert gpu_name() == torch.cuda.get_device_name(0)
        return
    monkeypatch.setattr(trt_backend, "_BOARD_MODEL", tmp_path / "absent")
    with pytest.raises(RuntimeError, match="CUDA GPU"):
        gpu_name()


def test_missing_onnx_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        ensure_engine(tmp_path / "nope.onnx", cache_dir=tmp_path)


@pytest.mark.skipif(HAS_TRT, reason="checks the message shown where tensorrt is absent")
def test_without_tensorrt_the_error_names_jetpack_and_the_extra(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not parsed before the import")
    with pytest.raises(BackendUnavailableError, match=r"JetPack.*edgedepth\[tensorrt\]"):
        ensure_engine(onnx, cache_dir=tmp_path)
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        engine_path(onnx, SHA, BuildOptions(), gpu_name="g")  # the key needs TensorRT's version


# --- which ONNX and flags a TensorRT version builds with -------------------------------------------

@pytest.mark.parametrize("version, strong", [
    ("8.5.2.2", False),      # JetPack 5.1
    ("10.3.0.30", False),    # JetPack 6
    ("10.11.0.33", False),
    ("10.12.0.36", True),    # BuilderFlag.FP16/INT8 deprecated from here
    ("10.13", True),
    ("11.0.0", True),        # flags removed
])
def test_the_version_decides_strong_typing(version, strong):
    assert strongly_typed(version) is strong


@pytest.mark.parametrize("bad", ["", "ten", "10", "v10.3"])
def test_a_bad_version_is_named(bad):
    with pytest.raises(ValueError, match="not a TensorRT version"):
        strongly_typed(bad)


FULL = {"coarse": ["fp32", "fp16"], "refiner": ["fp32", "fp16", "int8"]}


def _table(precision, version, held=FULL):
    return {role: (p.precision, p.onnx_precision, p.flags, p.strongly_typed)
            for role, p in plan_engines(precision, version, held).items()}


def test_weakly_typed_fp16_builds_from_the_fp32_onnx_with_the_flag():
    assert _table("fp16", "10.3.0") == {"coarse": ("fp16", "fp32", ("FP16",), False),
                                        "refiner": ("fp16", "fp32", ("FP16",), False)}


def test_int8_runs_keep_the_coarse_model_in_fp16_not_fp32():
    weak = plan_engines("int8", "10.3.0", FULL)
    assert (weak["refiner"].onnx_precision, weak["refiner"].flags) == ("int8", ("FP16", "INT8"))
    assert (weak["coarse"].precision, weak["coarse"].onnx_precision, weak["coarse"].flags) == ("fp16", "fp32", ("FP16",))
    assert "FP16" in weak["coarse"].note
    strong = plan_engines("int8", "10.12.0", FULL)
    assert (strong["coarse"].precision, strong["coarse"].onnx_precision, strong["coarse"].flags) == ("fp16", "fp16", ())
    assert strong["refiner"].onnx_precision == "int8" and strong["refiner"].strongly_typed


def test_strongly_typed_precision_comes_from_the_onnx():
    assert _table("fp16", "11.0") == {"coarse": ("fp16", "fp16", (), True), "refiner": ("fp16", "fp16", (), True)}
    assert _table("fp32", "10.12") == {"coarse": ("fp32", "fp32", (), True), "refiner": ("fp32", "fp32", (), True)}
    # Without an FP16 ONNX a strongly typed refiner cannot be FP16: said, with the export to run.
    with pytest.raises(ValueError, match="refiner FP16 ONNX.*--precision fp16"):
        plan_engines("fp16", "10.12", {"coarse": ["fp32"], "refiner": ["fp32"]})
    # ... the coarse model falls back to FP32 and the plan says why.
    coarse = plan_engines("fp16", "10.12", {"coarse": ["fp32"], "refiner": ["fp32", "fp16"]})["coarse"]
    assert (coarse.precision, coarse.onnx_precision) == ("fp32", "fp32") and "no coarse FP16 ONNX" in coarse.note
    # Weakly typed, the same bundle builds FP16 from FP32 without complaint.
    assert plan_engines("fp16", "10.3", {"coarse": ["fp32"], "refiner": ["fp32"]})["refiner"].note == ""


def test_int8_without_a_qdq_onnx_is_named():
    with pytest.raises(ValueError, match="refiner Q/DQ ONNX.*--precision int8"):
        plan_engines("int8", "10.3", {"coarse": ["fp32"], "refiner": ["fp32", "fp16"]})
    with pytest.raises(ValueError, match="no coarse ONNX"):
        plan_engines("fp32", "10.3", {"coarse": [], "refiner": ["fp32"]})


def test_trtexec_line_follows_the_build_mode():
    shapes = {"rgb": [-1, 3, 8, 8], "coarse_depth": [-1, 1, 8, 8]}
    weak = shlex.split(trtexec_command("r.onnx", "r.engine", BuildOptions("int8", 1, 4, 16), shapes))
    assert "--fp16" in weak and "--int8" in weak and "--stronglyTyped" not in weak
    strong = shlex.split(trtexec_command("r.onnx", "r.engine", BuildOptions("int8", 1, 4, 16), shapes,
                                         strongly_typed=True))
    assert "--stronglyTyped" in strong and "--fp16" not in strong and "--int8" not in strong
    assert "--optShapes=rgb:4x3x8x8,coarse_depth:4x1x8x8" in strong
    dla = shlex.split(trtexec_command("r.onnx", "r.engine", BuildOptions("fp16", 1, 4, 16, dla_core=1), shapes))
    assert {"--minShapes=rgb:4x3x8x8,coarse_depth:4x1x8x8", "--maxShapes=rgb:4x3x8x8,coarse_depth:4x1x8x8",
            "--useDLACore=1", "--allowGPUFallback"} <= set(dla)
    static = shlex.split(trtexec_command("c.onnx", "c.engine", BuildOptions("fp32"), {"image": [1, 3, 8, 8]}))
    assert not any(a.startswith(("--minShapes", "--fp16")) for a in static)


# --- DLA report, batch splitting, runtime options ------------------------------------------------

def test_dla_report_lists_the_layers_that_fall_back_to_the_gpu():
    report = dla_report([("conv1", "LayerType.CONVOLUTION", True), ("resize", "LayerType.RESIZE", False),
                         ("conv2", "LayerType.CONVOLUTION", True)], dla_core=0)
    assert report == {"dla_core": 0, "layers": 3, "dla_layers": 2,
                      "gpu_fallback": [{"layer": "resize", "type": "LayerType.RESIZE"}]}


def test_batch_chunks_split_and_pad_to_the_engine_profile():
    assert batch_chunks(5, 1, 16) == [(0, 5, 5)]
    assert batch_chunks(20, 1, 16) == [(0, 16, 16), (16, 20, 4)]
    assert batch_chunks(5, 4, 4) == [(0, 4, 4), (4, 5, 4)]  # a static DLA engine: the last call padded
    assert batch_chunks(1, 1, 1) == [(0, 1, 1)]
    with pytest.raises(ValueError):
        batch_chunks(3, 0, 4)


def test_dla_core_and_engines_belong_to_tensorrt(tiny_bundle):
    from edgedepth import Runtime

    with pytest.raises(ValueError, match="tensorrt backend"):
        Runtime(tiny_bundle, backend="onnxruntime", dla_core=0)
    with pytest.raises(ValueError, match="tensorrt backend"):
        Runtime(tiny_bundle, backend="onnxruntime", engines={"refiner": "r.engine"})


def test_runtime_engines_refuses_unknown_roles(tiny_bundle):
    from edgedepth.bundle import open_bundle

    with pytest.raises(ValueError, match="engines keys"):
        runtime_engines(open_bundle(tiny_bundle), "fp16", 4, 16, engines={"decoder": "d.engine"})


def test_bundle_engines_are_what_the_runtime_builds(tiny_bundle, tmp_path):
    from edgedepth.bundle import open_bundle

    engines = bundle_engines(open_bundle(tiny_bundle), "fp16", 4, 16, dla_core=0, trt_version="10.3.0")
    plan, options = engines["refiner"]
    assert (plan.onnx_precision, options.profile(), options.dla_core) == ("fp32", (4, 4, 4), 0)
    assert engines["coarse"][1] == BuildOptions("fp16", dla_core=0)
