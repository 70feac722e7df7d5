"""End to end on a bundle exported by edgedepth.export from the registry models: every backend
available here agrees with the others and with the torch models run through the torch tile ops."""
from __future__ import annotations

import numpy as np
import pytest

from edgedepth import Runtime
from edgedepth.backends import get_backend

BACKENDS = [b for b in ("onnxruntime", "openvino", "torch") if get_backend(b).is_available()]


def _frame(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _torch_reference(models, image, rows=2, cols=2, ratio=0.25):
    """The pipeline written out in torch + edgedepth.tiling_torch, without the runtime."""
    import torch

    from edgedepth import tiling_torch as tt
    from edgedepth.coarse_fit import CoarseFit
    from edgedepth.tiling import TileGrid

    coarse, refiner, _ = models
    h, w = image.shape[:2]
    img = torch.from_numpy(image)
    # the exported bundle says coarse.fit "pad": other aspects keep their proportions in the input
    fit = CoarseFit.for_frame(h, w, coarse.input_size, "pad")
    with torch.no_grad():
        x = tt.crop_resize(img, np.array([[0.0, 0.0, h, w]]), (fit.content_h, fit.content_w), mean=coarse.mean,
                           std=coarse.std)
        depth, feats = coarse(torch.nn.functional.pad(x, fit.torch_pad(), mode="replicate"))
        grid = TileGrid.from_overlap_ratio(h, w, rows, cols, ratio)
        feeds = [tt.crop_resize(img, grid.boxes, refiner.tile_size, mean=coarse.mean, std=coarse.std),
                 tt.crop_resize(depth[0], fit.map_boxes(grid.boxes, depth.shape[-2:]), refiner.tile_size)]
        for (c, gh, gw), f in zip(refiner.guidance, feats):
            feeds.append(tt.crop_resize(f[0], fit.map_boxes(grid.boxes, f.shape[-2:]), (gh, gw)))
        tiles = refiner(*feeds)
        return (tt.stitch(tiles, grid.boxes, h, w, window="cosine")[0] * fit.width_share).clamp(min=0).numpy()


@pytest.fixture(scope="module")
def runtimes(exported_bundle, tmp_path_factory):
    cache = tmp_path_factory.mktemp("ov-cache")
    return {b: Runtime(exported_bundle, backend=b, device="cpu", threads=1, cache_dir=cache) for b in BACKENDS}


@pytest.mark.parametrize("shape", [(96, 128), (75, 203), (64, 96)])  # narrower, wider, the input's aspect
def test_backends_agree_with_each_other_and_torch(runtimes, exported_models, shape):
    image = _frame(*shape, seed=shape[0])
    reference = _torch_reference(exported_models, image)
    assert np.isfinite(reference).all() and reference.mean() > 0
    for name, rt in runtimes.items():
        depth = rt.predict(image).depth
        assert depth.shape == shape and depth.dtype == np.float32, name
        err = np.abs(depth - reference) / np.maximum(reference, 1e-3)
        assert err.mean() < 1e-4 and err.max() < 1e-3, (name, err.mean(), err.max())


def test_torch_backend_stream_equals_predict(runtimes):
    rt = runtimes["torch"] if "torch" in runtimes else pytest.skip("torch not installed")
    frames = [_frame(80, 100, seed=i) for i in range(3)]
    expected = [rt.predict(f).depth for f in frames]
    for got, want in zip(rt.stream(frames, stabilize=False), expected):
        assert isinstance(got.depth, np.ndarray)
        np.testing.assert_array_equal(got.depth, want)


def test_torch_cpu_tensor_input(runtimes):
    torch = pytest.importorskip("torch")
    rt = runtimes["torch"]
    image = _frame(64, 80)
    result = rt.predict(torch.from_numpy(image))
    # On the CPU the torch backend hands numpy to the native tile engine; tensors come back only on a GPU.
    assert isinstance(result.depth, np.ndarray) and result.depth.shape == (64, 80)
    np.testing.assert_array_equal(result.depth, rt.predict(image).depth)


def test_device_tensor_path_on_cpu_tensors(exported_bundle, runtimes):
    """The GPU code path (tensors end to end, torch tile ops) run on CPU tensors, against the host path."""
    torch = pytest.importorskip("torch")
    from edgedepth.runtime import _TorchOps

    rt = Runtime(exported_bundle, backend="torch", device="cpu", threads=1)
    for backend in (rt.coarse, rt.refiner):
        backend.device_tensors = True
    rt.ops = _TorchOps("cpu")
    image = _frame(70, 90, seed=5)
    result = rt.predict(torch.from_numpy(image))
    assert isinstance(result.depth, torch.Tensor) and tuple(result.depth.shape) == (70, 90)
    assert isinstance(result.coarse, torch.Tensor)
    expected = runtimes["torch"].predict(image).depth
    np.testing.assert_allclose(result.depth.numpy(), expected, rtol=1e-4, atol=1e-4)
    streamed = next(iter(rt.stream([torch.from_numpy(image)])))
    torch.testing.assert_close(streamed.depth, result.depth, rtol=0, atol=0)


@pytest.mark.parametrize("upsample, snap", [("joint_bilateral", 0.0), ("joint_bilateral", 0.05), ("guided", 0.0),
                                           ("guided", 0.05)])
def test_low_resolution_upsampling_on_the_device_path(exported_bundle, upsample, snap):
    """The torch tile ops' joint bilateral and guided-filter upsampling and edge snapping (the GPU
    path, here on CPU tensors) against the native engine's."""
    torch = pytest.importorskip("torch")
    import dataclasses

    from edgedepth.runtime import _TorchOps

    base = Runtime(exported_bundle, backend="torch", device="cpu", threads=1, upsample=upsample).tiling
    cfg = dataclasses.replace(base, snap=snap)
    host = Runtime(exported_bundle, backend="torch", device="cpu", threads=1, tiling=cfg)
    rt = Runtime(exported_bundle, backend="torch", device="cpu", threads=1, tiling=cfg)
    for backend in (rt.coarse, rt.refiner):
        backend.device_tensors = True
    rt.ops = _TorchOps("cpu")
    image = _frame(70, 90, seed=6)
    result = rt.predict(torch.from_numpy(image))
    expected = host.predict(image)
    np.testing.assert_allclose(result.depth.numpy(), expected.depth, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(result.valid.numpy(), expected.valid)


def test_torch_checkpoint_cache_keeps_precisions_apart(exported_bundle):
    """Coarse and refiner backends share one loaded checkpoint, but an fp16 runtime (the default on
    CUDA) must not cast the models of an fp32 runtime on the same bundle: Module.to works in place.
    Found on an H200, where an fp16 runtime beside an fp32 one failed with mixed-dtype convolutions."""
    torch = pytest.importorskip("torch")
    from edgedepth.backends.torch import CHECKPOINT_FILES, _load_checkpoint

    files = {n: (exported_bundle / "torch" / n).read_bytes() for n in CHECKPOINT_FILES}
    half = _load_checkpoint(files, "cpu", torch.float16, "t")
    full = _load_checkpoint(files, "cpu", torch.float32, "t")
    assert {p.dtype for m in half for p in m.parameters()} == {torch.float16}
    assert {p.dtype for m in full for p in m.parameters()} == {torch.float32}
    assert _load_checkpoint(files, "cpu", torch.float32, "t")[1] is full[1]  # still loaded once per precision


def test_cuda_frame_stays_on_gpu(exported_bundle, runtimes):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU with torch CUDA; none on this machine")
    rt = Runtime(exported_bundle, backend="torch", device="cuda", precision="fp32")
    image = _frame(96, 128)
    result = rt.predict(torch.from_numpy(image).cuda())
    assert result.depth.is_cuda and tuple(result.depth.shape) == (96, 128)
    expected = runtimes["onnxruntime"].predict(image).depth
    np.testing.assert_allclose(result.depth.cpu().numpy(), expected, rtol=1e-3, atol=1e-3)


def test_onnxruntime_sessions_do_not_spin_after_a_run(runtimes):
    """ORT's workers spin-wait after each run by default; between the runtime's two sessions and its
    tile engine threads that spinning takes the cores from the next stage (README, speed)."""
    rt = runtimes.get("onnxruntime")
    if rt is None:
        pytest.skip("onnxruntime is not installed")
    rt.predict(np.zeros((48, 64, 3), np.uint8))
    for backend in (rt.coarse, rt.refiner):
        options = backend.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
