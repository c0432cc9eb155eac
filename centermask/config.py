"""Config keys of CenterMask / CenterMask-Lite (centermask2's additions to Detectron2's defaults)."""

from __future__ import annotations

from detectron2.config import CfgNode as CN

from centermask.modeling.backbone.config import add_backbone_config

__all__ = ["add_centermask_config"]


def add_centermask_config(cfg: CN) -> None:
    """Add the FCOS, CenterMask RoI-head and backbone keys to ``cfg`` in place.

    Safe to call more than once. Keys not added here (or by Detectron2) still raise a KeyError
    when a YAML sets them.
    """
    add_backbone_config(cfg)  # MODEL.VOVNET.*, MODEL.MOBILENET, MODEL.FCOS (with TOP_LEVELS)

    fcos = cfg.MODEL.FCOS
    fcos.NUM_CLASSES = 80
    fcos.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    fcos.FPN_STRIDES = [8, 16, 32, 64, 128]
    fcos.PRIOR_PROB = 0.01
    fcos.INFERENCE_TH_TRAIN = 0.05
    fcos.INFERENCE_TH_TEST = 0.05
    fcos.NMS_TH = 0.6
    fcos.PRE_NMS_TOPK_TRAIN = 1000
    fcos.PRE_NMS_TOPK_TEST = 1000
    fcos.POST_NMS_TOPK_TRAIN = 100
    fcos.POST_NMS_TOPK_TEST = 100
    fcos.NORM = "GN"  # any other value: no norm in the towers
    fcos.USE_SCALE = True
    fcos.THRESH_WITH_CTR = False
    fcos.LOSS_ALPHA = 0.25
    fcos.LOSS_GAMMA = 2.0
    fcos.SIZES_OF_INTEREST = [64, 128, 256, 512]
    fcos.USE_RELU = True  # kept for YAML compatibility; regression always uses ReLU
    fcos.USE_DEFORMABLE = False  # kept for YAML compatibility; True is rejected (broken upstream)
    fcos.NUM_CLS_CONVS = 4
    fcos.NUM_BOX_CONVS = 4
    fcos.NUM_SHARE_CONVS = 0
    fcos.CENTER_SAMPLE = True
    fcos.POS_RADIUS = 1.5
    fcos.LOC_LOSS_TYPE = "giou"

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
