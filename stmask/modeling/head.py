"""STMask's protonet, FCA prediction head and FCB feature alignment (spec stmask.md §2.4-2.7, §3.2).

Parameter names follow the authors' checkpoints: ``proto_net.{0,...,10}`` and, below the prefix
``prediction_layers.0.``, ``upfeature.0``, ``{conf,bbox,mask,track}_extra.{0,2}``, ``bbox_layer.{k}``,
``centerness_layer.{k}``, ``conf_layer.{k}`` (a conv, or ``FeatureAlign`` with ``conv_adaption``, ``conv``
and, ada only, ``conv_offset``), ``track_layer.{k}`` and ``mask_layer.{k}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from torch import Tensor, nn

from onestage.inference import InferenceCopy, runs_inference_copy
from onestage.layers import DeformConv

from .box_ops import VARIANCES

__all__ = ["FeatureAlign", "ProtoNet", "STMaskHead", "ali_offsets", "init_stmask_weights"]


@torch.no_grad()
def init_stmask_weights(module: nn.Module) -> None:
    """The authors' initialisation of every layer not loaded from a checkpoint (spec §3.2): each
    parameter whose name contains ``weight`` and has >= 2 dims gets Xavier-uniform, each one whose name
    contains ``bias`` gets zeros. Other parameters (1-D weights) are left as they are."""
    for name, param in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if "weight" in leaf and param.dim() >= 2:
            nn.init.xavier_uniform_(param)
        elif "bias" in leaf:
            nn.init.zeros_(param)


def _same_padding(kernel_size: tuple[int, int]) -> tuple[int, int]:
    return (kernel_size[0] - 1) // 2, (kernel_size[1] - 1) // 2


class ProtoNet(nn.Sequential):
    """Prototype net on P3 (§2.4): 3x[conv3x3, ReLU], bilinear x2, ReLU, conv3x3, ReLU, conv1x1 -> M.

    Indices 0..10 are those of the authors' ``proto_net`` state-dict keys (6 and 7 have no parameters).
    """

    @configurable
    def __init__(self, in_channels: int = 256, channels: int = 256, num_prototypes: int = 32):
        super().__init__(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_prototypes, 1),
        )
        init_stmask_weights(self)
        self.inference_copy: InferenceCopy | None = InferenceCopy(channels_last=False, winograd=True)

    @classmethod
    def from_config(cls, cfg, in_channels: int | None = None):
        """``in_channels``: P3's channels (default ``MODEL.STMASK.FPN_CHANNELS``)."""
        c = cfg.MODEL.STMASK
        return {
            "in_channels": c.FPN_CHANNELS if in_channels is None else in_channels,
            "channels": c.PROTO_CHANNELS,
            "num_prototypes": c.NUM_PROTOTYPES,
        }

    @runs_inference_copy
    def forward(self, x: Tensor) -> Tensor:
        """
        Args:
            x: P3, (F, C, H, W).
        Returns:
            prototypes (F, 2H, 2W, M), channels last, after ReLU.
        """
        return F.relu(super().forward(x)).permute(0, 2, 3, 1).contiguous()


def ali_offsets(box: Tensor, kernel_size: tuple[int, int], variances: Sequence[float] = VARIANCES) -> Tensor:
    """Analytic FCB offsets (§2.7 "ali"): the kernel grid moved onto the predicted box.

    Tap (r, c) (centred kernel row / column, row-major) is displaced by
    ``dy = v0 * ty * kh + (exp(v1 * th) - 1) * r`` and ``dx = v0 * tx * kw + (exp(v1 * tw) - 1) * c``.

    Args:
        box: (F, 4, H, W) raw regression (tx, ty, tw, th) for this anchor shape.
        kernel_size: (kh, kw).
    Returns:
        (F, 2 * kh * kw, H, W): channel 2t = dy, 2t + 1 = dx of tap t.
    """
    kh, kw = kernel_size
    tx, ty, tw, th = box.unbind(1)  # (F, H, W) each
    shift_x = variances[0] * tx * kw
    shift_y = variances[0] * ty * kh
    scale_w = torch.exp(variances[1] * tw) - 1
    scale_h = torch.exp(variances[1] * th) - 1
    rows = torch.arange(kh, dtype=box.dtype, device=box.device) - (kh - 1) / 2
    cols = torch.arange(kw, dtype=box.dtype, device=box.device) - (kw - 1) / 2
    tap_r = rows.repeat_interleave(kw)[None, :, None, None]  # (1, K, 1, 1), row-major taps
    tap_c = cols.repeat(kh)[None, :, None, None]
    dy = shift_y[:, None] + scale_h[:, None] * tap_r  # (F, K, H, W)
    dx = shift_x[:, None] + scale_w[:, None] * tap_c
    n, _, h, w = dy.shape
    return torch.stack([dy, dx], dim=2).reshape(n, 2 * kh * kw, h, w)


class FeatureAlign(nn.Module):
    """FCB (§2.7): ``conv(relu(conv_adaption(x, offset)))`` with offsets from the detached box
    regression, analytic (``"ali"``) or a 1x1 conv ``conv_offset`` (``"ada"``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        mode: str = "ali",
        variances: Sequence[float] = VARIANCES,
    ):
        super().__init__()
        if mode not in ("ali", "ada"):
            raise ValueError(f"FeatureAlign mode must be 'ali' or 'ada', got {mode!r}")
        self.mode = mode
        self.kernel_size = (int(kernel_size[0]), int(kernel_size[1]))
        self.variances = tuple(variances)
        padding = _same_padding(self.kernel_size)
        self.conv_adaption = DeformConv(
            in_channels, in_channels, self.kernel_size, padding=padding, bias=False
        )
        self.conv = nn.Conv2d(in_channels, out_channels, self.kernel_size, padding=padding)
        if mode == "ada":
            self.conv_offset = nn.Conv2d(4, 2 * self.kernel_size[0] * self.kernel_size[1], 1, bias=False)
        else:
            self.conv_offset = None
        init_stmask_weights(self)

    def offsets(self, box: Tensor) -> Tensor:
        """(F, 4, H, W) raw regression -> (F, 2 * kh * kw, H, W) offsets (no gradient to ``box``)."""
        box = box.detach()
        if self.conv_offset is not None:
            return self.conv_offset(box)
        return ali_offsets(box, self.kernel_size, self.variances)

    def forward(self, x: Tensor, box: Tensor) -> Tensor:
        """
        Args:
            x: (F, C_in, H, W) tower features.
            box: (F, 4, H, W) box regression at the same locations.
        Returns:
            (F, C_out, H, W).
        """
        return self.conv(F.relu(self.conv_adaption(x, self.offsets(box))))


def _tower(channels: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class STMaskHead(nn.Module):
    """FCA prediction head shared by all FPN levels (§2.5), with optional FCB on the class branch.

    Per level: ``u = upfeature(x)``; towers on ``u``; for each anchor shape k (kernel (kh, kw), "same"
    padding) ``bbox_layer.k`` and ``centerness_layer.k`` on the bbox tower, ``conf_layer.k`` on the
    conf tower (``FeatureAlign`` on the detached ``bbox_layer.k`` output with FCB), ``track_layer.k``
    and ``mask_layer.k`` on theirs. Anchors are ordered level by level, locations row-major, k
    innermost (``box_ops.make_priors`` order).
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int = 256,
        num_classes: int = 41,
        anchor_shapes: Sequence[Sequence[int]] = ((3, 3), (3, 5), (5, 3)),
        tower_depths: Sequence[int] = (2, 2, 2),
        num_prototypes: int = 32,
        embed_dim: int = 128,
        fcb: str = "none",
        t2s_level: int | None = 1,
        variances: Sequence[float] = VARIANCES,
    ):
        """
        Args:
            in_channels: FPN channels (also the tower width).
            num_classes: C, background included.
            anchor_shapes: (h, w) per anchor shape, in feature cells = the kernel of its convs.
            tower_depths: conv+ReLU count of the conf and bbox towers, the mask tower, the track tower.
            fcb: ``"none"`` (FCA only), ``"ali"`` or ``"ada"`` (FeatureAlign on the class branch).
            t2s_level: index of the level whose ``upfeature`` output is returned as ``"t2s"`` (None: not
                returned).
        """
        super().__init__()
        if fcb not in ("none", "ali", "ada"):
            raise ValueError(f"MODEL.STMASK.FCB must be 'none', 'ali' or 'ada', got {fcb!r}")
        if len(tower_depths) != 3:
            raise ValueError(f"TOWER_DEPTHS needs 3 entries (conf/bbox, mask, track), got {tower_depths}")
        self.num_classes = num_classes
        self.kernel_sizes = [(int(h), int(w)) for h, w in anchor_shapes]
        self.fcb = fcb
        self.t2s_level = t2s_level
        ch = in_channels

        self.upfeature = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(inplace=True))
        self.conf_extra = _tower(ch, tower_depths[0])
        self.bbox_extra = _tower(ch, tower_depths[0])
        self.mask_extra = _tower(ch, tower_depths[1])
        self.track_extra = _tower(ch, tower_depths[2])

        def convs(out: int) -> nn.ModuleList:
            return nn.ModuleList(nn.Conv2d(ch, out, k, padding=_same_padding(k)) for k in self.kernel_sizes)

        self.bbox_layer = convs(4)
        self.centerness_layer = convs(1)
        if fcb == "none":
            self.conf_layer = convs(num_classes)
        else:
            self.conf_layer = nn.ModuleList(
                FeatureAlign(ch, num_classes, k, mode=fcb, variances=variances) for k in self.kernel_sizes
            )
        self.track_layer = convs(embed_dim)
        self.mask_layer = convs(num_prototypes)
        init_stmask_weights(self)
        self.inference_copy: InferenceCopy | None = InferenceCopy(channels_last=False, winograd=True)

    @classmethod
    def from_config(cls, cfg, input_shape: Sequence[ShapeSpec] | None = None):
        """``input_shape``: the levels' shapes (all the same channels; default
        ``MODEL.STMASK.FPN_CHANNELS``)."""
        c = cfg.MODEL.STMASK
        in_features = list(c.IN_FEATURES)
        t2s = in_features.index(c.CORRELATION_FEATURE) if c.CORRELATION_FEATURE in in_features else None
        in_channels = c.FPN_CHANNELS
        if input_shape:
            channels = {s.channels for s in input_shape}
            if len(channels) != 1:
                raise ValueError(f"STMaskHead needs equal channels on every level, got {sorted(channels)}")
            in_channels = channels.pop()
        return {
            "in_channels": in_channels,
            "num_classes": c.NUM_CLASSES + 1,
            "anchor_shapes": [tuple(s) for s in c.ANCHOR_SHAPES],
            "tower_depths": list(c.TOWER_DEPTHS),
            "num_prototypes": c.NUM_PROTOTYPES,
            "embed_dim": c.EMBED_DIM,
            "fcb": c.FCB,
            "t2s_level": t2s,
            "variances": tuple(c.BOX_VARIANCES),
        }

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.kernel_sizes)

    def _level(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        u = self.upfeature(x)
        conf_t = self.conf_extra(u)
        bbox_t = self.bbox_extra(u)
        mask_t = self.mask_extra(u)
        track_t = self.track_extra(u)
        outs: dict[str, list[Tensor]] = {k: [] for k in ("loc", "conf", "centerness", "track", "mask_coeff")}
        for k in range(len(self.kernel_sizes)):
            box = self.bbox_layer[k](bbox_t)
            outs["loc"].append(box)
            outs["centerness"].append(self.centerness_layer[k](bbox_t))
            if self.fcb == "none":
                outs["conf"].append(self.conf_layer[k](conf_t))
            else:
                outs["conf"].append(self.conf_layer[k](conf_t, box.detach()))
            outs["track"].append(self.track_layer[k](track_t))
            outs["mask_coeff"].append(self.mask_layer[k](mask_t))
        # (F, ch, H, W) per k -> (F, H, W, K, ch) -> (F, H*W*K, ch): locations row-major, k innermost.
        flat = {}
        for name, maps in outs.items():
            y = torch.stack([m.permute(0, 2, 3, 1) for m in maps], dim=3)
            flat[name] = y.reshape(y.shape[0], -1, y.shape[-1])
        return flat, u

    @runs_inference_copy
    def forward(self, features: Sequence[Tensor]) -> dict[str, Tensor]:
        """
        Args:
            features: FPN maps P3..P7, each (F, C_in, H_l, W_l).
        Returns:
            ``loc`` (F, N, 4) raw, ``conf`` (F, N, C) logits, ``centerness`` (F, N) after tanh,
            ``track`` (F, N, E) L2-normalised, ``mask_coeff`` (F, N, M) pre-tanh, with
            N = sum_l H_l * W_l * K; and ``t2s`` (F, C_in, H, W), the ``upfeature`` output of level
            ``t2s_level`` (when set).
        """
        per_level = [self._level(x) for x in features]
        preds = {name: torch.cat([lvl[name] for lvl, _ in per_level], dim=1) for name in per_level[0][0]}
        preds["centerness"] = torch.tanh(preds["centerness"].squeeze(-1))
        preds["track"] = F.normalize(preds["track"], dim=-1)
        if self.t2s_level is not None and self.t2s_level < len(per_level):
            preds["t2s"] = per_level[self.t2s_level][1]
        return preds
