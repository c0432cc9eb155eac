"""Map the authors' CenterMask checkpoints to this project's state-dict names (spec 10).

Used by ``tools/convert_checkpoint.py`` (layouts ``centermask2`` and ``centermask``).
"""

from __future__ import annotations

import logging
import re

import torch
from torch import Tensor

__all__ = ["convert_centermask2", "convert_centermask_mb"]

logger = logging.getLogger(__name__)

# Buffers older Detectron2 versions saved; GeneralizedRCNN no longer has them in its state dict.
_DROPPED = {"pixel_mean", "pixel_std"}
# First key components of a bare bottom-up backbone (ImageNet "*_detectron2.pth" files, spec 10.2).
_BARE_BACKBONE = re.compile(r"^(stem\.|stage\d\.|features\.)")
# [MB] FrozenBatchNorm2d has no eps, Detectron2's uses 1e-5.
_FROZEN_BN_EPS = 1e-5


def convert_centermask2(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """centermask2 (Detectron2) checkpoints need no renaming; this drops ``pixel_mean`` /
    ``pixel_std``, strips a ``module.`` prefix and gives bare ImageNet backbone files
    (keys ``stem.*``, ``stage{s}.*``, ``features.*``) the ``backbone.bottom_up.`` prefix."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
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
    (re.compile(r"^backbone\.fpn\.top_blocks\.(p6|p7)\.(weight|bias)$"), r"backbone.top_block.\1.\2"),
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
_MB_FPN = re.compile(r"^backbone\.fpn\.fpn_(inner|layer)(\d+)\.(weight|bias)$")
# Outputs with a background row 0 in [MB] (81 rows) and none here (80).
_MB_WITH_BACKGROUND = ("roi_heads.mask_head.predictor.", "roi_heads.maskiou_head.maskiou.")


def _rename_mb(key: str) -> str:
    m = _MB_FPN.match(key)
    if m:
        # [MB] numbers FPN blocks by bottom-up stage index (stage3 = 2); ours by log2(stride).
        kind = "lateral" if m.group(1) == "inner" else "output"
        return f"backbone.fpn_{kind}{int(m.group(2)) + 1}.{m.group(3)}"
    for pattern, repl in _MB_RULES:
        if pattern.match(key):
            return pattern.sub(repl, key)
    raise KeyError(f"no rule maps the CenterMask (maskrcnn-benchmark) key {key!r}")


def convert_centermask_mb(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Convert an original CenterMask (maskrcnn-benchmark) checkpoint (spec 10.3).

    Renames every key, drops the background row of the mask predictor and the MaskIoU output
    (81 -> 80 classes) and subtracts 1e-5 from the backbone FrozenBN ``running_var`` so that
    Detectron2's ``FrozenBatchNorm2d`` (eps 1e-5) computes the same. The FCOS box regression
    of [MB] predicts ``exp(x)`` in pixels where centermask2 uses ``relu(x) * stride``: the
    ``bbox_pred`` / ``scales`` weights are carried over but need fine-tuning.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        new_key = _rename_mb(key)
        if new_key.startswith(_MB_WITH_BACKGROUND):
            if value.shape[0] < 2:
                raise ValueError(f"{key}: expected a background row, got shape {tuple(value.shape)}")
            value = value[1:]
        elif new_key.startswith("backbone.bottom_up.") and new_key.endswith(".running_var"):
            value = (value - _FROZEN_BN_EPS).clamp(min=0.0)
        if new_key in out:
            raise KeyError(f"two keys map to {new_key!r}")
        out[new_key] = value.clone() if isinstance(value, torch.Tensor) else value
    logger.warning(
        "CenterMask (maskrcnn-benchmark) FCOS regression uses exp() in pixels; the converted "
        "bbox_pred / scales need fine-tuning before the boxes are meaningful."
    )
    return out
