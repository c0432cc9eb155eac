"""Streaming video inference: frames in one at a time, tracked per-frame ``Instances`` out.

* :func:`iter_frames` reads frames (BGR uint8 (H, W, 3)) lazily from a list of images or paths, a
  folder of images, a video file or a webcam.
* :class:`VideoRunner` runs an image-level model (a Detectron2 ``nn.Module`` or a callable predictor
  such as ``DefaultPredictor``) on each frame, then an :class:`~vis_eval.tracker.Associator`, and
  yields :class:`TrackedFrame` (frame index, image, CPU ``Instances`` with ``pred_ids``).
* :class:`VideoResultBuilder` turns tracked frames into YouTube-VIS results (one record per track:
  mean score, majority class, per-frame compressed RLE or ``None``); masks are RLE-encoded as they
  arrive, so nothing of size (T, H, W) is ever held and memory stays flat in the number of frames.
* :func:`evaluate_video_dataset` runs a whole registered video dataset through the runner and the
  YouTube-VIS evaluator (used by ``train_net.py`` for datasets with ``evaluator_type == "ytvis"``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.evaluation.evaluator import inference_context
from detectron2.structures import Instances
from detectron2.utils import comm

from .tracker import Associator, binary_masks, build_associator

__all__ = [
    "IMAGE_EXTENSIONS",
    "TrackedFrame",
    "VideoResultBuilder",
    "VideoRunner",
    "annotate_frame",
    "encode_masks",
    "evaluate_video_dataset",
    "frames_from_video",
    "iter_frames",
    "run_video",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
FrameSource = str | Path | int | Iterable[Any]


# ----------------------------------------------------------------------------- frame sources
def _read_image(path: str | Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"frame not found: {path}")
        raise ValueError(f"cannot decode image {path}")
    return image


def _check_frame(frame: Any, index: int) -> np.ndarray:
    if isinstance(frame, str | Path):
        return _read_image(frame)
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        desc = f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray) else type(frame)
        raise ValueError(f"frame {index}: expected a path or a uint8 (H, W, 3) BGR array, got {desc}")
    return frame


def _iter_capture(capture: cv2.VideoCapture, name: str, require_frames: bool) -> Iterator[np.ndarray]:
    if not capture.isOpened():
        raise OSError(f"cannot open video source {name}")
    try:
        count = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            yield frame
        if require_frames and count == 0:
            raise ValueError(f"video {name} has no readable frames")
    finally:
        capture.release()


def iter_frames(source: FrameSource) -> Iterator[np.ndarray]:
    """Lazily yield BGR uint8 (H, W, 3) frames from ``source``.

    ``source`` is one of: a folder (its images, sorted by name); a video file; an image file (one
    frame); an int or a digit string (webcam index, read until the stream ends); or an iterable of
    BGR uint8 (H, W, 3) arrays and/or image paths (a list, a generator, ...).
    """
    if isinstance(source, bool):
        raise TypeError("frame source must not be a bool")
    if isinstance(source, int) or (
        isinstance(source, str) and source.isdigit() and not Path(source).exists()
    ):
        yield from _iter_capture(cv2.VideoCapture(int(source)), f"webcam {source}", require_frames=False)
        return
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}")
            for file in files:
                yield _read_image(file)
            return
        if not path.is_file():
            raise FileNotFoundError(f"frame source not found: {path}")
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            yield _read_image(path)
            return
        yield from _iter_capture(cv2.VideoCapture(str(path)), str(path), require_frames=True)
        return
    if isinstance(source, np.ndarray) and source.ndim != 4:
        raise ValueError(f"an array source must be (T, H, W, 3), got shape {source.shape}")
    if not isinstance(source, Iterable):
        raise TypeError(f"unsupported frame source {type(source).__name__}")
    for index, frame in enumerate(source):
        yield _check_frame(frame, index)


# ----------------------------------------------------------------------------- per-video results
def encode_masks(masks: torch.Tensor | np.ndarray) -> list[dict]:
    """Bool/soft masks (N, H, W) -> N compressed RLEs ``{"size": [H, W], "counts": str}``."""
    masks = binary_masks(torch.as_tensor(masks)).cpu().numpy()
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    if len(masks) == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


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
        """Add frame ``frame_index`` (frames must come in order): Instances with ``pred_ids``,
        ``scores``, ``pred_classes`` (contiguous) and ``pred_masks`` (N, H, W) at the frame size."""
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
        for name in ("pred_ids", "scores", "pred_classes", "pred_masks"):
            if not instances.has(name):
                raise KeyError(
                    f"frame {frame_index}: tracked instances lack {name!r} (have {list(instances.get_fields())})"
                )
        if tuple(instances.pred_masks.shape[1:]) != (self.height, self.width):
            raise ValueError(
                f"frame {frame_index}: masks of size {tuple(instances.pred_masks.shape[1:])} for a "
                f"{self.height}x{self.width} video; models must return masks at the input's height/width"
            )
        ids = instances.pred_ids.tolist()
        if len(set(ids)) != len(ids) or min(ids) < 0:
            raise ValueError(f"frame {frame_index}: track ids must be unique and >= 0, got {ids}")
        rles = encode_masks(instances.pred_masks)
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


# ----------------------------------------------------------------------------- the runner
@dataclass
class TrackedFrame:
    """One processed frame: ``index`` in the video, the BGR uint8 (H, W, 3) ``image`` and the tracked
    CPU ``instances`` (``pred_ids`` plus the model's fields)."""

    index: int
    image: np.ndarray
    instances: Instances


def _model_module(model: torch.nn.Module | Callable) -> torch.nn.Module | Callable:
    """The ``nn.Module`` behind ``model`` (e.g. ``DefaultPredictor.model``), else ``model`` itself."""
    return model if isinstance(model, torch.nn.Module) else getattr(model, "model", model)


class _ModulePredictor:
    """BGR frame -> model output dict, with the model's test-time resize (like ``DefaultPredictor``
    without building or loading the model)."""

    def __init__(self, model: torch.nn.Module, input_format: str, min_size: int, max_size: int):
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"input_format must be RGB or BGR, got {input_format!r}")
        self.model = model
        self.input_format = input_format
        self.resize = T.ResizeShortestEdge([min_size, min_size], max_size)

    def __call__(self, frame: np.ndarray) -> dict[str, Any]:
        height, width = frame.shape[:2]
        image = frame[:, :, ::-1] if self.input_format == "RGB" else frame
        image = self.resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)).astype("float32"))
        return self.model([{"image": tensor, "height": height, "width": width}])[0]


class VideoRunner:
    """Streams frames through a model and an associator.

    Args:
        model: a Detectron2 meta-architecture (inputs ``[{"image", "height", "width"}]``, outputs
            ``[{"instances": Instances}]`` at the input height/width), or any callable mapping a BGR
            uint8 (H, W, 3) frame to such an output dict (e.g. ``DefaultPredictor``).
        associator: the per-video tracker; see :mod:`vis_eval.tracker`.
        input_format, min_size_test, max_size_test: preprocessing for an ``nn.Module`` model.
    """

    def __init__(
        self,
        model: torch.nn.Module | Callable[[np.ndarray], dict[str, Any]],
        associator: Associator,
        *,
        input_format: str = "BGR",
        min_size_test: int = 800,
        max_size_test: int = 1333,
    ):
        if not isinstance(associator, Associator):
            raise TypeError(f"associator must be an Associator, got {type(associator).__name__}")
        self.model = model
        self.associator = associator
        if isinstance(model, torch.nn.Module):
            self._predict = _ModulePredictor(model, input_format, min_size_test, max_size_test)
        elif callable(model):
            self._predict = model
        else:
            raise TypeError(f"model must be an nn.Module or a callable predictor, got {type(model).__name__}")

    @classmethod
    def from_config(
        cls, cfg: CfgNode, model: torch.nn.Module | Callable, associator: Associator | None = None
    ) -> VideoRunner:
        """Preprocessing from ``cfg.INPUT``; associator from :func:`build_associator` if not given."""
        if associator is None:
            associator = build_associator(cfg, _model_module(model))
        return cls(
            model,
            associator,
            input_format=cfg.INPUT.FORMAT,
            min_size_test=cfg.INPUT.MIN_SIZE_TEST,
            max_size_test=cfg.INPUT.MAX_SIZE_TEST,
        )

    def stream(
        self,
        source: FrameSource,
        *,
        builder: VideoResultBuilder | None = None,
        frame_size: tuple[int, int] | None = None,
    ) -> Iterator[TrackedFrame]:
        """Process a new video frame by frame (the associator is reset first).

        Each yielded frame is added to ``builder`` (if given) before it is yielded. ``frame_size``
        (H, W), if given, is checked against every frame.
        """
        self.associator.reset()
        module = self.model if isinstance(self.model, torch.nn.Module) else None
        # Eval mode for the whole video; grad mode is switched per frame so that it does not leak
        # into the consumer's code while the generator is suspended.
        with inference_context(module) if module is not None else nullcontext():
            for index, frame in enumerate(iter_frames(source)):
                if frame_size is not None and tuple(frame.shape[:2]) != tuple(frame_size):
                    raise ValueError(
                        f"frame {index} has size {frame.shape[:2]}, expected {tuple(frame_size)}"
                    )
                with torch.no_grad():
                    tracked = self._track(index, frame)
                if builder is not None:
                    builder.add(index, tracked)
                yield TrackedFrame(index, frame, tracked)

    def _track(self, index: int, frame: np.ndarray) -> Instances:
        output = self._predict(frame)
        if not isinstance(output, dict) or "instances" not in output:
            raise TypeError(f"frame {index}: the model must return a dict with 'instances'")
        if tuple(output["instances"].image_size) != tuple(frame.shape[:2]):
            raise ValueError(
                f"frame {index}: instances of size {output['instances'].image_size} for a frame of "
                f"size {frame.shape[:2]}; the model must return results at the input height/width"
            )
        tracked = self.associator(output)
        if not isinstance(tracked, Instances) or not tracked.has("pred_ids"):
            raise TypeError(f"{type(self.associator).__name__} must return Instances with pred_ids")
        return tracked.to("cpu")

    def run_video(
        self,
        source: FrameSource,
        video_id: int,
        *,
        category_map: dict[int, int] | None = None,
        frame_size: tuple[int, int] | None = None,
        num_frames: int | None = None,
    ) -> list[dict]:
        """Process one whole video; return its YouTube-VIS result records (see
        :meth:`VideoResultBuilder.results`). No frame or mask is kept after it is encoded."""
        builder = VideoResultBuilder(*(frame_size or (None, None)))
        for _ in self.stream(source, builder=builder, frame_size=frame_size):
            pass
        if num_frames is not None and builder.num_frames != num_frames:
            raise ValueError(f"video {video_id}: read {builder.num_frames} frames, expected {num_frames}")
        return builder.results(video_id, category_map)


def run_video(
    model: torch.nn.Module | Callable[[np.ndarray], dict[str, Any]],
    source: FrameSource,
    associator: Associator | None = None,
    *,
    cfg: CfgNode | None = None,
    builder: VideoResultBuilder | None = None,
) -> Iterator[tuple[np.ndarray, Instances]]:
    """Track ``source`` frame by frame; yields ``(frame, instances)``: the BGR uint8 (H, W, 3) frame
    and its CPU ``Instances`` with ``pred_ids``.

    ``model`` is a Detectron2 ``nn.Module`` (preprocessed with ``cfg.INPUT`` if ``cfg`` is given,
    else BGR / short side 800) or a callable predictor on BGR frames (``DefaultPredictor``). The
    associator defaults to the model's own (``build_associator()``) or a mask-IoU tracker
    (``cfg.MODEL.MASK_IOU_TRACKER`` if present). Frames are also added to ``builder`` if given.
    """
    if associator is None:
        associator = build_associator(cfg, _model_module(model))
    runner = (
        VideoRunner(model, associator) if cfg is None else VideoRunner.from_config(cfg, model, associator)
    )
    for tracked in runner.stream(source, builder=builder):
        yield tracked.image, tracked.instances


frames_from_video = iter_frames  # the name demo/demo.py uses


def annotate_frame(visualizer: Any, frame: np.ndarray, instances: Instances) -> np.ndarray:
    """Draw a BGR uint8 (H, W, 3) frame and its tracked CPU instances with Detectron2's
    ``VideoVisualizer`` so that colours follow ``pred_ids``; returns an RGB uint8 (H, W, 3) image."""
    if instances.has("pred_ids"):
        instances = Instances(instances.image_size, **instances.get_fields())
        instances.ID = instances.pred_ids.tolist()  # VideoVisualizer keys its colours by hashable ids
    return visualizer.draw_instance_predictions(frame[:, :, ::-1], instances).get_image()


# ----------------------------------------------------------------------------- dataset evaluation
def evaluate_video_dataset(
    cfg: CfgNode,
    model: torch.nn.Module,
    dataset_name: str,
    output_dir: str | None = None,
    associator: Associator | None = None,
) -> OrderedDict:
    """Run every video of a registered YouTube-VIS-style dataset through the streaming runner and
    the :class:`~vis_eval.evaluator.YTVISEvaluator`; return its results (``{"segm": {...}}``, empty
    when the dataset has no annotations). The associator is the model's own if it has one
    (``model.build_associator()``), else a :class:`~vis_eval.tracker.MaskIoUTracker`."""
    from .evaluator import YTVISEvaluator

    videos = DatasetCatalog.get(dataset_name)
    if not videos:
        raise ValueError(f"dataset {dataset_name!r} has no videos")
    metadata = MetadataCatalog.get(dataset_name)
    to_dataset_id = {v: k for k, v in metadata.thing_dataset_id_to_contiguous_id.items()}
    runner = VideoRunner.from_config(cfg, model, associator)
    evaluator = YTVISEvaluator(dataset_name, output_dir=output_dir)
    evaluator.reset()
    # Each process runs its share of the videos; the evaluator gathers them on the main process.
    mine = videos[comm.get_rank() :: comm.get_world_size()]
    start, total_frames = time.perf_counter(), 0
    for k, video in enumerate(mine):
        results = runner.run_video(
            video["file_names"],
            video["video_id"],
            category_map=to_dataset_id,
            frame_size=(video["height"], video["width"]),
            num_frames=len(video["file_names"]),
        )
        evaluator.process([video], [results])
        total_frames += len(video["file_names"])
        if (k + 1) % 20 == 0 or k + 1 == len(mine):
            elapsed = time.perf_counter() - start
            logger.info(
                f"{dataset_name}: {k + 1}/{len(mine)} videos, {total_frames} frames "
                f"({total_frames / max(elapsed, 1e-9):.1f} frames/s)"
            )
    return evaluator.evaluate()
