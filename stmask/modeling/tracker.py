"""STMask's tracker with temporal fusion (the authors' ``Track_TF``, spec stmask.md §4.5).

One tracker follows one video, frame by frame. Its memory holds every track as rows of stacked
tensors: box (normalised, in the latest frame), pre-tanh mask coefficients, soft mask at proto
resolution, embedding, class (1-based), score, centerness, ``tracked`` (frames since the last
matched detection) and id. Each frame, the memory is carried into the new frame by the temporal
fusion module (``shift_fn``), then the frame's detections claim tracks or start new ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from torch import Tensor

from vis_eval.video.tracker import mask_iou

from .box_ops import VARIANCES, box_iou, center_size, decode
from .inference import frame_masks

__all__ = ["ShiftFn", "STMaskTracker"]

# shift_fn(prev_frame, cur_frame, boxes (n, 4)) -> (delta_box (n, 4), delta_coeff (n, M))
ShiftFn = Callable[[dict, dict, Tensor], tuple[Tensor, Tensor]]

# Fields copied from a detection into the track it starts or claims.
_DET_FIELDS = ("boxes", "coeffs", "masks", "track", "classes", "scores", "centerness")
# The dummy "new object" column of the score matrix: (similarity, mask IoU, box IoU, same label).
_DUMMY = (0.5, 0.3, 0.3, 1.0)


class STMaskTracker:
    """Associates STMask's per-frame detections (:func:`~stmask.modeling.inference.detect_frame`) into
    tracks, carrying every track into each new frame with the temporal fusion module.

    Per frame (§4.5): the memory is propagated (``shift_fn`` gives box and coefficient deltas;
    box ``decode(delta, center_size(old box))``, coefficients ``+= delta``, mask from the current
    prototypes cropped by the new box, score ``*= score_decay``) and ``tracked += 1``. If the memory
    is empty, it becomes the frame's detections. Otherwise each detection takes the argmax of
    ``[dummy, tracks]`` of ``sim + c0 * score + c1 * maskIoU + c2 * boxIoU + c3 * [same class]``
    (``sim = (cos + 1) / 2``, binarised masks; dummy column 0.5 / 0.3 / 0.3 / 1); walking the
    detections in order, the dummy starts a new track, a track goes to its first claimant unless a
    later one has a strictly higher score, and losers are discarded. Tracks started in this frame
    cannot be claimed. Output: the tracks with ``tracked <= max_hidden``, more than one mask pixel
    above ``mask_thresh`` and score ``> score_thresh``.

    With ``max_age == 0`` (the authors) the memory is never pruned and ids are memory indices. With
    ``max_age > 0`` tracks unmatched for more than ``max_age`` frames are forgotten; ids still count
    up from 0 in order of creation and never change.
    """

    @configurable
    def __init__(
        self,
        *,
        match_coeffs: Sequence[float] = (0.0, 1.0, 2.0, 0.0),
        max_hidden: int = 10,
        score_decay: float = 0.95,
        score_thresh: float = 0.05,
        mask_thresh: float = 0.5,
        max_age: int = 0,
        variances: Sequence[float] = VARIANCES,
    ):
        if len(match_coeffs) != 4:
            raise ValueError(
                f"match_coeffs needs 4 weights (score, mask IoU, box IoU, label), got {match_coeffs}"
            )
        if max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {max_age}")
        self.match_coeffs = tuple(float(c) for c in match_coeffs)
        self.max_hidden = max_hidden
        self.score_decay = score_decay
        self.score_thresh = score_thresh
        self.mask_thresh = mask_thresh
        self.max_age = max_age
        self.variances = tuple(variances)
        self.reset()

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        node = cfg.MODEL.STMASK
        return {
            "match_coeffs": node.MATCH_COEFFS,
            "max_hidden": node.TRACK_MAX_HIDDEN,
            "score_decay": node.SCORE_DECAY,
            "score_thresh": node.SCORE_THRESH_TEST,
            "mask_thresh": node.MASK_THRESH,
            "max_age": node.TRACK_MAX_AGE,
            "variances": node.BOX_VARIANCES,
        }

    def reset(self) -> None:
        """Forget the video: empty memory, no stored frame, ids from 0."""
        self._memory: dict[str, Tensor] | None = None
        self._frame: dict | None = None
        self._next_id = 0

    @property
    def num_tracks(self) -> int:
        """Number of tracks in memory (hidden ones included)."""
        return 0 if self._memory is None else len(self._memory["ids"])

    def update(
        self, dets: dict[str, Tensor], frame: dict[str, Tensor], shift_fn: ShiftFn
    ) -> dict[str, Tensor]:
        """Process the next frame of the video.

        Args:
            dets: the frame's detections from ``detect_frame`` (``boxes``, ``classes``, ``scores``,
                ``coeffs``, ``track``, ``centerness``), sorted by descending score.
            frame: the frame's features, at least ``proto`` (Hp, Wp, M); stored and passed back to
                ``shift_fn`` as ``prev_frame`` at the next frame.
            shift_fn: ``(prev_frame, cur_frame, boxes (n, 4)) -> (delta_box (n, 4), delta_coeff
                (n, M))`` for the memory's boxes in ``prev_frame`` (the temporal fusion module).
        Returns:
            the output tracks, in memory order: ``boxes`` (n, 4) normalised, ``classes`` (n,)
            1-based, ``scores`` (n,), ``masks`` (n, Hp, Wp) soft, ``ids`` (n,) int64.
        """
        proto = frame["proto"]
        num_dets = len(dets["scores"])
        if num_dets > 0:
            dets = dict(dets, masks=frame_masks(proto, dets["coeffs"], dets["boxes"]))
        if self.num_tracks == 0:
            if num_dets > 0:
                self._memory = self._new_tracks(dets, torch.arange(num_dets, device=proto.device))
        else:
            self._propagate(frame, shift_fn)
            if num_dets > 0:
                self._associate(dets)
        if self.max_age > 0 and self._memory is not None:
            self._memory = _select(self._memory, self._memory["tracked"] <= self.max_age)
        self._frame = frame
        return self._output(proto)

    def _new_tracks(self, dets: dict[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
        """Tracks started by the detections ``rows``, with the next ids."""
        tracks = {k: dets[k][rows] for k in _DET_FIELDS}  # advanced indexing copies
        tracks["tracked"] = torch.zeros(len(rows), dtype=torch.int64, device=rows.device)
        tracks["ids"] = torch.arange(self._next_id, self._next_id + len(rows), device=rows.device)
        self._next_id += len(rows)
        return tracks

    def _propagate(self, frame: dict[str, Tensor], shift_fn: ShiftFn) -> None:
        """Carry every track from the stored frame into ``frame`` (the authors' CandidateShift)."""
        mem = self._memory
        delta_box, delta_coeff = shift_fn(self._frame, frame, mem["boxes"])
        boxes = decode(delta_box, center_size(mem["boxes"]), self.variances)
        coeffs = mem["coeffs"] + delta_coeff
        mem.update(
            boxes=boxes,
            coeffs=coeffs,
            masks=frame_masks(frame["proto"], coeffs, boxes),
            scores=mem["scores"] * self.score_decay,
            tracked=mem["tracked"] + 1,
        )

    def _match_scores(self, dets: dict[str, Tensor]) -> Tensor:
        """(n_det, 1 + n_mem) matching scores, column 0 the dummy "new object" column."""
        mem = self._memory
        n = len(dets["scores"])
        sim = (F.normalize(dets["track"], dim=1) @ F.normalize(mem["track"], dim=1).t() + 1) / 2
        miou = mask_iou(dets["masks"] > self.mask_thresh, mem["masks"] > self.mask_thresh).to(sim.dtype)
        biou = box_iou(dets["boxes"], mem["boxes"]).to(sim.dtype)
        same = (dets["classes"][:, None] == mem["classes"][None, :]).to(sim.dtype)
        terms = [
            torch.cat([sim.new_full((n, 1), d), t], dim=1) for d, t in zip(_DUMMY, (sim, miou, biou, same))
        ]
        c_score, c_mask, c_box, c_label = self.match_coeffs
        return (
            terms[0]
            + c_score * dets["scores"][:, None].to(sim.dtype)
            + c_mask * terms[1]
            + c_box * terms[2]
            + c_label * terms[3]
        )

    def _associate(self, dets: dict[str, Tensor]) -> None:
        """Detections claim propagated tracks or start new ones (sequential, in detection order)."""
        best = self._match_scores(dets).argmax(dim=1).tolist()
        scores = dets["scores"].tolist()
        claims: dict[int, int] = {}  # track row -> detection row
        new_rows = []
        for det, col in enumerate(best):
            if col == 0:
                new_rows.append(det)
            elif col - 1 not in claims or scores[det] > scores[claims[col - 1]]:
                claims[col - 1] = det  # a displaced claimant is discarded
        mem = self._memory
        device = mem["ids"].device
        if claims:
            tracks = torch.tensor(list(claims), dtype=torch.int64, device=device)
            rows = torch.tensor(list(claims.values()), dtype=torch.int64, device=device)
            for k in _DET_FIELDS:
                mem[k] = mem[k].index_put((tracks,), dets[k][rows])
            mem["tracked"] = mem["tracked"].index_fill(0, tracks, 0)
        if new_rows:
            new = self._new_tracks(dets, torch.tensor(new_rows, dtype=torch.int64, device=device))
            self._memory = {k: torch.cat([mem[k], new[k]]) for k in mem}

    def _output(self, proto: Tensor) -> dict[str, Tensor]:
        mem = self._memory
        if mem is None:
            return {
                "boxes": proto.new_zeros(0, 4),
                "classes": torch.zeros(0, dtype=torch.int64, device=proto.device),
                "scores": proto.new_zeros(0),
                "masks": proto.new_zeros(0, proto.shape[0], proto.shape[1]),
                "ids": torch.zeros(0, dtype=torch.int64, device=proto.device),
            }
        keep = (
            (mem["tracked"] <= self.max_hidden)
            & ((mem["masks"] > self.mask_thresh).flatten(1).sum(dim=1) > 1)
            & (mem["scores"] > self.score_thresh)
        )
        return {k: mem[k][keep] for k in ("boxes", "classes", "scores", "masks", "ids")}


def _select(tracks: dict[str, Tensor], keep: Tensor) -> dict[str, Tensor]:
    return {k: v[keep] for k, v in tracks.items()}
