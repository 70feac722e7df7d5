"""scripts/recover_checkpoint.py: registry models exported to a bundle (BatchNorm folded, GroupNorm
split by the ONNX export) come back from its ONNX files as the same functions."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from edgedepth.export.exporter import ExportConfig, export_bundle
from edgedepth.train.checkpoint import load_models
from edgedepth.train.models import create_coarse, create_refiner

from ..tiny_models import TINY_LITE

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("recover_checkpoint", REPO / "scripts" / "recover_checkpoint.py")
recover_checkpoint = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recover_checkpoint)


def _models():
    name, ckw, rkw = TINY_LITE
    torch.manual_seed(0)
    coarse = create_coarse(name, **ckw)
    refiner = create_refiner("prv2-mobile", coarse, (32, 32), **rkw)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # trained-looking norms, so that folding them changes the weights
        for m in [*coarse.modules(), *refiner.modules()]:
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.3, generator=gen)
    return coarse.eval(), refiner.eval(), (name, ckw, rkw)


def _configs(tmp_path, name, ckw, rkw):
    paths = tmp_path / "coarse.yaml", tmp_path / "refiner.yaml"
    paths[0].write_text(yaml.safe_dump({"model": {"coarse": name, "coarse_kwargs": ckw}}))
    paths[1].write_text(yaml.safe_dump({"model": {"refiner": "prv2-mobile", "refiner_kwargs": rkw, "tile_size": [32, 32]}}))
    return paths


def test_recovered_models_compute_what_the_exported_ones_did(tmp_path):
    coarse, refiner, (name, ckw, rkw) = _models()
    assert any(isinstance(m, nn.BatchNorm2d) for m in refiner.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in refiner.modules())
    cfg = ExportConfig(targets=("onnx",), precisions=("fp32",), calib="procedural:2", heldout="procedural:1",
                       frame_size=(64, 128))
    bundle = export_bundle(coarse, refiner, {"camera": {"fx_norm": 0.8}}, tmp_path / "b.edgedepth", cfg,
                           log=lambda _: None)
    coarse_cfg, refiner_cfg = _configs(tmp_path, name, ckw, rkw)
    out = tmp_path / "recovered"
    assert recover_checkpoint.main([str(bundle), str(out), "--coarse-config", str(coarse_cfg),
                                    "--refiner-config", str(refiner_cfg), "--frame-size", "64x128"]) == 0
    coarse2, refiner2, meta = load_models(out)
    assert meta["train"]["frame_size"] == [64, 128] and "batchnorm" in meta["recovered_from"]
    gen = torch.Generator().manual_seed(2)
    image = torch.randn(2, 3, *coarse.input_size, generator=gen)
    with torch.no_grad():
        (d1, f1), (d2, f2) = coarse(image), coarse2.eval()(image)
        torch.testing.assert_close(d2, d1, rtol=1e-4, atol=1e-5)
        for a, b in zip(f1, f2):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        args = (torch.randn(3, 3, 32, 32, generator=gen), 1.0 + 30.0 * torch.rand(3, 1, 32, 32, generator=gen),
                *[torch.randn(3, c, h, w, generator=gen) for c, h, w in refiner.guidance])
        torch.testing.assert_close(refiner2.eval()(*args), refiner(*args), rtol=1e-4, atol=1e-4)
    # the weights themselves changed where the norms were folded
    assert not torch.equal(refiner2.state_dict()["encoder.stages.0.0.weight"],
                           refiner.state_dict()["encoder.stages.0.0.weight"])


def test_another_architecture_is_refused_in_one_line(tmp_path, capsys):
    coarse, refiner, (name, ckw, rkw) = _models()
    cfg = ExportConfig(targets=("onnx",), precisions=("fp32",), calib="procedural:2", heldout="procedural:1",
                       frame_size=(64, 128))
    bundle = export_bundle(coarse, refiner, {}, tmp_path / "b.edgedepth", cfg, log=lambda _: None)
    coarse_cfg, refiner_cfg = _configs(tmp_path, name, ckw, {**rkw, "width": 0.5})
    assert recover_checkpoint.main([str(bundle), str(tmp_path / "r"), "--coarse-config", str(coarse_cfg),
                                    "--refiner-config", str(refiner_cfg)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("recover_checkpoint: ") and "another architecture" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
