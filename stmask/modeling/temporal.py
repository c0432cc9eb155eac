"""STMask's temporal fusion module (spec stmask.md §2.8): correlation volume of two frames' P4 maps,
fused with both frames' ``upfeature`` maps, RoI-aligned on frame t-1 boxes and regressed by
``TemporalNet`` to a box displacement and a mask-coefficient delta for frame t.

Parameter names are the authors' ``TemporalNet.{conv1,conv2,conv3,fc,fc_coeff}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import Tensor, nn
from torchvision.ops import roi_align

from .head import init_stmask_weights

__all__ = ["TemporalNet", "correlation", "fusion_features", "roi_boxes"]


def correlation(ref: Tensor, nxt: Tensor, patch: int = 11) -> Tensor:
    """Local correlation (``spatial_correlation_sample`` with kernel 1, stride 1, no padding).

    ``out[b, patch * a + c, y, x] = sum_ch ref[b, ch, y, x] * nxt[b, ch, y + a - r, x + c - r]`` with
    ``r = patch // 2``; positions outside ``nxt`` contribute 0.

    Args:
        ref, nxt: (B, C, H, W).
    Returns:
        (B, patch * patch, H, W).
    """
    if ref.shape != nxt.shape:
        raise ValueError(f"correlation needs equal shapes, got {tuple(ref.shape)} and {tuple(nxt.shape)}")
    r = patch // 2
    h, w = ref.shape[-2:]
    padded = F.pad(nxt, (r, r, r, r))
    # One multiply-sum per displacement: on CPU much faster (forward and backward) than an
    # unfold + einsum, which materialises patch^2 copies of ``nxt``.
    return torch.stack(
        [(ref * padded[:, :, a : a + h, c : c + w]).sum(1) for a in range(patch) for c in range(patch)],
        dim=1,
    )


def fusion_features(
    ref_p4: Tensor, next_p4: Tensor, ref_t2s: Tensor, next_t2s: Tensor, patch: int = 11
) -> Tensor:
    """``Z = relu(cat(leaky_relu(correlation / C, 0.1), ref_t2s, next_t2s))`` (§2.8 steps 1-2).

    Args:
        ref_p4, next_p4: FPN P4 of frames t-1 and t, (B, C, H, W).
        ref_t2s, next_t2s: head ``upfeature`` maps at P4 of the same frames, (B, C', H, W).
    Returns:
        (B, patch^2 + 2 C', H, W).
    """
    corr = correlation(ref_p4, next_p4, patch) / ref_p4.shape[1]
    corr = F.leaky_relu(corr, 0.1)
    return F.relu(torch.cat([corr, ref_t2s, next_t2s], dim=1))


def roi_boxes(boxes_norm: Tensor, size: tuple[int, int]) -> Tensor:
    """Normalised (x1, y1, x2, y2) -> pixel boxes of an (H, W) map (§2.8.1): scaled by (W, H),
    coordinates ordered with min / max, clamped to [0, W] x [0, H], not rounded.

    Args:
        boxes_norm: (n, 4).
        size: (H, W) of the map.
    Returns:
        (n, 4).
    """
    h, w = size
    xs = boxes_norm[:, 0::2] * w
    ys = boxes_norm[:, 1::2] * h
    x1 = xs.min(dim=1).values.clamp(0, w)
    x2 = xs.max(dim=1).values.clamp(0, w)
    y1 = ys.min(dim=1).values.clamp(0, h)
    y2 = ys.max(dim=1).values.clamp(0, h)
    return torch.stack([x1, y1, x2, y2], dim=1)


class TemporalNet(nn.Module):
    """RoIAlign (aligned, 7x7) of the fused map on frame t-1 boxes, three conv3x3 + ReLU, average pool,
    then ``fc`` (box displacement, SSD-coded) and ``fc_coeff`` (pre-tanh coefficient delta)."""

    @configurable
    def __init__(
        self,
        *,
        in_channels: int = 633,
        channels: Sequence[int] = (512, 512, 1024),
        num_prototypes: int = 32,
        roi_size: int = 7,
    ):
        super().__init__()
        c1, c2, c3 = channels
        self.roi_size = roi_size
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1)
        self.fc = nn.Linear(c3, 4)
        self.fc_coeff = nn.Linear(c3, num_prototypes)
        init_stmask_weights(self)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.STMASK
        # Z = correlation (patch^2) + the upfeature maps of both frames (FPN channels each).
        return {
            "in_channels": c.CORRELATION_PATCH**2 + 2 * c.FPN_CHANNELS,
            "channels": list(c.TEMPORAL_CHANNELS),
            "num_prototypes": c.NUM_PROTOTYPES,
            "roi_size": c.TEMPORAL_ROI_SIZE,
        }

    def roi_features(self, z: Tensor, boxes_norm: Tensor, batch_idx: Tensor) -> Tensor:
        """(n, C_in, roi_size, roi_size): RoIAlign (aligned=True, adaptive sampling, average) of ``z``
        on :func:`roi_boxes` of ``boxes_norm`` in ``z``'s pixel units; arguments as :meth:`forward`."""
        rois = torch.cat(
            [batch_idx.to(z.dtype)[:, None], roi_boxes(boxes_norm.to(z.dtype), z.shape[-2:])], dim=1
        )
        return roi_align(z, rois, (self.roi_size, self.roi_size), 1.0, 0, aligned=True)

    def forward(self, z: Tensor, boxes_norm: Tensor, batch_idx: Tensor) -> tuple[Tensor, Tensor]:
        """
        Args:
            z: (B, C_in, H, W) fused map (:func:`fusion_features`).
            boxes_norm: (n, 4) frame t-1 boxes (x1, y1, x2, y2), normalised by the padded input size.
            batch_idx: (n,) index into ``z`` of each box's clip.
        Returns:
            delta_box (n, 4) as (tx, ty, tw, th) relative to the t-1 box, delta_coeff (n, M).
        """
        x = F.relu(self.conv1(self.roi_features(z, boxes_norm, batch_idx)))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        x = x.mean(dim=(2, 3))  # AvgPool roi_size x roi_size over the roi_size x roi_size map
        return self.fc(x), self.fc_coeff(x)
