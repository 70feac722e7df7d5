"""Tiny torch coarse/refiner pairs with the bundle's ONNX I/O names, and a hand-written bundle writer.

They let the runtime's tests run real ONNX Runtime / OpenVINO sessions on a real bundle without
depending on the trained models; the end-to-end tests through edgedepth.export live beside them.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..tiny_models import TinyCoarse, TinyRefiner

COARSE_SIZE = (32, 48)
TILE = (24, 24)
FEAT_C, FEAT_STRIDE = 8, 4
GUIDE = (FEAT_C, 6, 6)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def tiny_pair() -> tuple[TinyCoarse, TinyRefiner]:
    """The shared tiny models at this bundle's sizes, in eval mode."""
    return (TinyCoarse(input_size=COARSE_SIZE, channels=FEAT_C).eval(),
            TinyRefiner(tile_size=TILE, guide=GUIDE).eval())


def export_tiny_onnx(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write coarse.onnx and refiner.onnx (dynamic tile axis N) into ``folder``."""
    torch.manual_seed(seed)
    coarse, refiner = tiny_pair()
    folder.mkdir(parents=True, exist_ok=True)
    c_path, r_path = folder / "coarse.onnx", folder / "refiner.onnx"
    torch.onnx.export(coarse, (torch.randn(1, 3, *COARSE_SIZE),), str(c_path), input_names=["image"],
                      output_names=["depth", "feat0"], opset_version=17, dynamo=False)
    args = (torch.randn(2, 3, *TILE), torch.rand(2, 1, *TILE), torch.randn(2, *GUIDE))
    names = ["rgb", "coarse_depth", "guide0"]
    torch.onnx.export(refiner, args, str(r_path), input_names=names, output_names=["depth"], opset_version=17,
                      dynamic_axes={n: {0: "N"} for n in names + ["depth"]}, dynamo=False)
    return c_path, r_path


def tiny_manifest(files: dict[str, str], **overrides) -> dict:
    """A schema-1 manifest for the tiny models (``files``: rel path -> sha256)."""
    manifest = {
        "schema": "edgedepth.bundle/1", "edgedepth_version": "0.1.0", "name": "tiny",
        "coarse": {
            "input_size": list(COARSE_SIZE), "mean": list(MEAN), "std": list(STD), "metric": True,
            "inputs": [{"name": "image", "shape": [1, 3, *COARSE_SIZE]}],
            "outputs": [{"name": "depth", "channels": 1, "stride": 1},
                        {"name": "feat0", "channels": FEAT_C, "stride": FEAT_STRIDE}],
            "files": {"onnx": {"fp32": "coarse.onnx"}},
        },
        "refiner": {
            "name": "tiny", "tile_size": list(TILE), "batch": None,
            "inputs": [{"name": "rgb", "shape": [-1, 3, *TILE]}, {"name": "coarse_depth", "shape": [-1, 1, *TILE]},
                       {"name": "guide0", "shape": [-1, *GUIDE], "source": "feat0"}],
            "outputs": [{"name": "depth", "shape": [-1, 1, *TILE]}],
            "files": {"onnx": {"fp32": "refiner.onnx"}},
        },
        "tiling": {"rows": 2, "cols": 2, "overlap_ratio": 0.25, "window": "cosine"},
        "camera": {"fx_norm": 0.8},
        "files": files,
        "parity": {},
    }
    for key, value in overrides.items():
        manifest[key] = value
    return manifest


def write_manifest(bundle: Path, manifest: dict) -> None:
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def read_manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def random_image(h: int = 40, w: int = 60, seed: int = 0):
    """An (h, w, 3) uint8 RGB frame of uniform noise."""
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_tiny_bundle(bundle: Path, seed: int = 0) -> Path:
    """A complete, valid bundle of the tiny models (ONNX only) at ``bundle``."""
    export_tiny_onnx(bundle, seed)
    files = {p.name: sha(p) for p in sorted(bundle.glob("*.onnx"))}
    write_manifest(bundle, tiny_manifest(files))
    return bundle


def reference_depth(image, seed: int = 0, rows: int = 2, cols: int = 2, overlap_ratio: float = 0.25,
                    window: str = "cosine", pad_columns: int = 0):
    """The tiny pipeline computed independently of the runtime: torch models + the numpy tile reference.
    ``pad_columns``: the frame resized to COARSE_SIZE[1] - pad_columns columns, the rest its edge
    columns repeated, half left (coarse.fit "pad" for a frame narrower than the input), and depth
    scaled by the share of the width it fills."""
    import numpy as np

    from edgedepth import tiling_reference as ref
    from edgedepth.tiling import TileGrid

    torch.manual_seed(seed)
    coarse, refiner = tiny_pair()
    h, w = image.shape[:2]
    ch, cw = COARSE_SIZE
    inner, left = cw - pad_columns, pad_columns // 2
    x = ref.crop_resize(image, np.array([[0.0, 0.0, h, w]]), (ch, inner), mean=MEAN, std=STD)
    x = np.pad(x, ((0, 0), (0, 0), (0, 0), (left, pad_columns - left)), mode="edge")
    with torch.no_grad():
        depth, (feat,) = coarse(torch.from_numpy(x))
        depth, feat = depth.numpy(), feat.numpy()
    grid = TileGrid.from_overlap_ratio(h, w, rows, cols, overlap_ratio)

    def boxes_in(map_h, map_w):  # frame boxes in a map of the padded input
        b = np.asarray(grid.boxes, dtype=np.float64)
        sy, sx = map_h / h, map_w / cw * inner / w
        return np.stack([b[:, 0] * sy, left * map_w / cw + b[:, 1] * sx, b[:, 2] * sy, b[:, 3] * sx], axis=1)

    rgb = ref.crop_resize(image, grid.boxes, TILE, mean=MEAN, std=STD)
    if pad_columns:
        cd = ref.crop_resize(depth[0], boxes_in(ch, cw), TILE)
        g = ref.crop_resize(feat[0], boxes_in(feat.shape[2], feat.shape[3]), GUIDE[1:])
    else:  # the squeezed frame, with the runtime's own box arithmetic (TileGrid.scaled)
        cd = ref.crop_resize(depth[0], grid.scaled(ch / h, cw / w), TILE)
        g = ref.crop_resize(feat[0], grid.scaled(feat.shape[2] / h, feat.shape[3] / w), GUIDE[1:])
    with torch.no_grad():
        tiles = refiner(*(torch.from_numpy(a) for a in (rgb, cd, g))).numpy()
    share = np.float32(inner / cw)
    return ref.stitch(tiles, grid.boxes, h, w, window)[0] * share, depth[0, 0][:, left:left + inner] * share
