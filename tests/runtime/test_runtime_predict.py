"""Runtime on a real bundle of tiny models: agreement with an independent reference and across
backends, any frame size, stream == predict, concurrent predict, intrinsics, every error path."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading

import numpy as np
import pytest

from edgedepth import Runtime
from edgedepth.backends import BackendUnavailableError
from edgedepth.runtime import STAGES

from .tiny_models import reference_depth


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def ort_runtime(tiny_bundle):
    return Runtime(tiny_bundle, backend="onnxruntime", threads=1)


def test_predict_matches_independent_reference(ort_runtime):
    image = _image(50, 70)
    result = ort_runtime.predict(image)
    expected, expected_coarse = reference_depth(image)
    assert result.depth.shape == (50, 70) and result.depth.dtype == np.float32
    assert np.isfinite(result.depth).all() and (result.depth >= 0).all()
    np.testing.assert_allclose(result.depth, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(result.coarse, expected_coarse, rtol=1e-4, atol=1e-4)
    assert set(STAGES) <= set(result.timings) and all(v >= 0 for v in result.timings.values())
    assert (result.grid.rows, result.grid.cols) == (2, 2)


def test_coarse_fit_pad_keeps_a_narrow_frames_aspect(tiny_bundle_copy):
    """coarse.fit "pad": a 4:3 frame in the 3:2 coarse input keeps its proportions (43 of 48 columns,
    2 and 3 repeated either side), its tiles are cut from that part of the coarse maps, and depth is
    scaled by 43/48 (fx per frame width); the independent reference computes all of it by hand."""
    import json

    from edgedepth.bundle import BundleError

    image = _image(60, 80, seed=3)
    manifest = tiny_bundle_copy / "manifest.json"
    data = json.loads(manifest.read_text())
    squeezed = Runtime(tiny_bundle_copy, backend="onnxruntime", threads=1).predict(image)
    np.testing.assert_allclose(squeezed.depth, reference_depth(image)[0], rtol=1e-4, atol=1e-4)  # no key: squeeze
    data["coarse"]["fit"] = "pad"
    manifest.write_text(json.dumps(data))
    result = Runtime(tiny_bundle_copy, backend="onnxruntime", threads=1).predict(image)
    expected, expected_coarse = reference_depth(image, pad_columns=5)
    assert result.coarse.shape == (32, 43)
    np.testing.assert_allclose(result.coarse, expected_coarse, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(result.depth, expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(result.depth, squeezed.depth, rtol=1e-2)
    # the frame of the input's own aspect is squeezed either way
    same = _image(64, 96, seed=4)
    np.testing.assert_allclose(Runtime(tiny_bundle_copy, backend="onnxruntime", threads=1).predict(same).depth,
                               reference_depth(same)[0], rtol=1e-4, atol=1e-4)
    coarse_only = Runtime(tiny_bundle_copy, backend="onnxruntime", threads=1, refine=False).predict(image)
    np.testing.assert_allclose(coarse_only.coarse, expected_coarse, rtol=1e-4, atol=1e-4)
    data["coarse"]["fit"] = "letterbox"
    manifest.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="coarse.fit"):
        Runtime(tiny_bundle_copy, backend="onnxruntime")


def test_openvino_agrees_with_onnxruntime(tiny_bundle, ort_runtime, tmp_path):
    pytest.importorskip("openvino")
    ov = Runtime(tiny_bundle, backend="openvino", device="cpu", threads=1, cache_dir=tmp_path / "ov")
    image = _image(61, 45, seed=3)
    np.testing.assert_allclose(ov.predict(image).depth, ort_runtime.predict(image).depth, rtol=1e-4, atol=1e-4)
    assert any((tmp_path / "ov").iterdir()), "OpenVINO compiled-model cache was not written"


@pytest.mark.parametrize("shape", [(1, 1), (7, 301), (240, 9), (33, 33)])
def test_any_resolution_covers_every_pixel(ort_runtime, shape):
    image = _image(*shape, seed=1)
    result = ort_runtime.predict(image)
    expected, _ = reference_depth(image)
    assert result.depth.shape == shape
    # The tiny refiner's output is >= coarse depth's floor of 1 m: an uncovered pixel would read 0.
    assert (result.depth > 0.5).all()
    np.testing.assert_allclose(result.depth, expected, rtol=1e-4, atol=1e-4)


def test_tiles_override_changes_grid(tiny_bundle):
    rt = Runtime(tiny_bundle, backend="onnxruntime", tiles=(3, 1))
    image = _image(40, 30)
    result = rt.predict(image)
    assert (result.grid.rows, result.grid.cols) == (3, 1)
    np.testing.assert_allclose(result.depth, reference_depth(image, rows=3, cols=1)[0], rtol=1e-4, atol=1e-4)


def test_stream_and_batch_equal_predict(ort_runtime):
    frames = [_image(40 + 3 * i, 52 - 2 * i, seed=i) for i in range(5)]
    expected = [ort_runtime.predict(f).depth for f in frames]
    streamed = [r.depth for r in ort_runtime.stream(iter(frames), stabilize=False)]
    batched = [r.depth for r in ort_runtime.predict_batch(frames)]
    assert len(streamed) == len(batched) == 5
    for e, s, b in zip(expected, streamed, batched):
        np.testing.assert_array_equal(s, e)
        np.testing.assert_array_equal(b, e)


def test_stream_raises_the_bad_frames_error(ort_runtime):
    frames = [_image(30, 30), np.zeros((30, 30), np.uint8), _image(30, 30)]
    it = ort_runtime.stream(frames)
    assert next(it).depth.shape == (30, 30)
    with pytest.raises(ValueError, match=r"shape \(30, 30\)"):
        next(it)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_concurrent_predict_is_safe(tiny_bundle, backend, tmp_path):
    pytest.importorskip(backend)
    rt = Runtime(tiny_bundle, backend=backend, device="cpu", threads=1, cache_dir=tmp_path)
    frames = [_image(30 + i, 41 - i, seed=i) for i in range(6)]
    expected = [rt.predict(f).depth for f in frames]
    got: dict[tuple[int, int], np.ndarray] = {}
    errors = []

    def work(t):
        try:
            for rep in range(2):
                for i in range(t, len(frames), 2):
                    got[(i, rep, t)] = rt.predict(frames[i]).depth
        except Exception as err:  # reported below; a thread's exception would otherwise vanish
            errors.append(err)

    threads = [threading.Thread(target=work, args=(t,)) for t in (0, 1, 0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(got) >= 12
    for (i, _, _), depth in got.items():
        np.testing.assert_array_equal(depth, expected[i])


def test_intrinsics_rescale_metric_depth(ort_runtime):
    image = _image(40, 60)
    base = ort_runtime.predict(image)
    fx_train = 0.8 * 60
    same = ort_runtime.predict(image, intrinsics=np.array([[fx_train, 0, 30], [0, fx_train, 20], [0, 0, 1]]))
    np.testing.assert_allclose(same.depth, base.depth, rtol=1e-6)
    longer = ort_runtime.predict(image, intrinsics=2 * fx_train)  # twice the focal length: twice as far
    np.testing.assert_allclose(longer.depth, 2 * base.depth, rtol=1e-5)
    np.testing.assert_allclose(longer.coarse, 2 * base.coarse, rtol=1e-5)
    with pytest.raises(ValueError, match="3x3 camera matrix"):
        ort_runtime.predict(image, intrinsics=np.eye(2))
    with pytest.raises(ValueError, match="finite and > 0"):
        ort_runtime.predict(image, intrinsics=-5.0)


def test_accepts_paths_float_images_and_cpu_torch_tensors(ort_runtime, tmp_path):
    torch = pytest.importorskip("torch")
    from edgedepth.depth_io import write_image

    image = _image(30, 40)
    expected = ort_runtime.predict(image).depth
    write_image(tmp_path / "f.png", image)
    np.testing.assert_array_equal(ort_runtime.predict(tmp_path / "f.png").depth, expected)
    np.testing.assert_array_equal(ort_runtime.predict(str(tmp_path / "f.png")).depth, expected)
    np.testing.assert_array_equal(ort_runtime.predict(image.astype(np.float32) / 255).depth, expected)
    np.testing.assert_array_equal(ort_runtime.predict(torch.from_numpy(image)).depth, expected)


@pytest.mark.parametrize("bad,error,match", [
    (np.zeros((30, 40), np.uint8), ValueError, r"\(H, W, 3\).*\(30, 40\)"),
    (np.zeros((30, 40, 4), np.uint8), ValueError, r"\(H, W, 3\).*\(30, 40, 4\)"),
    (np.zeros((0, 40, 3), np.uint8), ValueError, "empty"),
    (np.zeros((30, 40, 3), np.int16), TypeError, "dtype int16"),
    (np.full((30, 40, 3), np.nan, np.float32), ValueError, "NaN"),
    (np.full((30, 40, 3), 7.0, np.float32), ValueError, r"\[0, 1\]"),
    ([[1, 2, 3]], TypeError, "got list"),
])
def test_bad_images_are_refused(ort_runtime, bad, error, match):
    with pytest.raises(error, match=match):
        ort_runtime.predict(bad)


def test_missing_image_path(ort_runtime, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        ort_runtime.predict(tmp_path / "nope.png")


def test_frame_beyond_memory_budget(tiny_bundle):
    rt = Runtime(tiny_bundle, backend="onnxruntime", memory_budget_mb=1)
    rt.predict(_image(50, 50))
    with pytest.raises(ValueError, match=r"frame 400x500 needs about .* memory budget of 1 MB"):
        rt.predict(np.zeros((400, 500, 3), np.uint8))


def test_bad_arguments(tiny_bundle):
    with pytest.raises(ValueError, match="unknown backend 'tflite'"):
        Runtime(tiny_bundle, backend="tflite")
    with pytest.raises(ValueError, match="precision must be"):
        Runtime(tiny_bundle, precision="fp8")
    with pytest.raises(ValueError, match="tiles must be"):
        Runtime(tiny_bundle, tiles=(0, 2))
    with pytest.raises(ValueError, match="threads must be"):
        Runtime(tiny_bundle, threads=0)
    with pytest.raises(ValueError, match="cannot use device 'cuda'"):
        Runtime(tiny_bundle, backend="onnxruntime", device="cuda")


def test_precision_errors(tiny_bundle):
    # The backend can run int8, but this bundle holds no int8 refiner.
    with pytest.raises(ValueError, match=r"no refiner at precision 'int8' for backend 'onnxruntime'"):
        Runtime(tiny_bundle, backend="onnxruntime", precision="int8")
    # The backend cannot run int8 at all.
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"backend 'torch' cannot run precision 'int8'"):
        Runtime(tiny_bundle, backend="torch", precision="int8")


def test_missing_backend_package_names_the_install(tiny_bundle, monkeypatch):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match="pip install tensorrt"):
            Runtime(tiny_bundle, backend="tensorrt")
    monkeypatch.setitem(sys.modules, "openvino", None)  # make an installed package unimportable
    with pytest.raises(BackendUnavailableError, match=r"pip install 'edgedepth\[openvino\]'"):
        Runtime(tiny_bundle, backend="openvino")


@pytest.mark.skipif(sys.platform == "darwin", reason="CoreML runs on macOS; this checks the refusal elsewhere")
def test_coreml_refused_off_macos(tiny_bundle):
    with pytest.raises(BackendUnavailableError, match="only on macOS"):
        Runtime(tiny_bundle, backend="coreml")


def test_auto_backend_says_which(tiny_bundle):
    rt = Runtime(tiny_bundle)
    assert rt.backend_name in ("tensorrt", "openvino", "onnxruntime")
    assert rt.backend_reason.startswith(rt.backend_name) and "auto" in rt.backend_reason
    info = rt.info()
    assert info["backend"] == rt.backend_name and info["bundle_name"] == "tiny"
    assert [m["role"] for m in info["models"]] == ["coarse", "refiner"]
    rt.warmup()


def test_default_bundle_missing_is_a_clear_error(monkeypatch, tmp_path):
    from edgedepth import bundle

    monkeypatch.setattr(bundle, "DEFAULT_BUNDLE", tmp_path / "default.edgedepth")
    with pytest.raises(FileNotFoundError, match="default.edgedepth"):
        Runtime()


def test_import_does_not_import_torch():
    code = ("import sys, edgedepth; edgedepth.Runtime; import edgedepth.backends, edgedepth.bundle; "
            "import edgedepth.commands.predict, edgedepth.commands.info; "
            "bad = [m for m in ('torch', 'edgedepth.train', 'edgedepth.export', 'onnxruntime', 'openvino') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_output_is_made_finite_and_non_negative():
    from edgedepth.runtime import _HostOps

    raw = np.array([[np.nan, -1.0], [np.inf, 2.0]], np.float32)
    out, valid = _HostOps(threads=1).finish(raw, 1.5)
    np.testing.assert_array_equal(out, [[0.0, 0.0], [0.0, 3.0]])
    np.testing.assert_array_equal(valid, [[False, False], [False, True]])  # repaired or not positive: no depth
    assert np.isnan(raw[0, 0]), "a backend's buffer must not be modified"


def test_depth_beyond_the_valid_range_is_flagged_in_model_units():
    from edgedepth.runtime import _HostOps

    raw = np.array([[10.0, 79.0], [81.0, 120.0]], np.float32)
    out, valid = _HostOps(threads=1).finish(raw, 2.0, valid_max=80.0)
    np.testing.assert_array_equal(out, raw * 2)  # far stays far: never reported as near
    np.testing.assert_array_equal(valid, [[True, True], [False, False]])


def test_valid_range_comes_from_the_manifest(tiny_bundle_copy):
    import json

    from .tiny_models import write_manifest

    image = _image(40, 60)
    unbounded = Runtime(tiny_bundle_copy, backend="onnxruntime").predict(image)
    assert unbounded.valid.shape == image.shape[:2] and unbounded.valid.all()
    manifest = json.loads((tiny_bundle_copy / "manifest.json").read_text())
    cut = float(np.median(unbounded.depth))
    write_manifest(tiny_bundle_copy, {**manifest, "depth": {"unit": "m", "kind": "z", "valid_max": cut}})
    bounded = Runtime(tiny_bundle_copy, backend="onnxruntime").predict(image)
    np.testing.assert_array_equal(bounded.depth, unbounded.depth)
    np.testing.assert_array_equal(bounded.valid, unbounded.depth <= np.float32(cut))
    assert 0 < bounded.valid.sum() < bounded.valid.size


def test_fixed_batch_refiner_is_padded(tiny_bundle):
    rt = Runtime(tiny_bundle, backend="onnxruntime", tiles=(3, 3))
    image = _image(45, 45)
    expected = rt.predict(image).depth
    rt.refiner_batch = 4  # as a fixed-batch model would declare: 9 tiles -> 4 + 4 + (1 padded to 4)
    np.testing.assert_allclose(rt.predict(image).depth, expected, rtol=1e-6, atol=1e-6)


def test_upsampling_comes_from_the_manifest_or_the_argument(tiny_bundle, tiny_bundle_copy):
    import json

    from edgedepth.bundle import BundleError

    image = _image(90, 130, seed=4)
    bilinear = Runtime(tiny_bundle, backend="onnxruntime", threads=1)
    assert bilinear.tiling.upsample == "bilinear"  # bundles without the key: as before
    joint = Runtime(tiny_bundle, backend="onnxruntime", threads=1, upsample="joint_bilateral")
    a, b = bilinear.predict(image), joint.predict(image)
    assert not np.allclose(a.depth, b.depth) and b.valid.shape == (90, 130)
    assert np.isfinite(b.depth).all() and (b.depth > 0).all()
    manifest = tiny_bundle_copy / "manifest.json"
    data = json.loads(manifest.read_text())
    data["tiling"].update(upsample="joint_bilateral", joint_sigma=0.05)
    manifest.write_text(json.dumps(data))
    from_manifest = Runtime(tiny_bundle_copy, backend="onnxruntime", threads=1)
    assert from_manifest.tiling.upsample == "joint_bilateral"
    # a fixed grid replaces the bundle's grid only, not how its tiles become the frame
    assert Runtime(tiny_bundle_copy, backend="onnxruntime", tiles=(3, 1)).tiling.upsample == "joint_bilateral"
    np.testing.assert_array_equal(from_manifest.predict(image).depth, b.depth)
    np.testing.assert_array_equal(
        Runtime(tiny_bundle_copy, backend="onnxruntime", threads=1, upsample="bilinear").predict(image).depth, a.depth)
    with pytest.raises(ValueError, match="upsample"):
        Runtime(tiny_bundle, backend="onnxruntime", upsample="bicubic")
    data["tiling"]["upsample"] = "nearest"
    manifest.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="tiling.upsample"):
        Runtime(tiny_bundle_copy, backend="onnxruntime")


def test_snap_from_the_manifest_changes_only_steps_and_is_checked(tiny_bundle_copy):
    import json

    from edgedepth import tiling
    from edgedepth.bundle import BundleError

    image = _image(90, 130, seed=4)
    manifest = tiny_bundle_copy / "manifest.json"
    data = json.loads(manifest.read_text())
    data["tiling"].update(upsample="joint_bilateral", joint_sigma=0.05)
    manifest.write_text(json.dumps(data))
    plain = Runtime(tiny_bundle_copy, backend="onnxruntime", threads=1)
    data["tiling"]["snap"] = 0.05
    manifest.write_text(json.dumps(data))
    snapped = Runtime(tiny_bundle_copy, backend="onnxruntime", threads=1)
    assert snapped.tiling.snap == 0.05 and plain.tiling.snap == 0.0
    # what the runtime does is the documented composition of the tile-engine calls
    calls = []
    orig = tiling.stitch_low

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return orig(*args, **kwargs)

    tiling.stitch_low = spy
    try:
        got = snapped.predict(image)
    finally:
        tiling.stitch_low = orig
    (args, kwargs), = calls
    tiles, boxes, frame, low_size, policy = args
    assert policy.snap == 0.05 and policy.upsample == "joint_bilateral"
    np.testing.assert_array_equal(got.depth, orig(*args, **kwargs)[0])
    unsnapped = dataclasses.replace(policy, snap=0.0)
    assert not np.array_equal(got.depth, orig(tiles, boxes, frame, low_size, unsnapped, **kwargs)[0])
    # bilinear stitching has no map to snap: the override drops it
    assert Runtime(tiny_bundle_copy, backend="onnxruntime", upsample="bilinear").tiling.snap == 0.0
    data["tiling"].update(snap=0.1, upsample="bilinear")
    manifest.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="tiling.snap"):
        Runtime(tiny_bundle_copy, backend="onnxruntime")
    data["tiling"].update(snap=-1.0, upsample="joint_bilateral")
    manifest.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="tiling.snap"):
        Runtime(tiny_bundle_copy, backend="onnxruntime")


def test_manifest_joint_sigma_out_of_range_is_named(tiny_bundle_copy):
    import json

    from edgedepth.bundle import BundleError

    manifest = tiny_bundle_copy / "manifest.json"
    data = json.loads(manifest.read_text())
    data["tiling"].update(upsample="joint_bilateral", joint_sigma=0.0)
    manifest.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="tiling.joint_sigma"):
        Runtime(tiny_bundle_copy, backend="onnxruntime")
