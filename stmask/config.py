"""STMask config keys (``MODEL.STMASK``). Defaults are the authors' released models (spec stmask.md §1)."""

from __future__ import annotations

from detectron2.config import CfgNode as CN

__all__ = ["add_stmask_config"]


def add_stmask_config(cfg: CN) -> None:
    """Add ``MODEL.STMASK`` (idempotent).

    The backbone is the core's ``build_stmask_resnet_fpn_backbone`` over ``MODEL.RESNETS`` (torchvision
    layout, modulated DCNv2 with bias every ``DEFORM_INTERVAL``-th block); the training clips come from
    ``INPUT.DATASET_MAPPER_NAME: "STMaskClipMapper"``.
    """
    if "STMASK" in cfg.MODEL:
        return
    cfg.MODEL.STMASK = CN()
    _C = cfg.MODEL.STMASK
    _C.NUM_CLASSES = 40  # object classes, background excluded (the authors' C = NUM_CLASSES + 1)
    _C.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    _C.FPN_CHANNELS = 256

    # Head (FCA): one anchor per kernel shape (h, w) in feature cells, same shape for its convs.
    _C.ANCHOR_SHAPES = [[3, 3], [3, 5], [5, 3]]
    _C.TOWER_DEPTHS = [2, 2, 2]  # conv+ReLU per tower: conf and bbox, mask, track (extra_layers)
    _C.NUM_PROTOTYPES = 32
    _C.PROTO_CHANNELS = 256
    _C.EMBED_DIM = 128
    _C.FCB = "none"  # classification branch: "none" (FCA only), "ali" or "ada" (FeatureAlign)
    _C.BOX_VARIANCES = [0.1, 0.2]

    # Temporal fusion (TF)
    _C.TEMPORAL_FUSION = True
    _C.CORRELATION_PATCH = 11
    _C.CORRELATION_FEATURE = "p4"
    _C.TEMPORAL_ROI_SIZE = 7
    _C.TEMPORAL_CHANNELS = [512, 512, 1024]

    # Targets and losses (spec §3.3-3.5)
    _C.POSITIVE_IOU = 0.5
    _C.NEGATIVE_IOU = 0.4
    _C.OHEM_NEGPOS_RATIO = 3
    # True: the authors' positional OHEM weights (all positive weights, then all negative weights,
    # applied to the kept anchors in index order, spec §8.3); False: each weight on its own anchor.
    _C.OHEM_AUTHORS_WEIGHT_ORDER = False
    _C.MASK_CROP_EXPAND = 1.2
    _C.CONF_WEIGHT = 6.125
    _C.BOX_WEIGHT = 5.0
    _C.MASK_WEIGHT = 6.125
    _C.CENTER_WEIGHT = 20.0
    _C.TRACK_WEIGHT = 5.0
    _C.BOX_SHIFT_WEIGHT = 5.0
    _C.MASK_SHIFT_WEIGHT = 6.125
    # With MODEL.RESNETS.NORM "BN" (the authors' BN, affine always frozen): BN layers use their running
    # statistics before this training iteration and batch statistics from it on (authors: 100, spec
    # §3.7; 0: batch statistics from the start). Unused with "FrozenBN" (the default).
    _C.BN_TRAIN_FROM_ITER = 100

    # Inference (spec §4)
    _C.CANDIDATE_THRESH = 0.05  # max class probability, strict
    _C.NMS_TOP_K = 200
    _C.NMS_THRESH = 0.5
    _C.CROSS_CLASS_NMS = True  # False: per-class Fast NMS (the README's mAP*)
    _C.MAX_DETECTIONS = 100  # per-class NMS only
    _C.SCORE_THRESH_TEST = 0.05
    _C.MASK_THRESH = 0.5
    # Tracker (Track_TF): weights of (score, mask IoU, box IoU, same label) added to the embedding
    # similarity; tracks unmatched for more than TRACK_MAX_HIDDEN frames are not output; propagated
    # tracks' scores decay by SCORE_DECAY per frame.
    _C.MATCH_COEFFS = [0.0, 1.0, 2.0, 0.0]
    _C.TRACK_MAX_HIDDEN = 10
    _C.SCORE_DECAY = 0.95
    # Drop tracks unmatched for more than this many frames (0 = never: the authors' memory, which
    # grows by every unmatched detection, ~2-3 tracks per frame, and is propagated by the temporal net
    # every frame). 40 bounds the state and changes nothing on videos of <= 41 frames (YouTube-VIS
    # 2019 / 2021: at most 36 annotated frames).
    _C.TRACK_MAX_AGE = 40

    # Fixed (H, W) network input ignoring the aspect ratio, resized inside the model at test time
    # (the authors: 360 x 640, padded to 384 x 640). Training clips are resized by the mapper.
    _C.FIXED_INPUT_SIZE_TEST = [360, 640]
    _C.FIXED_INPUT_SIZE_TRAIN = [360, 640]
