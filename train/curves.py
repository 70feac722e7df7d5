"""Training curves of one or more runs as a PNG (PIL only) and as one JSON, for people to look at.

``python -m edgedepth.train.curves OUT.png RUN_DIR...`` or :func:`plot_runs`: for each run folder
(its ``train.csv`` and ``val.csv``, written by the trainer), one panel of the training loss and one
of the validation AbsRel (and, for refiners, in red the coarse model's AbsRel on the same frames as a
reference, and the edge-band AbsRel).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Sequence

from edgedepth.atomic import atomic_path, atomic_write_text

from .trainer import read_metrics

__all__ = ["load_runs", "plot_runs"]

_PANELS = (("train", "train/loss", None), ("val", "val/absrel", "val/coarse_absrel"),
           ("val", "val/edge_absrel", "val/coarse_edge_absrel"))
_COLOURS = ((60, 110, 190), (200, 80, 60))


def load_runs(runs: Sequence[str | Path]) -> dict[str, dict[str, list[dict[str, float]]]]:
    """{run name: {"train": rows, "val": rows}} of each run folder (missing CSVs give no rows)."""
    out = {}
    for run in runs:
        run = Path(run)
        out[run.name] = {kind: read_metrics(run / f"{kind}.csv") if (run / f"{kind}.csv").is_file() else []
                         for kind in ("train", "val")}
    return out


def _series(rows: list[dict[str, float]], key: str) -> list[tuple[float, float]]:
    return [(r["step"], r[key]) for r in rows if key in r and math.isfinite(r[key])]


def plot_runs(runs: Sequence[str | Path], png: str | Path, json_path: str | Path | None = None) -> Path:
    """Write the curves of ``runs`` to ``png`` (one row of panels per run) and their rows to
    ``json_path`` when given. Returns ``png``."""
    from PIL import Image, ImageDraw

    data = load_runs(runs)
    panel_w, panel_h, pad = 320, 180, 36
    img = Image.new("RGB", (pad + len(_PANELS) * (panel_w + pad), pad + len(data) * (panel_h + 2 * pad)), "white")
    draw = ImageDraw.Draw(img)
    for r, (name, rows) in enumerate(data.items()):
        top = pad + r * (panel_h + 2 * pad)
        for c, (kind, key, ref) in enumerate(_PANELS):
            left = pad + c * (panel_w + pad)
            lines = [s for s in (_series(rows[kind], key), _series(rows[kind], ref) if ref else []) if s]
            draw.text((left, top - 16), f"{name}: {key}" + (f" (red: {ref})" if ref and len(lines) > 1 else ""),
                      fill="black")
            draw.rectangle([left, top, left + panel_w, top + panel_h], outline=(160, 160, 160))
            if not lines:
                draw.text((left + 8, top + 8), "no data", fill=(120, 120, 120))
                continue
            xs = [x for s in lines for x, _ in s]
            ys = [y for s in lines for _, y in s]
            # A lone step or value sits mid-panel (a run validated once, at its end, has one point).
            x0, x1 = (min(xs), max(xs)) if max(xs) > min(xs) else (min(xs) - 1, min(xs) + 1)
            margin = 0.05 * (max(ys) - min(ys)) or 0.05 * abs(ys[0]) or 1e-9
            y0, y1 = min(ys) - margin, max(ys) + margin
            px = lambda x: left + 4 + (panel_w - 8) * (x - x0) / (x1 - x0)
            py = lambda y: top + panel_h - 4 - (panel_h - 8) * (y - y0) / (y1 - y0)
            for k, series in enumerate(lines):
                pts = [(px(x), py(y)) for x, y in series]
                if k == 0 and len(pts) > 1:
                    draw.line(pts, fill=_COLOURS[0], width=2)
                elif k:  # the reference dashed
                    for a, b in zip(pts[::2], pts[1::2]):
                        draw.line([a, b], fill=_COLOURS[1], width=2)
                if len(pts) <= 12:  # few points (validation): each one visible
                    for x, y in pts:
                        draw.ellipse([x - 3, y - 3, x + 3, y + 3], outline=_COLOURS[k > 0], width=2)
            draw.text((left + 4, top + panel_h + 4), f"step {min(xs):g}..{max(xs):g}   {min(ys):.4g}..{max(ys):.4g}",
                      fill="black")
    png = Path(png)
    with atomic_path(png) as tmp:
        img.save(tmp, format="PNG")
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(data, indent=1))
    return png


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m edgedepth.train.curves OUT.png RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        return 2
    print(plot_runs(args[1:], args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
