"""RoI pooler with CenterMask's image-area-ratio level assignment (CenterMask paper, Eq. 2)."""

from __future__ import annotations

import torch
from detectron2.layers import cat
from detectron2.modeling.poolers import ROIPooler, convert_boxes_to_pooler_format
from detectron2.structures import Boxes
from torch import Tensor

__all__ = ["CenterROIPooler", "assign_boxes_to_levels_by_ratio"]


def assign_boxes_to_levels_by_ratio(
    box_lists: list[Boxes], image_sizes: list[tuple[int, int]], min_level: int, max_level: int
) -> Tensor:
    """Level index (offset from ``min_level``) of every box, by the box / image area ratio.

    ``k = ceil(max_level - log2(A_img / A_box))`` clamped to ``[min_level, max_level]``, with
    ``A_img`` the un-padded input image area. With levels 3..5: ``A_box / A_img <= 1/4`` -> P3,
    ``<= 1/2`` -> P4, larger -> P5; zero-area boxes -> P3.

    Returns:
        (M,) int64 over the concatenation of ``box_lists``.
    """
    box_areas = cat([boxes.area() for boxes in box_lists])
    img_areas = cat(
        [
            box_areas.new_full((len(boxes),), float(h * w))
            for boxes, (h, w) in zip(box_lists, image_sizes, strict=True)
        ]
    )
    levels = torch.ceil(max_level - torch.log2(img_areas / box_areas))
    levels = torch.clamp(levels, min=min_level, max=max_level)
    return levels.to(torch.int64) - min_level


class CenterROIPooler(ROIPooler):
    """:class:`ROIPooler` whose level assignment is ``"ratio"`` (CenterMask) or ``"area"`` (FPN)."""

    def __init__(self, *args, assign_crit: str = "ratio", **kwargs):
        super().__init__(*args, **kwargs)
        if assign_crit not in ("ratio", "area"):
            raise ValueError(f"unknown ROI_MASK_HEAD.ASSIGN_CRITERION {assign_crit!r}")
        self.assign_crit = assign_crit

    def forward(
        self, x: list[Tensor], box_lists: list[Boxes], image_sizes: list[tuple[int, int]] | None = None
    ) -> Tensor:
        """
        Args:
            x: per level (N, C, H_l, W_l), finest first.
            box_lists: N Boxes in input-image coordinates.
            image_sizes: N un-padded ``(h, w)``; required by the ``"ratio"`` rule.

        Returns:
            (M, C, R, R) pooled features, M = total boxes.
        """
        if self.assign_crit == "area" or len(self.level_poolers) == 1 or sum(len(b) for b in box_lists) == 0:
            return super().forward(x, box_lists)
        if image_sizes is None:
            raise ValueError("the ratio level assignment needs image_sizes")
        levels = assign_boxes_to_levels_by_ratio(box_lists, image_sizes, self.min_level, self.max_level)
        pooler_fmt_boxes = convert_boxes_to_pooler_format(box_lists)
        output = x[0].new_zeros((len(pooler_fmt_boxes), x[0].shape[1], *self.output_size))
        for level, pooler in enumerate(self.level_poolers):
            inds = torch.nonzero(levels == level).squeeze(1)
            if inds.numel() > 0:
                output.index_put_((inds,), pooler(x[level], pooler_fmt_boxes[inds]))
        return output
