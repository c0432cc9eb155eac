"""Config keys of CenterMask / CenterMask-Lite's RoI heads (centermask2's additions to Detectron2's
defaults; the FCOS and backbone keys are the shared core's, see :func:`onestage.config.get_cfg`)."""

from __future__ import annotations

from detectron2.config import CfgNode as CN

__all__ = ["add_centermask_config"]


def add_centermask_config(cfg: CN) -> None:
    """Add the CenterMask RoI-head keys to ``cfg`` in place. Safe to call more than once."""
    cfg.MODEL.ROI_MASK_HEAD.ASSIGN_CRITERION = "area"  # every CenterMask config sets "ratio"

    cfg.MODEL.MASKIOU_ON = False
    cfg.MODEL.MASKIOU_LOSS_WEIGHT = 1.0
    if "ROI_MASKIOU_HEAD" not in cfg.MODEL:
        cfg.MODEL.ROI_MASKIOU_HEAD = CN()
    cfg.MODEL.ROI_MASKIOU_HEAD.NAME = "MaskIoUHead"
    cfg.MODEL.ROI_MASKIOU_HEAD.CONV_DIM = 256
    cfg.MODEL.ROI_MASKIOU_HEAD.NUM_CONV = 4

    # Vestigial keypoint keys of centermask2 (no CenterMask config uses a keypoint head).
    cfg.MODEL.ROI_KEYPOINT_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.ROI_KEYPOINT_HEAD.ASSIGN_CRITERION = "ratio"
