"""SipMask-VIS tracking branch (spec sipmask_vis.md §3-4.3, §6): the tracking head, box-centre
embeddings, the matching loss and the online association with its per-video memory.

Module names follow the authors' checkpoint keys (``track_convs.{i}.conv``, ``sipmask_track``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes, Instances, pairwise_iou
from torch import Tensor, nn

from onestage.inference import runs_inference_copy

from .head import ConvModule, SipMaskHead

__all__ = [
    "EmbeddingTracker",
    "SipMaskTrackHead",
    "embeddings_at",
    "jittered_centres",
    "match_logits",
]


class SipMaskTrackHead(SipMaskHead):
    """:class:`SipMaskHead` plus the tracking map (§3.1): ``track_convs`` (shared over P3-P5, on the
    raw FPN features) -> upsampled to P3 -> concatenated -> ``sipmask_track`` (1x1, no activation).

    ``forward`` adds ``"track"``: (N, D, H_3, W_3) to the image head's outputs. Inference runs the
    head's prepared copy (:mod:`onestage.inference`), tracking branch included.
    """

    @configurable
    def __init__(self, *, track_dim: int = 512, track_num_convs: int = 2, **kwargs):
        super().__init__(**kwargs)
        channels = kwargs["input_shape"][0].channels
        norm = kwargs.get("norm", "GN")
        bias = kwargs.get("tower_conv_bias", False) or not norm
        self.track_convs = nn.ModuleList(
            [
                ConvModule(channels, channels, 3, padding=1, norm=norm, bias=bias)
                for _ in range(track_num_convs)
            ]
        )
        # sipmask_track keeps PyTorch's default init (the authors' head does not re-initialise it)
        self.sipmask_track = nn.Conv2d(3 * channels, track_dim, 1)
        for m in self.track_convs:
            nn.init.normal_(m.conv.weight, std=0.01)
            if m.conv.bias is not None:
                nn.init.zeros_(m.conv.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: list[ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        ret["track_dim"] = cfg.MODEL.SIPMASK.TRACK_DIM
        ret["track_num_convs"] = cfg.MODEL.SIPMASK.TRACK_NUM_CONVS
        return ret

    @runs_inference_copy  # the tracking branch too runs on the prepared copy at inference
    def forward(self, features: list[Tensor]) -> dict[str, list[Tensor] | Tensor]:
        out = super().forward(features)
        out["track"] = self.track_map(features[:3])
        return out

    def track_map(self, features: list[Tensor]) -> Tensor:
        """[P3, P4, P5] (N, C, H_l, W_l) -> tracking map (N, D, H_3, W_3)."""
        outs = []
        for x in features[:3]:
            for layer in self.track_convs:
                x = layer(x)
            outs.append(x)
        h, w = outs[0].shape[-2:]
        outs = [F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False) for x in outs]
        return self.sipmask_track(torch.cat(outs, dim=1))


def embeddings_at(track_map: Tensor, centres: Tensor, stride: int) -> Tensor:
    """Embeddings ``Tr[:, floor(cy / stride), floor(cx / stride)]`` (§3.2).

    Indices are clamped to the map (the authors' code wraps negative ones and crashes on too large
    ones, spec §4.3 / §11.4).

    Args:
        track_map: (D, H, W); centres: (N, 2) ``(cx, cy)`` in input pixels.
    Returns:
        (N, D).
    """
    _, h, w = track_map.shape
    idx = torch.floor(centres.float() / stride).long()
    x = idx[:, 0].clamp(0, w - 1)
    y = idx[:, 1].clamp(0, h - 1)
    return track_map[:, y, x].t()


def box_centres(boxes: Tensor) -> Tensor:
    """(N, 4) ``(x1, y1, x2, y2)`` -> (N, 2) ``((x1 + x2) / 2, (y1 + y2) / 2)``."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def jittered_centres(boxes: Tensor, amount: float, generator: torch.Generator | None = None) -> Tensor:
    """Centres of reference boxes moved by ``(w, h) * U(-amount, amount)^2`` (§4.3 step 2; the size
    jitter of the authors has no effect on the centre and is not drawn). (N, 4) -> (N, 2)."""
    wh = boxes[:, 2:] - boxes[:, :2]
    u = torch.rand(boxes.shape[0], 2, generator=generator, device=boxes.device) * (2 * amount) - amount
    return box_centres(boxes) + wh * u


def match_logits(query: Tensor, reference: Tensor) -> Tensor:
    """``[0, q . r_1, ..., q . r_K]`` per query: (P, D), (K, D) -> (P, 1 + K); column 0 = "new"."""
    dots = query @ reference.t()
    return torch.cat([dots.new_zeros((dots.shape[0], 1)), dots], dim=1)


class EmbeddingTracker:
    """Online association of SipMask-VIS / MaskTrack R-CNN (§6).

    Memory per instance: embedding, box, label (never updated, §6.4), id and the frame it was last
    matched. For detection ``j`` and column ``k`` (0 = new object)::

        Comp[j, k] = log_softmax([0, e_j . E_m])[k] + c0 ln(s_j) + c1 IoU(B_j, Bm_k) + c2 [c_j == C_k]

    with IoU 0 and the label term 1 for the dummy column. Each detection takes its argmax column;
    for each memory instance only the detection with the highest ``Comp`` (> -100, earliest on ties)
    is output and replaces the instance's embedding and box; other detections claiming it are
    dropped; detections taking column 0 become new instances (ids in detection order).

    Memory: with ``max_age = 0`` (the authors') entries are never dropped, so the state grows with
    the number of distinct instances of the video (at most ``max_dets`` new ones per frame); with
    ``max_age > 0`` an entry unmatched for more than ``max_age`` frames is dropped (its id is not
    reused), bounding the state by the live instances.

    Reset: :meth:`reset` empties the memory, unless ``legacy_first_frame``: then, as the authors'
    code, the memory is only replaced at the first frame *with detections* if that is the video's
    first frame; a video whose first frame has no detection matches against the previous video's
    memory (§6.2).
    """

    def __init__(
        self,
        match_coeffs: tuple[float, float, float] = (1.0, 2.0, 10.0),
        legacy_first_frame: bool = False,
        max_age: int = 0,
    ):
        if len(match_coeffs) != 3:
            raise ValueError(f"MATCH_COEFFS needs 3 weights (score, IoU, label), got {list(match_coeffs)}")
        if max_age < 0:
            raise ValueError(f"TRACK_MAX_AGE must be >= 0, got {max_age}")
        self.match_coeffs = tuple(float(c) for c in match_coeffs)
        self.legacy_first_frame = legacy_first_frame
        self.max_age = max_age
        self._clear()
        self.is_first = True

    def _clear(self) -> None:
        self.embeddings: Tensor | None = None  # (M, D)
        self.boxes: Tensor | None = None  # (M, 4)
        self.labels: Tensor | None = None  # (M,)
        self.ids: Tensor | None = None  # (M,) int64
        self.last_seen: Tensor | None = None  # (M,) int64 frame counter
        self.next_id = 0
        self.frame = -1

    def __len__(self) -> int:
        return 0 if self.ids is None else int(self.ids.numel())

    def reset(self) -> None:
        """Start a new video."""
        if not self.legacy_first_frame:
            self._clear()
        self.is_first = True

    def update(self, instances: Instances, embeddings: Tensor) -> Instances:
        """Associate one frame's detections (score order) with the memory.

        Args:
            instances: ``pred_boxes``, ``scores``, ``pred_classes`` (N detections).
            embeddings: (N, D).
        Returns:
            the output detections (a subset, in detection order) with ``ID`` (list of ints).
        """
        if len(instances) != embeddings.shape[0]:
            raise ValueError(f"{len(instances)} detections but {embeddings.shape[0]} embeddings")
        self.frame += 1
        n = len(instances)
        if n == 0:  # nothing to output; the memory is left as it is (§6.2)
            self.is_first = False
            out = instances[torch.zeros(0, dtype=torch.long)]
            out.ID = []
            return out
        boxes = instances.pred_boxes.tensor.detach()
        labels = instances.pred_classes.detach()
        embeddings = embeddings.detach()
        if self.is_first:
            self._clear()
            self.frame = 0
        self.is_first = False
        if len(self) == 0:
            rows = torch.arange(n, device=boxes.device)
            new_rows, matched = rows, {}
        else:
            comp = self.comp(embeddings, boxes, instances.scores.detach(), labels)
            best_values, best_columns = comp.max(dim=1)
            best, values = best_columns.tolist(), best_values.tolist()
            matched: dict[int, tuple[float, int]] = {}  # memory row -> (Comp, detection)
            new = []
            for j, (k, v) in enumerate(zip(best, values)):
                if k == 0:
                    new.append(j)
                elif v > matched.get(k - 1, (-100.0, -1))[0]:  # strictly greater: earliest on ties
                    matched[k - 1] = (v, j)
            new_rows = torch.tensor(new, dtype=torch.long, device=boxes.device)
        # matched instances: replace embedding and box (not the label), refresh last_seen
        det_ids = {}
        if matched:
            mem = torch.tensor(list(matched), dtype=torch.long, device=boxes.device)
            dets = torch.tensor([j for _, j in matched.values()], dtype=torch.long, device=boxes.device)
            self.embeddings[mem] = embeddings[dets]
            self.boxes[mem] = boxes[dets]
            self.last_seen[mem] = self.frame
            det_ids = dict(zip(dets.tolist(), self.ids[mem].tolist()))
        # new instances, in detection order (separate copies of the tensors, spec §11.15)
        k = new_rows.numel()
        new_ids = torch.arange(self.next_id, self.next_id + k, dtype=torch.long, device=boxes.device)
        det_ids.update(zip(new_rows.tolist(), new_ids.tolist()))
        self.next_id += k
        self._append(embeddings[new_rows], boxes[new_rows], labels[new_rows], new_ids)
        self._prune()
        keep = sorted(det_ids)
        out = instances[torch.tensor(keep, dtype=torch.long, device=boxes.device)]
        out.ID = [int(det_ids[j]) for j in keep]
        return out

    def comp(self, embeddings: Tensor, boxes: Tensor, scores: Tensor, labels: Tensor) -> Tensor:
        """``Comp`` (N, 1 + M) of the detections against the memory (column 0: new object)."""
        c_score, c_iou, c_label = self.match_coeffs
        appearance = F.log_softmax(match_logits(embeddings.float(), self.embeddings.float()), dim=1)
        iou = pairwise_iou(Boxes(boxes.float()), Boxes(self.boxes.float()))
        same = (labels[:, None] == self.labels[None, :]).float()
        ones = same.new_ones((same.shape[0], 1))
        iou = torch.cat([torch.zeros_like(ones), iou], dim=1)
        same = torch.cat([ones, same], dim=1)
        return appearance + c_score * torch.log(scores.float())[:, None] + c_iou * iou + c_label * same

    def _append(self, embeddings: Tensor, boxes: Tensor, labels: Tensor, ids: Tensor) -> None:
        seen = torch.full_like(ids, self.frame)
        if len(self) == 0:
            self.embeddings, self.boxes = embeddings.clone(), boxes.clone()
            self.labels, self.ids, self.last_seen = labels.clone(), ids, seen
            return
        self.embeddings = torch.cat([self.embeddings, embeddings])
        self.boxes = torch.cat([self.boxes, boxes])
        self.labels = torch.cat([self.labels, labels])
        self.ids = torch.cat([self.ids, ids])
        self.last_seen = torch.cat([self.last_seen, seen])

    def _prune(self) -> None:
        if self.max_age <= 0 or len(self) == 0:
            return
        alive = self.frame - self.last_seen <= self.max_age
        if bool(alive.all()):
            return
        self.embeddings, self.boxes = self.embeddings[alive], self.boxes[alive]
        self.labels, self.ids, self.last_seen = self.labels[alive], self.ids[alive], self.last_seen[alive]
