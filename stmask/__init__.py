"""STMask (Li et al., CVPR 2021): one-stage video instance segmentation with spatial feature
calibration (FCA / FCB) and temporal fusion. Detectron2 meta-architecture ``STMask``, its backbone and
its training clip mapper are registered on import."""

from . import data, modeling  # noqa: F401  (registries)
from .config import add_stmask_config

__all__ = ["add_stmask_config"]
