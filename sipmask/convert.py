"""Convert the authors' SipMask checkpoints (spec §5) to this project's Detectron2 model.

``convert_sipmask_mmdet`` takes a SipMask-mmdetection ``state_dict`` and ``convert_sipmask_benchmark``
a SipMask-benchmark ``model`` dict (with or without a DDP ``module.`` prefix). Both raise ``KeyError``
on any key they do not know, so a converted file loads with no missing and no unexpected keys.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from torch import Tensor

from onestage.checkpoint import check_layout, fold_frozen_bn_eps, rename_mb_fpn_key, strip_prefix

__all__ = [
    "convert_sipmask_benchmark",
    "convert_sipmask_coco_to_vis",
    "convert_sipmask_mmdet",
    "convert_sipmask_vis",
]

logger = logging.getLogger(__name__)

# Head keys of the mmdet SipMask head (spec §5.1); ours are named identically.
_MMDET_HEAD_KEY = re.compile(
    r"((cls|reg)_convs\.\d+\.(conv|gn)|fcos_(cls|reg|centerness)|feat_align\.(conv_offset|conv_adaption|norm)"
    r"|sip_cof|sip_mask_lat0?|convs_scoring\.\d\.conv|mask_scoring)\.(weight|bias)|scales\.\d+\.scale"
)


def _resnet_key(rest: str) -> str | None:
    """ResNet key after the backbone prefix (torchvision / mmdet / maskrcnn-benchmark naming) ->
    Detectron2 ``bottom_up`` key, or None if it is not a ResNet key."""
    m = re.fullmatch(r"(?:stem\.)?conv1\.weight", rest)
    if m:
        return "stem.conv1.weight"
    m = re.fullmatch(r"(?:stem\.)?bn1\.(\w+)", rest)
    if m:
        return f"stem.conv1.norm.{m.group(1)}"
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", rest)
    if not m:
        return None
    stage, block, tail = int(m.group(1)) + 1, m.group(2), m.group(3)
    prefix = f"res{stage}.{block}."
    if (mm := re.fullmatch(r"conv(\d)\.weight", tail)) is not None:
        return prefix + f"conv{mm.group(1)}.weight"
    if (mm := re.fullmatch(r"bn(\d)\.(\w+)", tail)) is not None:
        return prefix + f"conv{mm.group(1)}.norm.{mm.group(2)}"
    if (mm := re.fullmatch(r"conv2\.conv_offset\.(weight|bias)", tail)) is not None:
        return prefix + f"conv2_offset.{mm.group(1)}"
    if tail == "downsample.0.weight":
        return prefix + "shortcut.weight"
    if (mm := re.fullmatch(r"downsample\.1\.(\w+)", tail)) is not None:
        return prefix + f"shortcut.norm.{mm.group(1)}"
    return None


def _rename(
    state_dict: dict[str, Tensor], rename: Callable[[str], str | None], layout: str, expected: str
) -> dict[str, Tensor]:
    """Apply ``rename`` to every key (a DDP ``module.`` prefix stripped, BN ``num_batches_tracked``
    dropped); raise :class:`~onestage.checkpoint.LayoutError` (a ``KeyError``) naming ``layout``,
    what it ``expected`` and the keys it returns None for."""
    state_dict = {k: v for k, v in strip_prefix(state_dict).items() if not k.endswith("num_batches_tracked")}
    check_layout(state_dict, layout, expected, lambda k: rename(k) is not None)
    return {rename(k): v for k, v in state_dict.items()}


def _mmdet_key(key: str) -> str | None:
    if key.startswith("backbone."):
        rest = _resnet_key(key[len("backbone.") :])
        return None if rest is None else "backbone.bottom_up." + rest
    if (m := re.fullmatch(r"neck\.lateral_convs\.(\d)\.conv\.(weight|bias)", key)) is not None:
        return f"backbone.fpn_lateral{int(m.group(1)) + 3}.{m.group(2)}"
    if (m := re.fullmatch(r"neck\.fpn_convs\.(\d)\.conv\.(weight|bias)", key)) is not None:
        idx = int(m.group(1))
        name = f"fpn_output{idx + 3}" if idx < 3 else {3: "top_block.p6", 4: "top_block.p7"}.get(idx)
        return None if name is None else f"backbone.{name}.{m.group(2)}"
    if key.startswith("bbox_head.") and _MMDET_HEAD_KEY.fullmatch(key[len("bbox_head.") :]):
        return "head." + key[len("bbox_head.") :]
    return None


def convert_sipmask_mmdet(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """SipMask-mmdetection ``state_dict`` (backbone / neck / bbox_head) -> Detectron2 SipMask."""
    return _rename(
        state_dict,
        _mmdet_key,
        "SipMask-mmdetection",
        "backbone.* (ResNet), neck.lateral_convs.* / neck.fpn_convs.*, bbox_head.* (SipMask head)",
    )


# the SipMask-VIS tracking branch (sipmask_vis.md §9.2), named identically in our SipMaskTrackHead
_VIS_TRACK_KEY = re.compile(r"bbox_head\.(track_convs\.\d+\.(conv|gn)|sipmask_track)\.(weight|bias)")


def _vis_key(key: str) -> str | None:
    if _VIS_TRACK_KEY.fullmatch(key):
        return "head." + key[len("bbox_head.") :]
    return _mmdet_key(key)


def convert_sipmask_vis(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """SipMask-VIS ``state_dict`` (the image keys plus ``track_convs`` / ``sipmask_track``) ->
    Detectron2 ``SipMaskVIS``."""
    return _rename(
        state_dict,
        _vis_key,
        "SipMask-VIS",
        "backbone.* (ResNet), neck.*, bbox_head.* (SipMask head with track_convs / sipmask_track)",
    )


def convert_sipmask_coco_to_vis(
    state_dict: dict[str, Tensor], num_cls_convs: int = 2, num_reg_convs: int = 3
) -> dict[str, Tensor]:
    """A COCO SipMask-mmdetection checkpoint -> the initialisation of a SipMask-VIS training (§4.4).

    Drops the classifier ``fcos_cls`` (80 COCO classes) and the tower convs the VIS head does not
    have (``cls_convs.{>= num_cls_convs}``, ``reg_convs.{>= num_reg_convs}``) and logs what it
    dropped; the tracking layers are absent and start from their initialisation. Loading the result
    into ``SipMaskVIS`` leaves exactly ``head.fcos_cls.*``, ``head.track_convs.*`` and
    ``head.sipmask_track.*`` missing.
    """
    converted = convert_sipmask_mmdet(state_dict)
    dropped = []
    for key in list(converted):
        m = re.fullmatch(r"head\.(cls|reg)_convs\.(\d+)\..+", key)
        extra = m is not None and int(m.group(2)) >= (num_cls_convs if m.group(1) == "cls" else num_reg_convs)
        if extra or key.startswith("head.fcos_cls."):
            dropped.append(key)
            del converted[key]
    logger.info(
        f"COCO -> SipMask-VIS init: dropped {len(dropped)} tensors ({', '.join(sorted(dropped))}); "
        "head.fcos_cls, head.track_convs and head.sipmask_track start from their initialisation"
    )
    return converted


def _benchmark_head_key(rest: str) -> str | None:
    m = re.fullmatch(r"(cls|bbox)_tower\.(\d+)\.(weight|bias)", rest)
    if m:
        tower = "cls_convs" if m.group(1) == "cls" else "reg_convs"
        idx = int(m.group(2))
        part = {0: "conv", 1: "gn"}.get(idx % 3)
        return None if part is None else f"{tower}.{idx // 3}.{part}.{m.group(3)}"
    m = re.fullmatch(r"(cls_logits|bbox_pred|centerness)\.(weight|bias)", rest)
    if m:
        name = {"cls_logits": "fcos_cls", "bbox_pred": "fcos_reg", "centerness": "fcos_centerness"}[
            m.group(1)
        ]
        return f"{name}.{m.group(2)}"
    if re.fullmatch(
        r"scales\.\d+\.scale|(feat_align\.(conv_offset|conv_adaption|norm)|sip_cof|sip_mask_lat0?)\.(weight|bias)",
        rest,
    ):
        return rest
    return None


def _benchmark_key(key: str) -> str | None:
    if key.startswith("backbone.body."):
        rest = _resnet_key(key[len("backbone.body.") :])
        return None if rest is None else "backbone.bottom_up." + rest
    if (fpn_key := rename_mb_fpn_key(key)) is not None:
        return fpn_key
    if key.startswith("rpn.head."):
        rest = _benchmark_head_key(key[len("rpn.head.") :])
        return None if rest is None else "head." + rest
    return None


def convert_sipmask_benchmark(state_dict: dict[str, Tensor], eps: float = 1e-5) -> dict[str, Tensor]:
    """SipMask-benchmark ``model`` dict -> Detectron2 SipMask.

    maskrcnn-benchmark's FrozenBatchNorm has no eps; Detectron2's has ``eps``. The BN weight is
    rescaled by ``sqrt(var + eps) / sqrt(var)`` so that the converted model computes the same
    affine transform. The 1-element ``scales.*.scale`` become 0-d.
    """
    out = _rename(
        state_dict,
        _benchmark_key,
        "SipMask-benchmark",
        "backbone.body.* (ResNet), backbone.fpn.*, rpn.head.* (SipMask head)",
    )
    for key in out:
        if key.startswith("head.scales."):
            out[key] = out[key].reshape(())
    return fold_frozen_bn_eps(out, "backbone.bottom_up.", eps)
