"""``Predictor``: Detectron2's ``DefaultPredictor`` with the checks every onestage-seg entry point makes.

* the weights of ``MODEL.WEIGHTS`` must fit the model (:class:`onestage.checkpoint.StrictCheckpointer`;
  ``MODEL.WEIGHTS_PARTIAL True`` loads what fits), and a missing or corrupt file is one clear error;
* ``MODEL.DEVICE cuda`` without CUDA falls back to CPU with a warning;
* the image must be an H x W x 3 uint8 BGR array (``INPUT.FORMAT`` of the config converts it, as in
  ``DefaultPredictor``); a 2-D grayscale, an RGBA, an empty or a float array raises ``ValueError``
  saying how to convert it (:func:`onestage.inputs.check_image_array`).
"""

from __future__ import annotations

import numpy as np
from detectron2.config import CfgNode
from detectron2.engine import DefaultPredictor

from .checkpoint import StrictCheckpointer, check_weights_file
from .config import resolve_device
from .inputs import check_image_array

__all__ = ["Predictor"]


class Predictor(DefaultPredictor):
    """``DefaultPredictor(cfg)`` that loads ``cfg.MODEL.WEIGHTS`` strictly and checks its input.

    ``Predictor(cfg)(bgr_image)`` returns ``{"instances": Instances}`` at the input size, as
    ``DefaultPredictor`` does.
    """

    def __init__(self, cfg: CfgNode):
        cfg = cfg.clone()
        cfg.defrost()
        resolve_device(cfg)
        weights = cfg.MODEL.WEIGHTS
        check_weights_file(weights)  # before building the model
        cfg.MODEL.WEIGHTS = ""  # DefaultPredictor builds the model; the strict checkpointer loads it
        super().__init__(cfg)
        cfg.MODEL.WEIGHTS = weights
        self.cfg = cfg
        StrictCheckpointer(self.model, partial=cfg.MODEL.WEIGHTS_PARTIAL).load(weights)

    def __call__(self, original_image: np.ndarray) -> dict:
        return super().__call__(check_image_array(original_image))
