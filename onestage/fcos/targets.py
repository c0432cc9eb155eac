"""FCOS training-target assignment, shared by CenterMask (FCOS proposals) and SipMask.

Everything here works on one image at a time and is vectorised over (locations x gt boxes):
no Python loop over instances. Conventions:

* locations are absolute ``(x, y)`` pixel coordinates of the network input (see
  :func:`onestage.fcos.locations.compute_locations`), all FPN levels concatenated
  level-major (P3 first);
* gt boxes are absolute ``(x1, y1, x2, y2)`` in the same coordinates;
* regression targets are returned in **pixels**; callers divide by the per-location stride when
  their head regresses in stride units (CenterMask/AdelaiDet FCOS does, mmdet SipMask divides too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "FCOSTargets",
    "INF",
    "centerness_targets",
    "fcos_assign_targets",
    "level_size_ranges",
    "per_location_stride_and_range",
]

INF = 1e8  # upper bound of the last level's size range (AdelaiDet / mmdet use the same value)


class FCOSTargets(NamedTuple):
    """Per-location targets of one image (``L`` = number of locations over all levels).

    Attributes:
        labels: (L,) int64; the matched gt's class, or ``background_label`` where no gt matched.
        reg_targets: (L, 4) float; ``(l, t, r, b)`` distances in pixels from the location to the
            matched gt's sides (``l = x - x1, t = y - y1, r = x2 - x, b = y2 - y``); 0 on background.
        matched_idxs: (L,) int64; index into the image's gt boxes, -1 on background.
    """

    labels: Tensor
    reg_targets: Tensor
    matched_idxs: Tensor


def level_size_ranges(sizes_of_interest: Sequence[float], num_levels: int) -> list[tuple[float, float]]:
    """Size-of-interest boundaries -> per-level ``(lo, hi)`` ranges of ``max(l, t, r, b)``.

    ``[64, 128, 256, 512]`` with 5 levels gives ``[(-1, 64), (64, 128), (128, 256), (256, 512),
    (512, INF)]``.
    """
    bounds = [-1.0, *(float(s) for s in sizes_of_interest), INF]
    if len(bounds) - 1 != num_levels:
        raise ValueError(
            f"{len(sizes_of_interest)} sizes of interest need {len(sizes_of_interest) + 1} levels"
        )
    return [(bounds[i], bounds[i + 1]) for i in range(num_levels)]


def per_location_stride_and_range(
    num_locations_per_level: Sequence[int],
    strides: Sequence[int],
    sizes_of_interest: Sequence[float],
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Expand per-level strides and size ranges to every location (level-major order).

    Returns:
        strides: (L,) float32 stride of each location's level.
        size_ranges: (L, 2) float32 ``(lo, hi)`` of each location's level.
    """
    ranges = level_size_ranges(sizes_of_interest, len(strides))
    counts = torch.as_tensor(list(num_locations_per_level), device=device)
    stride_t = torch.as_tensor([float(s) for s in strides], device=device)
    range_t = torch.as_tensor(ranges, dtype=torch.float32, device=device)
    return stride_t.repeat_interleave(counts), range_t.repeat_interleave(counts, dim=0)


def fcos_assign_targets(
    locations: Tensor,
    strides: Tensor,
    size_ranges: Tensor,
    gt_boxes: Tensor,
    gt_classes: Tensor,
    background_label: int,
    center_sample_radius: float = 1.5,
    area_plus_one: bool = False,
) -> FCOSTargets:
    """Assign every location of one image to at most one gt box (FCOS rule with center sampling).

    A location ``(x, y)`` on a level with stride ``s`` is a *candidate* for gt ``g`` iff

    1. center sampling (``center_sample_radius > 0``): ``(x, y)`` lies strictly inside (all four
       distances > 0) the box ``[cx - r*s, cy - r*s, cx + r*s, cy + r*s]`` clipped to ``g``, where
       ``(cx, cy)`` is ``g``'s center and ``r`` the radius; without center sampling
       (``center_sample_radius <= 0``): strictly inside ``g`` itself;
    2. scale range: ``lo <= max(l, t, r, b) <= hi`` (both inclusive) for the location's level.

    Among candidates the gt with the **smallest area** wins (first gt on exact ties); a location
    with no candidate is background. Area is ``(x2 - x1) * (y2 - y1)`` (Detectron2 /
    centermask2 / AdelaiDet) or, with ``area_plus_one=True``, ``(x2 - x1 + 1) * (y2 - y1 + 1)``
    (mmdet, SipMask). The switch only changes which gt wins an ambiguous location; distances are
    always ``x - x1`` etc.

    Unlike centermask2 there is no "first gt's center x == 0 means no gt" shortcut (a latent bug,
    spec 12.2 item 17): an empty ``gt_boxes`` is the only "no gt" case.

    Args:
        locations: (L, 2) float ``(x, y)`` of every location, all levels concatenated.
        strides: (L,) stride of each location's level (see :func:`per_location_stride_and_range`).
        size_ranges: (L, 2) ``(lo, hi)`` bounds on ``max(l, t, r, b)`` per location.
        gt_boxes: (G, 4) float ``(x1, y1, x2, y2)``; G may be 0.
        gt_classes: (G,) int64 class indices.
        background_label: label given to unmatched locations (``K`` in Detectron2's convention).
        center_sample_radius: radius in units of the level's stride (1.5 in every shipped config);
            ``<= 0`` disables center sampling.
        area_plus_one: use the mmdet ``+1`` area convention for the smallest-area tie-break.

    Returns:
        :class:`FCOSTargets` with ``labels`` (L,), ``reg_targets`` (L, 4) in pixels and
        ``matched_idxs`` (L,).
    """
    num_loc = locations.shape[0]
    device = locations.device
    if gt_boxes.numel() == 0:
        return FCOSTargets(
            labels=torch.full((num_loc,), background_label, dtype=torch.int64, device=device),
            reg_targets=locations.new_zeros((num_loc, 4)),
            matched_idxs=torch.full((num_loc,), -1, dtype=torch.int64, device=device),
        )
    gt_boxes = gt_boxes.to(locations.dtype)
    xs, ys = locations[:, 0:1], locations[:, 1:2]  # (L, 1)
    x1, y1, x2, y2 = gt_boxes.unbind(dim=1)  # (G,)
    reg = torch.stack([xs - x1, ys - y1, x2 - xs, y2 - ys], dim=2)  # (L, G, 4)

    if center_sample_radius > 0:
        radius = strides.to(locations.dtype)[:, None] * center_sample_radius  # (L, 1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        cx1 = torch.maximum(cx - radius, x1)
        cy1 = torch.maximum(cy - radius, y1)
        cx2 = torch.minimum(cx + radius, x2)
        cy2 = torch.minimum(cy + radius, y2)
        to_center_box = torch.stack([xs - cx1, ys - cy1, cx2 - xs, cy2 - ys], dim=2)
        candidate = to_center_box.amin(dim=2) > 0
    else:
        candidate = reg.amin(dim=2) > 0

    max_reg = reg.amax(dim=2)
    candidate &= (max_reg >= size_ranges[:, 0:1]) & (max_reg <= size_ranges[:, 1:2])

    extra = 1.0 if area_plus_one else 0.0
    area = (x2 - x1 + extra) * (y2 - y1 + extra)  # (G,)
    area = area[None, :].expand(num_loc, -1).masked_fill(~candidate, math.inf)
    min_area, matched = area.min(dim=1)
    is_bg = min_area == math.inf

    labels = gt_classes.to(torch.int64)[matched].masked_fill(is_bg, background_label)
    reg_targets = reg[torch.arange(num_loc, device=device), matched]
    reg_targets = reg_targets.masked_fill(is_bg[:, None], 0.0)
    return FCOSTargets(labels, reg_targets, matched.masked_fill(is_bg, -1))


def centerness_targets(reg_targets: Tensor) -> Tensor:
    """``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` of (P, 4) ``(l, t, r, b)``.

    Meant for positive locations only (all distances > 0); scale-invariant, so pixel or stride
    units give the same value. Returns (P,).
    """
    lr = reg_targets[:, [0, 2]]
    tb = reg_targets[:, [1, 3]]
    ctr = (lr.amin(dim=1) / lr.amax(dim=1)) * (tb.amin(dim=1) / tb.amax(dim=1))
    return torch.sqrt(ctr)
