"""Data: procedural scenes with metric ground truth, sensor degradation, data-set readers and
the data-set folder writer. numpy (+ Pillow for files) only."""
from __future__ import annotations

from .degrade import SensorConfig, degrade
from .procedural import FX_NORM, LAYOUTS, MAX_DEPTH, MIN_DEPTH, iter_scenes, render_scene
from .readers import list_datasets, open_dataset
from .sample import Sample, check_sample
from .writer import write_dataset, write_sample

__all__ = [
    "Sample", "check_sample", "render_scene", "iter_scenes", "FX_NORM", "LAYOUTS", "MIN_DEPTH",
    "MAX_DEPTH", "SensorConfig", "degrade", "open_dataset", "list_datasets", "write_dataset",
    "write_sample",
]
