"""Streaming video inference: frames in one at a time, in order; tracked per-frame ``Instances`` out.

The video-model contract (what :class:`VideoRunner` does, and what a model may rely on):

* The runner feeds a video's frames to the model one at a time, in order (no look-ahead), and
  resets the per-video state at each video start (:meth:`VideoRunner.stream`).
* Image models (CenterMask, SipMask) get a tracker: for each video, a new one from ``make_tracker``,
  by default ``build_tracker_head(cfg)`` of Detectron2's ``TRACKER_HEADS_REGISTRY`` named by
  ``cfg.TRACKER_HEADS.TRACKER_NAME`` (``"MaskIoUTracker"``); each frame's ``Instances`` go through
  ``tracker.update(instances)``, which returns them with ``ID``.
* Video models that associate by themselves (SipMask-VIS, STMask) keep their per-video state inside
  the model and declare it with a method ``reset_video()``: the runner calls it at each video start
  (the model may be wrapped in ``DefaultPredictor`` or ``DistributedDataParallel``), builds no
  tracker, and passes the model's per-frame ``Instances`` through unchanged; they must already
  carry ``ID``.
* ``Instances.ID`` is Detectron2's tracking convention (``VideoVisualizer`` colours by it): a list of
  ints, >= 0, unique within a frame; the same id in two frames of a video is the same object.
* Per-video state (a tracker's or a video model's) is bounded by the number of live instances (tracks
  not yet expired), not by the number of frames; masks are RLE-encoded as frames come
  (:class:`~vis_eval.video.result_builder.VideoResultBuilder`), so memory stays flat in the video's
  length. Every ``trim_heap_every`` frames (16) the runner hands the C heap's free pages back to the
  system (:func:`release_free_heap`): tensors whose sizes change from frame to frame (one row per live
  track) otherwise fragment glibc's heap, and the resident memory creeps up with the video's length
  although the live data does not.

:func:`annotate_frame` draws a tracked frame with ``VideoVisualizer``. The dataset driver (every video
of a registered dataset through the runner and the evaluator) is
:func:`vis_eval.evaluation.video_inference.evaluate_video_dataset`.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from detectron2.evaluation.evaluator import inference_context
from detectron2.structures import Instances
from detectron2.tracking.base_tracker import TRACKER_HEADS_REGISTRY, BaseTracker, build_tracker_head

from .frames import FrameSource, iter_frames
from .result_builder import VideoResultBuilder
from .tracker import MaskIoUTracker

__all__ = ["TrackedFrame", "VideoRunner", "annotate_frame", "release_free_heap", "video_model"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_heap() -> bool:
    """Return the C heap's free pages to the system (glibc ``malloc_trim(0)``); False where not
    available. Costs about a millisecond; what is in use is untouched."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@dataclass
class TrackedFrame:
    """One processed frame: ``index`` in the video, the BGR uint8 (H, W, 3) ``image`` and the tracked
    CPU ``instances`` (``ID`` plus the model's fields)."""

    index: int
    image: np.ndarray
    instances: Instances


def video_model(model: torch.nn.Module | Callable) -> torch.nn.Module | None:
    """The module behind ``model`` that does its own association (has ``reset_video()``), looking
    through ``DefaultPredictor.model`` and ``DistributedDataParallel.module``; None for image models."""
    module = model if isinstance(model, torch.nn.Module) else getattr(model, "model", model)
    for candidate in (module, getattr(module, "module", None)):
        if callable(getattr(candidate, "reset_video", None)):
            return candidate
    return None


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
    """Streams the frames of one video at a time through a model and, for image models, a tracker.

    Args:
        model: a Detectron2 meta-architecture (inputs ``[{"image", "height", "width"}]``, outputs
            ``[{"instances": Instances}]`` at the input height/width), or any callable mapping a BGR
            uint8 (H, W, 3) frame to such an output dict (e.g. ``DefaultPredictor``). A model with
            ``reset_video()`` is a video model (see the module docstring).
        make_tracker: for an image model, a callable returning a new Detectron2 ``BaseTracker`` for
            each video (e.g. ``MaskIoUTracker``, ``partial(build_tracker_head, cfg)``); default
            :class:`~vis_eval.video.tracker.MaskIoUTracker` with its defaults. Must be None for a
            video model.
        input_format, min_size_test, max_size_test: preprocessing for an ``nn.Module`` model.
        trim_heap_every: call :func:`release_free_heap` after every this many frames (0: never).
    """

    def __init__(
        self,
        model: torch.nn.Module | Callable[[np.ndarray], dict[str, Any]],
        make_tracker: Callable[[], BaseTracker] | None = None,
        *,
        input_format: str = "BGR",
        min_size_test: int = 800,
        max_size_test: int = 1333,
        trim_heap_every: int = 16,
    ):
        if trim_heap_every < 0:
            raise ValueError(f"trim_heap_every must be >= 0 (0: never), got {trim_heap_every}")
        self.trim_heap_every = trim_heap_every
        self.model = model
        self.video_model = video_model(model)
        if self.video_model is not None and make_tracker is not None:
            raise ValueError(
                f"{type(self.video_model).__name__} associates by itself (it has reset_video()); pass no tracker"
            )
        if self.video_model is None and make_tracker is None:
            make_tracker = MaskIoUTracker
        if make_tracker is not None and not callable(make_tracker):
            raise TypeError(
                f"make_tracker must be a callable returning a tracker, got {type(make_tracker).__name__}"
            )
        self.make_tracker = make_tracker
        self.tracker: BaseTracker | None = None  # the tracker of the current video (image models)
        if isinstance(model, torch.nn.Module):
            self._predict = _ModulePredictor(model, input_format, min_size_test, max_size_test)
        elif callable(model):
            self._predict = model
        else:
            raise TypeError(f"model must be an nn.Module or a callable predictor, got {type(model).__name__}")

    @classmethod
    def from_config(
        cls,
        cfg: CfgNode,
        model: torch.nn.Module | Callable,
        make_tracker: Callable[[], BaseTracker] | None = None,
        **kwargs,
    ) -> VideoRunner:
        """Preprocessing from ``cfg.INPUT``; for an image model without ``make_tracker``, a tracker
        per video from ``cfg.TRACKER_HEADS.TRACKER_NAME`` (``build_tracker_head``); ``kwargs``: the
        constructor's others (``trim_heap_every``)."""
        if make_tracker is None and video_model(model) is None:
            if "TRACKER_HEADS" not in cfg or "TRACKER_NAME" not in cfg.TRACKER_HEADS:
                raise KeyError(
                    "cfg has no TRACKER_HEADS.TRACKER_NAME; add the keys with "
                    "vis_eval.config.add_vis_eval_config(cfg)"
                )
            TRACKER_HEADS_REGISTRY.get(cfg.TRACKER_HEADS.TRACKER_NAME)  # an unknown name fails now
            make_tracker = partial(build_tracker_head, cfg.clone())
        return cls(
            model,
            make_tracker,
            input_format=cfg.INPUT.FORMAT,
            min_size_test=cfg.INPUT.MIN_SIZE_TEST,
            max_size_test=cfg.INPUT.MAX_SIZE_TEST,
            **kwargs,
        )

    def _start_video(self) -> None:
        """Reset the per-video state: the video model's own, or a new tracker."""
        if self.video_model is not None:
            self.video_model.reset_video()
            return
        tracker = self.make_tracker()
        if not isinstance(tracker, BaseTracker):
            raise TypeError(f"make_tracker returned {type(tracker).__name__}, not a Detectron2 BaseTracker")
        self.tracker = tracker

    def stream(
        self,
        source: FrameSource,
        *,
        builder: VideoResultBuilder | None = None,
        frame_size: tuple[int, int] | None = None,
    ) -> Iterator[TrackedFrame]:
        """Process a new video frame by frame (the per-video state is reset first).

        ``source``: see :func:`~vis_eval.video.frames.iter_frames`. Each yielded frame is added to
        ``builder`` (if given) before it is yielded. ``frame_size`` (H, W), if given, is checked
        against every frame.
        """
        self._start_video()
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
                if self.trim_heap_every and (index + 1) % self.trim_heap_every == 0:
                    release_free_heap()
                yield TrackedFrame(index, frame, tracked)

    def _track(self, index: int, frame: np.ndarray) -> Instances:
        output = self._predict(frame)
        if not isinstance(output, dict) or "instances" not in output:
            raise TypeError(f"frame {index}: the model must return a dict with 'instances'")
        instances = output["instances"]
        if tuple(instances.image_size) != tuple(frame.shape[:2]):
            raise ValueError(
                f"frame {index}: instances of size {instances.image_size} for a frame of "
                f"size {frame.shape[:2]}; the model must return results at the input height/width"
            )
        if self.tracker is not None:
            instances = self.tracker.update(instances)
            source = f"{type(self.tracker).__name__}.update()"
        else:
            source = f"the video model {type(self.video_model).__name__}"
        if not isinstance(instances, Instances) or not instances.has("ID"):
            raise TypeError(f"frame {index}: {source} must return Instances with ID (track ids)")
        return instances.to("cpu")

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


def annotate_frame(
    visualizer: Any, frame: np.ndarray, instances: Instances, min_score: float = 0.0
) -> np.ndarray:
    """Draw a BGR uint8 (H, W, 3) frame and its tracked CPU instances (with ``ID``) with Detectron2's
    ``VideoVisualizer``, whose colours follow ``ID``; instances scored below ``min_score`` are left
    out. Returns an RGB uint8 (H, W, 3) image."""
    if min_score > 0 and instances.has("scores"):
        keep = instances.scores >= min_score
        rows = keep.nonzero().flatten().tolist()
        fields = {  # Instances cannot index list fields (ID) with a mask
            k: [v[i] for i in rows] if isinstance(v, list) else v[keep]
            for k, v in instances.get_fields().items()
        }
        instances = Instances(instances.image_size, **fields)
    return visualizer.draw_instance_predictions(frame[:, :, ::-1], instances).get_image()
