"""Helpers every checkpoint converter uses: DDP prefixes, maskrcnn-benchmark FPN names, and the
FrozenBatchNorm epsilon of maskrcnn-benchmark (none) versus Detectron2 (1e-5)."""

from __future__ import annotations

import re

import torch
from torch import Tensor

__all__ = ["fold_frozen_bn_eps", "rename_mb_fpn_key", "strip_prefix"]

_MB_FPN = re.compile(r"^backbone\.fpn\.fpn_(inner|layer)(\d+)\.(weight|bias)$")
_MB_TOP = re.compile(r"^backbone\.fpn\.top_blocks\.(p6|p7)\.(weight|bias)$")


def strip_prefix(state_dict: dict[str, Tensor], prefix: str = "module.") -> dict[str, Tensor]:
    """``state_dict`` with ``prefix`` (a DistributedDataParallel wrapper's, by default) removed from
    the keys that have it."""
    return {k.removeprefix(prefix): v for k, v in state_dict.items()}


def rename_mb_fpn_key(key: str) -> str | None:
    """maskrcnn-benchmark FPN key -> Detectron2 ``FPN`` key, or None if ``key`` is not one.

    maskrcnn-benchmark numbers its FPN blocks by bottom-up stage index (``fpn_inner2`` acts on
    stage 3), Detectron2 by log2 of the stride (``fpn_lateral3``); ``top_blocks`` is ``top_block``.
    """
    m = _MB_FPN.match(key)
    if m:
        kind = "lateral" if m.group(1) == "inner" else "output"
        return f"backbone.fpn_{kind}{int(m.group(2)) + 1}.{m.group(3)}"
    m = _MB_TOP.match(key)
    if m:
        return f"backbone.top_block.{m.group(1)}.{m.group(2)}"
    return None


def fold_frozen_bn_eps(state_dict: dict[str, Tensor], prefix: str, eps: float = 1e-5) -> dict[str, Tensor]:
    """Make maskrcnn-benchmark FrozenBatchNorm parameters (``weight / sqrt(var)``, no epsilon) compute
    the same in Detectron2's ``FrozenBatchNorm2d`` (``weight / sqrt(var + eps)``).

    Every ``{prefix}...norm.weight`` / ``bn.weight`` with a ``running_var`` beside it is multiplied by
    ``sqrt(var + eps) / sqrt(var)``; the bias term ``bias - mean * scale`` then follows. Returns a new
    dict; ``state_dict`` is not modified.
    """
    out = dict(state_dict)
    for key, var in state_dict.items():
        if not (key.startswith(prefix) and key.endswith(".running_var")):
            continue
        wkey = key[: -len("running_var")] + "weight"
        if wkey in out:
            var = var.float()
            factor = torch.sqrt(var + eps) / torch.sqrt(var.clamp(min=1e-12))
            out[wkey] = (out[wkey].float() * factor).to(out[wkey].dtype)
    return out
