"""The README's picture: the sample frame beside what `edgedepth predict` writes for it.

    python scripts/readme_picture.py [--bundle B] [--vmin 3 --vmax 40] [--out docs/images/sample_depth.png]

Runs the real command on edgedepth/assets/sample.png, so the picture is the colourised PNG a user
gets (its fixed range, its legend), not a re-rendering. Top row: input | refined depth. Bottom row,
zoomed on the poles and fence at the right of the frame: input | the coarse map upsampled
bilinearly (what the refiner starts from) | refined | ground truth from the scene generator, all
on one colour scale: predict's --vmin/--vmax, here 3-40 m, the sample's depth range (predict's own
default, 1-80 m for every frame alike, leaves a street 5-30 m deep in a few shades of blue).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "edgedepth" / "assets" / "sample.png"
SAMPLE_SEED = 900004  # scripts/make_default.sh renders the sample from this scene


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None, help="bundle (default: the embedded default)")
    ap.add_argument("--vmin", type=float, default=3.0, help="near end of the colour scale, metres (3)")
    ap.add_argument("--vmax", type=float, default=40.0, help="far end of the colour scale, metres (40)")
    ap.add_argument("--out", default=str(REPO / "docs" / "images" / "sample_depth.png"))
    args = ap.parse_args(argv)

    from PIL import Image, ImageDraw

    from edgedepth import Runtime
    from edgedepth.datasets import render_scene
    from edgedepth.depth_io import colorize_depth, read_image, write_image

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "edgedepth", "predict", str(SAMPLE), "--out", tmp,
               "--vmin", str(args.vmin), "--vmax", str(args.vmax)]
        if args.bundle:
            cmd += ["--bundle", args.bundle]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        color = read_image(Path(tmp) / "sample_color.png")
        legend = read_image(Path(tmp) / "legend.png")
    image = read_image(SAMPLE)
    rt = Runtime(args.bundle) if args.bundle else Runtime()
    result = rt.predict(image)
    far = rt.valid_max_depth if np.isfinite(rt.valid_max_depth) else 80.0  # predict's far end
    h, w = image.shape[:2]
    coarse_up = np.asarray(Image.fromarray(result.coarse).resize((w, h), Image.BILINEAR))
    gt = render_scene(SAMPLE_SEED, h, w, layout="street")["depth"]
    gt = np.where((gt > 0) & (gt <= far), gt, 0)

    def look(depth):  # predict's colour scale: fixed range, invalid black
        return colorize_depth(np.where((depth > 0) & (depth <= far), depth, 0), args.vmin, args.vmax)

    half = (w // 2, h // 2)
    top = [Image.fromarray(image).resize(half, Image.LANCZOS), Image.fromarray(color).resize(half, Image.LANCZOS)]
    y0, x0, cs = h // 3, int(w * 0.62), h // 3  # the poles, fence and wall at the right of the sample
    panels = [("input", image), ("coarse, bilinear", look(coarse_up)), ("refined", color),
              ("ground truth", look(gt))]
    side = w // 4
    key = Image.fromarray(legend).resize((w // 2, legend.shape[0] * w // 2 // legend.shape[1]), Image.LANCZOS)
    sheet = Image.new("RGB", (w, half[1] + 44 + side + key.height), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, im) in enumerate(zip(("input", "edgedepth predict (refined)"), top)):
        sheet.paste(im, (i * half[0], 22))
        draw.text((i * half[0] + 6, 5), label, fill="black")
    for i, (label, arr) in enumerate(panels):
        crop = Image.fromarray(np.ascontiguousarray(arr[y0:y0 + cs, x0:x0 + cs])).resize((side, side), Image.NEAREST)
        sheet.paste(crop, (i * side, half[1] + 44))
        draw.text((i * side + 6, half[1] + 27), f"zoom: {label}", fill="black")
    sheet.paste(key, (w // 4, half[1] + 44 + side))
    write_image(Path(args.out), np.asarray(sheet))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
