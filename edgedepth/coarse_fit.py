"""Where a frame sits in the coarse model's fixed input: squeezed to fill it, or fitted with its
aspect kept and the rest edge-padded.

The coarse model sees the whole frame at its fixed input size (128x224 in the default bundle, the
aspect of the 16:9 frames it was trained on). Squeezing a 4:3 frame into it makes every object
25 % narrower than the model ever saw, and a monocular model reads that as distance: on procedural
640x480 frames the squeezed coarse map is 9-30 % too far (AbsRel 0.209), the fitted one 0.106.
``fit = "pad"`` keeps the aspect of frames whose aspect differs from the input's by more than
``ASPECT_TOLERANCE``; frames within it (16:9 frames in a 1.75:1 input) are squeezed as in training.

Depth is z-depth with fx normalised by the frame width (DESIGN.md), so a frame that fills only
``content_w`` of the input's ``cw`` columns is, to the model, a wider frame with the same fx in
pixels: its depth is scaled by ``width_share`` = content_w / cw. Padding rows (frames wider than
the input) changes no width and no scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

#: How the coarse model's input holds the frame (manifest ``coarse.fit``; absent = "squeeze").
FITS = ("squeeze", "pad")
#: Frames whose aspect is within this ratio of the input's are squeezed even with fit "pad".
ASPECT_TOLERANCE = 1.05


def fit_for_training(frame_size: Sequence[int] | None, size: Sequence[int]) -> str:
    """The fit for a model trained on frames of ``frame_size`` (h, w) with a coarse input of ``size``:
    "pad" when those frames fill the input as they are (then "pad" feeds them exactly as training
    did, and only other aspects are fitted), "squeeze" when training squeezed them (the runtime must
    squeeze as training did). The coarse model is trained squeezed; a refiner trained with "pad"
    sees frames of another aspect padded, as the runtime feeds them (``train.data.TileItems``);
    frames within ``ASPECT_TOLERANCE`` of the input's aspect are the same either way."""
    if frame_size and CoarseFit.for_frame(int(frame_size[0]), int(frame_size[1]), size, "pad").padded:
        return "squeeze"
    return "pad"


@dataclass(frozen=True)
class CoarseFit:
    """A (height, width) frame resized to (content_h, content_w) coarse-input pixels at (top, left)
    inside the (ch, cw) input; the rest is the content's edge pixels repeated."""

    height: int
    width: int
    ch: int
    cw: int
    top: int = 0
    left: int = 0
    content_h: int = 0
    content_w: int = 0

    @classmethod
    def for_frame(cls, height: int, width: int, size: Sequence[int], fit: str = "pad") -> "CoarseFit":
        """The fit of a (height, width) frame into a coarse input of ``size`` (ch, cw)."""
        if fit not in FITS:
            raise ValueError(f"coarse fit must be one of {', '.join(FITS)}, got {fit!r}")
        height, width, ch, cw = int(height), int(width), int(size[0]), int(size[1])
        if min(height, width, ch, cw) < 1:
            raise ValueError(f"frame {height}x{width} and coarse input {ch}x{cw} must be non-empty")
        aspect, target = width / height, cw / ch
        if fit == "squeeze" or abs(math.log(aspect / target)) <= math.log(ASPECT_TOLERANCE):
            return cls(height, width, ch, cw, 0, 0, ch, cw)
        if aspect < target:  # narrower than the input: columns either side
            content_w = max(1, min(cw, round(ch * aspect)))
            return cls(height, width, ch, cw, 0, (cw - content_w) // 2, ch, content_w)
        content_h = max(1, min(ch, round(cw / aspect)))
        return cls(height, width, ch, cw, (ch - content_h) // 2, 0, content_h, cw)

    @property
    def padded(self) -> bool:
        return (self.content_h, self.content_w) != (self.ch, self.cw)

    @property
    def width_share(self) -> float:
        """content_w / cw: the factor on the model's depth (see the module docstring)."""
        return self.content_w / self.cw

    def map_boxes(self, boxes: Any, map_size: Sequence[int]) -> np.ndarray:
        """Frame-pixel boxes (N, 4) (y0, x0, h, w) -> the same regions in a coarse output map of
        ``map_size`` (h, w) (the input's grid at that map's stride), float64."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if not self.padded:  # the frame fills the input: exactly TileGrid.scaled's arithmetic
            sy, sx = map_size[0] / self.height, map_size[1] / self.width
            return b * np.array([sy, sx, sy, sx], dtype=np.float64)
        sy, sx = map_size[0] / self.ch, map_size[1] / self.cw
        ky, kx = self.content_h / self.height, self.content_w / self.width
        return np.stack([(self.top + b[:, 0] * ky) * sy, (self.left + b[:, 1] * kx) * sx,
                         b[:, 2] * ky * sy, b[:, 3] * kx * sx], axis=1)

    def content(self, depth: Any) -> Any:
        """The frame's part of a coarse map at the input's resolution (..., ch, cw) (numpy or torch)."""
        if tuple(depth.shape[-2:]) != (self.ch, self.cw):
            raise ValueError(f"expected a map of the coarse input's size {self.ch}x{self.cw}, got "
                             f"{tuple(depth.shape[-2:])}")
        return depth[..., self.top:self.top + self.content_h, self.left:self.left + self.content_w]

    def pad_input(self, x: np.ndarray) -> np.ndarray:
        """(N, C, content_h, content_w) numpy input -> (N, C, ch, cw), edge pixels repeated."""
        if not self.padded:
            return x
        return np.pad(x, ((0, 0), (0, 0), (self.top, self.ch - self.top - self.content_h),
                          (self.left, self.cw - self.left - self.content_w)), mode="edge")

    def torch_pad(self) -> tuple[int, int, int, int]:
        """The (left, right, top, bottom) of ``torch.nn.functional.pad(..., mode="replicate")``."""
        return (self.left, self.cw - self.left - self.content_w, self.top, self.ch - self.top - self.content_h)
