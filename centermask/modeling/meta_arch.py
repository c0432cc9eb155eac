"""CenterMask meta-architecture: Detectron2's ``GeneralizedRCNN`` with a faster inference."""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances

from onestage.inference import check_amp, inference_autocast
from onestage.layers import BatchPastedROIMasks

__all__ = ["CenterMask"]


@META_ARCH_REGISTRY.register()
class CenterMask(GeneralizedRCNN):
    """``GeneralizedRCNN`` (same modules, checkpoint keys, training and outputs) whose inference runs
    the network under ``MODEL.INFERENCE.AMP`` (post-processing in float32) and, without autograd,
    pastes all masks of an image at once (:class:`onestage.layers.BatchPastedROIMasks`) where
    Detectron2 pastes one at a time on CPU. Configs naming ``GeneralizedRCNN`` (centermask2's) build
    the same model without these two."""

    @configurable
    def __init__(self, *, inference_amp: str = "", **kwargs):
        """
        Args:
            inference_amp: ``MODEL.INFERENCE.AMP``: ``""``, ``"fp16"`` (CUDA) or ``"bf16"``.
            kwargs: ``GeneralizedRCNN``'s arguments.
        """
        super().__init__(**kwargs)
        self.inference_amp = check_amp(inference_amp, self.device)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["inference_amp"] = cfg.MODEL.INFERENCE.AMP
        return ret

    def inference(
        self,
        batched_inputs: list[dict[str, torch.Tensor]],
        detected_instances: list[Instances] | None = None,
        do_postprocess: bool = True,
    ):
        """As ``GeneralizedRCNN.inference``."""
        with inference_autocast(self.inference_amp, self.device):
            results = super().inference(batched_inputs, detected_instances, do_postprocess=False)
        if not do_postprocess:
            return results
        processed = []
        for result, inputs in zip(results, batched_inputs, strict=True):
            if result.has("pred_masks") and not torch.is_grad_enabled():
                result.pred_masks = BatchPastedROIMasks(result.pred_masks[:, 0])
            h, w = inputs["image"].shape[-2:]  # the image size before padding (ImageList.image_sizes)
            height, width = inputs.get("height", h), inputs.get("width", w)
            processed.append({"instances": detector_postprocess(result, height, width)})
        return processed
