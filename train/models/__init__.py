"""Models of edgedepth.train: encoders, coarse models, refiners and their registries
(docs/interfaces.md, "Models")."""
from .coarse import CoarseModel, CoarseSpec, LiteCoarse, ModuleCoarse, create_coarse
from .depth_anything import DAV2Config, DepthAnythingV2, dav2_input_size, fit_scale_shift
from .encoders import Encoder, FeatureInfo, create_encoder, widen_stem
from .hf_adapter import HFCoarse
from .refiner import GuidedDenoisingUnit, PatchRefinerBaseline, PRV2Refiner, Refiner, create_refiner, guide_level
from .registry import list_models

__all__ = ["CoarseModel", "CoarseSpec", "LiteCoarse", "ModuleCoarse", "HFCoarse", "DepthAnythingV2", "DAV2Config", "dav2_input_size", "fit_scale_shift", "Encoder", "FeatureInfo",
           "Refiner", "PRV2Refiner", "PatchRefinerBaseline", "GuidedDenoisingUnit", "create_encoder",
           "create_coarse", "create_refiner", "widen_stem", "guide_level", "list_models"]
