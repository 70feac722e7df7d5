"""Training curves as a PNG: a run validated once (as train_default_gpu.sh's runs are) must still
show its validation value and the coarse reference, not an empty panel."""
from __future__ import annotations

import numpy as np
from PIL import Image

from edgedepth.train.curves import _COLOURS, plot_runs


def _csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


def _has(panel: np.ndarray, colour) -> bool:
    return bool(np.all(panel == np.array(colour, dtype=np.uint8), axis=-1).any())


def test_a_single_validation_point_is_drawn(tmp_path):
    run = tmp_path / "refiner"
    run.mkdir()
    _csv(run / "train.csv", ["step", "train/loss"], [(20, 0.3), (40, 0.25), (60, 0.2)])
    _csv(run / "val.csv", ["step", "val/absrel"], [(60, 0.11)])
    img = np.asarray(Image.open(plot_runs([run], tmp_path / "curves.png")).convert("RGB"))
    pad, w, h = 36, 320, 180
    val_panel = img[pad:pad + h, 2 * pad + w:2 * pad + 2 * w]
    assert _has(val_panel, _COLOURS[0]) and not _has(val_panel, _COLOURS[1])  # no reference column: no red
    _csv(run / "val.csv", ["step", "val/absrel", "val/coarse_absrel"], [(60, 0.11, 0.12)])
    img = np.asarray(Image.open(plot_runs([run], tmp_path / "curves.png")).convert("RGB"))
    val_panel = img[pad:pad + h, 2 * pad + w:2 * pad + 2 * w]
    assert _has(val_panel, _COLOURS[0]) and _has(val_panel, _COLOURS[1])
    edge_panel = img[pad:pad + h, 3 * pad + 2 * w:3 * pad + 3 * w]
    assert not _has(edge_panel, _COLOURS[0])  # nothing logged there
