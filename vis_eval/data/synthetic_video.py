"""Synthetic YouTube-VIS-format video data: moving, scaling, rotating and occluding shapes.

Datasets (registered by :func:`register_synthetic_vis`, generated on first use under
``$DETECTRON2_DATASETS/synthetic_vis/<version>/``, default ``./datasets``):

* ``synthetic_vis_train``: 200 videos, ``synthetic_vis_val``: 24 videos, ``synthetic_vis_tiny``: 4 videos;
* 128 x 160 (H x W) RGB JPEG frames, 8-16 frames per video, 1-5 tracked shapes per video drawn with
  the same renderer (:mod:`vis_eval.data.shapes`) as the synthetic images: 3 classes, extents 16-56 px;
* every track moves with a constant velocity (towards the centre region, so that tracks cross),
  scales and rotates a little per frame and keeps its paint order (so tracks occlude one another);
  it may enter after the first frame, leave before the last one, or vanish for 1-3 frames in
  between (as if behind the scenery). A track is absent (``null`` in its per-frame lists) in the
  frames where it is not drawn or where no pixel of it is visible (fully occluded or outside);
* annotations are the *visible* masks as uncompressed RLE (as in the official train JSONs), with
  per-frame ``bboxes`` and ``areas``; every video is a pure function of ``(split seed, video index)``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..progress import ProgressLogger
from ..rle import mask_to_uncompressed_rle
from .shapes import Shape, mask_bbox, paint, random_shape, render_background
from .synthetic import datasets_root, ensure_split, register_generated_splits, shape_categories
from .ytvis import load_ytvis_json

VERSION = "v1"
_IMAGE_SUBDIR = "JPEGImages"  # frames under <split>/JPEGImages/<video>/, as in YouTube-VIS


@dataclass(frozen=True)
class VideoSplitSpec:
    num_videos: int
    seed: int


@dataclass(frozen=True)
class VideoSceneSpec:
    height: int = 128
    width: int = 160
    min_frames: int = 8
    max_frames: int = 16
    min_tracks: int = 1
    max_tracks: int = 5
    min_extent: float = 16.0
    max_extent: float = 56.0
    max_speed: float = 4.0  # pixels per frame
    max_log_scale_rate: float = 0.04  # |log(size ratio)| per frame
    max_rotation_rate: float = 0.12  # radians per frame
    late_entry_prob: float = 0.4  # a track enters after frame 0 with this probability
    early_exit_prob: float = 0.4  # a track leaves before the last frame with this probability
    gap_prob: float = 0.3  # a track is hidden for 1-3 frames inside its lifetime with this probability
    min_lifetime: int = 3  # frames
    jpeg_quality: int = 95


SPLITS: dict[str, VideoSplitSpec] = {
    "train": VideoSplitSpec(200, seed=10),
    "val": VideoSplitSpec(24, seed=11),
    "tiny": VideoSplitSpec(4, seed=12),
}
SCENE = VideoSceneSpec()


def dataset_dir(root: Path | None = None) -> Path:
    return (root or datasets_root()) / "synthetic_vis" / VERSION


@dataclass(frozen=True)
class Track:
    """A shape's trajectory: ``start`` shape at frame ``enter``, present in frames [enter, leave) except
    the hidden frames [gap_start, gap_end) (an empty gap if equal)."""

    start: Shape
    velocity: tuple[float, float]
    log_scale_rate: float
    rotation_rate: float
    enter: int
    leave: int
    gap_start: int = 0
    gap_end: int = 0

    def at(self, frame: int) -> Shape | None:
        """The shape at ``frame`` (None outside the track's lifetime)."""
        if not self.enter <= frame < self.leave or self.gap_start <= frame < self.gap_end:
            return None
        dt = frame - self.enter
        return self.start.moved(
            dx=self.velocity[0] * dt,
            dy=self.velocity[1] * dt,
            scale=float(np.exp(self.log_scale_rate * dt)),
            rotate=self.rotation_rate * dt,
        )


def sample_tracks(rng: np.random.Generator, num_frames: int, scene: VideoSceneSpec = SCENE) -> list[Track]:
    """Random tracks in paint order (later tracks occlude earlier ones)."""
    tracks = []
    for _ in range(int(rng.integers(scene.min_tracks, scene.max_tracks + 1))):
        lifetime = max(1, min(scene.min_lifetime, num_frames))
        enter = 0
        if rng.random() < scene.late_entry_prob:
            enter = int(rng.integers(0, num_frames - lifetime + 1))
        leave = num_frames
        if rng.random() < scene.early_exit_prob:
            leave = int(rng.integers(enter + lifetime, num_frames + 1))
        gap_start = gap_end = 0
        if leave - enter >= 4 and rng.random() < scene.gap_prob:
            gap_start = int(rng.integers(enter + 1, leave - 2))
            gap_end = gap_start + int(rng.integers(1, min(3, leave - 1 - gap_start) + 1))
        start = random_shape(rng, scene.height, scene.width, scene.min_extent, scene.max_extent)
        # Head for a random point of the central region, so that tracks cross and occlude each other.
        target = rng.uniform(0.25, 0.75, size=2) * (scene.width, scene.height)
        direction = target - (start.cx, start.cy)
        direction /= max(float(np.hypot(*direction)), 1e-6)
        speed = float(rng.uniform(0.25, 1.0)) * scene.max_speed
        tracks.append(
            Track(
                start=start,
                velocity=(float(direction[0] * speed), float(direction[1] * speed)),
                log_scale_rate=float(rng.uniform(-scene.max_log_scale_rate, scene.max_log_scale_rate)),
                rotation_rate=float(rng.uniform(-scene.max_rotation_rate, scene.max_rotation_rate)),
                enter=enter,
                leave=leave,
                gap_start=gap_start,
                gap_end=gap_end,
            )
        )
    return tracks


def render_video(
    seed: int, index: int, scene: VideoSceneSpec = SCENE
) -> tuple[list[np.ndarray], list[Track], np.ndarray]:
    """One synthetic video.

    Returns:
        frames: T uint8 RGB (H, W, 3) images;
        tracks: the N tracks in paint order;
        visible: bool (N, T, H, W) visible mask of every track in every frame (all False when absent).
    """
    rng = np.random.default_rng([seed, index])
    num_frames = int(rng.integers(scene.min_frames, scene.max_frames + 1))
    background = render_background(rng, scene.height, scene.width)
    tracks = sample_tracks(rng, num_frames, scene)
    visible = np.zeros((len(tracks), num_frames, scene.height, scene.width), dtype=bool)
    frames = []
    for t in range(num_frames):
        image = background.copy()
        present = [(k, shape) for k, track in enumerate(tracks) if (shape := track.at(t)) is not None]
        masks = paint(image, [shape for _, shape in present])
        for (k, _), mask in zip(present, masks):
            visible[k, t] = mask
        frames.append(image)
    return frames, tracks, visible


def write_split(out_dir: Path, split: str, spec: VideoSplitSpec, scene: VideoSceneSpec = SCENE) -> None:
    """Write ``out_dir/<split>/JPEGImages/<video>/<frame>.jpg`` and ``out_dir/<split>.json``."""
    videos, annotations = [], []
    progress = ProgressLogger(
        logging.getLogger(__name__), f"synthetic_vis_{split}", spec.num_videos, "videos"
    )
    for index in range(spec.num_videos):
        progress.step()
        frames, tracks, visible = render_video(spec.seed, index, scene)
        folder = f"video_{index:05d}"
        (out_dir / split / _IMAGE_SUBDIR / folder).mkdir(parents=True, exist_ok=True)
        # Frame numbers step by 5 as in YouTube-VIS (every 5th raw frame is annotated).
        file_names = [f"{folder}/{5 * t:05d}.jpg" for t in range(len(frames))]
        for name, frame in zip(file_names, frames):
            path = out_dir / split / _IMAGE_SUBDIR / name
            cv2.imwrite(str(path), frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, scene.jpeg_quality])
        video_id = index + 1
        videos.append(
            {
                "id": video_id,
                "file_names": file_names,
                "length": len(frames),
                "height": scene.height,
                "width": scene.width,
            }
        )
        for track, masks in zip(tracks, visible):
            areas = masks.sum(axis=(1, 2))
            if not areas.any():  # never visible: not an object of this video
                continue
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": video_id,
                    "category_id": track.start.category + 1,
                    "iscrowd": 0,
                    "segmentations": [
                        mask_to_uncompressed_rle(m) if a else None for m, a in zip(masks, areas)
                    ],
                    "bboxes": [mask_bbox(m) if a else None for m, a in zip(masks, areas)],
                    "areas": [int(a) if a else None for a in areas],
                    "height": scene.height,
                    "width": scene.width,
                    "length": len(frames),
                }
            )
    data = {"info": {"description": f"synthetic_vis {split}"}, "licenses": []}
    data.update(videos=videos, annotations=annotations, categories=shape_categories())
    (out_dir / f"{split}.json").write_text(json.dumps(data))


def ensure_generated(split: str, base: Path | None = None) -> tuple[Path, Path]:
    """Generate ``split`` under ``base`` (default :func:`dataset_dir`) if absent; return
    (json file, image root)."""
    return ensure_split("synthetic_vis", base or dataset_dir(), split, SPLITS, write_split, _IMAGE_SUBDIR)


def register_synthetic_vis(root: Path | None = None) -> None:
    """Register ``synthetic_vis_{train,val,tiny}`` under ``root`` (default ``$DETECTRON2_DATASETS``);
    the files are generated when a dataset is first loaded. Names already registered are skipped."""
    register_generated_splits(
        "synthetic_vis", dataset_dir(root), SPLITS, write_split, load_ytvis_json, "ytvis", _IMAGE_SUBDIR
    )
