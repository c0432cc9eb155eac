"""Map the authors' CenterMask checkpoints to this project's state-dict names (spec 10).

Used by ``tools/convert_checkpoint.py`` (layouts ``centermask2`` and ``centermask``).
"""

from __future__ import annotations

import logging
import re

import torch
from torch import Tensor

from onestage.checkpoint import LayoutError, check_layout, fold_frozen_bn_eps, rename_mb_fpn_key, strip_prefix

__all__ = ["convert_centermask2", "convert_centermask_mb"]

logger = logging.getLogger(__name__)

# Buffers older Detectron2 versions saved; GeneralizedRCNN no longer has them in its state dict.
_DROPPED = {"pixel_mean", "pixel_std"}
# First key components of a bare bottom-up backbone (ImageNet "*_detectron2.pth" files, spec 10.2).
_BARE_BACKBONE = re.compile(r"^(stem\.|stage\d\.|features\.)")
# Keys of a centermask2 CenterMask / CenterMask-Lite model.
_CENTERMASK2_KEY = re.compile(
    r"^(backbone\.(bottom_up|fpn_lateral\d|fpn_output\d|top_block)\.|proposal_generator\.fcos_head\."
    r"|roi_heads\.(mask_head|maskiou_head)\.)"
)
_CENTERMASK2_EXPECTED = (
    "a centermask2 model (backbone.bottom_up.*, backbone.fpn_*, proposal_generator.fcos_head.*, "
    "roi_heads.mask_head.*, roi_heads.maskiou_head.*) or a bare VoVNet / MobileNetV2 backbone "
    "(stem.*, stage2.* ..., features.*)"
)


def convert_centermask2(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """centermask2 (Detectron2) checkpoints need no renaming; this drops ``pixel_mean`` /
    ``pixel_std``, strips a ``module.`` prefix and gives bare ImageNet backbone files
    (keys ``stem.*``, ``stage{s}.*``, ``features.*``) the ``backbone.bottom_up.`` prefix.

    Raises :class:`~onestage.checkpoint.LayoutError` (a ``KeyError``) on a state dict with keys of
    neither layout (e.g. a SipMask or Mask R-CNN checkpoint), naming them."""
    state_dict = {k: v for k, v in strip_prefix(state_dict).items() if k not in _DROPPED}
    check_layout(
        state_dict,
        "centermask2",
        _CENTERMASK2_EXPECTED,
        lambda k: bool(_CENTERMASK2_KEY.match(k) or _BARE_BACKBONE.match(k)),
    )
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key in _DROPPED:
            continue
        if _BARE_BACKBONE.match(key):
            key = "backbone.bottom_up." + key
        out[key] = value
    return out


# (pattern, replacement) applied in order to every [MB] key; the first match wins.
_MB_RULES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"^backbone\.body\.(.*)/conv\.offset\.(weight|bias)$"),
        r"backbone.bottom_up.\1/conv_offset.\2",
    ),
    (re.compile(r"^backbone\.body\.(.*)/conv\.conv\.weight$"), r"backbone.bottom_up.\1/conv.weight"),
    (re.compile(r"^backbone\.body\.(.*)$"), r"backbone.bottom_up.\1"),
    (re.compile(r"^rpn\.head\.centerness\.(weight|bias)$"), r"proposal_generator.fcos_head.ctrness.\1"),
    (
        re.compile(
            r"^rpn\.head\.((cls_tower|bbox_tower|share_tower)\.\d+|cls_logits|bbox_pred)\.(weight|bias)$"
        ),
        r"proposal_generator.fcos_head.\1.\3",
    ),
    (re.compile(r"^rpn\.head\.scales\.(\d+)\.scale$"), r"proposal_generator.fcos_head.scales.\1.scale"),
    (
        re.compile(
            r"^roi_heads\.mask\.feature_extractor\.(mask_fcn\d+\.(weight|bias)|spatialAtt\.conv\.weight)$"
        ),
        r"roi_heads.mask_head.\1",
    ),
    (
        re.compile(r"^roi_heads\.mask\.predictor\.conv5_mask\.(weight|bias)$"),
        r"roi_heads.mask_head.deconv.\1",
    ),
    (
        re.compile(r"^roi_heads\.mask\.predictor\.mask_fcn_logits\.(weight|bias)$"),
        r"roi_heads.mask_head.predictor.\1",
    ),
    (
        re.compile(
            r"^roi_heads\.maskiou\.feature_extractor\.(maskiou_fcn\d+|maskiou_fc1|maskiou_fc2)\.(weight|bias)$"
        ),
        r"roi_heads.maskiou_head.\1.\2",
    ),
    (
        re.compile(r"^roi_heads\.maskiou\.predictor\.maskiou\.(weight|bias)$"),
        r"roi_heads.maskiou_head.maskiou.\1",
    ),
]
# Outputs with a background row 0 in [MB] (81 rows) and none here (80).
_MB_WITH_BACKGROUND = ("roi_heads.mask_head.predictor.", "roi_heads.maskiou_head.maskiou.")


def _rename_mb(key: str) -> str:
    fpn_key = rename_mb_fpn_key(key)
    if fpn_key is not None:
        return fpn_key
    for pattern, repl in _MB_RULES:
        if pattern.match(key):
            return pattern.sub(repl, key)
    raise LayoutError(
        f"not a CenterMask (maskrcnn-benchmark) checkpoint: no rule maps the key {key!r}; expected "
        "backbone.body.*, backbone.fpn.*, rpn.head.*, roi_heads.mask.*, roi_heads.maskiou.*"
    )


def convert_centermask_mb(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Convert an original CenterMask (maskrcnn-benchmark) checkpoint (spec 10.3).

    Renames every key, drops the background row of the mask predictor and the MaskIoU output
    (81 -> 80 classes) and folds Detectron2's FrozenBN epsilon into the backbone's BN weights
    (:func:`onestage.checkpoint.fold_frozen_bn_eps`), so that its ``FrozenBatchNorm2d`` computes
    the same as maskrcnn-benchmark's. The FCOS box regression
    of [MB] predicts ``exp(x)`` in pixels where centermask2 uses ``relu(x) * stride``: the
    ``bbox_pred`` / ``scales`` weights are carried over but need fine-tuning.
    """
    if not state_dict:
        raise LayoutError("not a CenterMask (maskrcnn-benchmark) checkpoint: the state dict is empty")
    out: dict[str, Tensor] = {}
    for key, value in strip_prefix(state_dict).items():
        new_key = _rename_mb(key)
        if new_key.startswith(_MB_WITH_BACKGROUND):
            if value.shape[0] < 2:
                raise ValueError(f"{key}: expected a background row, got shape {tuple(value.shape)}")
            value = value[1:]
        if new_key in out:
            raise KeyError(f"two keys map to {new_key!r}")
        out[new_key] = value.clone() if isinstance(value, torch.Tensor) else value
    out = fold_frozen_bn_eps(out, "backbone.bottom_up.")
    logger.warning(
        "CenterMask (maskrcnn-benchmark) FCOS regression uses exp() in pixels; the converted "
        "bbox_pred / scales need fine-tuning before the boxes are meaningful."
    )
    return out
