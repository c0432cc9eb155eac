"""STMask's per-frame postprocessing: tracks at proto resolution -> Detectron2 ``Instances`` at the
original frame size (spec stmask.md §4.6, the authors' ``postprocess_ytbvis`` with
``preserve_aspect_ratio``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances
from torch import Tensor

__all__ = ["tracks_to_instances"]


def tracks_to_instances(
    tracks: dict[str, Tensor],
    *,
    input_hw: tuple[int, int],
    padded_hw: tuple[int, int],
    output_hw: tuple[int, int],
    score_thresh: float = 0.05,
    mask_thresh: float = 0.5,
) -> Instances:
    """Output tracks of one frame as ``Instances`` of size ``output_hw``.

    Keeps tracks with score ``> score_thresh`` whose box centre is not in the padding (``cx <= w /
    Wpad`` and ``cy <= h / Hpad``). Masks: the soft proto-resolution masks cut to the un-padded part
    (rows ``< Hp * h // Hpad``, columns ``< Wp * w // Wpad``), upsampled bilinearly (align_corners
    False) to ``output_hw`` and thresholded ``> mask_thresh``. Boxes: rescaled from the network input
    to ``output_hw`` and clamped.

    Args:
        tracks: from :meth:`STMaskTracker.update`: ``boxes`` (n, 4) normalised by the padded size,
            ``classes`` (n,) 1-based, ``scores`` (n,), ``masks`` (n, Hp, Wp) soft, ``ids`` (n,).
        input_hw: (h, w) of the resized image fed to the network, before padding.
        padded_hw: (Hpad, Wpad) of the padded network input.
        output_hw: (H, W) of the original frame.
    Returns:
        ``Instances`` with ``pred_boxes`` (absolute, original size), ``scores``, ``pred_classes``
        (0-based), ``pred_masks`` (bool (n, H, W)) and ``ID`` (list of int).
    """
    h, w = input_hw
    pad_h, pad_w = padded_hw
    out_h, out_w = output_hw
    boxes, scores, masks = tracks["boxes"], tracks["scores"], tracks["masks"]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    keep = (scores > score_thresh) & ~(centre[:, 0] > w / pad_w) & ~(centre[:, 1] > h / pad_h)
    boxes, scores, masks = boxes[keep], scores[keep], masks[keep]

    proto_h, proto_w = masks.shape[-2:]
    masks = masks[:, : proto_h * h // pad_h, : proto_w * w // pad_w]
    if len(masks) > 0:
        masks = F.interpolate(masks[None], size=(out_h, out_w), mode="bilinear", align_corners=False)[0]
        pred_masks = masks > mask_thresh
    else:
        pred_masks = torch.zeros(0, out_h, out_w, dtype=torch.bool, device=masks.device)

    # Normalised by the padded size -> network-input pixels -> original pixels.
    scale = boxes.new_tensor([pad_w * out_w / w, pad_h * out_h / h] * 2)
    pred_boxes = Boxes(boxes * scale)
    pred_boxes.clip((out_h, out_w))

    return Instances(
        (out_h, out_w),
        pred_boxes=pred_boxes,
        scores=scores,
        pred_classes=tracks["classes"][keep] - 1,
        pred_masks=pred_masks,
        ID=tracks["ids"][keep].tolist(),
    )
