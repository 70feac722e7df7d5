"""edgedepth.train.models: encoders, coarse models (lite, module, transformers adapter), refiners."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from edgedepth.train.models import (CoarseSpec, create_coarse, create_encoder, create_refiner, guide_level,
                                    list_models, widen_stem)
from edgedepth.train.models.encoders import first_conv
from edgedepth.train.models.refiner import MAX_LOG_RESIDUAL, NOISY_PRIOR_DEPTH

ENCODERS = ["mobilenetv3_small", "mobilenetv4_small", "efficientnet_lite0", "convnext_lite"]
REFINERS = ["prv2-mobile", "prv2-efficient", "prv2-convnext", "prv2-mobile-dg", "prv2-efficient-dg",
            "prv2-convnext-dg", "patchrefiner"]
TILE = (64, 96)

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def coarse():
    torch.manual_seed(0)
    return create_coarse("lite", input_size=(64, 64), width=0.5, decoder_channels=(16, 16, 24, 32)).eval()


def test_registries_list_every_model():
    assert set(ENCODERS) <= set(list_models("encoder"))
    assert set(REFINERS) <= set(list_models("refiner"))
    assert {"lite", "hf", "module"} <= set(list_models("coarse"))
    with pytest.raises(ValueError, match="kind"):
        list_models("decoder")
    with pytest.raises(ValueError, match="unknown encoder model 'resnet50'"):
        create_encoder("resnet50")


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_features_at_strides_2_to_32(name):
    enc = create_encoder(name, width=0.5).eval()
    feats = enc(torch.randn(2, 3, 64, 96))
    assert enc.feature_info.reductions() == [2, 4, 8, 16, 32]
    assert [f.shape[1] for f in feats] == enc.feature_info.channels()
    assert [tuple(f.shape[-2:]) for f in feats] == [(64 // s, 96 // s) for s in (2, 4, 8, 16, 32)]
    wide = create_encoder(name, width=1.0)
    assert all(a > b for a, b in zip(wide.feature_info.channels(), enc.feature_info.channels()))
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in enc.parameters())


def test_encoder_in_chans_and_width_errors():
    enc = create_encoder("mobilenetv3_small", in_chans=5, width=0.5).eval()
    assert enc(torch.randn(1, 5, 32, 32))[0].shape[1] == enc.feature_info.channels()[0]
    with pytest.raises(ValueError, match="in_chans"):
        create_encoder("mobilenetv3_small", in_chans=0)
    with pytest.raises(ValueError, match="width"):
        create_encoder("mobilenetv3_small", width=0)
    with pytest.raises(ValueError, match="pretrained"):
        create_encoder("mobilenetv3_small", pretrained=True)
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        create_encoder("mobilenetv3_small", pretrained="/nowhere.safetensors")


@pytest.mark.parametrize("name", ENCODERS)
def test_widen_stem_adds_zero_channel_and_keeps_the_function(name):
    torch.manual_seed(0)
    enc = create_encoder(name, width=0.5).eval()
    x = torch.randn(2, 3, 32, 64)
    before = enc(x)
    widen_stem(enc, 4)
    stem = first_conv(enc)[2]
    assert stem.in_channels == 4 and enc.in_chans == 4
    assert torch.count_nonzero(stem.weight[:, 3:]) == 0
    after = enc(torch.cat([x, 100 * torch.randn(2, 1, 32, 64)], 1))  # any depth values: no effect yet
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="in_chans"):
        widen_stem(enc, 3)


def test_pretrained_3_channel_file_loads_into_4_channel_stem(tmp_path):
    from safetensors.torch import save_file

    src = create_encoder("mobilenetv3_small", width=0.5)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "enc.safetensors"))
    enc = create_encoder("mobilenetv3_small", in_chans=4, width=0.5, pretrained=tmp_path / "enc.safetensors")
    stem, src_stem = first_conv(enc)[2], first_conv(src)[2]
    torch.testing.assert_close(stem.weight[:, :3], src_stem.weight)
    assert torch.count_nonzero(stem.weight[:, 3]) == 0
    with pytest.raises(ValueError, match="does not match encoder"):
        create_encoder("convnext_lite", pretrained=tmp_path / "enc.safetensors")


def test_lite_coarse_contract(coarse):
    x = torch.randn(2, 3, 64, 64)
    depth, feats = coarse(x)
    assert depth.shape == (2, 1, 64, 64)
    assert bool((depth > 0).all()) and bool((depth <= coarse.max_depth).all())
    assert [f.shape[1] for f in feats] == coarse.feature_channels == [16, 16, 24, 32]
    assert [64 // f.shape[-2] for f in feats] == coarse.feature_strides == [4, 8, 16, 32]
    spec = coarse.spec()
    assert spec.input_size == (64, 64) and spec.metric and spec.name == "lite"
    with pytest.raises(ValueError, match="x must be"):
        coarse(torch.randn(2, 4, 64, 64))
    with pytest.raises(ValueError, match="input_size"):
        create_coarse("lite", input_size=(60, 64))


def test_lite_coarse_trains_on_cpu():
    torch.manual_seed(0)
    model = create_coarse("lite", input_size=(32, 32), width=0.35, decoder_channels=(8, 8, 16, 16))
    x = torch.randn(4, 3, 32, 32)
    target = torch.linspace(2.0, 20.0, 32).view(1, 1, 32, 1).expand(4, 1, 32, 32)  # a ground plane
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for _ in range(30):
        loss = (torch.log(model(x)[0]) - torch.log(target)).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, 2, 1)
        self.b = nn.Conv2d(6, 10, 3, 2, 1)

    def forward(self, x):
        f1 = self.a(x)
        f2 = self.b(f1)
        return torch.nn.functional.softplus(x[:, :1]), [f1, f2]


def test_module_coarse_measures_features():
    m = create_coarse("module", module=_Toy(), input_size=(32, 48), metric=False)
    assert m.feature_channels == [6, 10] and m.feature_strides == [2, 4] and not m.metric
    depth, feats = m(torch.randn(1, 3, 32, 48))
    assert depth.shape == (1, 1, 32, 48) and len(feats) == 2
    assert "module" not in m.spec().kwargs
    with pytest.raises(TypeError, match="module"):
        create_coarse("module", module="not a module", input_size=(32, 32))
    with pytest.raises(TypeError, match="must return"):
        create_coarse("module", module=nn.Conv2d(3, 1, 1), input_size=(8, 8))  # returns no features
    with pytest.raises(ValueError, match="coarse depth must be"):
        create_coarse("module", module=_Fn(lambda x: (x, [x])), input_size=(8, 8))  # 3-channel "depth"


def _save_tiny_depth_anything(path):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    backbone = Dinov2Config(image_size=56, patch_size=14, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            intermediate_size=64, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 24, 32],
                              fusion_hidden_size=16, head_hidden_size=8, depth_estimation_type="metric", max_depth=20)
    model = DepthAnythingForDepthEstimation(cfg).eval()
    model.save_pretrained(path)
    return model


def test_hf_adapter_depth_anything_metric(tmp_path):
    pytest.importorskip("transformers")
    ref = _save_tiny_depth_anything(tmp_path / "da")
    coarse = create_coarse("hf", path=str(tmp_path / "da"), input_size=(56, 84)).eval()
    assert coarse.metric and coarse.input_size == (56, 84)
    assert coarse.feature_channels == [16, 16, 16, 16] and coarse.feature_strides == [2, 4, 7, 14]
    x = torch.randn(2, 3, 56, 84)
    with torch.no_grad():
        depth, feats = coarse(x)
        expected = ref(pixel_values=x).predicted_depth
    torch.testing.assert_close(depth[:, 0], expected.clamp_min(0))
    assert [tuple(f.shape[-2:]) for f in feats] == [(32, 48), (16, 24), (8, 12), (4, 6)]
    # A refiner on top: the stride-7 and -14 features land on the stride-8 and -16 levels.
    refiner = create_refiner("prv2-mobile", coarse, (64, 64), width=0.35, decoder_width=0.5)
    assert refiner.guidance == [(16, 32, 32), (16, 16, 16), (16, 8, 8), (16, 4, 4)]
    # The heavy baseline copies the whole transformers model (its neck hook follows the copy).
    heavy = create_refiner("patchrefiner", coarse, (224, 224)).eval()
    assert heavy.encoder.model is not coarse.model
    args = (torch.randn(1, 3, 224, 224), 1 + torch.rand(1, 1, 224, 224), *[torch.randn(1, *s) for s in heavy.guidance])
    with torch.no_grad():
        aux = heavy.forward_with_aux(*args)
    assert aux["depth"].shape == aux["tile_depth"].shape == (1, 1, 224, 224)
    with pytest.raises(ValueError, match="input_size"):
        create_coarse("hf", path=str(tmp_path / "da"), input_size=(50, 84))
    with pytest.raises(FileNotFoundError, match="config.json"):
        create_coarse("hf", path=str(tmp_path / "missing"))


def test_hf_adapter_dpt_relative(tmp_path):
    pytest.importorskip("transformers")
    from transformers import DPTConfig, DPTForDepthEstimation

    cfg = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=64,
                    patch_size=16, neck_hidden_sizes=[8, 16, 24, 32], fusion_hidden_size=16,
                    backbone_out_indices=[0, 1, 2, 3])
    DPTForDepthEstimation(cfg).save_pretrained(tmp_path / "dpt")
    coarse = create_coarse("hf", path=str(tmp_path / "dpt"), input_size=(64, 64))
    assert not coarse.metric and coarse.feature_strides == [2, 4, 8, 16]
    depth, feats = coarse(torch.randn(1, 3, 64, 64))
    assert depth.shape == (1, 1, 64, 64) and bool((depth >= 0).all()) and len(feats) == 4


def test_guide_level_maps_strides_to_nearest_power_of_two():
    assert [guide_level(s) for s in (1, 2, 3.5, 4, 7, 8, 14, 16, 28, 32, 64)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4]


@pytest.mark.parametrize("name", REFINERS)
def test_refiner_contract(name, coarse):
    torch.manual_seed(0)
    kw = {} if name == "patchrefiner" else {"width": 0.35, "decoder_width": 0.5}
    r = create_refiner(name, coarse, TILE, **kw)
    dg = name.endswith("-dg")
    assert r.uses_coarse_features is not dg and r.tile_size == TILE
    assert r.guidance == ([] if dg else [(16, 16, 24), (16, 8, 12), (24, 4, 6), (32, 2, 3)])
    rgb, cd = torch.randn(2, 3, *TILE), 1 + 20 * torch.rand(2, 1, *TILE)
    guide = [torch.randn(2, *s) for s in r.guidance]
    out = r.eval()(rgb, cd, *guide)
    assert out.shape == (2, 1, *TILE)
    torch.testing.assert_close(out, cd)  # zero-initialised residual head: starts as the coarse depth
    aux = r.forward_with_aux(rgb, cd, *guide)
    assert set(aux) >= {"depth", "residual"}
    prior, noise = r.noisy_inputs(3, generator=torch.Generator().manual_seed(1))
    assert prior.shape == (3, 1, *TILE) and bool((prior == NOISY_PRIOR_DEPTH).all())
    assert [tuple(n.shape[1:]) for n in noise] == r.guidance
    if noise:
        assert abs(torch.cat([n.flatten() for n in noise]).std().item() - 1) < 0.1
    assert r(torch.randn(3, 3, *TILE), prior, *noise).shape == (3, 1, *TILE)
    assert r.registry_name == name and r.registry_kwargs["tile_size"] == list(TILE)
    assert {id(p) for p in r.encoder_parameters()}.isdisjoint(id(p) for p in r.decoder_parameters())


@pytest.mark.parametrize("residual", ["log", "metres"])
def test_refiner_output_is_bounded_and_learns_a_residual(coarse, residual):
    torch.manual_seed(0)
    small = (32, 64)
    r = create_refiner("prv2-mobile", coarse, small, width=0.35, decoder_width=0.5, residual=residual)
    with torch.no_grad():
        r.out.bias.fill_(-100.0)
    rgb, cd = torch.randn(2, 3, *small), 0.5 + torch.rand(2, 1, *small)
    guide = [torch.randn(2, *s) for s in r.guidance]
    lowest = cd * math.exp(-MAX_LOG_RESIDUAL) if residual == "log" else torch.zeros_like(cd)
    torch.testing.assert_close(r(rgb, cd, *guide), lowest)  # coarse x e^-4, or max(coarse + residual, 0)
    with torch.no_grad():
        r.out.bias.zero_()
    target = cd * (1 + 0.5 * torch.sigmoid(rgb[:, :1]))
    opt = torch.optim.Adam(r.parameters(), 3e-3)
    first = None
    for _ in range(10):
        aux = r.train()(rgb, cd, *guide, aux=True)
        loss = (aux["depth"] - target).abs().mean() + (aux["c2f_depth"] - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        first = first or loss.item()
        opt.step()
    assert loss.item() < 0.7 * first
    # The zero-initialised depth channel of the stem receives gradient, so it does learn.
    stem = first_conv(r.encoder)[2]
    assert torch.count_nonzero(stem.weight[:, 3]) > 0


def test_log_residual_scales_with_the_scene(coarse):
    """A log residual reads the coarse depth centred per tile: the same scene 3x farther gives
    exactly 3x the depth (the metres form does not)."""
    torch.manual_seed(0)
    r = create_refiner("prv2-mobile-dg", coarse, TILE, width=0.35, decoder_width=0.5).eval()
    for head in r.residual_heads():
        torch.nn.init.normal_(head.weight, std=0.05)
    rgb, cd = torch.randn(2, 3, *TILE), 1 + 5 * torch.rand(2, 1, *TILE)
    with torch.no_grad():
        torch.testing.assert_close(r(rgb, 3 * cd), 3 * r(rgb, cd), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["prv2-mobile", "patchrefiner"])
def test_noisy_pretraining_inputs_let_gradient_flow(name, coarse):
    """Noisy Pretraining feeds an uninformative coarse depth: with it, zero-initialised heads still
    pass gradient (PRV2's zero coarse depth would not: 0 x exp(r) and max(0 + 0, 0) are dead)."""
    torch.manual_seed(0)
    kw = {} if name == "patchrefiner" else {"width": 0.35, "decoder_width": 0.5}
    r = create_refiner(name, coarse, TILE, **kw).train()
    rgb = torch.randn(2, 3, *TILE)
    prior, noise = r.noisy_inputs(2, generator=torch.Generator().manual_seed(0))
    target = torch.full((2, 1, *TILE), 7.0)

    def grad_norm(cd) -> float:
        r.zero_grad()
        (r(rgb, cd, *noise) - target).abs().mean().backward()
        return sum(float(p.grad.abs().sum()) for p in r.parameters() if p.grad is not None)

    assert grad_norm(torch.zeros_like(prior)) == 0.0  # the dead start a zero coarse map gives
    assert grad_norm(prior) > 0.0
    with torch.no_grad():
        torch.testing.assert_close(r.eval()(rgb, prior, *noise), prior)  # zero heads: the prior itself


def test_refiner_from_spec_and_input_errors(coarse):
    spec = CoarseSpec((64, 64), [8, 12], [4, 16])
    r = create_refiner("prv2-mobile", spec, (64, 64), width=0.35, guide_indices=[1])
    assert r.guidance == [(12, 4, 4)]
    rgb, cd, g = torch.randn(1, 3, 64, 64), torch.rand(1, 1, 64, 64), torch.randn(1, 12, 4, 4)
    assert r(rgb, cd, g).shape == (1, 1, 64, 64)
    with pytest.raises(ValueError, match="guidance tensors"):
        r(rgb, cd)
    with pytest.raises(ValueError, match="guide0 must be"):
        r(rgb, cd, torch.randn(1, 12, 8, 8))
    with pytest.raises(ValueError, match="rgb must be"):
        r(torch.randn(1, 3, 32, 64), cd, g)
    with pytest.raises(ValueError, match="coarse_depth must be"):
        r(rgb, torch.rand(1, 1, 64, 32), g)
    with pytest.raises(TypeError, match="floating point"):
        r((rgb * 255).to(torch.uint8), cd, g)
    with pytest.raises(ValueError, match="tile_size"):
        create_refiner("prv2-mobile", spec, (60, 64))
    with pytest.raises(ValueError, match="guide_indices"):
        create_refiner("prv2-mobile", spec, (64, 64), guide_indices=[2])
    with pytest.raises(TypeError, match="CoarseModel or CoarseSpec"):
        create_refiner("prv2-mobile", {"input_size": (64, 64)}, (64, 64))
    with pytest.raises(TypeError, match="patchrefiner needs"):
        create_refiner("patchrefiner", spec, (64, 64))
    # A spec naming a registered coarse model is enough to rebuild the baseline's backbone.
    assert create_refiner("patchrefiner", coarse.spec(), (64, 64)).guidance == \
        create_refiner("patchrefiner", coarse, (64, 64)).guidance


def test_patchrefiner_backbone_is_a_copy_of_the_coarse_model(coarse):
    r = create_refiner("patchrefiner", coarse, TILE)
    assert type(r.encoder) is type(coarse) and r.encoder is not coarse
    n_backbone = sum(p.numel() for p in r.encoder.parameters())
    assert n_backbone == sum(p.numel() for p in coarse.parameters())
    light = create_refiner("prv2-mobile", coarse, TILE, width=0.35, decoder_width=0.5)
    assert sum(p.numel() for p in light.parameters()) < sum(p.numel() for p in r.parameters())
