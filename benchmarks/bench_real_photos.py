"""Is the refined map ever worse than the coarse one on real photographs? (the default-model issue)

Procedural frames have no cast shadows, no sensor noise and no real materials, so a refiner can
learn a procedural look that a photograph does not have. This check runs bundles on real RGB-D
photographs and compares, per photo, the refined map with the bundle's own coarse map (both as
`Runtime.predict` returns them, the coarse one upsampled bilinearly to the frame), by AbsRel after median scaling (each map scaled by
median(gt) / median(pred) over valid pixels, as for relative-depth models: the photographs come
from cameras whose intrinsics the coarse model never saw, so only the shape is compared).

No photographs ship with the repository (their licences are their datasets'). The folder given
with --photos holds a ``photos.json`` listing them:

    [{"name": "redwood_0", "color": "color_00000.jpg", "depth": "depth_00000.png", "format": "mm"}, ...]

``format`` says how the 16-bit depth PNG encodes metres: "mm" (value / 1000: Redwood, ScanNet),
"tum" (value / 5000: TUM RGB-D), "sun" (SUN RGB-D's bit rotation, (v >> 3 | v << 13) / 1000).
Our own checks used the four RGB-D pairs of Open3D's test data (examples/TestData/RGBD in the
Open3D repository up to 2019: Redwood frames 00000 and 00001, other_formats/TUM_* and SUN_*;
all 640x480).

    python benchmarks/bench_real_photos.py --photos DIR [--bundle NAME=PATH ...] [--out out/bench_real_photos]

Writes table.md, figures.json and, per photo, a PNG (frame, ground truth, coarse, refined, each
bundle's |error| of the refined map) to --out.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FORMATS = {"mm", "tum", "sun"}


def decode_depth(raw: np.ndarray, fmt: str) -> np.ndarray:
    """A 16-bit depth PNG's values -> metres (0 = no measurement)."""
    v = raw.astype(np.uint32)
    if fmt == "mm":
        return (v / 1000.0).astype(np.float32)
    if fmt == "tum":
        return (v / 5000.0).astype(np.float32)
    if fmt == "sun":
        return ((((v >> 3) | (v << 13)) & 0xFFFF) / 1000.0).astype(np.float32)
    raise ValueError(f"depth format must be one of {sorted(FORMATS)}, got {fmt!r}")


def absrel_median_scaled(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean |s pred - gt| / gt over pixels where both are positive and finite, s = median ratio."""
    ok = (gt > 0) & np.isfinite(gt) & (pred > 0) & np.isfinite(pred)
    if ok.sum() < 100:
        raise ValueError("fewer than 100 pixels with both a measured and a predicted depth")
    p, g = pred[ok].astype(np.float64), gt[ok].astype(np.float64)
    p *= np.median(g) / np.median(p)
    return float(np.mean(np.abs(p - g) / g))


def load_photos(folder: Path) -> list[dict]:
    from edgedepth.depth_io import read_image, read_png16

    listing = folder / "photos.json"
    if not listing.is_file():
        raise SystemExit(f"--photos: {listing} not found (see this script's docstring for its format)")
    photos = []
    for entry in json.loads(listing.read_text()):
        fmt = entry.get("format", "mm")
        if fmt not in FORMATS:
            raise SystemExit(f"{listing}: {entry.get('name')}: format must be one of {sorted(FORMATS)}, got {fmt!r}")
        image = read_image(folder / entry["color"])
        gt = decode_depth(read_png16(folder / entry["depth"]), fmt)
        if gt.shape != image.shape[:2]:
            raise SystemExit(f"{listing}: {entry['name']}: depth {gt.shape} and colour {image.shape[:2]} differ in size")
        photos.append({"name": entry["name"], "image": image, "gt": gt})
    return photos


def picture(path: Path, image: np.ndarray, gt: np.ndarray, maps: dict[str, np.ndarray]) -> None:
    """Frame, ground truth, then each map (median-scaled to the ground truth) side by side, in the
    same colours (near red, far blue; no depth black)."""
    from edgedepth.depth_io import colorize_depth, write_image

    ok = gt > 0
    vmin, vmax = (float(v) for v in np.percentile(gt[ok], [2, 98])) if ok.any() else (0.1, 10.0)
    panels = [image, colorize_depth(gt, vmin, vmax)]
    for pred in maps.values():
        good = ok & (pred > 0) & np.isfinite(pred)
        s = float(np.median(gt[good]) / np.median(pred[good])) if good.any() else 1.0
        panels.append(colorize_depth(pred * s, vmin, vmax))
    write_image(path, np.concatenate(panels, axis=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, required=True, help="folder with photos.json and its files")
    ap.add_argument("--bundle", action="append", default=[], metavar="NAME=PATH",
                    help="a bundle to check (repeatable; default: the shipped default bundle)")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "bench_real_photos")
    args = ap.parse_args(argv)

    from edgedepth import Runtime, tiling
    from edgedepth.atomic import atomic_write_text

    bundles = dict(b.split("=", 1) for b in args.bundle) or {"default": str(REPO / "edgedepth/assets/default.edgedepth")}
    photos = load_photos(args.photos)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, figures = [], {}
    maps: dict[str, dict[str, np.ndarray]] = {p["name"]: {} for p in photos}
    for bname, path in bundles.items():
        rt = Runtime(path, backend=args.backend)
        for p in photos:
            r = rt.predict(p["image"])
            h, w = p["gt"].shape
            up = tiling.crop_resize(np.ascontiguousarray(r.coarse, np.float32)[None],
                                    [[0.0, 0.0, *r.coarse.shape]], (h, w))[0, 0]
            coarse, refined = absrel_median_scaled(up, p["gt"]), absrel_median_scaled(r.depth, p["gt"])
            change = refined / coarse - 1
            figures.setdefault(bname, {})[p["name"]] = {"coarse": coarse, "refined": refined, "change": change}
            rows.append(f"| {bname} | {p['name']} | {coarse:.4f} | {refined:.4f} | {100 * change:+.2f} % |")
            maps[p["name"]].setdefault("coarse", up)
            maps[p["name"]][bname] = r.depth
            print(rows[-1], flush=True)
    for p in photos:
        picture(args.out / f"{p['name']}.png", p["image"], p["gt"], maps[p["name"]])
    worse = {b: [n for n, v in f.items() if v["change"] > 0] for b, f in figures.items()}
    table = ["| bundle | photo | coarse AbsRel | refined AbsRel | change |", "|---|---|---|---|---|", *rows, "",
             "AbsRel after median scaling; panels in each PNG: frame, ground truth, coarse, then each bundle's "
             "refined map (all median-scaled to the ground truth).", ""]
    table += [f"{b}: refined worse than coarse on {', '.join(w) if w else 'no photo'}" for b, w in worse.items()]
    atomic_write_text(args.out / "table.md", "\n".join(table) + "\n")
    atomic_write_text(args.out / "figures.json", json.dumps(figures, indent=2))
    print("\n".join(table[-len(worse):]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
