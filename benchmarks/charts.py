"""Bar charts for the benchmark scripts, drawn with PIL (matplotlib is not a dependency)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence


def bar_chart(path: Path, title: str, bars: Sequence[tuple[str, float, str]], width: int = 760) -> None:
    """Horizontal bars as a PNG, written atomically: ``bars`` = (label, value >= 0, text after the bar).

    Bars are scaled to the largest value; a label may name a group ("4K: onnxruntime").
    """
    from PIL import Image, ImageDraw

    if not bars:
        raise ValueError("bar_chart needs at least one bar")
    row_h, left = 34, 230
    img = Image.new("RGB", (width, 60 + row_h * len(bars)), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), title, fill="black")
    top = max(v for _, v, _ in bars) or 1.0
    # Room right of the longest bar for the longest text (PIL's default font: about 6 px a character).
    span = max(80, width - left - 16 - 6 * max(len(text) for _, _, text in bars))
    for i, (label, v, text) in enumerate(bars):
        y = 40 + i * row_h
        end = left + int(span * v / top)
        draw.text((10, y + 8), label, fill="black")
        draw.rectangle([left, y + 4, end, y + row_h - 6], fill=(60, 110, 190))
        draw.text((end + 6, y + 8), text, fill="black")
    path = Path(path)
    tmp = path.with_suffix(".tmp.png")
    img.save(tmp)
    os.replace(tmp, path)
