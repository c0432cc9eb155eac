"""Convert the authors' STMask checkpoints (spec stmask.md §6) to this project's ``STMask`` model.

The released files are ``torch.save(model.state_dict())`` of the authors' YOLACT-style model (§6.1);
:func:`convert_stmask` also accepts a ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper and a DDP
``module.`` prefix. Key mapping (§6.4):

=============================================  ==========================================================
authors                                        ours
=============================================  ==========================================================
``backbone.conv1.weight`` / ``backbone.bn1.X``  ``backbone.bottom_up.stem.conv1.weight`` / ``.conv1.norm.X``
``backbone.layers.{s}.{b}.conv{i}.weight``      ``backbone.bottom_up.res{s+2}.{b}.conv{i}.weight``
``backbone.layers.{s}.{b}.bn{i}.X``             ``backbone.bottom_up.res{s+2}.{b}.conv{i}.norm.X``
``...downsample.0.weight`` / ``.1.X``           ``...shortcut.weight`` / ``shortcut.norm.X``
``...conv2.conv_offset_mask.{weight,bias}``     ``...conv2_offset.{weight,bias}`` (same 27-channel layout)
``...conv2.bias`` (DCN blocks)                  ``...conv2.bias`` (our DCN keeps its bias: DEFORM_BIAS)
``fpn.lat_layers.{0,1,2}``                      ``backbone.fpn_lateral{5,4,3}``
``fpn.pred_layers.{0,1,2}``                     ``backbone.fpn_output{5,4,3}``
``fpn.downsample_layers.{0,1}``                 ``backbone.p6`` / ``backbone.p7``
``proto_net.*``                                 ``proto_net.*``
``prediction_layers.0.*``                       ``head.*``
``TemporalNet.*``                               ``temporal_net.*``
=============================================  ==========================================================

BN ``num_batches_tracked`` entries are dropped. The authors' BN (eps 1e-5) and Detectron2's
``FrozenBatchNorm2d`` (eps 1e-5) compute ``weight * (x - mean) / sqrt(var + eps) + bias`` alike, so
the statistics are copied unchanged (no epsilon folding, unlike maskrcnn-benchmark checkpoints).

:func:`describe_stmask` reads the configuration from the keys (§6.3): the DCN blocks (hence R-50 /
R-101 and ``DEFORM_INTERVAL``), FCB none / ali / ada and the class count, and names the config file of
``configs/STMask`` that builds the model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor

from onestage.checkpoint import LayoutError, check_layout, strip_prefix

__all__ = [
    "STMaskCheckpointInfo",
    "convert_stmask",
    "describe_stmask",
    "stmask_report",
    "unwrap_state_dict",
]

_BN = r"(weight|bias|running_mean|running_var)"
_STEM_CONV = re.compile(r"backbone\.conv1\.weight")
_STEM_BN = re.compile(rf"backbone\.bn1\.{_BN}")
_BLOCK = re.compile(r"backbone\.layers\.(\d)\.(\d+)\.(.+)")
_FPN = re.compile(r"fpn\.(lat_layers|pred_layers|downsample_layers)\.(\d)\.(weight|bias)")
_PROTO = re.compile(r"proto_net\.\d+\.(weight|bias)")
_HEAD = re.compile(
    r"prediction_layers\.0\.((upfeature\.0|(conf|bbox|mask|track)_extra\.\d+"
    r"|(bbox|centerness|track|mask)_layer\.\d|conf_layer\.\d(\.(conv|conv_adaption|conv_offset))?)"
    r"\.(weight|bias))"
)
_TEMPORAL = re.compile(r"TemporalNet\.((conv[123]|fc|fc_coeff)\.(weight|bias))")

_LAYOUT = "STMask"
_EXPECTED = (
    "backbone.conv1 / bn1 / layers.{s}.{b}.* (torchvision ResNet with DCNv2), fpn.*, proto_net.*, "
    "prediction_layers.0.*, TemporalNet.*"
)

# released backbones: depth -> (blocks per stage, DCN interval of the current code, config stem)
_DEPTHS = {50: ((3, 4, 6, 3), 2, "STMask_plus_resnet50"), 101: ((3, 4, 23, 3), 3, "STMask_plus_base")}
# the authors' defaults, i.e. what configs/STMask sets: MODEL.STMASK key -> value
_DEFAULTS = {"NUM_PROTOTYPES": 32, "EMBED_DIM": 128, "FPN_CHANNELS": 256, "PROTO_CHANNELS": 256}


def _block_key(s: int, b: int, tail: str) -> str | None:
    prefix = f"backbone.bottom_up.res{s + 2}.{b}."
    if (m := re.fullmatch(r"conv([123])\.weight", tail)) is not None:
        return prefix + f"conv{m.group(1)}.weight"
    if (m := re.fullmatch(rf"bn([123])\.{_BN}", tail)) is not None:
        return prefix + f"conv{m.group(1)}.norm.{m.group(2)}"
    if tail == "conv2.bias":  # DCN blocks only
        return prefix + "conv2.bias"
    if (m := re.fullmatch(r"conv2\.conv_offset_mask\.(weight|bias)", tail)) is not None:
        return prefix + f"conv2_offset.{m.group(1)}"
    if b == 0 and tail == "downsample.0.weight":
        return prefix + "shortcut.weight"
    if b == 0 and (m := re.fullmatch(rf"downsample\.1\.{_BN}", tail)) is not None:
        return prefix + f"shortcut.norm.{m.group(1)}"
    return None


def _rename(key: str) -> str | None:
    """The authors' key -> ours, or None if it is not an STMask key."""
    if _STEM_CONV.fullmatch(key):
        return "backbone.bottom_up.stem.conv1.weight"
    if (m := _STEM_BN.fullmatch(key)) is not None:
        return f"backbone.bottom_up.stem.conv1.norm.{m.group(1)}"
    if (m := _BLOCK.fullmatch(key)) is not None:
        s = int(m.group(1))
        return _block_key(s, int(m.group(2)), m.group(3)) if s < 4 else None
    if (m := _FPN.fullmatch(key)) is not None:
        kind, idx, param = m.group(1), int(m.group(2)), m.group(3)
        if kind == "downsample_layers":
            return f"backbone.p{idx + 6}.{param}" if idx < 2 else None
        if idx > 2:
            return None
        name = "fpn_lateral" if kind == "lat_layers" else "fpn_output"
        return f"backbone.{name}{5 - idx}.{param}"
    if _PROTO.fullmatch(key):
        return key
    if (m := _HEAD.fullmatch(key)) is not None:
        return "head." + m.group(1)
    if (m := _TEMPORAL.fullmatch(key)) is not None:
        return "temporal_net." + m.group(1)
    return None


def unwrap_state_dict(checkpoint: Mapping) -> dict[str, Tensor]:
    """The tensors of an authors' file: a raw state dict or one under ``"state_dict"`` / ``"model"``,
    with a DDP ``module.`` prefix removed."""
    for key in ("state_dict", "model"):
        inner = checkpoint.get(key) if isinstance(checkpoint, Mapping) else None
        if isinstance(inner, Mapping):
            checkpoint = inner
            break
    if not isinstance(checkpoint, Mapping):
        raise LayoutError(f"not a {_LAYOUT} checkpoint: a {type(checkpoint).__name__}, not a state dict")
    return strip_prefix(dict(checkpoint))


def convert_stmask(state_dict: Mapping) -> dict[str, Tensor]:
    """The authors' STMask state dict (raw, wrapped or ``module.``-prefixed) -> ours (see the module
    doc). Raises :class:`~onestage.checkpoint.LayoutError` (a ``KeyError``) naming every key that is
    not of the authors' layout."""
    sd = {k: v for k, v in unwrap_state_dict(state_dict).items() if not k.endswith("num_batches_tracked")}
    check_layout(sd, _LAYOUT, _EXPECTED, lambda k: _rename(k) is not None)
    return {_rename(k): v for k, v in sd.items()}


@dataclass
class STMaskCheckpointInfo:
    """What an authors' STMask checkpoint holds (§6.3) and the config that builds it."""

    depth: int
    dcn_blocks: tuple[tuple[int, int], ...]  # (stage 0..3, block) with a deformable conv2
    deform_interval: int
    fcb: str  # "none", "ali" or "ada"
    num_classes: int  # object classes (the authors' C - 1)
    entries: int  # state-dict entries, num_batches_tracked included
    parameters: int  # elements of the learnable tensors (BN running statistics excluded)
    config: str  # the configs/STMask file that fits (with ``overrides``)
    overrides: list[str] = field(default_factory=list)  # KEY VALUE pairs to add to the config
    notes: list[str] = field(default_factory=list)


def _infer_interval(dcn: set[tuple[int, int]], blocks: tuple[int, ...]) -> int | None:
    """The DEFORM_INTERVAL k whose rule (blocks 0, k, 2k, ... of stages 1-3, §2.2) gives ``dcn``."""
    for k in range(1, max(blocks) + 1):
        if dcn == {(s, b) for s in (1, 2, 3) for b in range(blocks[s]) if b % k == 0}:
            return k
    return None


def describe_stmask(state_dict: Mapping) -> STMaskCheckpointInfo:
    """Read the configuration of an authors' STMask state dict from its keys (§6.3).

    Raises :class:`~onestage.checkpoint.LayoutError` when the backbone is not a torchvision R-50 /
    R-101, the head has no classifier, or the deformable blocks follow no ``DEFORM_INTERVAL`` rule
    (no config of this project builds such a backbone).
    """
    sd = unwrap_state_dict(state_dict)
    blocks = [0, 0, 0, 0]
    dcn: set[tuple[int, int]] = set()
    for key in sd:
        m = _BLOCK.fullmatch(key)
        if m is None or int(m.group(1)) > 3:
            continue
        s, b, tail = int(m.group(1)), int(m.group(2)), m.group(3)
        blocks[s] = max(blocks[s], b + 1)
        if tail == "conv2.conv_offset_mask.weight":
            dcn.add((s, b))
    depth = next((d for d, (n, _, _) in _DEPTHS.items() if tuple(blocks) == n), None)
    if depth is None:
        raise LayoutError(
            f"not a released {_LAYOUT} backbone: blocks per stage {tuple(blocks)}, expected (3, 4, 6, 3) "
            "(R-50) or (3, 4, 23, 3) (R-101)"
        )
    _, released_interval, stem = _DEPTHS[depth]
    found = ", ".join(f"{s}.{b}" for s, b in sorted(dcn)) or "none"
    interval = _infer_interval(dcn, _DEPTHS[depth][0])
    if interval is None:
        raise LayoutError(
            f"R-{depth} with deformable conv2 in blocks (stage.block) {found}: no MODEL.RESNETS."
            "DEFORM_INTERVAL rule (blocks 0, k, 2k, ... of stages 1-3) gives these blocks, so no config "
            "builds this backbone"
        )

    h = "prediction_layers.0.conf_layer.0."
    if h + "weight" in sd:
        fcb, conf = "none", sd[h + "weight"]
    elif h + "conv.weight" in sd:
        fcb, conf = ("ada" if h + "conv_offset.weight" in sd else "ali"), sd[h + "conv.weight"]
    else:
        raise LayoutError(f"not an {_LAYOUT} checkpoint: no {h}weight / {h}conv.weight (classifier)")
    num_classes = int(conf.shape[0]) - 1

    overrides: list[str] = []
    notes: list[str] = []
    if interval != released_interval:
        overrides += ["MODEL.RESNETS.DEFORM_INTERVAL", str(interval)]
        notes.append(
            f"R-{depth} with DCN interval {interval} (blocks {found}); the released configs use "
            f"{released_interval}"
            + (" (this is the R-50 of the code before 2021-06-27)" if (depth, interval) == (50, 3) else "")
        )
    if num_classes == 25:
        dataset = "_ovis"
    else:
        dataset = ""
        if num_classes == 40:
            notes.append(
                "40 classes: YouTube-VIS 2019 or 2021 (the checkpoint does not say which); "
                f"for 2021 use {stem}{'' if fcb == 'none' else '_' + fcb}_ytvis2021.yaml"
            )
        else:
            overrides += ["MODEL.STMASK.NUM_CLASSES", str(num_classes)]
    shapes = {
        "NUM_PROTOTYPES": ("prediction_layers.0.mask_layer.0.weight", 0),
        "EMBED_DIM": ("prediction_layers.0.track_layer.0.weight", 0),
        "FPN_CHANNELS": ("fpn.lat_layers.0.weight", 0),
        "PROTO_CHANNELS": ("proto_net.0.weight", 0),
    }
    for name, (key, dim) in shapes.items():
        if key in sd and int(sd[key].shape[dim]) != _DEFAULTS[name]:
            overrides += [f"MODEL.STMASK.{name}", str(int(sd[key].shape[dim]))]
    if not any(k.startswith("TemporalNet.") for k in sd):
        overrides += ["MODEL.STMASK.TEMPORAL_FUSION", "False"]
        notes.append("no TemporalNet: a model without temporal fusion")

    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return STMaskCheckpointInfo(
        depth=depth,
        dcn_blocks=tuple(sorted(dcn)),
        deform_interval=interval,
        fcb=fcb,
        num_classes=num_classes,
        entries=len(sd),
        parameters=sum(v.numel() for k, v in sd.items() if not k.endswith(buffers)),
        config=f"configs/STMask/{stem}{'' if fcb == 'none' else '_' + fcb}{dataset}.yaml",
        overrides=overrides,
        notes=notes,
    )


def stmask_report(state_dict: Mapping) -> str:
    """Human-readable :func:`describe_stmask` (``tools/convert_checkpoint.py stmask`` prints it)."""
    info = describe_stmask(state_dict)
    blocks = ", ".join(f"{s}.{b}" for s, b in info.dcn_blocks)
    lines = [
        f"STMask checkpoint: R-{info.depth}-DCN (interval {info.deform_interval}: blocks {blocks}), "
        f"FCB {info.fcb}, {info.num_classes} classes, {info.entries} entries, {info.parameters:,} parameters",
        f"config: {info.config}" + (f" with {' '.join(info.overrides)}" if info.overrides else ""),
    ]
    lines += [f"note: {n}" for n in info.notes]
    return "\n".join(lines)
