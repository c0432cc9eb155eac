"""Video AP of a model on a registered video dataset (the video counterpart of Detectron2's
``inference_on_dataset``): every video through the streaming runner, then :class:`YTVISEvaluator`."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.tracking.base_tracker import BaseTracker
from detectron2.utils import comm

from ..video.runner import VideoRunner
from .evaluator import YTVISEvaluator

__all__ = ["evaluate_video_dataset"]

logger = logging.getLogger(__name__)


def evaluate_video_dataset(
    cfg: CfgNode,
    model: torch.nn.Module,
    dataset_name: str,
    output_dir: str | None = None,
    make_tracker: Callable[[], BaseTracker] | None = None,
) -> OrderedDict:
    """Run every video of a registered YouTube-VIS-style dataset through
    :meth:`VideoRunner.from_config(cfg, model, make_tracker) <vis_eval.video.runner.VideoRunner.from_config>`
    and the :class:`YTVISEvaluator`; return its results (``{"segm": {...}}``, empty when the dataset
    has no annotations). A video model (``reset_video()``) associates by itself; an image model gets
    ``make_tracker()`` per video, by default the tracker named by ``cfg.TRACKER_HEADS.TRACKER_NAME``."""
    videos = DatasetCatalog.get(dataset_name)
    if not videos:
        raise ValueError(f"dataset {dataset_name!r} has no videos")
    metadata = MetadataCatalog.get(dataset_name)
    to_dataset_id = {v: k for k, v in metadata.thing_dataset_id_to_contiguous_id.items()}
    runner = VideoRunner.from_config(cfg, model, make_tracker)
    evaluator = YTVISEvaluator(dataset_name, output_dir=output_dir)
    evaluator.reset()
    # Each process runs its share of the videos; the evaluator gathers them on the main process.
    mine = videos[comm.get_rank() :: comm.get_world_size()]
    start, total_frames = time.perf_counter(), 0
    last_log = start
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
        now = time.perf_counter()
        if k == 0 or (k + 1) % 20 == 0 or k + 1 == len(mine) or now - last_log >= 5.0:
            last_log, elapsed = now, now - start
            logger.info(
                f"{dataset_name}: {k + 1}/{len(mine)} videos, {total_frames} frames "
                f"({total_frames / max(elapsed, 1e-9):.1f} frames/s)"
            )
    return evaluator.evaluate()
