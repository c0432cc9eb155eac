"""Config keys of the shared core, and the project's one ``get_cfg()``.

Every entry point (``train_net.py``, ``demo/demo.py``, the tools, notebooks) starts from
:func:`get_cfg`: Detectron2's defaults plus the keys of the core, of every method package and of
``vis_eval``. Importing the method packages here also fills Detectron2's registries with their
meta-architectures, heads and backbones, so that any shipped YAML builds.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
from collections.abc import Sequence

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg as get_detectron2_cfg

__all__ = [
    "ConfigError",
    "add_onestage_config",
    "apply_linear_lr_rule",
    "get_cfg",
    "load_config",
    "merge_overrides",
    "resolve_device",
]

# (package, config function) of each method of the distribution. The core does not import methods
# statically (they depend on it); it loads them by name here, in this order.
METHOD_CONFIGS: tuple[tuple[str, str], ...] = (
    ("centermask", "add_centermask_config"),
    ("sipmask", "add_sipmask_config"),
    ("stmask", "add_stmask_config"),
)


def add_onestage_config(cfg: CN) -> None:
    """Add the core's keys to ``cfg`` in place (centermask2's defaults where it has the key):

    * ``MODEL.VOVNET.*`` (VoVNetV2), ``MODEL.FCOS.*`` (FCOS head, targets, losses, decoding and the
      P6 / P7 levels of the ``build_fcos_*`` FPN builders);
    * ``MODEL.RESNETS.DEFORM_INTERVAL`` / ``DEFORM_BIAS`` (``build_resnet_deform_backbone``);
    * ``INPUT.DATASET_MAPPER_NAME``: the training mapper, by its name in
      :data:`onestage.data.DATASET_MAPPER_REGISTRY`;
    * ``MODEL.WEIGHTS_PARTIAL``: let inference load a checkpoint that does not fit the model exactly;
    * ``MODEL.INFERENCE.AMP``: mixed precision at inference (:mod:`onestage.inference`);
    * ``SOLVER.REFERENCE_IMS_PER_BATCH``: the batch size of ``BASE_LR``, for the linear LR rule.
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

    # Inference (demo, train_net --eval-only, tools/benchmark, onestage.predictor.Predictor) refuses a
    # checkpoint with missing, unexpected or mis-shaped keys unless this is True (then they are logged).
    cfg.MODEL.WEIGHTS_PARTIAL = False
    # Inference of the CenterMask, SipMask (and SipMask-VIS) meta-architectures: the network under
    # torch.autocast, "" (float32), "fp16" (CUDA only) or "bf16"; post-processing stays float32.
    cfg.MODEL.INFERENCE = CN()
    cfg.MODEL.INFERENCE.AMP = ""
    # The batch size SOLVER.BASE_LR was tuned for; when > 0, load_config() applies the linear rule
    # BASE_LR *= IMS_PER_BATCH / REFERENCE_IMS_PER_BATCH to smaller batches (apply_linear_lr_rule). 0: off.
    cfg.SOLVER.REFERENCE_IMS_PER_BATCH = 0
    # Skip the optimizer step (logged) when the total loss is not finite, instead of stopping with
    # Detectron2's FloatingPointError (STMask's authors skip; onestage.engine.SkipNonFiniteTrainer).
    cfg.SOLVER.SKIP_NON_FINITE_STEPS = False


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


# Per-parameter gradient-norm clip that apply_linear_lr_rule turns on for batches below the reference.
SMALL_BATCH_CLIP_NORM = 10.0


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message is one line naming the problem."""


def _all_keys(node: CN, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        keys.append(prefix + k)
        if isinstance(v, CN):
            keys += _all_keys(v, f"{prefix}{k}.")
    return keys


def _has_key(cfg: CN, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, CN) or part not in node:
            return False
        node = node[part]
    return True


def _unknown_key(cfg: CN, key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, _all_keys(cfg), n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(f"unknown config key {key} {where}{hint}")


def _first_line(e: BaseException) -> str:
    return (str(e).strip() or type(e).__name__).splitlines()[0]


def resolve_device(cfg: CN) -> None:
    """Set ``cfg.MODEL.DEVICE`` (not frozen) to ``"cpu"``, with a warning, when it names CUDA and
    CUDA is not available."""
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning(
            f"MODEL.DEVICE {cfg.MODEL.DEVICE}: CUDA is not available, running on CPU"
        )
        cfg.MODEL.DEVICE = "cpu"


def apply_linear_lr_rule(cfg: CN) -> None:
    """The linear scaling rule (Goyal et al.) for batches smaller than the one the LR was tuned for:
    ``SOLVER.BASE_LR *= IMS_PER_BATCH / REFERENCE_IMS_PER_BATCH`` when ``REFERENCE_IMS_PER_BATCH`` is
    set and larger than ``IMS_PER_BATCH``; the reference then becomes ``IMS_PER_BATCH``, so that
    applying it again (a saved config reloaded) changes nothing. Such a smaller batch also gets
    gradient clipping (per-parameter L2 norm :data:`SMALL_BATCH_CLIP_NORM`) unless
    ``SOLVER.CLIP_GRADIENTS`` is already on: at batch 2 the scaled LR alone still let CenterMask-Lite's
    MaskIoU loss blow up in a 30-iteration run on 8 images, clipping kept it finite. The config's
    own batch is left exactly as it is.

    A larger batch keeps ``BASE_LR`` (logged): on the synthetic configs the linear rule's larger LR
    (batch 16: 0.04) diverges within 40 iterations, while the tuned LR stays finite."""
    ref, batch = cfg.SOLVER.REFERENCE_IMS_PER_BATCH, cfg.SOLVER.IMS_PER_BATCH
    if ref <= 0 or batch == ref:
        return
    logger = logging.getLogger(__name__)
    if batch > ref:
        logger.info(
            f"SOLVER.IMS_PER_BATCH {batch} > {ref} (the batch SOLVER.BASE_LR was tuned for): keeping "
            f"BASE_LR {cfg.SOLVER.BASE_LR:g}; raise it yourself (linear rule: x{batch / ref:g}) with care"
        )
        return
    lr = cfg.SOLVER.BASE_LR * batch / ref
    logger.info(
        f"linear LR rule: SOLVER.BASE_LR {cfg.SOLVER.BASE_LR:g} -> {lr:g} for SOLVER.IMS_PER_BATCH "
        f"{batch} (the config's LR is for {ref})"
    )
    cfg.SOLVER.BASE_LR = lr
    cfg.SOLVER.REFERENCE_IMS_PER_BATCH = batch
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not clip.ENABLED:  # small, noisy batches: bound each parameter's step (MaskIoU's L2 loss spikes)
        clip.ENABLED, clip.CLIP_TYPE, clip.CLIP_VALUE, clip.NORM_TYPE = (
            True,
            "norm",
            SMALL_BATCH_CLIP_NORM,
            2.0,
        )
        logger.info(
            f"small batch: SOLVER.CLIP_GRADIENTS on (per-parameter L2 norm {SMALL_BATCH_CLIP_NORM:g})"
        )


def merge_overrides(cfg: CN, opts: Sequence[str]) -> None:
    """``cfg.merge_from_list(opts)``; an odd number of tokens, an unknown key or a value of the wrong
    type raises :class:`ConfigError` naming it."""
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(
            f"config overrides come as KEY VALUE pairs; got {len(opts)} tokens, the last "
            f"({opts[-1]!r}) has no value"
        )
    for key in opts[0::2]:
        if not _has_key(cfg, key):
            raise _unknown_key(cfg, key, "on the command line")
    try:
        cfg.merge_from_list(opts)
    except Exception as e:  # yacs: type mismatch, a value that does not parse, ...
        raise ConfigError(f"config overrides: {_first_line(e)}") from e


def load_config(config_file: str, opts: Sequence[str] = (), device: str | None = None) -> CN:
    """:func:`get_cfg` with ``config_file`` and ``KEY VALUE`` ``opts`` merged, frozen.

    ``device`` overrides ``MODEL.DEVICE``; a CUDA device falls back to CPU (with a warning) when
    CUDA is not available. The linear LR rule is applied (:func:`apply_linear_lr_rule`). A missing
    config file raises ``FileNotFoundError`` naming it; an unknown key (in the file or in ``opts``),
    an odd number of ``opts`` or a malformed file raise :class:`ConfigError`, one line naming it.
    """
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file not found: {config_file}")
    cfg = get_cfg()
    try:
        cfg.merge_from_file(config_file)
    except KeyError as e:  # yacs: "Non-existent config key: A.B"
        message = str(e.args[0]) if e.args else ""
        if message.startswith("Non-existent config key: "):
            raise _unknown_key(cfg, message.split(": ", 1)[1], f"in {config_file}") from e
        raise ConfigError(f"{config_file}: {_first_line(e)}") from e
    except Exception as e:  # YAML syntax, a type mismatch, a missing _BASE_ file, ...
        detail = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise ConfigError(f"{config_file}: {type(e).__name__}: {detail}") from e
    merge_overrides(cfg, opts)
    if device is not None:
        cfg.MODEL.DEVICE = device
    resolve_device(cfg)
    apply_linear_lr_rule(cfg)
    cfg.freeze()
    return cfg
