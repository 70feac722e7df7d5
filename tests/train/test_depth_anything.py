"""Depth Anything V2 coarse models: published shapes, both weight layouts, relative models."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from edgedepth.train.checkpoint import load_models, save_models
from edgedepth.train.models import DAV2Config, DepthAnythingV2, create_coarse, create_refiner, dav2_input_size, fit_scale_shift
from edgedepth.train.models.depth_anything import DAV2_PRESETS, load_dav2_weights

# A DA-V2 shaped like the real ones (4 blocks feeding the head, 4 fusion maps) but tiny: a 28 px
# pre-training grid (2 x 2 patches) so that inputs of other sizes exercise the interpolation.
TINY = DAV2Config(embed_dim=32, depth=4, num_heads=2, features=16, out_channels=(8, 16, 32, 32),
                  layers=(0, 1, 2, 3), pretrain_size=28)


def tiny(input_size=(42, 56), seed=0, **kw) -> DepthAnythingV2:
    torch.manual_seed(seed)
    model = create_coarse("depth-anything-v2", config=TINY, input_size=input_size, **kw).eval()
    with torch.no_grad():  # random, not-initial values everywhere (layer scales, biases, tokens)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("size, millions", [("small", 24.8), ("base", 97.5), ("large", 335.3)])
def test_presets_have_the_published_parameter_counts(size, millions):
    with torch.device("meta"):  # shapes only: Large is 1.3 GB of float32
        model = create_coarse(f"depth-anything-v2-{size}")
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions


@pytest.mark.parametrize("size", ["small", "base"])
def test_presets_give_depth_and_dpt_features_at_their_strides(size):
    model = create_coarse(f"depth-anything-v2-{size}", input_size=(70, 98), max_depth=80.0).eval()
    with torch.no_grad():
        depth, feats = model(torch.randn(1, 3, 70, 98))
    c = DAV2_PRESETS[size].features
    assert depth.shape == (1, 1, 70, 98) and bool(((depth > 0) & (depth < 80)).all())
    # patch grid 5 x 7: fusion maps at 8x, 4x, 2x, 1x the grid, finest first
    assert [tuple(f.shape) for f in feats] == [(1, c, 40, 56), (1, c, 20, 28), (1, c, 10, 14), (1, c, 5, 7)]
    assert model.feature_channels == [c] * 4 and model.feature_strides == [2, 4, 7, 14]


def test_small_at_518_has_the_original_position_grid_and_keys():
    model = create_coarse("depth-anything-v2-small")
    state = model.state_dict()
    # Keys and shapes of depth_anything_v2_vits.pth (DINOv2 ViT-S/14 + DPT head).
    for key, shape in {"pretrained.pos_embed": (1, 1370, 384), "pretrained.cls_token": (1, 1, 384),
                       "pretrained.mask_token": (1, 384), "pretrained.patch_embed.proj.weight": (384, 3, 14, 14),
                       "pretrained.blocks.11.attn.qkv.weight": (1152, 384), "pretrained.blocks.11.ls2.gamma": (384,),
                       "depth_head.resize_layers.0.weight": (48, 48, 4, 4), "depth_head.resize_layers.3.weight": (384, 384, 3, 3),
                       "depth_head.scratch.layer4_rn.weight": (64, 384, 3, 3),
                       "depth_head.scratch.refinenet4.resConfUnit1.conv1.weight": (64, 64, 3, 3),
                       "depth_head.scratch.output_conv2.2.weight": (1, 32, 1, 1)}.items():
        assert tuple(state[key].shape) == shape, key
    assert "depth_head.resize_layers.2.weight" not in state  # an Identity in the original


def test_input_size_keeps_the_camera_aspect_at_518_short_side():
    assert dav2_input_size(1080, 1920) == (518, 924)
    assert dav2_input_size(2160, 3840) == (518, 924)
    assert dav2_input_size(480, 640) == (518, 686)
    assert dav2_input_size(1920, 1080) == (924, 518)
    with pytest.raises(ValueError, match="multiple of 14"):
        dav2_input_size(480, 640, short=500)
    with pytest.raises(ValueError, match="multiples of 14"):
        create_coarse("depth-anything-v2-small", input_size=(518, 920))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_original_layout_loads_from_pth_and_safetensors(tmp_path, suffix):
    src = tiny(seed=1)
    path = tmp_path / f"dav2_tiny{suffix}"
    if suffix == ".pth":
        torch.save(src.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    loaded = create_coarse("depth-anything-v2", config=TINY, input_size=(42, 56), weights=path).eval()
    x = torch.randn(1, 3, 42, 56)
    with torch.no_grad():
        a, fa = src(x)
        b, fb = loaded(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(torch.equal(p, q) for p, q in zip(fa, fb))
    assert not torch.equal(a, tiny(seed=2)(x)[0])  # a different model gives a different answer


def test_transformers_folder_loads_and_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    back = transformers.Dinov2Config(image_size=28, patch_size=14, hidden_size=32, num_hidden_layers=4,
                                     num_attention_heads=2, out_indices=[1, 2, 3, 4], layerscale_value=1.0,
                                     reshape_hidden_states=False, apply_layernorm=True)
    cfg = transformers.DepthAnythingConfig(backbone_config=back, fusion_hidden_size=16, neck_hidden_sizes=[8, 16, 32, 32],
                                           reassemble_hidden_size=32, patch_size=14, head_hidden_size=32,
                                           depth_estimation_type="metric", max_depth=20)
    torch.manual_seed(3)
    hf = transformers.DepthAnythingForDepthEstimation(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "hf")
    ours = create_coarse("depth-anything-v2", config=TINY, input_size=(42, 56), weights=tmp_path / "hf").eval()
    for size in ((28, 28), (42, 56)):  # the pre-training grid, and an interpolated one
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            want = hf(pixel_values=x).predicted_depth
            got, _ = ours(x)
        torch.testing.assert_close(got[:, 0], want, rtol=1e-4, atol=1e-4)
    # a folder of another architecture, or of the relative kind, is refused by name
    with pytest.raises(ValueError, match="features"):
        create_coarse("depth-anything-v2", config=DAV2Config(32, 4, 2, 8, (8, 16, 32, 32), (0, 1, 2, 3), pretrain_size=28),
                      input_size=(42, 56), weights=tmp_path / "hf")
    with pytest.raises(ValueError, match="metric model"):
        create_coarse("depth-anything-v2", config=TINY, input_size=(42, 56), metric=False, scale_shift=(1, 0),
                      weights=tmp_path / "hf")


def test_weights_of_another_size_are_refused_by_name(tmp_path):
    torch.save(tiny().state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(ValueError, match="tensors missing|has shape"):
        create_coarse("depth-anything-v2-small", weights=tmp_path / "tiny.pth")
    with pytest.raises(FileNotFoundError, match="not found"):
        create_coarse("depth-anything-v2-small", weights=tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="fixed architecture"):
        create_coarse("depth-anything-v2-small", config=TINY)


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(_Payload.target),))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    _Payload.target = str(tmp_path / "pwned")
    state = {k: v for k, v in tiny().state_dict().items()}
    state["evil"] = _Payload()
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump(state, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        create_coarse("depth-anything-v2", config=TINY, input_size=(42, 56), weights=tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_relative_models_need_an_explicit_scale_and_shift():
    with pytest.raises(ValueError, match="scale_shift"):
        create_coarse("depth-anything-v2", config=TINY, input_size=(42, 56), metric=False)
    with pytest.raises(ValueError, match="metric model outputs metres"):
        create_coarse("depth-anything-v2", config=TINY, input_size=(42, 56), scale_shift=(1.0, 0.1))
    rel = tiny(metric=False, scale_shift=(0.5, 0.05))
    x = torch.randn(1, 3, 42, 56)
    with torch.no_grad():
        tokens = rel.pretrained.intermediate(x, TINY.layers)
        disparity, _ = rel.depth_head(tokens, 3, 4)
        depth, _ = rel(x)
    assert bool((disparity >= 0).all())  # the relative head ends in ReLU, not a sigmoid
    torch.testing.assert_close(depth, 1.0 / (0.5 * disparity + 0.05))


def test_fit_scale_shift_recovers_the_affine_inverse_depth():
    gen = torch.Generator().manual_seed(0)
    disparity = torch.rand(1000, generator=gen) * 5
    depth = 1.0 / (0.3 * disparity + 0.02)
    depth[::10] = 0  # invalid pixels are ignored
    s, t = fit_scale_shift(disparity, depth)
    assert s == pytest.approx(0.3, rel=1e-6) and t == pytest.approx(0.02, rel=1e-6)
    with pytest.raises(ValueError, match="two valid pixels"):
        fit_scale_shift(torch.ones(10), torch.ones(10))


def test_checkpoint_rebuilds_the_architecture_without_the_weights_file(tmp_path):
    torch.save(tiny(seed=4).state_dict(), tmp_path / "w.pth")
    coarse = create_coarse("depth-anything-v2", config=TINY, input_size=(42, 56), weights=tmp_path / "w.pth").eval()
    refiner = create_refiner("prv2-mobile", coarse, tile_size=(32, 32), width=0.25, decoder_width=0.25)
    assert [c for c, _, _ in refiner.guidance] == [16] * 4
    meta = {"coarse": {"name": coarse.spec().name, "kwargs": coarse.spec().kwargs},
            "refiner": {"name": "prv2-mobile", "kwargs": {"tile_size": [32, 32], "width": 0.25, "decoder_width": 0.25}}}
    save_models(tmp_path / "ckpt", coarse, refiner, meta)
    (tmp_path / "w.pth").unlink()  # the checkpoint must not need the user's file any more
    kwargs = json.loads((tmp_path / "ckpt" / "model.json").read_text())["coarse"]["kwargs"]
    assert "weights" not in kwargs and kwargs["config"]["embed_dim"] == 32
    loaded, _, _ = load_models(tmp_path / "ckpt")
    x = torch.randn(1, 3, 42, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x)[0], coarse(x)[0], rtol=0, atol=0)


def test_load_weights_into_an_existing_model(tmp_path):
    src = tiny(seed=5)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    dst = tiny(seed=6)
    load_dav2_weights(dst, tmp_path / "w.pth")
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


@pytest.mark.parametrize("h, w", [(37, 66), (5, 7), (74, 132), (1, 2)])
def test_position_grid_resize_is_dinov2s_bicubic(h, w):
    from edgedepth.train.models.depth_anything import _bicubic_matrix

    grid = torch.randn(1, 8, 37, 37)
    want = torch.nn.functional.interpolate(grid, scale_factor=((h + 0.1) / 37, (w + 0.1) / 37), mode="bicubic",
                                           align_corners=False)
    got = torch.tensor(_bicubic_matrix(h, 37, (h + 0.1) / 37)) @ grid @ torch.tensor(_bicubic_matrix(w, 37, (w + 0.1) / 37)).T
    torch.testing.assert_close(got, want, rtol=0, atol=5e-5)


def test_position_resize_matrices_are_made_once_and_train_after_inference():
    """The resize matrices stay with the weights (no host copy per forward: the torch backend
    captures the forward as a CUDA graph), and a first call under inference_mode must not leave
    an inference tensor that a later training step cannot save for backward."""
    model = tiny()
    x = torch.rand(2, 3, 42, 56)
    with torch.inference_mode():
        want = model(x)[0]
    matrices = dict(model.pretrained._matrices)
    assert len(matrices) == 2 and not any(m.is_inference() for m in matrices.values())
    model.train()
    depth = model(x)[0]
    depth.mean().backward()
    assert model.pretrained.pos_embed.grad is not None and model.pretrained.pos_embed.grad.abs().sum() > 0
    assert all(model.pretrained._matrices[k] is m for k, m in matrices.items())  # reused, not remade
    torch.testing.assert_close(model.eval()(x)[0].detach(), want)
