"""The runtime's torch backend on CUDA: fp16 (its default there) against fp32 from the same bundle,
with the bilinear and the guided upsampling, the frame kept on the GPU from input to depth.

Needs an NVIDIA GPU and edgedepth._native_cuda (conftest.py skips the tests elsewhere).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgedepth import Runtime


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """Tiny random-init registry models exported as a torch bundle listing fp32 and fp16."""
    from edgedepth.export.exporter import ExportConfig, export_bundle
    from edgedepth.tiling import Tiling
    from edgedepth.train.models import create_coarse, create_refiner

    torch.manual_seed(0)
    ckw = {"input_size": (64, 96), "width": 0.35, "decoder_channels": (8, 8, 16, 16)}
    rkw = {"width": 0.35, "decoder_width": 0.5}
    coarse = create_coarse("lite", **ckw).eval()
    torch.nn.init.normal_(coarse.out.weight, std=0.03)  # zero at init: every frame's depth would be one constant
    refiner = create_refiner("prv2-mobile", coarse, (64, 64), **rkw).eval()
    meta = {"coarse": {"name": "lite", "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in ckw.items()}},
            "refiner": {"name": "prv2-mobile", "kwargs": {"tile_size": [64, 64], **rkw}},
            "camera": {"fx_norm": 0.8}}
    cfg = ExportConfig(targets=("torch",), precisions=("fp32", "fp16"), calib="procedural:1", heldout="procedural:1",
                       select="procedural:1", frame_size=(144, 176), tiling=Tiling(2, 2, 0.25, "cosine"))
    return export_bundle(coarse, refiner, meta, tmp_path_factory.mktemp("cuda") / "fp16.edgedepth", cfg,
                         log=lambda _: None)


@pytest.mark.parametrize("upsample", ["bilinear", "guided"])
def test_fp16_is_the_default_on_cuda_and_matches_fp32(bundle: Path, upsample: str) -> None:
    half = Runtime(bundle, backend="torch", device="cuda", upsample=upsample)
    full = Runtime(bundle, backend="torch", device="cuda", upsample=upsample, precision="fp32")
    assert half.precision == "fp16" and full.precision == "fp32"
    rng = np.random.default_rng(0)
    frame = torch.from_numpy(rng.integers(0, 256, (144, 176, 3), dtype=np.uint8)).cuda()
    a, b = half.predict(frame), full.predict(frame)
    assert a.depth.is_cuda and a.depth.dtype == torch.float32 and tuple(a.depth.shape) == (144, 176)
    assert torch.equal(a.valid, b.valid) and bool(a.valid.any())
    rel = ((a.depth - b.depth).abs() / b.depth.clamp_min(1e-3))[b.valid]
    # A random network amplifies half's rounding: the same pipeline with its modules cast to half on
    # the CPU reads a median of 0.009 and a 99th percentile of 0.057 here (0.03 / 0.21 with the
    # output weights at std 0.1). A cast gone wrong (inputs, weights, outputs) is off by far more.
    median, p99 = float(rel.median()), float(torch.quantile(rel, 0.99))
    assert median < 0.02 and p99 < 0.1, (median, p99)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_graphs_match_eager_per_batch_and_hand_out_their_own_tensors(bundle: Path, precision: str) -> None:
    backend = Runtime(bundle, backend="torch", device="cuda", precision=precision).refiner
    assert backend.cuda_graphs and backend.describe()["cuda_graphs"]
    gen = torch.Generator(device="cuda").manual_seed(0)

    def feeds(n: int) -> dict:
        return {s.name: torch.rand((n, *s.shape[1:]), device="cuda", generator=gen) + (s.name == "coarse_depth")
                for s in backend.inputs}

    f4, f9 = feeds(4), feeds(9)
    out4 = backend.run(f4)["depth"]
    out9 = backend.run(f9)["depth"]  # a second shape: a second graph, whose replay must leave out4 alone
    again4 = backend.run(f4)["depth"]
    assert len(backend._graphs) == 2 and not backend.graph_error
    backend.cuda_graphs = False
    eager4, eager9 = backend.run(f4)["depth"], backend.run(f9)["depth"]
    assert out4.dtype == torch.float32 and out4.shape == eager4.shape == (4, 1, 64, 64)
    torch.testing.assert_close(out4, eager4, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out9, eager9, rtol=1e-5, atol=1e-5)
    assert torch.equal(out4, again4) and out4.data_ptr() != again4.data_ptr()


def test_a_whole_frame_through_graphs_matches_eager(bundle: Path) -> None:
    graphs = Runtime(bundle, backend="torch", device="cuda", precision="fp32", upsample="guided")
    eager = Runtime(bundle, backend="torch", device="cuda", precision="fp32", upsample="guided")
    for b in (eager.coarse, eager.refiner):
        b.cuda_graphs = False
    rng = np.random.default_rng(1)
    frames = [torch.from_numpy(rng.integers(0, 256, (144, 176, 3), dtype=np.uint8)).cuda() for _ in range(2)]
    first = graphs.predict(frames[0]).depth
    kept = first.clone()
    second = graphs.predict(frames[1]).depth  # replays the same graphs: the first frame's depth stays
    assert torch.equal(first, kept) and not torch.equal(first, second)
    for frame, got in zip(frames, (first, second)):
        torch.testing.assert_close(got, eager.predict(frame).depth, rtol=1e-5, atol=1e-5)
    assert graphs.coarse.cuda_graphs and graphs.refiner.cuda_graphs  # nothing fell back to eager


def test_training_crops_and_losses_queue_without_waiting_for_the_gpu() -> None:
    """The refiner's training step sends sample tables to the GPU every call; from pageable memory
    each copy waited for all queued kernels (72 waits a step on an H200). Through pinned memory
    they are queued like kernels: no synchronisation at all once the pinned pool is warm."""
    from edgedepth.tiling_torch import crop_resize
    from edgedepth.train.losses import gpct_consistency_loss
    from edgedepth.train.losses.masks import sobel_magnitude

    maps = torch.rand(2, 5, 60, 90, device="cuda")
    boxes = np.array([[[0.0, 0.0, 40.0, 60.0], [20.0, 30.0, 40.0, 60.0]]] * 2)
    depths = torch.rand(2, 4, 1, 16, 24, device="cuda") + 1
    grid = torch.tensor([[0.0, 0.0, 40.0, 60.0], [0.0, 30.0, 40.0, 60.0], [20.0, 0.0, 40.0, 60.0],
                         [20.0, 30.0, 40.0, 60.0]], dtype=torch.float64)

    rgb = torch.randint(0, 256, (60, 90, 3), dtype=torch.uint8, device="cuda")

    def step():
        return crop_resize(maps, boxes, (16, 24)).sum() + gpct_consistency_loss(depths, grid) \
            + sobel_magnitude(depths[0]).sum() \
            + crop_resize(rgb, boxes[0], (16, 24), mean=[0.5] * 3, std=[0.25] * 3).sum()

    want = step()  # warms the pinned-memory pool (its first allocations may synchronise)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.testing.assert_close(got, want)
