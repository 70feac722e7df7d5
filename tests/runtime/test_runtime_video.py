"""Video in and out: OpenCV's VideoCapture on a real video file (and PyAV where OpenCV is missing),
`edgedepth predict` on videos with a depth video, a fixed colour range and its legend, 16-bit PNG units
and the clip count, cameras that cannot be opened."""
from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from edgedepth import Runtime
from edgedepth.cli import main
from edgedepth.datasets.trajectory import render_trajectory
from edgedepth.depth_io import colorize_depth, depth_legend, read_depth_png, read_image
from edgedepth.video import DepthVideoWriter, FrameSource

H, W = 48, 80


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 5-frame MJPG video of a camera driving down a procedural street, written by OpenCV, and its RGB frames."""
    frames = [f.sample["image"] for f in render_trajectory(2, H, W, "street", 5)]
    path = tmp_path_factory.mktemp("video") / "drive.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (W, H))
    for f in frames:
        writer.write(f[..., ::-1].copy())
    writer.release()
    return path, frames


def _decoded(path):
    """The frames exactly as OpenCV decodes them (BGR)."""
    capture = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return out
        out.append(frame)


def test_frame_source_reads_a_video_file_through_opencv(clip):
    path, frames = clip
    with FrameSource(path) as source:
        assert source.color == "bgr" and source.frame_count == 5 and source.fps == pytest.approx(5.0)
        got = list(source)
    assert len(got) == 5 and got[0].shape == (H, W, 3)
    for g, want in zip(got, _decoded(path)):
        np.testing.assert_array_equal(g, want)
    assert np.abs(got[0][..., ::-1].astype(int) - frames[0]).mean() < 6  # the scene, through JPEG
    assert len(list(FrameSource(path, max_frames=2))) == 2


def test_frame_source_falls_back_to_pyav(clip):
    pytest.importorskip("av")
    path, _ = clip
    with FrameSource(path, backend="pyav") as source:
        assert source.color == "rgb"
        got = list(source)
    assert len(got) == 5
    assert np.abs(got[2].astype(int) - _decoded(path)[2][..., ::-1]).mean() < 3  # two decoders, one file


def test_sources_that_cannot_be_opened_say_which(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        FrameSource(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cannot open video source .*junk.mp4"):
        FrameSource(tmp_path / "junk.mp4")
    with pytest.raises(ValueError, match="cannot open video source camera 99"):
        FrameSource(99)  # no such camera here (the device path itself cannot run in CI)


def test_predict_video_writes_a_depth_video_and_frames(clip, tiny_bundle, tmp_path, capsys):
    path, _ = clip
    out = tmp_path / "out"
    assert main(["predict", str(path), "--bundle", str(tiny_bundle), "--out", str(out), "--stabilize", "off",
                 "--vmin", "0.5", "--vmax", "4"]) == 0
    # default outputs for a video: the depth video and 16-bit PNGs, plus the colour key
    rt = Runtime(tiny_bundle, backend="onnxruntime")
    expected = [rt.predict(f, color="bgr") for f in _decoded(path)]
    for i, e in enumerate(expected):
        np.testing.assert_allclose(read_depth_png(out / "drive" / f"{i:06d}_depth16.png"),
                                   np.where(e.valid, e.depth, 0), atol=5e-4 + 1e-6)
    assert not list((out / "drive").glob("*.npy"))
    video = _decoded(out / "drive_depth.mp4")
    legend = depth_legend(W, 0.5, 4)
    tall = H + legend.shape[0]
    assert len(video) == 5 and video[0].shape == (tall + tall % 2, W, 3)  # padded to even sides for the codec
    # fixed range: frame 3's colours are colorize_depth over [0.5, 4] m, whatever that frame's own range
    want = colorize_depth(np.where(expected[3].valid, expected[3].depth, 0), 0.5, 4)
    assert np.abs(video[3][:H, :, ::-1].astype(int) - want).mean() < 8  # through MPEG-4
    assert np.abs(video[3][H:tall, :, ::-1].astype(int) - legend).mean() < 25
    assert read_image(out / "legend.png").shape[1] == 640


def test_predict_video_is_stabilised_by_default(clip, tiny_bundle, tmp_path):
    path, _ = clip
    args = ["predict", str(path), "--bundle", str(tiny_bundle), "--outputs", "npy"]
    assert main([*args, "--out", str(tmp_path / "on")]) == 0
    assert main([*args, "--out", str(tmp_path / "off"), "--stabilize", "off"]) == 0
    on = [np.load(tmp_path / "on" / "drive" / f"{i:06d}.npy") for i in range(5)]
    off = [np.load(tmp_path / "off" / "drive" / f"{i:06d}.npy") for i in range(5)]
    np.testing.assert_array_equal(on[0], off[0])
    assert any(not np.allclose(a, b, equal_nan=True) for a, b in zip(on[1:], off[1:]))


def test_color_pngs_share_one_range_and_png16_units(tiny_bundle, tmp_path, capsys):
    from edgedepth.depth_io import write_image

    rng = np.random.default_rng(0)
    for i in range(2):
        write_image(tmp_path / f"f{i}.png", rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    out = tmp_path / "out"
    # fx 40x the training camera's: depths of ~150-210 m, beyond what millimetres in 16 bits hold
    far = ["--fx", str(40 * 0.8 * 40)]
    assert main(["predict", str(tmp_path / "f0.png"), str(tmp_path / "f1.png"), "--bundle", str(tiny_bundle),
                 "--out", str(out), "--outputs", "npy,png16,color", *far]) == 0
    err = capsys.readouterr().err
    assert "valid pixels in 2 frame(s) lay beyond 65.535 m" in err and "coarser --png16-unit" in err
    assert (read_depth_png(out / "f0_depth16.png") == 0).mean() > 0.5
    for i in range(2):
        depth = np.load(out / f"f{i}.npy")
        np.testing.assert_array_equal(read_image(out / f"f{i}_color.png"), colorize_depth(np.nan_to_num(depth), 1, 80))
    assert main(["predict", str(tmp_path / "f0.png"), "--bundle", str(tiny_bundle), "--out", str(tmp_path / "cm"),
                 "--outputs", "npy,png16", "--png16-unit", "cm", *far]) == 0
    assert "beyond" not in capsys.readouterr().err
    depth = np.load(tmp_path / "cm" / "f0.npy")
    np.testing.assert_allclose(read_depth_png(tmp_path / "cm" / "f0_depth16.png"), depth, atol=5e-3 + 1e-4)


def test_a_bare_camera_number_points_at_camera(tiny_bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "0", "--bundle", str(tiny_bundle)]) == 1
    assert "use --camera 0" in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [
    (["--png16-unit", "inch"], "--png16-unit must be mm, cm or a positive number"),
    (["--vmin", "5", "--vmax", "2"], "0 < vmin < vmax"),
    (["--outputs", "video"], "--outputs video needs a video"),
    (["--camera", "99"], "cannot open video source camera 99"),
])
def test_predict_bad_video_options(tiny_bundle, tmp_path, capsys, argv, match):
    from edgedepth.depth_io import write_image

    write_image(tmp_path / "a.png", np.zeros((20, 30, 3), np.uint8))
    inputs = [] if argv[0] == "--camera" else [str(tmp_path / "a.png")]
    try:
        status = main(["predict", *inputs, "--bundle", str(tiny_bundle), "--out", str(tmp_path / "o"), *argv])
    except SystemExit as exit_:  # argument mistakes: argparse-style exits
        status, message = 1, str(exit_)
    else:
        message = capsys.readouterr().err.strip().splitlines()[-1]  # run-time mistakes: one line
    assert status == 1 and re.search(match, message), message


def test_depth_video_writer_publishes_only_whole_files(tmp_path):
    depth = np.full((21, 33), 3.0, np.float32)
    with pytest.raises(RuntimeError):
        with DepthVideoWriter(tmp_path / "d.mp4", 10, 1, 10) as video:
            video.write(depth)
            raise RuntimeError("killed mid-video")
    assert not any(tmp_path.iterdir())  # neither the video nor its temporary
    with DepthVideoWriter(tmp_path / "d.mp4", 10, 1, 10, legend=False) as video:
        video.write(depth)
        with pytest.raises(ValueError, match="differs from the first frame"):
            video.write(depth[:-2])
    got = _decoded(tmp_path / "d.mp4")
    assert len(got) == 1 and got[0].shape == (22, 34, 3)  # padded to even sides for the codec
    with pytest.raises(ValueError, match="must end in .mp4 or .avi"):
        DepthVideoWriter(tmp_path / "d.gif", 10, 1, 10)
