"""Config keys of the shared core, and the project's one ``get_cfg()``.

Every entry point (``train_net.py``, ``demo/demo.py``, the tools, notebooks) starts from
:func:`get_cfg`: Detectron2's defaults plus the keys of the core, of every method package and of
``vis_eval``. Importing the method packages here also fills Detectron2's registries with their
meta-architectures, heads and backbones, so that any shipped YAML builds.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg as get_detectron2_cfg

__all__ = ["add_onestage_config", "get_cfg", "load_config"]

# (package, config function) of each method of the distribution. The core does not import methods
# statically (they depend on it); it loads them by name here, in this order.
METHOD_CONFIGS: tuple[tuple[str, str], ...] = (
    ("centermask", "add_centermask_config"),
    ("sipmask", "add_sipmask_config"),
)


def add_onestage_config(cfg: CN) -> None:
    """Add the core's keys to ``cfg`` in place (centermask2's defaults where it has the key):

    * ``MODEL.VOVNET.*`` (VoVNetV2), ``MODEL.FCOS.*`` (FCOS head, targets, losses, decoding and the
      P6 / P7 levels of the ``build_fcos_*`` FPN builders);
    * ``MODEL.RESNETS.DEFORM_INTERVAL`` / ``DEFORM_BIAS`` (``build_resnet_deform_backbone``);
    * ``INPUT.DATASET_MAPPER_NAME``: the training mapper, by its name in
      :data:`onestage.data.DATASET_MAPPER_REGISTRY`.
    """
    cfg.MODEL.VOVNET = CN()
    cfg.MODEL.VOVNET.CONV_BODY = "V-39-eSE"
    cfg.MODEL.VOVNET.OUT_FEATURES = ["stage2", "stage3", "stage4", "stage5"]
    cfg.MODEL.VOVNET.NORM = "FrozenBN"
    # Unused by the builders; kept so that centermask2 YAML files that set them still load.
    cfg.MODEL.VOVNET.OUT_CHANNELS = 256
    cfg.MODEL.VOVNET.BACKBONE_OUT_CHANNELS = 256
    # Deformable 3x3 convs in the OSA modules of stages 2..5.
    cfg.MODEL.VOVNET.STAGE_WITH_DCN = (False, False, False, False)
    cfg.MODEL.VOVNET.WITH_MODULATED_DCN = False
    cfg.MODEL.VOVNET.DEFORMABLE_GROUPS = 1

    # A deformable 3x3 conv on blocks 0, k, 2k, ... of the stages in DEFORM_ON_PER_STAGE
    # (SipMask++: 3; STMask: 2 for R-50, 3 for R-101), with a bias when DEFORM_BIAS (STMask).
    cfg.MODEL.RESNETS.DEFORM_INTERVAL = 1
    cfg.MODEL.RESNETS.DEFORM_BIAS = False

    fcos = cfg.MODEL.FCOS = CN()
    fcos.TOP_LEVELS = 2  # extra FPN levels computed from P5: 2 -> P6, P7; 1 -> P6; 0 -> none
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

    cfg.INPUT.DATASET_MAPPER_NAME = "DatasetMapper"


def get_cfg() -> CN:
    """Detectron2's default config with every key of onestage-seg: the core's, each method's and
    ``vis_eval``'s. Unknown keys in a YAML file or on the command line still raise."""
    from vis_eval.config import add_vis_eval_config

    cfg = get_detectron2_cfg()
    add_onestage_config(cfg)
    for package, function in METHOD_CONFIGS:
        getattr(importlib.import_module(package), function)(cfg)
    add_vis_eval_config(cfg)
    importlib.import_module("onestage.data")  # the mapper registry with its builtin entries
    return cfg


def load_config(config_file: str, opts: Sequence[str] = (), device: str | None = None) -> CN:
    """:func:`get_cfg` with ``config_file`` and ``KEY VALUE`` ``opts`` merged, frozen.

    ``device`` overrides ``MODEL.DEVICE``; a CUDA device falls back to CPU (with a warning) when
    CUDA is not available. A missing config file raises ``FileNotFoundError`` naming it.
    """
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file not found: {config_file}")
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if device is not None:
        cfg.MODEL.DEVICE = device
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning("CUDA is not available: running on CPU")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg
