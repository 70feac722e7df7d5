"""TensorRT build options / trtexec line / engine cache paths, the atomic bundle writer, and the
`edgedepth export` command on a real registry checkpoint."""
from __future__ import annotations

import shlex

import numpy as np
import pytest

from edgedepth.backends.tensorrt import BuildOptions as RuntimeBuildOptions
from edgedepth.backends.tensorrt import engine_path
from edgedepth.bundle import open_bundle, sha256_file
from edgedepth.export import onnx_export as oe
from edgedepth.export.bundle import BundleWriter
from edgedepth.tiling import Tiling
from edgedepth.export.optional import available
from edgedepth.export.tensorrt import (BuildOptions, bundle_build_options, ensure_engine, trtexec_command,
                                      trtexec_text)

from ..tiny_models import save_registry_checkpoint


@pytest.fixture(scope="module")
def refiner_onnx(tiny_models, tmp_path_factory):
    return oe.export_refiner(tiny_models[1], tmp_path_factory.mktemp("trt") / "refiner.onnx")


def test_trtexec_line_profiles_the_dynamic_tile_axis(refiner_onnx):
    opts = BuildOptions(precision="int8", opt_batch=4, max_batch=8, workspace_mib=512)
    args = shlex.split(trtexec_command(refiner_onnx, "r.engine", opts, "cache.bin", shown_onnx="refiner.onnx"))
    assert args[:3] == ["trtexec", "--onnx=refiner.onnx", "--saveEngine=r.engine"]
    assert {"--fp16", "--int8", "--timingCacheFile=cache.bin", "--memPoolSize=workspace:512M"} <= set(args)
    assert "--minShapes=rgb:1x3x16x16,coarse_depth:1x1x16x16,guide0:1x8x4x4" in args
    assert "--optShapes=rgb:4x3x16x16,coarse_depth:4x1x16x16,guide0:4x8x4x4" in args
    assert "--maxShapes=rgb:8x3x16x16,coarse_depth:8x1x16x16,guide0:8x8x4x4" in args
    # On a DLA core the profile is static (min = opt = max) and layers may fall back to the GPU.
    dla = shlex.split(trtexec_command(refiner_onnx, "r.engine", BuildOptions("fp16", 1, 4, 8, dla_core=0)))
    assert {"--useDLACore=0", "--allowGPUFallback", "--minShapes=rgb:4x3x16x16,coarse_depth:4x1x16x16,guide0:4x8x4x4",
            "--maxShapes=rgb:4x3x16x16,coarse_depth:4x1x16x16,guide0:4x8x4x4"} <= set(dla)
    strong = shlex.split(trtexec_command(refiner_onnx, "r.engine", opts, strongly_typed=True))
    assert "--stronglyTyped" in strong and not {"--fp16", "--int8"} & set(strong)
    fp32 = shlex.split(trtexec_command(refiner_onnx, "r.engine", BuildOptions(precision="fp32")))
    assert "--fp16" not in fp32 and "--int8" not in fp32 and not any(a.startswith("--useDLACore") for a in fp32)


def test_export_uses_the_runtime_builder_and_its_cache_key(refiner_onnx, tmp_path):
    # One BuildOptions class: the export layer re-exports the runtime's, it does not define its own.
    assert BuildOptions is RuntimeBuildOptions
    opts = bundle_build_options(Tiling(rows=3, cols=3), "fp16")
    assert (opts.min_batch, opts.opt_batch, opts.max_batch) == (1, 9, 16)
    assert bundle_build_options(Tiling(rows=5, cols=5), "int8").opt_batch == 16  # the runtime sends <= 16 per call
    # The bundle's options give the path the runtime's default (2x2 tiling) looks up.
    sha = sha256_file(refiner_onnx)
    key = dict(gpu_name="Orin", trt_version="10.3.0", cache_dir=tmp_path)
    assert engine_path(refiner_onnx, sha, bundle_build_options(Tiling(), "fp16"), **key) == \
        engine_path(refiner_onnx, sha, RuntimeBuildOptions(precision="fp16"), **key)
    line = shlex.split(trtexec_command(refiner_onnx, "r.engine", opts))
    assert "--optShapes=rgb:9x3x16x16,coarse_depth:9x1x16x16,guide0:9x8x4x4" in line


def test_trtexec_text_holds_both_models_both_build_modes(tiny_models, refiner_onnx, tmp_path):
    from edgedepth.export.onnx_export import convert_fp16, export_coarse

    coarse = export_coarse(tiny_models[0], tmp_path / "coarse.onnx")
    files = {"coarse": {"fp32": coarse, "fp16": convert_fp16(coarse, tmp_path / "coarse.fp16.onnx")},
             "refiner": {"fp32": refiner_onnx, "int8": refiner_onnx.with_name("refiner.int8.qdq.onnx")}}
    files["refiner"]["int8"].write_bytes(refiner_onnx.read_bytes())  # shapes are read from the fp32 files only
    text = trtexec_text(files, Tiling(rows=3, cols=3))
    weak, strong = text.split("## TensorRT 10.12")
    lines = [shlex.split(line) for line in weak.splitlines() if line.startswith("trtexec")]
    # fp32, fp16 (from the FP32 ONNX + --fp16) and int8 (Q/DQ refiner, FP16 coarse), both models each
    assert [(a[1], a[2]) for a in lines] == [
        ("--onnx=coarse.onnx", "--saveEngine=coarse.fp32.engine"), ("--onnx=refiner.onnx", "--saveEngine=refiner.fp32.engine"),
        ("--onnx=coarse.onnx", "--saveEngine=coarse.fp16.engine"), ("--onnx=refiner.onnx", "--saveEngine=refiner.fp16.engine"),
        ("--onnx=coarse.onnx", "--saveEngine=coarse.int8.engine"),
        ("--onnx=refiner.int8.qdq.onnx", "--saveEngine=refiner.int8.engine")]
    assert "--fp16" in lines[4] and "--int8" not in lines[4] and {"--fp16", "--int8"} <= set(lines[5])
    assert "--optShapes=rgb:9x3x16x16,coarse_depth:9x1x16x16,guide0:9x8x4x4" in lines[5]
    strong_lines = [shlex.split(line) for line in strong.splitlines() if line.startswith("trtexec")]
    assert all("--stronglyTyped" in a and "--fp16" not in a for a in strong_lines)
    # Strongly typed, the refiner has no FP16 ONNX here: fp16 is left out; int8 takes the coarse FP16 ONNX.
    assert [a[1] for a in strong_lines] == ["--onnx=coarse.onnx", "--onnx=refiner.onnx", "--onnx=coarse.fp16.onnx",
                                            "--onnx=refiner.int8.qdq.onnx"]


def test_ensure_engine_builds_reuses_and_replaces_a_corrupt_engine(refiner_onnx, tmp_path):
    if not available("tensorrt"):
        pytest.skip("tensorrt is not installed (engines are built on the device)")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    opts = BuildOptions(precision="fp16", opt_batch=2, max_batch=4)
    path = ensure_engine(refiner_onnx, opts, cache_dir=tmp_path, timing_cache=tmp_path / "timing.cache")
    assert (tmp_path / "timing.cache").stat().st_size > 0
    mtime = path.stat().st_mtime_ns
    assert ensure_engine(refiner_onnx, opts, cache_dir=tmp_path) == path
    assert path.stat().st_mtime_ns == mtime
    path.write_bytes(b"garbage")
    messages = []
    assert ensure_engine(refiner_onnx, opts, cache_dir=tmp_path, log=messages.append) == path
    assert path.stat().st_size > 7 and any("rebuilding" in m for m in messages)


def test_torch_tensorrt_compile(tiny_models, tmp_path):
    if not available("torch_tensorrt"):
        pytest.skip("torch_tensorrt is not installed (Jetson/CUDA only)")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from edgedepth.export.torch_tensorrt_export import compile_refiner

    path = compile_refiner(tiny_models[1], tmp_path / "refiner.ep", precision="fp16", batch=2)
    assert path.stat().st_size > 0


# --- bundle writer ------------------------------------------------------------------------------

def _manifest():
    # The smallest manifest the reader accepts; the "models" are empty protobufs (the writer never parses them).
    files = {"onnx": {"fp32": "refiner.onnx"}}
    return {"coarse": {"input_size": [8, 8], "mean": [0, 0, 0], "std": [1, 1, 1], "inputs": [{"name": "image"}],
                       "outputs": [{"name": "depth"}], "files": {"onnx": {"fp32": "coarse.onnx"}}},
            "refiner": {"tile_size": [8, 8], "inputs": [{"name": "rgb"}, {"name": "coarse_depth"}],
                        "outputs": [{"name": "depth"}], "files": files},
            "tiling": {"rows": 1, "cols": 1, "overlap_ratio": 0.0, "window": "cosine"}, "camera": {"fx_norm": 1.0}}


def test_writer_publishes_atomically_with_checksums(tmp_path):
    out = tmp_path / "a.edgedepth"
    with BundleWriter(out) as w:
        w.file("coarse.onnx").write_bytes(b"")
        w.file("refiner.onnx").write_bytes(b"")
        assert not out.exists()  # nothing visible until commit
        w.commit(_manifest())
    b = open_bundle(out)
    assert set(b.manifest["files"]) == {"coarse.onnx", "refiner.onnx"} and b.name == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["a.edgedepth"]


def test_writer_leaves_nothing_on_error_and_refuses_bad_paths(tmp_path):
    with pytest.raises(RuntimeError):
        with BundleWriter(tmp_path / "b.edgedepth") as w:
            w.file("coarse.onnx").write_bytes(b"c")
            raise RuntimeError("crash mid-export")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="must end in '.edgedepth'"):
        BundleWriter(tmp_path / "b.bundle")
    with BundleWriter(tmp_path / "c.edgedepth") as w:
        with pytest.raises(ValueError, match="inside the bundle"):
            w.file("../escape.onnx")
        # A manifest naming a file that was never written is refused by the reader's checks.
        w.file("coarse.onnx").write_bytes(b"")
        with pytest.raises(FileNotFoundError, match="refiner.onnx"):
            w.commit(_manifest())
    assert not (tmp_path / "c.edgedepth").exists()


# --- the command ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_registry_checkpoint(tmp_path_factory.mktemp("ckpt") / "run")


def test_cli_exports_a_registry_checkpoint(checkpoint, tmp_path):
    from edgedepth.cli import main

    out = tmp_path / "cli.edgedepth"
    rc = main(["export", str(checkpoint), "--out", str(out), "--targets", "onnx,torch", "--precision", "fp32,fp16,int8",
               "--calib", "procedural:16", "--heldout", "procedural:1", "--frame-size", "96x72"])
    assert rc == 0
    m = open_bundle(out).manifest
    assert m["refiner"]["name"] == "prv2-mobile"
    assert set(m["refiner"]["files"]["onnx"]) == {"fp32", "fp16", "int8"}
    assert m["parity"]["coarse/onnx/fp16"]["absrel_vs_fp32"] < 0.01  # resize constants shared by kept-FP32 ops
    # One fp32 file, listed for fp16 too: the torch backend casts it on CUDA.
    assert m["refiner"]["files"]["torch"] == {"fp32": "torch/model.safetensors", "fp16": "torch/model.safetensors"}
    assert m["parity"]["refiner/onnx/int8"]["absrel_vs_fp32"] < 0.05


def test_tensorrt_target_writes_the_trtexec_lines_into_the_bundle(checkpoint, tmp_path):
    from edgedepth.bundle import sha256_file
    from edgedepth.cli import main

    out = tmp_path / "trt.edgedepth"
    assert main(["export", str(checkpoint), "--out", str(out), "--targets", "tensorrt", "--precision", "fp32,fp16",
                 "--heldout", "procedural:1", "--frame-size", "96x72"]) == 0
    text = (out / "trtexec.txt").read_text()
    lines = [line for line in text.splitlines() if line.startswith("trtexec ")]
    for onnx_name in ("coarse.onnx", "refiner.onnx"):
        assert any(f"--onnx={onnx_name}" in line for line in lines), onnx_name
    assert any("--stronglyTyped" in line for line in lines) and any("--fp16" in line for line in lines)
    # the weakly typed FP16 build starts from the FP32 ONNX plus the flag, not the FP16 ONNX
    assert not any("--fp16" in line and "fp16.onnx" in line for line in lines)
    assert open_bundle(out).manifest["files"]["trtexec.txt"] == sha256_file(out / "trtexec.txt")


@pytest.mark.parametrize("argv, match", [
    (["--targets", "onnx,tflite"], "unknown target"),
    (["--precision", "int4"], "unknown precision"),
])
def test_cli_bad_requests(checkpoint, tmp_path, capsys, argv, match):
    from edgedepth.cli import main

    assert main(["export", str(checkpoint), "--out", str(tmp_path / "x.edgedepth"), *argv]) == 1
    err = capsys.readouterr().err
    assert match in err and err.startswith("edgedepth export: error: ") and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_cli_checkpoint_errors(checkpoint, tmp_path, capsys):
    import json
    import shutil

    from edgedepth.cli import main

    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "x.edgedepth")]) == 1
    assert "checkpoint" in capsys.readouterr().err
    bad = shutil.copytree(checkpoint, tmp_path / "bad")
    meta = json.loads((bad / "model.json").read_text())
    meta["coarse"]["kwargs"]["decoder_channels"] = [16, 16, 32, 32]  # weights no longer fit the config
    (bad / "model.json").write_text(json.dumps(meta))
    assert main(["export", str(bad), "--out", str(tmp_path / "y.edgedepth")]) == 1
    assert "the model expects" in capsys.readouterr().err
    assert not (tmp_path / "y.edgedepth").exists()


def test_export_takes_the_checkpoints_training_tiling_and_the_runtime_adapts_the_grid(checkpoint, tmp_path):
    """A checkpoint trained with an adaptive grid (shrink 1.5 at 96x192) exports that tiling by default;
    the runtime then cuts a larger frame into more tiles of the same scale, and a fixed grid far
    from the training scale is warned about."""
    import json
    import shutil
    import warnings

    from edgedepth import Runtime
    from edgedepth.cli import main

    ckpt = shutil.copytree(checkpoint, tmp_path / "ckpt")
    meta = json.loads((ckpt / "model.json").read_text())
    meta["train"] = {"stage": "refiner", "frame_size": [96, 192],
                     "tiling": {"rows": 2, "cols": 2, "overlap_ratio": 0.25, "window": "cosine", "shrink": 1.5}}
    (ckpt / "model.json").write_text(json.dumps(meta))
    out = tmp_path / "adaptive.edgedepth"
    assert main(["export", str(ckpt), "--out", str(out), "--targets", "onnx", "--precision", "fp32",
                 "--heldout", "procedural:1"]) == 0
    m = open_bundle(out).manifest
    assert m["tiling"]["shrink"] == 1.5 and m["refiner"]["train_shrink"] == pytest.approx(1.5, rel=0.15)
    rt = Runtime(out, backend="onnxruntime")
    frame = np.zeros((192, 384, 3), np.uint8)
    small, large = rt.grid_for(96, 192), rt.grid_for(192, 384)
    assert len(large) > 2 * len(small)
    assert abs(np.log(large.shrink(32, 32)[0] / 1.5)) < np.log(1.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rt.predict(frame)  # the adaptive grid keeps the trained scale: no warning
    fixed = Runtime(out, backend="onnxruntime", tiles=(1, 1))
    with pytest.warns(RuntimeWarning, match="trained on"):
        fixed.predict(frame)
    # --max-side: past it the grid stops growing (larger tiles by design, so no warning)
    capped_out = tmp_path / "capped.edgedepth"
    assert main(["export", str(ckpt), "--out", str(capped_out), "--targets", "onnx", "--precision", "fp32",
                 "--heldout", "procedural:1", "--max-side", "192"]) == 0
    assert open_bundle(capped_out).manifest["tiling"]["max_side"] == 192
    capped = Runtime(capped_out, backend="onnxruntime")
    assert (capped.grid_for(192, 384).rows, capped.grid_for(192, 384).cols) == (small.rows, small.cols)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = capped.predict(frame)
    assert res.depth.shape == (192, 384) and len(res.grid) == len(small)
    # a fixed grid asked for at run time drops the cap instead of failing
    assert Runtime(capped_out, backend="onnxruntime", tiles=(1, 1)).tiling.max_side == 0
