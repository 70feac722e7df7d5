"""Calibration from unlabeled camera frames, a selection set apart from the held-out one, and
``edgedepth export --dry-run`` (the plan, with the checkpoint's training tiling and frame size)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgedepth.bundle import open_bundle
from edgedepth.datasets import render_scene
from edgedepth.depth_io import write_image
from edgedepth.export.exporter import ExportConfig, export_bundle
from edgedepth.export.frames import VIDEO_FRAMES as VIDEO_FRAME_LIMIT
from edgedepth.export.frames import load_frames
from edgedepth.export.plan import planned_files

from ..tiny_models import TINY_DAV2, TINY_LITE, save_registry_checkpoint

SIZE = (48, 64)


@pytest.fixture(scope="module")
def camera_folder(tmp_path_factory):
    """Eight frames of a 'camera': images only, no depth beside them."""
    folder = tmp_path_factory.mktemp("camera")
    for i in range(8):
        write_image(folder / f"frame{i:03d}.png", render_scene(i, *SIZE, "street")["image"])
    return folder


VIDEO_FRAMES = 64  # twice what a calibration takes from a video: every other frame is used


@pytest.fixture(scope="module")
def camera_video(tmp_path_factory):
    """A real MJPG video of a 'camera' written by OpenCV, and the RGB frames it was made from."""
    cv2 = pytest.importorskip("cv2")
    frames = [render_scene(i, *SIZE, ("street", "indoor")[i % 2])["image"] for i in range(VIDEO_FRAMES)]
    path = tmp_path_factory.mktemp("video") / "camera.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (SIZE[1], SIZE[0]))
    assert writer.isOpened()
    for f in frames:
        writer.write(np.ascontiguousarray(f[..., ::-1]))
    writer.release()
    return path, frames


@pytest.mark.parametrize("prefix", ["", "video:"])
def test_a_video_gives_rgb_frames_spread_over_its_length(camera_video, prefix):
    path, frames = camera_video
    samples = load_frames(f"{prefix}{path}", labeled=False)
    assert len(samples) == VIDEO_FRAME_LIMIT and all("depth" not in s for s in samples)
    assert [s["name"] for s in samples[:3]] == ["camera_0", "camera_2", "camera_4"]
    for k in (0, 1, VIDEO_FRAME_LIMIT - 1):
        got, want = samples[k]["image"].astype(np.float32), frames[2 * k].astype(np.float32)
        assert got.shape == (*SIZE, 3)
        # MJPG is lossy; the channel order is what matters: RGB, not OpenCV's BGR
        assert np.abs(got - want).mean() < 6 < np.abs(got - want[..., ::-1]).mean()


@pytest.mark.parametrize("kind, prefix", [("folder", ""), ("folder", "images:"), ("video", ""), ("video", "video:")])
def test_int8_calibrates_on_unlabeled_camera_frames(tiny_models, camera_folder, camera_video, tmp_path, kind, prefix):
    coarse, refiner = tiny_models
    calib = prefix + str(camera_folder if kind == "folder" else camera_video[0])
    samples = load_frames(calib, labeled=False)
    assert len(samples) == (8 if kind == "folder" else VIDEO_FRAME_LIMIT)
    cfg = ExportConfig(targets=("onnx",), precisions=("fp32", "int8"), calib=calib,
                       heldout="procedural:2", frame_size=SIZE, calib_tiles=16)
    out = export_bundle(coarse, refiner, {}, tmp_path / "cam.edgedepth", cfg, log=lambda _: None)
    assert open_bundle(out).manifest["parity"]["refiner/onnx/int8"]["absrel_vs_fp32"] < 0.05


def test_frames_that_score_must_have_depth(tiny_models, camera_folder, tmp_path):
    coarse, refiner = tiny_models
    with pytest.raises(ValueError, match="without ground-truth depth.*can only calibrate"):
        load_frames(f"images:{camera_folder}", what="held-out")
    cfg = ExportConfig(targets=("onnx",), precisions=("fp32",), heldout=str(camera_folder), frame_size=SIZE)
    with pytest.raises(ValueError, match="held-out set .* without ground-truth depth"):
        export_bundle(coarse, refiner, {}, tmp_path / "x.edgedepth", cfg, log=lambda _: None)
    assert not (tmp_path / "x.edgedepth").exists()


def test_selection_frames_are_not_the_held_out_ones(tiny_models, tmp_path, monkeypatch):
    """NNCF accuracy control selects on ``select`` frames; the report scores ``heldout`` ones."""
    from edgedepth.export import openvino_export as ove

    coarse, refiner = tiny_models
    seen = {}
    real = ove.quantize_openvino_accuracy_control

    def spy(onnx_path, xml, batches, frames, window, **kw):
        seen["select"] = [f.image.copy() for f in frames]
        return real(onnx_path, xml, batches, frames, window, **kw)

    monkeypatch.setattr(ove, "quantize_openvino_accuracy_control", spy)
    cfg = ExportConfig(targets=("openvino",), precisions=("fp32", "int8"), calib="procedural:16",
                       heldout="procedural:2", select="procedural:3", frame_size=SIZE)
    export_bundle(coarse, refiner, {}, tmp_path / "ov.edgedepth", cfg, log=lambda _: None)
    heldout = [s["image"] for s in load_frames("procedural:2", size=SIZE, seed=100_000)]
    assert len(seen["select"]) == 3
    assert not any((a == b).all() for a in seen["select"] for b in heldout)


def _checkpoint(tmp_path, train):
    return save_registry_checkpoint(tmp_path / "run", TINY_LITE, train)


def test_dry_run_prints_the_plan_from_the_checkpoint_and_builds_nothing(tmp_path, capsys):
    from edgedepth.cli import main

    train = {"stage": "refiner", "frame_size": [96, 192],
             "tiling": {"rows": 3, "cols": 2, "overlap_ratio": 0.25, "window": "cosine", "shrink": 0.0}}
    ckpt = _checkpoint(tmp_path, train)
    out = tmp_path / "plan.edgedepth"
    assert main(["export", str(ckpt), "--out", str(out), "--targets", "onnx,openvino,coreml",
                 "--precision", "fp32,int8", "--calib", "video:cam.mp4", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    assert "tiling:      3x2, overlap 0.25, cosine window" in text and "frame size:  192x96" in text
    assert "calibration: video:cam.mp4" in text and "selection:   procedural:4" in text
    for rel in ("refiner.int8.qdq.onnx", "openvino/refiner.int8.xml", "coreml/refiner.palette6.mlpackage"):
        assert f"  {rel}\n" in text
    assert "coarse.fp16.onnx" not in text


def test_plan_lists_exactly_what_an_export_writes(tiny_models, tmp_path):
    coarse, refiner = tiny_models
    cfg = ExportConfig(targets=("onnx", "openvino", "coreml", "tensorrt"), precisions=("fp32", "fp16", "int8"),
                       calib="procedural:16", heldout="procedural:1", select="procedural:1", frame_size=SIZE,
                       pipeline_size=SIZE, accuracy_control=False)
    out = export_bundle(coarse, refiner, {}, tmp_path / "all.edgedepth", cfg, log=lambda _: None)
    written = set()
    for rel in json.loads((out / "manifest.json").read_text())["files"]:
        parts = rel.split("/")
        package = next((i for i, p in enumerate(parts) if p.endswith(".mlpackage")), None)
        written.add("/".join(parts[:package + 1]) if package is not None else rel)
    written -= {"parity.md"}
    assert set(planned_files(cfg.resolved({}))) == written


def test_int8_alone_as_openvino_ir_keeps_the_float_models_in_onnx(tiny_models, tmp_path):
    """--openvino-precision int8: the bundle holds NNCF's INT8 IR and no float IR; the OpenVINO
    backend compiles the ONNX files at fp32 and loads the IR at int8, and the plan says so."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from edgedepth import Runtime

    coarse, refiner = tiny_models
    cfg = ExportConfig(targets=("onnx", "openvino"), precisions=("fp32", "int8"), openvino_precisions=("int8",),
                       calib="procedural:16", heldout="procedural:1", frame_size=SIZE, accuracy_control=False)
    out = export_bundle(coarse, refiner, {}, tmp_path / "ir8.edgedepth", cfg, log=lambda _: None)
    written = set(json.loads((out / "manifest.json").read_text())["files"]) - {"parity.md"}
    assert set(planned_files(cfg.resolved({}))) == written
    assert {f for f in written if f.startswith("openvino/") and f.endswith(".xml")} == {"openvino/refiner.int8.xml"}
    image = render_scene(5, *SIZE, "street")["image"]
    runs = {p: Runtime(out, backend="openvino", precision=p) for p in ("fp32", "int8")}
    assert runs["fp32"].refiner.path.name == "refiner.onnx"
    assert runs["int8"].refiner.path.name == "refiner.int8.xml"
    assert runs["int8"].coarse.path.name == "coarse.onnx"
    depth = {p: rt.predict(image).depth for p, rt in runs.items()}
    assert np.all(np.isfinite(depth["int8"]))
    assert 0 < np.mean(np.abs(depth["int8"] - depth["fp32"]) / depth["fp32"]) < 0.05


def test_openvino_ir_precisions_must_be_exported_ones():
    with pytest.raises(ValueError, match="fp16.*not among the exported"):
        ExportConfig(targets=("onnx", "openvino"), precisions=("fp32", "int8"), openvino_precisions=("fp16",)).validate()
    with pytest.raises(ValueError, match="'openvino' is not among the targets"):
        ExportConfig(targets=("onnx",), precisions=("fp32", "int8"), openvino_precisions=("int8",)).validate()


def _dav2_checkpoint(tmp_path):
    """A tiny Depth Anything V2 checkpoint (random weights): the coarse model INT8 quantizes too."""
    train = {"stage": "refiner", "frame_size": [84, 84],
             "tiling": {"rows": 2, "cols": 2, "overlap_ratio": 0.25, "window": "cosine", "shrink": 0.0}}
    return save_registry_checkpoint(tmp_path / "dav2", TINY_DAV2, train)


def test_dry_run_of_a_vit_lists_the_coarse_int8_files_a_real_export_writes(tmp_path, capsys):
    from edgedepth.cli import main

    ckpt = _dav2_checkpoint(tmp_path)
    out = tmp_path / "dav2.edgedepth"
    args = ["export", str(ckpt), "--out", str(out), "--targets", "onnx,openvino", "--precision", "fp32,int8",
            "--calib", "procedural:4", "--heldout", "procedural:1", "--calib-tiles", "16", "--no-accuracy-control"]
    assert main(args + ["--dry-run"]) == 0
    text = capsys.readouterr().out
    planned = {line.strip() for line in text.split("files:\n", 1)[1].splitlines()}
    assert {"coarse.int8.qdq.onnx", "openvino/coarse.int8.xml", "openvino/coarse.int8.bin"} <= planned
    assert "coarse INT8: yes" in text
    assert main(args) == 0
    written = set(json.loads((out / "manifest.json").read_text())["files"]) | {"manifest.json"}
    assert planned == written


def test_cli_calibrates_from_a_video(camera_video, tmp_path):
    from edgedepth.cli import main

    ckpt = _checkpoint(tmp_path, {"stage": "refiner"})
    out = tmp_path / "cli.edgedepth"
    assert main(["export", str(ckpt), "--out", str(out), "--precision", "fp32,int8", "--calib",
                 f"video:{camera_video[0]}", "--heldout", "procedural:1", "--frame-size", "64x48", "--tiles", "1x2",
                 "--calib-tiles", "32"]) == 0
    assert "refiner/onnx/int8" in open_bundle(out).manifest["parity"]


@pytest.mark.parametrize("vit, flag, coarse_int8", [(True, "auto", True), (True, "off", False),
                                                     (False, "auto", False), (False, "on", True)])
def test_coarse_int8_flag_decides_the_coarse_files(tmp_path, capsys, vit, flag, coarse_int8):
    from edgedepth.cli import main

    ckpt = _dav2_checkpoint(tmp_path) if vit else _checkpoint(tmp_path, {"stage": "refiner"})
    args = ["export", str(ckpt), "--out", str(tmp_path / "x.edgedepth"), "--targets", "onnx",
            "--precision", "fp32,int8", "--coarse-int8", flag, "--dry-run"]
    assert main(args) == 0
    assert ("coarse.int8.qdq.onnx" in capsys.readouterr().out) == coarse_int8
