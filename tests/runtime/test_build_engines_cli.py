"""`edgedepth build-engines`: its trtexec lines from a real bundle, and its one-line errors."""
from __future__ import annotations

import importlib.util
import shlex

import pytest

from edgedepth.cli import main

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAS_TRT, reason="checks the message shown where tensorrt is absent")
def test_without_tensorrt_one_line_and_a_failure_status(tiny_bundle, capsys):
    assert main(["build-engines", str(tiny_bundle), "--precision", "fp16"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgedepth build-engines: error: ") and err.count("\n") == 1
    assert "'tensorrt'" in err and "JetPack" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, match", [
    (["--device", "gpu0"], "--device must be cuda or cuda:N"),
    (["--dla-core", "-1"], "--dla-core must be >= 0"),
    (["--max-tile-batch", "0", "--print-trtexec"], "min_batch"),
])
def test_bad_requests_are_one_line(tiny_bundle, capsys, argv, match):
    assert main(["build-engines", str(tiny_bundle), *argv]) == 1
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


def test_a_missing_bundle_is_named(tmp_path, capsys):
    assert main(["build-engines", str(tmp_path / "nope.edgedepth")]) == 1
    assert "nope.edgedepth" in capsys.readouterr().err


def test_print_trtexec_reads_the_manifest(tiny_bundle, capsys):
    assert main(["build-engines", str(tiny_bundle), "--print-trtexec", "--tiles", "3x3", "--max-tile-batch", "8"]) == 0
    out = capsys.readouterr().out
    weak, strong = out.split("## TensorRT 10.12")
    lines = [shlex.split(line) for line in weak.splitlines() if line.startswith("trtexec")]
    # The tiny bundle holds FP32 ONNX only: fp32 and (weakly typed) fp16, coarse then refiner.
    assert [a[1] for a in lines] == ["--onnx=coarse.onnx", "--onnx=refiner.onnx"] * 2
    assert "--fp16" in lines[3] and "--optShapes=rgb:8x3x24x24,coarse_depth:8x1x24x24,guide0:8x8x6x6" in lines[3]
    assert "--maxShapes=rgb:8x3x24x24,coarse_depth:8x1x24x24,guide0:8x8x6x6" in lines[3]
    # Strongly typed FP16 needs FP16 ONNX, which this bundle lacks: only fp32 is listed there.
    assert [shlex.split(line)[2] for line in strong.splitlines() if line.startswith("trtexec")] == [
        "--saveEngine=coarse.fp32.engine", "--saveEngine=refiner.fp32.engine"]


def test_print_trtexec_for_a_dla_core_has_static_shapes(tiny_bundle, capsys):
    assert main(["build-engines", str(tiny_bundle), "--print-trtexec", "--dla-core", "1"]) == 0
    refiner = [shlex.split(line) for line in capsys.readouterr().out.splitlines()
               if line.startswith("trtexec --onnx=refiner")]
    assert refiner and all({"--useDLACore=1", "--allowGPUFallback",
                            "--minShapes=rgb:4x3x24x24,coarse_depth:4x1x24x24,guide0:4x8x6x6"} <= set(a) for a in refiner)
