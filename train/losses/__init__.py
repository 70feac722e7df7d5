"""Losses of edgedepth.train (METHODS.md): metric, scale-free, gradient, ranking, consistency and
distillation losses, plus masks. Every loss takes a validity mask (target 0 = invalid) and returns
a finite scalar, 0 on an empty mask."""
from .alignment import fit_scale_shift
from .consistency import gpct_consistency_loss, overlap_pairs
from .depth import log_l1_loss, relative_far, silog_loss, ssi_loss
from .distill import DETAIL_LOSSES, dsd_loss
from .gradient import gradient_l1, local_ssigm_loss, sample_windows, ssigm_loss
from .masks import bfm_mask, edge_band_mask, masked_mean, valid_mask
from .ranking import edge_guided_ranking_loss

__all__ = ["fit_scale_shift", "gpct_consistency_loss", "overlap_pairs", "log_l1_loss", "relative_far",
           "silog_loss", "ssi_loss", "DETAIL_LOSSES", "dsd_loss", "gradient_l1", "local_ssigm_loss",
           "sample_windows", "ssigm_loss", "bfm_mask", "edge_band_mask", "masked_mean", "valid_mask",
           "edge_guided_ranking_loss"]
