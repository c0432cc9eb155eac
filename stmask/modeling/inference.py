"""STMask per-frame detection at test time: candidates, Fast NMS and mask assembly (spec stmask.md
§4.2-§4.4).

Boxes are ``(x1, y1, x2, y2)`` normalised by the padded input size; labels are 1-based (0 =
background); mask coefficients stay pre-tanh.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from onestage.layers import fast_nms

from .box_ops import VARIANCES, assemble_masks, crop_masks, decode

__all__ = ["detect_frame", "frame_masks", "generate_candidates"]


def generate_candidates(
    loc: Tensor,
    conf_logits: Tensor,
    centerness: Tensor,
    track: Tensor,
    coeffs: Tensor,
    priors: Tensor,
    *,
    candidate_thresh: float = 0.05,
    variances: Sequence[float] = VARIANCES,
) -> dict[str, Tensor]:
    """Anchors whose best object-class probability is strictly above ``candidate_thresh`` (§4.2).

    Args:
        loc: (N, 4) raw regression; conf_logits: (N, C) with C = classes + 1 (background first);
        centerness: (N,); track: (N, E); coeffs: (N, M) pre-tanh; priors: (N, 4) centre-size.
    Returns:
        dict of the K candidates: ``boxes`` (K, 4) decoded, ``conf`` (K, C) softmax probabilities,
        ``centerness`` (K,), ``track`` (K, E), ``coeffs`` (K, M), in anchor order.
    """
    conf = F.softmax(conf_logits, dim=-1)
    keep = conf[:, 1:].amax(dim=1) > candidate_thresh
    return {
        "boxes": decode(loc[keep], priors[keep], variances),
        "conf": conf[keep],
        "centerness": centerness[keep],
        "track": track[keep],
        "coeffs": coeffs[keep],
    }


def detect_frame(
    loc: Tensor,
    conf_logits: Tensor,
    centerness: Tensor,
    track: Tensor,
    coeffs: Tensor,
    priors: Tensor,
    *,
    candidate_thresh: float = 0.05,
    nms_top_k: int = 200,
    nms_thresh: float = 0.5,
    cross_class: bool = True,
    max_detections: int = 100,
    score_thresh: float = 0.05,
    variances: Sequence[float] = VARIANCES,
) -> dict[str, Tensor]:
    """Detections of one frame: candidates (§4.2) then Fast NMS (§4.3).

    * ``cross_class`` (the authors' default, README "mAP"): score = best object-class probability x
      centerness (may be <= 0), class = that class; the ``nms_top_k`` best boxes suppress each other
      whatever their classes (kept iff max IoU with any higher-scored box <= ``nms_thresh``); no
      score threshold and no cap (``score_thresh`` and ``max_detections`` are unused).
    * per-class (README "mAP*"): scores = each object-class probability x centerness; per class the
      ``nms_top_k`` best, suppression within the class, score > ``score_thresh``; pooled, the best
      ``max_detections`` kept. One anchor may survive in several classes.

    Args: as :func:`generate_candidates`.
    Returns:
        dict, sorted by descending score: ``boxes`` (D, 4), ``classes`` (D,) int64 1-based,
        ``scores`` (D,), ``coeffs`` (D, M) pre-tanh, ``track`` (D, E), ``centerness`` (D,).
    """
    cand = generate_candidates(
        loc,
        conf_logits,
        centerness,
        track,
        coeffs,
        priors,
        candidate_thresh=candidate_thresh,
        variances=variances,
    )
    obj_conf = cand["conf"][:, 1:]
    if cross_class:
        best, best_class = obj_conf.max(dim=1)
        # One score column: with a negative centerness the best product is not the best class.
        rows, _, scores = fast_nms(
            cand["boxes"],
            (best * cand["centerness"])[:, None],
            float("-inf"),
            nms_thresh,
            top_k=nms_top_k,
            max_dets=nms_top_k,
            cross_class=True,
        )
        classes = best_class[rows] + 1
    else:
        rows, classes, scores = fast_nms(
            cand["boxes"],
            obj_conf * cand["centerness"][:, None],
            score_thresh,
            nms_thresh,
            top_k=nms_top_k,
            max_dets=max_detections,
            cross_class=False,
        )
        classes = classes + 1
    return {
        "boxes": cand["boxes"][rows],
        "classes": classes,
        "scores": scores,
        "coeffs": cand["coeffs"][rows],
        "track": cand["track"][rows],
        "centerness": cand["centerness"][rows],
    }


def frame_masks(proto: Tensor, coeffs: Tensor, boxes: Tensor) -> Tensor:
    """Soft masks of (n, M) pre-tanh ``coeffs`` on one frame's (Hp, Wp, M) ``proto``, cropped by their
    (n, 4) normalised ``boxes`` with 1 proto pixel of padding, not enlarged (§4.4) -> (n, Hp, Wp)."""
    if len(coeffs) == 0:
        return proto.new_zeros(0, proto.shape[0], proto.shape[1])
    return crop_masks(assemble_masks(proto, coeffs), boxes, padding=1)
