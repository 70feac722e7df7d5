"""Read a bundle's models back into a torch checkpoint from its ONNX files, for when the checkpoint it
was exported from is gone (the shipped default's was: its fused CoreML model was rebuilt this way).

    python scripts/recover_checkpoint.py BUNDLE OUT --coarse-config configs/default-coarse.yaml \\
        --refiner-config configs/default-refiner-ft.yaml

The configs give the registry names and arguments the manifest does not record. The export folded
each BatchNorm into the convolution before it and split GroupNorm into InstanceNormalization and an
affine: convolutions are matched to the graph's Conv nodes in execution order (shapes checked), each
folded BatchNorm becomes the identity carrying the folded bias, GroupNorm takes the affine, every
other tensor its name. Both models are then run against their ONNX files on random inputs and the
checkpoint is written only if they agree (relative 1e-4). Good for exporting again; to train on from
it, keep BatchNorm in eval mode (its running statistics are the identity now).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import yaml
from onnx import numpy_helper
from torch import nn

from edgedepth.train.checkpoint import save_models
from edgedepth.train.models import create_coarse, create_refiner

TOLERANCE = 1e-4


def _execution_order(model: nn.Module, args: tuple) -> list[tuple[str, nn.Module]]:
    order = []
    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.GroupNorm)
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: order.append((n, m)))
             for n, m in model.named_modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for h in hooks:
            h.remove()
    return order


def load_from_onnx(model: nn.Module, args: tuple, onnx_path: Path, prefix: str) -> None:
    """Set ``model``'s weights from the ONNX export at ``onnx_path`` (tensor names ``prefix`` + key)."""
    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: numpy_helper.to_array(i).copy() for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    order = _execution_order(model, args)
    convs = [(n, m, order[k + 1][1] if k + 1 < len(order) and isinstance(order[k + 1][1], nn.BatchNorm2d) else None)
             for k, (n, m) in enumerate(order) if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    nodes = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose")]
    if len(convs) != len(nodes):
        raise ValueError(f"{onnx_path.name}: {len(nodes)} convolutions in the graph, {len(convs)} in the model")
    done = set()
    with torch.no_grad():
        for (name, conv, bn), node in zip(convs, nodes):
            weight = inits[node.input[1]]
            bias = inits[node.input[2]] if len(node.input) > 2 else None
            if tuple(weight.shape) != tuple(conv.weight.shape):
                raise ValueError(f"{onnx_path.name}: {name} is {tuple(conv.weight.shape)}, the graph's "
                                 f"{node.name} {weight.shape}: another architecture")
            conv.weight.copy_(torch.from_numpy(weight))
            done.add(f"{name}.weight")
            if conv.bias is not None:
                done.add(f"{name}.bias")
                conv.bias.zero_()
            target = bn.bias if bn is not None else conv.bias
            if bn is not None:  # the identity: (x - 0) / sqrt(1 - eps + eps) * 1 + folded bias
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                bn.weight.fill_(1.0)
                bn.bias.zero_()
            if bias is not None:
                target.copy_(torch.from_numpy(bias))
        norms = [m for _, m in order if isinstance(m, nn.GroupNorm)]
        affines = []
        for node in graph.node:
            if node.op_type == "InstanceNormalization":  # -> Reshape -> Mul(weight) -> Add(bias)
                mul = consumers[consumers[node.output[0]][0].output[0]][0]
                add = consumers[mul.output[0]][0]
                affines.append(tuple(next(inits[i] for i in n.input if i in inits) for n in (mul, add)))
        if len(norms) != len(affines):
            raise ValueError(f"{onnx_path.name}: {len(affines)} group norms in the graph, {len(norms)} in the model")
        for norm, (weight, bias) in zip(norms, affines):
            norm.weight.copy_(torch.from_numpy(weight.reshape(-1)))
            norm.bias.copy_(torch.from_numpy(bias.reshape(-1)))
        skip = {n for n, m in model.named_modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))}
        for key, value in model.state_dict().items():
            if key in done or key.rsplit(".", 1)[0] in skip:
                continue
            name = prefix + key
            if name not in inits or tuple(inits[name].shape) != tuple(value.shape):
                raise ValueError(f"{onnx_path.name}: no tensor {name} {tuple(value.shape)} in the graph")
            value.copy_(torch.from_numpy(inits[name]))


def _agree(model: nn.Module, args: tuple, onnx_path: Path) -> float:
    """Largest relative difference between ``model`` and its ONNX file on ``args``."""
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    want = sess.run(None, {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)})
    with torch.no_grad():
        got = model(*args)
    got = [got] if torch.is_tensor(got) else [got[0], *got[1]] if isinstance(got, tuple) else [got]
    return max(float(np.abs(w - g.numpy()).max() / max(np.abs(w).max(), 1e-12)) for w, g in zip(want, got))


def recover(bundle: Path, coarse_model: dict, refiner_model: dict) -> tuple[nn.Module, nn.Module, dict]:
    """(coarse, refiner, model.json meta) of ``bundle``; ``*_model``: the ``model`` sections of the
    coarse and refiner training configs."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    coarse = create_coarse(coarse_model["coarse"], **coarse_model.get("coarse_kwargs", {})).eval()
    tile = tuple(refiner_model["tile_size"])
    rkw = refiner_model.get("refiner_kwargs", {})
    refiner = create_refiner(refiner_model["refiner"], coarse, tile, **rkw).eval()
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, *coarse.input_size, generator=gen)
    with torch.no_grad():
        _, feats = coarse(image)
    rgb = torch.randn(2, 3, *tile, generator=gen)
    depth = 1.0 + 40.0 * torch.rand(2, 1, *tile, generator=gen)
    guides = [torch.randn(2, c, h, w, generator=gen) for c, h, w in refiner.guidance]
    files = {role: bundle / manifest[role]["files"]["onnx"]["fp32"] for role in ("coarse", "refiner")}
    load_from_onnx(coarse, (image,), files["coarse"], "coarse.")
    load_from_onnx(refiner, (rgb, depth, *guides), files["refiner"], "")
    for role, model, args in (("coarse", coarse, (image,)), ("refiner", refiner, (rgb, depth, *guides))):
        worst = _agree(model, args, files[role])
        if worst > TOLERANCE:
            raise ValueError(f"the recovered {role} model differs from {files[role].name} by {worst:.1e} (relative)")
    meta = {"coarse": {"name": coarse_model["coarse"], "kwargs": coarse_model.get("coarse_kwargs", {})},
            "refiner": {"name": refiner_model["refiner"], "kwargs": {"tile_size": list(tile), **rkw}},
            "camera": manifest["camera"], "depth": manifest["depth"],
            "recovered_from": {"bundle": manifest.get("name", bundle.name),
                               "batchnorm": "folded into the convolutions: keep it in eval mode to train on"}}
    meta["train"] = {"tiling": manifest["tiling"]}
    return coarse, refiner, meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("out", type=Path, help="checkpoint folder to write (model.safetensors + model.json)")
    ap.add_argument("--coarse-config", type=Path, required=True, help="the coarse model's training config")
    ap.add_argument("--refiner-config", type=Path, required=True, help="the refiner's training config")
    ap.add_argument("--frame-size", default=None, metavar="HxW",
                    help="the refiner's training frame size, recorded for a later export (e.g. 1080x1920)")
    args = ap.parse_args(argv)
    try:
        configs = [yaml.safe_load(p.read_text())["model"] for p in (args.coarse_config, args.refiner_config)]
        coarse, refiner, meta = recover(args.bundle, *configs)
        if args.frame_size:
            meta["train"]["frame_size"] = [int(v) for v in args.frame_size.lower().split("x")]
        save_models(args.out, coarse, refiner, meta)
    except (OSError, KeyError, ValueError) as err:
        print(f"recover_checkpoint: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
