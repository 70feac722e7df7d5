"""Teacher -> student distillation loss: the DSD composite of PatchRefiner (METHODS §1).

SDDR's self-distillation (METHODS §4: coarse-to-fine window pseudo-labels from the refiner's own
output, a learnable region mask, edge-guided gradient and edge-based fusion losses) is not
implemented: its authors released no code, and a partial version pulled edges toward the blurry
coarse map instead of sharpening them."""
from __future__ import annotations

from typing import Any

import torch

from .depth import silog_loss, ssi_loss
from .gradient import local_ssigm_loss, ssigm_loss
from .ranking import edge_guided_ranking_loss

__all__ = ["DETAIL_LOSSES", "dsd_loss"]

DETAIL_LOSSES = {"ssi": ssi_loss, "ssigm": ssigm_loss, "local_ssigm": local_ssigm_loss,
                 "ranking": edge_guided_ranking_loss}


def dsd_loss(pred: torch.Tensor, target: torch.Tensor, pseudo: torch.Tensor, mask: torch.Tensor | None = None,
             pseudo_mask: torch.Tensor | None = None, *, lam: float = 1.0, detail: str = "ssi",
             **detail_kwargs: Any) -> torch.Tensor:
    """Detail and Scale Disentangling: SILog against the (sparse) ground truth for scale, plus
    ``lam`` x a scale-free detail loss against the teacher's dense pseudo-label.

    detail: "ssi", "ssigm", "local_ssigm" or "ranking" (``detail_kwargs`` go to it). All inputs
    (B, 1, H, W); target/pseudo 0 = invalid. The detail term ignores any affine change of ``pred``
    (and the scale-and-shift-fitted ones any shift of ``pseudo``), so the metric scale is learnt
    from the ground truth alone.
    """
    if detail not in DETAIL_LOSSES:
        raise ValueError(f"detail must be one of {sorted(DETAIL_LOSSES)}, got {detail!r}")
    return silog_loss(pred, target, mask) + lam * DETAIL_LOSSES[detail](pred, pseudo, pseudo_mask, **detail_kwargs)
