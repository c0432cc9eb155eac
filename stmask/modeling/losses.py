"""STMask's training losses (spec stmask.md §3.4-3.5): DIoU box loss, cropped linear-combination
mask loss, batch-wide OHEM classification, centerness, the tracking embedding loss and the temporal
fusion (box / mask shift) losses.

Frames are clip-major: of the F = 2B frames, frame 2b is the reference and 2b+1 the next frame of
clip b. Boxes are normalised ``(x1, y1, x2, y2)`` by the padded input size; labels are 1-based.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import Tensor

from .box_ops import VARIANCES, assemble_masks, center_size, crop_masks, decode, diou, encode, point_form
from .matching import match

__all__ = [
    "STMaskLoss",
    "mask_bce",
    "ohem_conf_loss",
    "positive_weights",
    "track_loss",
]

TemporalFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


def positive_weights(conf_t: Tensor) -> Tensor:
    """(F, N) targets -> (F, N) weights: ``1 / max(n_f, 1)`` on the positives of frame f, else 0
    (§3.4)."""
    pos = (conf_t > 0).float()
    return pos / pos.sum(dim=1, keepdim=True).clamp(min=1.0)


def ohem_conf_loss(
    conf: Tensor,
    conf_t: Tensor,
    pos_weights: Tensor,
    negpos_ratio: int = 3,
    authors_weight_order: bool = False,
) -> Tensor:
    """Batch-wide OHEM cross-entropy ``sum(weights * CE) / (negpos_ratio + 1)`` (§3.5.3), before the
    config weight and the division by F.

    Args:
        conf: (F, N, C) logits.
        conf_t: (F, N) targets (-1 neutral, 0 background, > 0 label).
        pos_weights: (F, N) from :func:`positive_weights`.
        negpos_ratio: negatives mined per positive over the whole batch.
        authors_weight_order: apply ``[positive weights ; negative weights]`` position-wise to the
            kept anchors in index order (the authors' misalignment, spec §8.3); False gives every
            kept anchor its own weight.
    """
    num_frames, _, num_classes = conf.shape
    conf = conf.reshape(-1, num_classes)
    conf_t = conf_t.reshape(-1)
    pos = conf_t > 0
    ignored = conf_t != 0  # positives and neutrals are never mined
    with torch.no_grad():
        mining = torch.logsumexp(conf.float(), dim=1) - conf[:, 0].float()  # -log p_bg
        mining = mining.masked_fill(ignored, 0.0)
        num_neg = torch.clamp(negpos_ratio * pos.sum(), max=conf_t.numel() - 1)
        order = torch.sort(mining, descending=True, stable=True).indices
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=order.device)
        neg = (rank < num_neg) & ~ignored
        keep = pos | neg
        neg_weight = negpos_ratio * num_frames / neg.sum().clamp(min=1).float()
    ce = F.cross_entropy(conf[keep], conf_t[keep], reduction="none")  # kept anchors in index order
    if authors_weight_order:
        w_pos = pos_weights.reshape(-1)[pos]  # positives in index order
        w_neg = neg_weight.expand(ce.shape[0] - w_pos.shape[0])
        weights = torch.cat([w_pos, w_neg])
    else:
        weights = torch.where(pos, pos_weights.reshape(-1), neg_weight)[keep]
    return (weights.to(ce.dtype) * ce).sum() / (negpos_ratio + 1)


def mask_bce(
    proto: Tensor, coeffs: Tensor, crop_boxes: Tensor, gt_masks: Tensor, clamp_area: bool = True
) -> Tensor:
    """Per-instance mask loss of one frame (§3.5.2, §3.5.5).

    ``sigmoid(proto . tanh(coeffs))`` is cropped to ``crop_boxes`` at prototype resolution (1-px
    padding), upsampled bilinearly to the GT size, and ``BCE(clamp(pred, 0, 1), gt)`` (log clamped at
    -100 by PyTorch) is summed and divided by the crop box's area in GT pixels (each side clamped to
    >= 1 with ``clamp_area``).

    Args:
        proto: (Hp, Wp, M) prototypes; coeffs: (n, M) pre-tanh coefficients.
        crop_boxes: (n, 4) normalised ``(x1, y1, x2, y2)``; gt_masks: (n, H, W) 0/1.

    Returns:
        (n,) losses.
    """
    height, width = gt_masks.shape[-2:]
    pred = crop_masks(assemble_masks(proto, coeffs), crop_boxes, padding=1)
    pred = F.interpolate(pred[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    with torch.autocast(device_type=pred.device.type, enabled=False):  # BCE is autocast-unsafe
        bce = F.binary_cross_entropy(pred.float().clamp(0, 1), gt_masks.float(), reduction="none")
    sizes = center_size(crop_boxes.float())[:, 2:] * crop_boxes.new_tensor([width, height]).float()
    if clamp_area:
        sizes = sizes.clamp(min=1.0)
    return bce.sum(dim=(1, 2)) / (sizes[:, 0] * sizes[:, 1])


def track_loss(embeddings: Tensor, ids: Tensor, weights: Tensor) -> Tensor:
    """Pairwise contrastive embedding loss (§3.5.6), before the config weight.

    ``s_ij = (e_i . e_j + 1) / 2``; same-id pairs cost ``-log max(s, 1e-10)``, others
    ``-log max(1 - s, 1e-10)``; averaged over i < j with weights ``w_i w_j``.

    Args:
        embeddings: (P, E) unit vectors; ids: (P,) instance ids; weights: (P,) positive weights.
    """
    with torch.autocast(device_type=embeddings.device.type, enabled=False):  # 1e-10 underflows in fp16
        embeddings = embeddings.float()
        sim = (embeddings @ embeddings.t() + 1) / 2
    same = (ids[:, None] == ids[None, :]).to(sim.dtype)
    loss = -(same * sim.clamp(min=1e-10).log() + (1 - same) * (1 - sim).clamp(min=1e-10).log())
    pair_w = torch.triu(weights[:, None] * weights[None, :], diagonal=1).float()
    # fewer than two positives: 0 (the authors divide 0 by 0)
    return (pair_w * loss).sum() / pair_w.sum().clamp(min=1e-12)


def _graph_zero(*tensors: Tensor) -> Tensor:
    """An exact 0 connected to every tensor's graph (an empty sum, so never NaN)."""
    return sum(t.reshape(-1)[:0].sum() for t in tensors)


class STMaskLoss:
    """All STMask training losses for F = 2B frames (spec §3.3-3.5).

    ``__call__`` returns ``loss_box``, ``loss_mask``, ``loss_conf``, ``loss_center``, ``loss_track`` and,
    with temporal fusion, ``loss_box_shift`` and ``loss_mask_shift``, each multiplied by its weight and
    normalised as the authors do (box, mask, conf, center / F; track not; shift losses / B).
    """

    @configurable
    def __init__(
        self,
        *,
        pos_thresh: float = 0.5,
        neg_thresh: float = 0.4,
        negpos_ratio: int = 3,
        authors_weight_order: bool = False,
        mask_crop_expand: float = 1.2,
        variances: Sequence[float] = VARIANCES,
        box_weight: float = 5.0,
        mask_weight: float = 6.125,
        conf_weight: float = 6.125,
        center_weight: float = 20.0,
        track_weight: float = 5.0,
        box_shift_weight: float = 5.0,
        mask_shift_weight: float = 6.125,
    ):
        self.pos_thresh = pos_thresh
        self.neg_thresh = neg_thresh
        self.negpos_ratio = negpos_ratio
        self.authors_weight_order = authors_weight_order
        self.mask_crop_expand = mask_crop_expand
        self.variances = tuple(variances)
        self.box_weight = box_weight
        self.mask_weight = mask_weight
        self.conf_weight = conf_weight
        self.center_weight = center_weight
        self.track_weight = track_weight
        self.box_shift_weight = box_shift_weight
        self.mask_shift_weight = mask_shift_weight

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.STMASK
        return {
            "pos_thresh": c.POSITIVE_IOU,
            "neg_thresh": c.NEGATIVE_IOU,
            "negpos_ratio": c.OHEM_NEGPOS_RATIO,
            "authors_weight_order": c.OHEM_AUTHORS_WEIGHT_ORDER,
            "mask_crop_expand": c.MASK_CROP_EXPAND,
            "variances": tuple(c.BOX_VARIANCES),
            "box_weight": c.BOX_WEIGHT,
            "mask_weight": c.MASK_WEIGHT,
            "conf_weight": c.CONF_WEIGHT,
            "center_weight": c.CENTER_WEIGHT,
            "track_weight": c.TRACK_WEIGHT,
            "box_shift_weight": c.BOX_SHIFT_WEIGHT,
            "mask_shift_weight": c.MASK_SHIFT_WEIGHT,
        }

    def match_targets(self, conf: Tensor, priors: Tensor, targets: list[dict]) -> dict[str, Tensor]:
        """Per-frame :func:`match` stacked over frames: (F, N) ``conf_t``, ``ids_t``, ``idx_t`` and
        (F, N, 4) ``loc_t``, ``gt_box_t``."""
        per_frame = [
            match(
                t["boxes"],
                t["labels"],
                t["ids"],
                priors,
                conf[f],
                self.pos_thresh,
                self.neg_thresh,
                self.variances,
            )
            for f, t in enumerate(targets)
        ]
        return {k: torch.stack([m[k] for m in per_frame]) for k in per_frame[0]}

    def __call__(
        self,
        preds: dict[str, Tensor],
        proto: Tensor,
        priors: Tensor,
        targets: list[dict[str, Tensor]],
        fusion: Tensor | None = None,
        temporal_fn: TemporalFn | None = None,
    ) -> dict[str, Tensor]:
        """
        Args:
            preds: head outputs for F frames: ``loc`` (F, N, 4), ``conf`` (F, N, C), ``centerness``
                (F, N), ``track`` (F, N, E), ``mask_coeff`` (F, N, M).
            proto: (F, Hp, Wp, M) prototypes; priors: (N, 4) centre-size.
            targets: F dicts with ``boxes`` (n, 4), ``labels`` (n,) 1-based, ``ids`` (n,) and ``masks``
                (n, Hpad, Wpad) 0/1 at the padded input size.
            fusion: (B, 633, H4, W4) temporal fusion features Z, or None.
            temporal_fn: ``(Z, boxes (n, 4), batch_idx (n,)) -> (delta_box (n, 4), delta_coeff (n, M))``;
                called once for all clips (possibly with n = 0).
        """
        loc, conf = preds["loc"], preds["conf"]
        num_frames, num_anchors = conf.shape[:2]
        t = self.match_targets(conf, priors, targets)
        weights = positive_weights(t["conf_t"])

        # positives, frame-major in anchor order
        pos_idx = (t["conf_t"] > 0).reshape(-1).nonzero().squeeze(1)
        counts = (t["conf_t"] > 0).sum(dim=1).tolist()
        anchor = pos_idx % num_anchors
        w_pos = weights.reshape(-1)[pos_idx]
        loc_pos = loc.reshape(-1, 4)[pos_idx].float()
        pred_boxes = decode(loc_pos, priors[anchor], self.variances)
        gt_boxes = t["gt_box_t"].reshape(-1, 4)[pos_idx]
        dious = diou(pred_boxes, gt_boxes)  # not detached: the centerness target moves loc as well

        losses = {}
        losses["loss_box"] = self.box_weight * (w_pos * (1 - dious)).sum() / num_frames
        mask = self._mask_loss(preds["mask_coeff"], proto, pred_boxes, t, pos_idx, counts, w_pos, targets)
        losses["loss_mask"] = self.mask_weight * mask / num_frames
        losses["loss_conf"] = (
            self.conf_weight
            * ohem_conf_loss(conf, t["conf_t"], weights, self.negpos_ratio, self.authors_weight_order)
            / num_frames
        )
        center = preds["centerness"].reshape(-1)[pos_idx].float()
        center_l1 = F.smooth_l1_loss(center, dious, reduction="none", beta=1.0)
        losses["loss_center"] = self.center_weight * (w_pos * center_l1).sum() / num_frames
        embeddings = preds["track"].reshape(-1, preds["track"].shape[-1])[pos_idx]
        losses["loss_track"] = self.track_weight * track_loss(
            embeddings, t["ids_t"].reshape(-1)[pos_idx], w_pos
        )
        if fusion is not None and temporal_fn is not None:
            box_shift, mask_shift = self._shift_losses(preds, proto, priors, targets, t, fusion, temporal_fn)
            num_clips = num_frames // 2
            losses["loss_box_shift"] = self.box_shift_weight * box_shift / num_clips
            losses["loss_mask_shift"] = self.mask_shift_weight * mask_shift / num_clips
        return losses

    def _mask_loss(
        self,
        mask_coeff: Tensor,
        proto: Tensor,
        pred_boxes: Tensor,
        t: dict[str, Tensor],
        pos_idx: Tensor,
        counts: list[int],
        w_pos: Tensor,
        targets: list[dict[str, Tensor]],
    ) -> Tensor:
        """``sum_f sum_a w_a l_a`` with the crop box = the 1.2x enlarged detached predicted box."""
        crop = center_size(pred_boxes.detach())
        crop = point_form(torch.cat([crop[:, :2], crop[:, 2:] * self.mask_crop_expand], dim=1))
        crop = crop.clamp(min=1e-5, max=1.0)
        coeffs = mask_coeff.reshape(-1, mask_coeff.shape[-1])[pos_idx]
        gt_index = t["idx_t"].reshape(-1)[pos_idx]
        total = _graph_zero(mask_coeff, proto)
        start = 0
        for f, n in enumerate(counts):
            if n == 0:
                continue
            sl = slice(start, start + n)
            start += n
            gt_masks = targets[f]["masks"][gt_index[sl]]
            per_anchor = mask_bce(proto[f], coeffs[sl], crop[sl], gt_masks, clamp_area=True)
            total = total + (w_pos[sl] * per_anchor).sum()
        return total

    def _shift_losses(
        self,
        preds: dict[str, Tensor],
        proto: Tensor,
        priors: Tensor,
        targets: list[dict[str, Tensor]],
        t: dict[str, Tensor],
        fusion: Tensor,
        temporal_fn: TemporalFn,
    ) -> tuple[Tensor, Tensor]:
        """Un-normalised ``sum_b mean_a`` box- and mask-shift losses over the B clips (§3.5.5)."""
        num_clips = preds["loc"].shape[0] // 2
        loc_ref = preds["loc"][0::2].detach()
        coeff_ref = preds["mask_coeff"][0::2].detach()
        proto_next = proto[1::2].detach()
        device = loc_ref.device

        rois, box_targets, sel_coeffs, next_index, batch_idx, counts = [], [], [], [], [], []
        for b in range(num_clips):
            ids_ref = t["ids_t"][2 * b]
            ids_next = targets[2 * b + 1]["ids"].to(device=device, dtype=torch.long)
            same = (ids_ref[:, None] == ids_next[None, :]) & (ids_ref[:, None] > 0)  # (N, n_next)
            sel = same.any(dim=1).nonzero().squeeze(1)
            k = same[sel].float().argmax(dim=1) if sel.numel() else sel  # first next GT with the id
            gt_ref = t["gt_box_t"][2 * b][sel]
            gt_next = targets[2 * b + 1]["boxes"][k]
            rois.append(decode(loc_ref[b][sel], priors[sel], self.variances))
            box_targets.append(encode(gt_next, center_size(gt_ref), self.variances))
            sel_coeffs.append(coeff_ref[b][sel])
            next_index.append(k)
            batch_idx.append(torch.full_like(sel, b))
            counts.append(sel.numel())

        rois = torch.cat(rois)
        batch_idx = torch.cat(batch_idx)
        delta_box, delta_coeff = temporal_fn(fusion, rois, batch_idx)
        zero = _graph_zero(fusion, delta_box, delta_coeff)

        box_l1 = F.smooth_l1_loss(
            delta_box.float(), torch.cat(box_targets).float(), reduction="none", beta=1.0
        ).sum(dim=1)
        per_clip = torch.zeros(num_clips, device=device, dtype=box_l1.dtype).index_add(0, batch_idx, box_l1)
        clip_counts = torch.tensor(counts, device=device, dtype=box_l1.dtype).clamp(min=1.0)
        box_loss = zero + (per_clip / clip_counts).sum()

        mask_loss = zero
        start = 0
        for b, n in enumerate(counts):
            if n == 0:
                continue
            sl = slice(start, start + n)
            start += n
            nxt = targets[2 * b + 1]
            coeffs = sel_coeffs[b] + delta_coeff[sl]
            k = next_index[b]
            per_anchor = mask_bce(proto_next[b], coeffs, nxt["boxes"][k], nxt["masks"][k], clamp_area=False)
            mask_loss = mask_loss + per_anchor.mean()
        return box_loss, mask_loss
