#!/usr/bin/env python
"""Run a trained onestage-seg model on images, a video file or a webcam and draw its predictions.

    python demo/demo.py --config-file CONFIG --input 'images/*.jpg' --output out/ \
        [--confidence-threshold 0.3] [--opts MODEL.WEIGHTS model.pth MODEL.DEVICE cpu]
    python demo/demo.py --config-file CONFIG --video-input clip.mp4 --output clip_pred.mp4 --opts ...
    python demo/demo.py --config-file CONFIG --webcam [--output webcam.mp4] --opts ...

Images use ``DefaultPredictor`` + ``Visualizer``. Videos and the webcam go frame by frame through
the streaming video runner, which gives every instance a persistent track id (the model's own
association where it has one, otherwise a mask-IoU tracker), drawn by ``VideoVisualizer``.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.structures import Instances
from detectron2.utils.logger import setup_logger
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, Visualizer

import vis_eval.data  # noqa: F401  (registers the builtin datasets, for their metadata)
from onestage.config import load_config
from vis_eval.video import VideoRunner, annotate_frame, iter_frames

WINDOW_NAME = "onestage-seg"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    try:
        return load_config(args.config_file, args.opts)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="image files, folders or globs ('imgs/*.jpg')")
    source.add_argument("--video-input", help="a video file")
    source.add_argument("--webcam", action="store_true", help="the first webcam")
    parser.add_argument(
        "--output",
        help="a folder for annotated images (or a file name for a single image); a video file for "
        "--video-input / --webcam. Without it, results are shown in a window.",
    )
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum score to draw")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser


def expand_inputs(patterns: list[str]) -> list[str]:
    """Image paths from files, folders and globs, in order; a clear error if nothing matches."""
    files: list[str] = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            files += sorted(str(p) for p in Path(pattern).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            matches = sorted(glob.glob(os.path.expanduser(pattern)))
            if not matches:
                raise SystemExit(f"no file matches {pattern!r}")
            files += matches
    return files


def test_metadata(cfg: CfgNode):
    """Class names and colours of the first test dataset (an empty catalog entry if there is none)."""
    return MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")


def confident(instances: Instances, threshold: float) -> Instances:
    return instances[instances.scores >= threshold]


def show_or_save(frame_rgb: np.ndarray, output: str | None, default_name: str, many: bool) -> None:
    if output is None:
        try:
            cv2.imshow(WINDOW_NAME, frame_rgb[:, :, ::-1])
        except cv2.error as e:
            raise SystemExit("this OpenCV build has no GUI; pass --output to write files instead") from e
        if cv2.waitKey(0) == 27:  # Esc
            raise SystemExit(0)
        return
    if many or os.path.isdir(output):
        os.makedirs(output, exist_ok=True)
        path = os.path.join(output, default_name)
    else:
        path = output
    cv2.imwrite(path, frame_rgb[:, :, ::-1])


def run_images(cfg: CfgNode, files: list[str], args: argparse.Namespace, logger: logging.Logger) -> None:
    predictor = DefaultPredictor(cfg)
    metadata = test_metadata(cfg)
    for path in files:
        try:
            image = read_image(path, format="BGR")
        except Exception as e:
            raise SystemExit(f"cannot read image {path}: {e}") from e
        start = time.perf_counter()
        instances = confident(predictor(image)["instances"].to("cpu"), args.confidence_threshold)
        logger.info(f"{path}: {len(instances)} instances in {time.perf_counter() - start:.2f}s")
        visualizer = Visualizer(image[:, :, ::-1], metadata, instance_mode=ColorMode.IMAGE)
        drawn = visualizer.draw_instance_predictions(instances).get_image()
        show_or_save(drawn, args.output, os.path.basename(path), many=len(files) > 1)


def run_stream(cfg: CfgNode, frames: Iterator[np.ndarray], fps: float, args: argparse.Namespace) -> None:
    """Track instances through ``frames`` (BGR) and write or show the annotated video."""
    predictor = DefaultPredictor(cfg)
    metadata = test_metadata(cfg)
    visualizer = VideoVisualizer(metadata, ColorMode.IMAGE)
    writer = None
    try:
        for tracked in VideoRunner.from_config(cfg, predictor).stream(frames):
            drawn = annotate_frame(visualizer, tracked.image, tracked.instances, args.confidence_threshold)
            if args.output is None:
                try:
                    cv2.imshow(WINDOW_NAME, drawn[:, :, ::-1])
                except cv2.error as e:
                    raise SystemExit("this OpenCV build has no GUI; pass --output to write a video") from e
                if cv2.waitKey(1) == 27:  # Esc
                    break
                continue
            if writer is None:
                height, width = drawn.shape[:2]
                writer = cv2.VideoWriter(args.output, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
                if not writer.isOpened():
                    raise SystemExit(f"cannot open {args.output} for writing a video")
            writer.write(drawn[:, :, ::-1])
    finally:
        if writer is not None:
            writer.release()


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="vis_eval")
    logger = setup_logger()
    logger.info("Arguments: " + str(args))
    cfg = setup_cfg(args)
    if args.input:
        run_images(cfg, expand_inputs(args.input), args, logger)
    elif args.video_input:
        if not os.path.isfile(args.video_input):
            raise SystemExit(f"video file not found: {args.video_input}")
        capture = cv2.VideoCapture(args.video_input)
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        capture.release()
        run_stream(cfg, iter_frames(args.video_input), fps, args)
    else:
        run_stream(cfg, iter_frames(0), 25.0, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
