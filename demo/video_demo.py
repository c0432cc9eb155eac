#!/usr/bin/env python
"""Draw a trained video model's tracked predictions on the videos of a registered video dataset:
one annotated MP4 and one GIF per video, instances coloured and labelled by their track id.

    python demo/video_demo.py --config-file configs/SipMaskVIS/SipMaskVIS-synthetic.yaml \
        --dataset synthetic_vis_val --videos 4 --output output/demo-sipmask_vis/visualizations \
        MODEL.WEIGHTS output/demo-sipmask_vis/model_final.pth

Frames go one at a time through the streaming video runner (the model's own association for video
models such as SipMask-VIS, otherwise the config's tracker), as in evaluation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Instances
from detectron2.utils.logger import setup_logger
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode
from PIL import Image

import vis_eval.data  # noqa: F401  (registers the builtin datasets)
from onestage.checkpoint import StrictCheckpointer
from onestage.cli import exit_on_user_error, split_overrides
from onestage.config import load_config
from vis_eval.video import VideoRunner, annotate_frame


def draw_track_ids(image: np.ndarray, instances: Instances, min_score: float) -> np.ndarray:
    """Write ``#<ID>`` at the top-left corner of every box scored >= ``min_score`` (RGB image)."""
    image = np.ascontiguousarray(image)
    for box, score, track_id in zip(
        instances.pred_boxes.tensor.tolist(), instances.scores.tolist(), instances.ID
    ):
        if score >= min_score:
            x, y = int(box[0]), max(int(box[1]) + 10, 10)
            cv2.putText(image, f"#{track_id}", (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1)
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--dataset", required=True, help="a registered video dataset, e.g. synthetic_vis_val")
    parser.add_argument("--videos", type=int, default=4, help="how many videos, from the first")
    parser.add_argument("--output", required=True, help="folder for <video_id>.mp4 and <video_id>.gif")
    parser.add_argument("--confidence-threshold", type=float, default=0.3)
    parser.add_argument("--fps", type=float, default=4.0)
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ... (or after --opts)"
    )
    own, overrides = split_overrides(
        sys.argv[1:] if argv is None else argv, ("--config-file", "--dataset", "--output")
    )
    args = parser.parse_args(own)
    args.opts = list(args.opts) + overrides
    logger = setup_logger(name="video_demo")
    setup_logger(name="onestage")
    with exit_on_user_error("video_demo.py"):
        cfg = load_config(args.config_file, args.opts)
    if args.dataset not in DatasetCatalog.list():
        raise SystemExit(f"unknown dataset {args.dataset!r}")
    videos = DatasetCatalog.get(args.dataset)[: args.videos]
    if not videos:
        raise SystemExit(f"dataset {args.dataset!r} has no videos")
    model = build_model(cfg)
    with exit_on_user_error("video_demo.py"):  # weights must fit (MODEL.WEIGHTS_PARTIAL True: partial)
        StrictCheckpointer(model, partial=cfg.MODEL.WEIGHTS_PARTIAL).load(cfg.MODEL.WEIGHTS)
    runner = VideoRunner.from_config(cfg, model)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    for video in videos:
        visualizer = VideoVisualizer(MetadataCatalog.get(args.dataset), ColorMode.IMAGE)
        drawn = []
        for tracked in runner.stream(video["file_names"]):
            image = annotate_frame(visualizer, tracked.image, tracked.instances, args.confidence_threshold)
            drawn.append(draw_track_ids(image, tracked.instances, args.confidence_threshold))
        height, width = drawn[0].shape[:2]
        mp4 = out_dir / f"{video['video_id']}.mp4"
        writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), args.fps, (width, height))
        for frame in drawn:
            writer.write(frame[:, :, ::-1])
        writer.release()
        gif = out_dir / f"{video['video_id']}.gif"
        images = [Image.fromarray(frame) for frame in drawn]
        images[0].save(gif, save_all=True, append_images=images[1:], duration=int(1000 / args.fps), loop=0)
        logger.info(f"video {video['video_id']}: {len(drawn)} frames -> {mp4}, {gif}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
