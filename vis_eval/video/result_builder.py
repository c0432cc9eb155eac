"""Per-video YouTube-VIS result records built frame by frame from tracked ``Instances``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from detectron2.structures import Instances

from ..rle import encode_masks
from .tracker import binary_masks

__all__ = ["VideoResultBuilder"]


@dataclass
class _TrackRecord:
    score_sum: float = 0.0
    labels: Counter = field(default_factory=Counter)
    rles: dict[int, dict] = field(default_factory=dict)  # frame index -> compressed RLE


class VideoResultBuilder:
    """Accumulates tracked frames of one video into YouTube-VIS result records.

    Memory is O(number of output masks) in small RLE strings; masks are encoded on arrival.
    """

    def __init__(self, height: int | None = None, width: int | None = None):
        self.height, self.width = height, width
        self.num_frames = 0
        self._tracks: dict[int, _TrackRecord] = {}

    def add(self, frame_index: int, instances: Instances) -> None:
        """Add frame ``frame_index`` (frames must come in order): Instances with ``ID`` (N ints),
        ``scores`` (N,), ``pred_classes`` (N,) (contiguous) and ``pred_masks`` (N, H, W) at the frame
        size (bool, integer or soft masks, thresholded at 0.5)."""
        if frame_index != self.num_frames:
            raise ValueError(f"frames must be added in order: expected {self.num_frames}, got {frame_index}")
        self.num_frames += 1
        if self.height is None:
            self.height, self.width = instances.image_size
        if tuple(instances.image_size) != (self.height, self.width):
            raise ValueError(
                f"frame {frame_index} has size {tuple(instances.image_size)}, the video {(self.height, self.width)}"
            )
        if len(instances) == 0:
            return
        for name in ("ID", "scores", "pred_classes", "pred_masks"):
            if not instances.has(name):
                raise KeyError(
                    f"frame {frame_index}: tracked instances lack {name!r} (have {list(instances.get_fields())})"
                )
        if tuple(instances.pred_masks.shape[1:]) != (self.height, self.width):
            raise ValueError(
                f"frame {frame_index}: masks of size {tuple(instances.pred_masks.shape[1:])} for a "
                f"{self.height}x{self.width} video; models must return masks at the input's height/width"
            )
        ids = instances.ID.tolist() if isinstance(instances.ID, torch.Tensor) else list(instances.ID)
        if (
            not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
            or len(set(ids)) != len(ids)
            or min(ids) < 0
        ):
            raise ValueError(f"frame {frame_index}: track ids (ID) must be unique ints >= 0, got {ids}")
        rles = encode_masks(binary_masks(torch.as_tensor(instances.pred_masks)))
        for track_id, score, label, rle in zip(
            ids, instances.scores.tolist(), instances.pred_classes.tolist(), rles
        ):
            record = self._tracks.get(track_id)
            if record is None:
                record = self._tracks[track_id] = _TrackRecord()
            record.score_sum += score
            record.labels[label] += 1
            record.rles[frame_index] = rle

    @property
    def num_tracks(self) -> int:
        return len(self._tracks)

    def results(
        self, video_id: int, category_map: dict[int, int] | None = None, num_frames: int | None = None
    ) -> list[dict]:
        """One record per track, in track-id order: ``{"video_id", "category_id", "score",
        "segmentations"}``. ``score`` = mean per-frame score; ``category_id`` = the most frequent
        per-frame label (ties: smallest), mapped through ``category_map`` (contiguous -> dataset id;
        identity if None); ``segmentations`` has ``num_frames`` (default: frames added) entries."""
        num_frames = self.num_frames if num_frames is None else num_frames
        if num_frames < self.num_frames:
            raise ValueError(f"num_frames={num_frames} < {self.num_frames} frames added")
        out = []
        for track_id in sorted(self._tracks):
            record = self._tracks[track_id]
            top = max(record.labels.values())
            label = min(k for k, v in record.labels.items() if v == top)
            if category_map is not None and label not in category_map:
                raise KeyError(f"predicted class {label} has no dataset id in {category_map}")
            segmentations = [record.rles.get(t) for t in range(num_frames)]
            out.append(
                {
                    "video_id": video_id,
                    "category_id": category_map[label] if category_map is not None else label,
                    "score": record.score_sum / len(record.rles),
                    "segmentations": segmentations,
                }
            )
        return out
