"""`edgedepth predict` (images, folders, video; .npy, 16-bit PNG, colour PNG, PLY) and `edgedepth info`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgedepth import Runtime
from edgedepth.cli import main
from edgedepth.depth_io import read_depth_png, read_image, write_image
from edgedepth.tiling import native_status
from edgedepth.pointcloud import backproject, default_intrinsics, write_ply


def _frame(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _ply_vertices(path):
    data = path.read_bytes()
    header, _, body = data.partition(b"end_header\n")
    n = int(next(line for line in header.decode().splitlines() if line.startswith("element vertex")).split()[-1])
    return n, header.decode(), body


def test_predict_image_and_folder(tiny_bundle, tmp_path, capsys):
    img = _frame(30, 44)
    write_image(tmp_path / "a.png", img)
    (tmp_path / "seq").mkdir()
    for i in range(2):
        write_image(tmp_path / "seq" / f"f{i}.png", _frame(30, 44, seed=i + 1))
    out = tmp_path / "out"
    rc = main(["predict", str(tmp_path / "a.png"), str(tmp_path / "seq"), "--bundle", str(tiny_bundle),
               "--backend", "onnxruntime", "--out", str(out)])
    assert rc == 0
    assert "onnxruntime (requested)" in capsys.readouterr().err
    expected = Runtime(tiny_bundle, backend="onnxruntime").predict(img).depth
    np.testing.assert_array_equal(np.load(out / "a.npy"), expected)
    np.testing.assert_allclose(read_depth_png(out / "a_depth16.png"), expected, atol=5e-4 + 1e-6)
    assert read_image(out / "a_color.png").shape == (30, 44, 3)
    n, header, body = _ply_vertices(out / "a.ply")
    assert n == 30 * 44 and "property uchar red" in header and len(body) == n * 15
    for i in range(2):
        assert (out / "seq" / f"f{i}.npy").is_file() and (out / "seq" / f"f{i}.ply").is_file()


def test_predict_video(tiny_bundle, tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for i in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(_frame(32, 48, seed=i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "out"
    assert main(["predict", str(path), "--bundle", str(tiny_bundle), "--out", str(out), "--outputs", "npy,png16"]) == 0
    written = sorted(p.name for p in (out / "clip").iterdir())
    assert written == [f"{i:06d}{s}" for i in range(3) for s in (".npy", "_depth16.png")]
    assert np.load(out / "clip" / "000000.npy").shape == (32, 48)


def test_predict_fx_rescales_depth(tiny_bundle, tmp_path):
    write_image(tmp_path / "a.png", _frame(30, 40))
    main(["predict", str(tmp_path / "a.png"), "--bundle", str(tiny_bundle), "--out", str(tmp_path / "o1"),
          "--outputs", "npy"])
    main(["predict", str(tmp_path / "a.png"), "--bundle", str(tiny_bundle), "--out", str(tmp_path / "o2"),
          "--outputs", "npy", "--fx", str(2 * 0.8 * 40)])
    np.testing.assert_allclose(np.load(tmp_path / "o2" / "a.npy"), 2 * np.load(tmp_path / "o1" / "a.npy"), rtol=1e-5)


def test_predict_tiles_override_is_rows_by_cols(tiny_bundle, tmp_path):
    from edgedepth import Runtime

    frame = _frame(30, 40)
    write_image(tmp_path / "a.png", frame)
    assert main(["predict", str(tmp_path / "a.png"), "--bundle", str(tiny_bundle), "--out", str(tmp_path / "o"),
                 "--outputs", "npy", "--tiles", "3x1"]) == 0
    expected = Runtime(tiny_bundle, tiles=(3, 1)).predict(frame)
    assert (expected.grid.rows, expected.grid.cols) == (3, 1)
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "a.npy"), expected.depth)


def test_predict_errors(tiny_bundle, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "missing.png"), "--bundle", str(tiny_bundle)]) == 1
    assert "missing.png" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), "--bundle", str(tiny_bundle)]) == 1
    assert "holds no images" in capsys.readouterr().err
    write_image(tmp_path / "a.png", _frame(10, 10))
    with pytest.raises(SystemExit, match="--outputs"):
        main(["predict", str(tmp_path / "a.png"), "--bundle", str(tiny_bundle), "--outputs", "npy,jpeg"])


def test_info_reports_backends_and_engine(capsys):
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backends"]["onnxruntime"]["available"] is True
    assert "cpu" in report["backends"]["onnxruntime"]["devices"]
    assert set(report["backends"]) >= {"tensorrt", "openvino", "onnxruntime", "coreml", "torch"}
    assert "cpu" in report["tile_engine"]
    assert report["tile_engine"] == native_status()
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "onnxruntime" in text and "tile engine" in text
    status = native_status()
    assert ("CPU    native, " in text) == status["cpu"] and (f"{status['threads']} threads" in text) == status["cpu"]
    assert ("CUDA   compiled" in text) == status["cuda"] and ("CUDA   not compiled" in text) != status["cuda"]
    coreml = report["backends"]["coreml"]
    if not coreml["available"] and coreml["version"]:  # coremltools installed off macOS: why, not "install it"
        assert "macOS" in coreml["why_not"] and "coreml       " + coreml["version"] + "  unusable here" in text


def test_info_tile_engine_lines_cover_every_build():
    from edgedepth.commands.info import tile_engine_lines

    full = {"cpu": True, "cpu_error": None, "cpu_sanitized": True, "threads": 8, "cuda": True, "cuda_error": None,
            "cuda_runtime": 12060, "cuda_devices": 1}
    assert tile_engine_lines(full) == ["CPU    native, 8 threads (ASan/UBSan build)",
                                       "CUDA   compiled (CUDA runtime 12.6), 1 device"]
    bare = {**full, "cpu": False, "cpu_error": "No module named 'edgedepth._native'", "cuda": False,
            "cuda_error": "No module named 'edgedepth._native_cuda'", "cuda_runtime": None, "cuda_devices": 0}
    assert tile_engine_lines(bare) == [
        "CPU    numpy reference (native module not built: No module named 'edgedepth._native')",
        "CUDA   not compiled (No module named 'edgedepth._native_cuda')"]


def test_backprojection_and_ply(tmp_path):
    depth = np.array([[1.0, 0.0], [2.0, np.nan]], np.float32)
    k = default_intrinsics(2, 2, fx_norm=1.0)  # f = 2 px, principal point (0.5, 0.5)
    points, (rows, cols) = backproject(depth, k)
    np.testing.assert_allclose(points, [[-0.25, -0.25, 1.0], [-0.5, 0.5, 2.0]])
    assert rows.tolist() == [0, 1] and cols.tolist() == [0, 0]
    write_ply(tmp_path / "p.ply", points)
    n, header, body = _ply_vertices(tmp_path / "p.ply")
    assert n == 2 and "uchar" not in header
    np.testing.assert_array_equal(np.frombuffer(body, "<f4").reshape(2, 3), points)
    with pytest.raises(ValueError, match="intrinsics"):
        backproject(depth, np.eye(2))
    with pytest.raises(ValueError, match=r"points must be \(N, 3\)"):
        write_ply(tmp_path / "q.ply", np.zeros((3, 2)))


def test_backend_without_a_model_for_it_says_what_to_export(tiny_bundle):
    pytest.importorskip("torch")

    with pytest.raises(ValueError, match="holds no torch model.*--targets torch"):
        Runtime(tiny_bundle, backend="torch")
