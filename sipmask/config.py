"""SipMask config keys. Defaults are the mmdet high-accuracy model (spec §8)."""

from __future__ import annotations

from detectron2.config import CfgNode as CN

__all__ = ["add_sipmask_config"]


def add_sipmask_config(cfg: CN) -> None:
    """Add ``MODEL.SIPMASK`` (idempotent). The backbone's deformable-conv interval is the core's
    ``MODEL.RESNETS.DEFORM_INTERVAL``; the real-time training pipeline is chosen by
    ``INPUT.DATASET_MAPPER_NAME: "SSDDatasetMapper"``."""
    if "SIPMASK" in cfg.MODEL:
        return
    cfg.MODEL.SIPMASK = CN()
    _C = cfg.MODEL.SIPMASK
    _C.NUM_CLASSES = 80
    _C.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    _C.FPN_STRIDES = [8, 16, 32, 64, 128]
    _C.SIZES_OF_INTEREST = [64, 128, 256, 512]
    _C.CENTER_SAMPLE_RADIUS = 1.5

    # Head
    _C.NUM_CONVS = 4  # real-time configs: 2
    _C.NORM = "GN"  # "GN" or "" (real-time no-GN configs)
    # Conv bias in the towers: always present without norm; the benchmark also has it before GN.
    _C.TOWER_CONV_BIAS = False
    _C.ALIGN_DCN_BIAS = False  # benchmark: True
    _C.ALIGN_DEFORM_GROUPS = 4
    _C.NUM_BASIS = 32
    _C.BASIS_LAT_CHANNELS = 512  # channels of sip_mask_lat0 (768 -> 512 -> NUM_BASIS)
    _C.REG_ACTIVATION = "linear"  # "linear" (mmdet) or "relu" (benchmark)
    _C.INIT = "mmdet"  # "mmdet" or "benchmark" (PyTorch default init of sip_cof / sip_mask_lat*)
    _C.PRIOR_PROB = 0.01

    # Box convention: True = the authors' inclusive "+1" pixel convention (gt x2 = x + w - 1, +1 in
    # areas / IoUs / NMS, output x2 + 1 for COCO); False = Detectron2's continuous boxes.
    _C.BOX_PLUS_ONE = True

    # Losses
    _C.FOCAL_LOSS_ALPHA = 0.25
    _C.FOCAL_LOSS_GAMMA = 2.0
    _C.BOX_LOSS = "iou_plus1_stride_units"  # or "giou_benchmark"
    _C.CLS_NORM = "pos_plus_imgs"  # or "pos_allreduce" (benchmark)
    _C.CTR_LOSS_REDUCTION = "mean"  # or "sum_over_pos" (benchmark)
    _C.MASK_LOSS_VARIANT = "mmdet"  # or "benchmark"
    _C.RESCORING = False  # SipMask++ mask re-scoring branch and loss

    # Inference
    _C.INFERENCE_MODE = "mmdet_nms"  # "mmdet_nms", "fast_nms" or "benchmark"
    _C.SCORE_THRESH_TEST = 0.05  # fast_nms: 0.1 (on cls x ctr)
    _C.NMS_THRESH_TEST = 0.5  # benchmark: 0.6
    _C.PRE_NMS_TOPK_TEST = 1000
    _C.FAST_NMS_TOPK = 200
    _C.DETECTIONS_PER_IMAGE = 100
    _C.MASK_THRESH = 0.4

    # Fixed (H, W) network input that ignores the aspect ratio (real-time configs: 576 train, 544
    # test). Empty = use the data loader's image as is. The resize happens inside the model, so
    # DefaultPredictor / DatasetMapper need no special transform (set INPUT.MIN_SIZE_* to 0).
    _C.FIXED_INPUT_SIZE_TRAIN = []
    _C.FIXED_INPUT_SIZE_TEST = []

    _C.COEF_INIT_STD = 0.001  # normal std of sip_cof's initial weights (SipMask-VIS: 0.01)

    # SipMask-VIS (META_ARCHITECTURE "SipMaskVIS", spec sipmask_vis.md §3-6)
    _C.TRACK_DIM = 512  # channels of sipmask_track (the embedding size)
    _C.TRACK_NUM_CONVS = 2  # shared track_convs on P3-P5 (stacked_convs - 1)
    _C.TRACK_REF_JITTER = 0.05  # training: reference box centres jittered by U(-j, j) x (w, h)
    _C.MATCH_COEFFS = [1.0, 2.0, 10.0]  # weights of ln(score), IoU(+1) and same-label in Comp
    # True: the authors' stale memory (a video whose first frame has no detection matches against
    # the previous video's instances); False: the memory is emptied at every video start.
    _C.TRACK_LEGACY_FIRST_FRAME = False
    # Drop memory entries not matched for this many frames (0 = never, the authors' behaviour).
    _C.TRACK_MAX_AGE = 0
    # Multi-scale pair training ("range" mode of mmdet): long-edge limits (lo, hi) sampled with
    # INPUT.MIN_SIZE_TRAIN = (lo, hi) as short-edge limits, INPUT.MIN_SIZE_TRAIN_SAMPLING "range".
    # Empty: Detectron2's ResizeShortestEdge(MIN_SIZE_TRAIN, MAX_SIZE_TRAIN).
    cfg.INPUT.MAX_SIZE_TRAIN_RANGE = []
