#!/usr/bin/env python
"""Run a trained onestage-seg model on images, a video file or a webcam and draw its predictions.

    python demo/demo.py --config-file CONFIG --input 'images/*.jpg' --output out/ \
        [--confidence-threshold 0.3] [--opts MODEL.WEIGHTS model.pth MODEL.DEVICE cpu]
    python demo/demo.py --config-file CONFIG --video-input clip.mp4 --output clip_pred.mp4 --opts ...
    python demo/demo.py --config-file CONFIG --webcam [--output webcam.mp4] --opts ...

Config overrides go after ``--opts`` (Detectron2's demo) or as trailing ``KEY VALUE`` pairs (its
``train_net.py``): both work, also right after ``--input FILES``. The weights must fit the model
(``MODEL.WEIGHTS_PARTIAL True`` to load what fits); ``--output`` folders are created; a video's
codec follows the output's extension (.mp4, .avi, .mkv). Images use ``onestage.predictor.Predictor``
(``DefaultPredictor`` with strict loading and input checks) + ``Visualizer``. Videos and the webcam
go frame by frame through the streaming video runner, which gives every instance a persistent track
id (the model's own association where it has one, otherwise a mask-IoU tracker), drawn by
``VideoVisualizer``; progress is logged every few seconds.
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
from detectron2.structures import Instances
from detectron2.utils.logger import setup_logger
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, Visualizer

import vis_eval.data  # noqa: F401  (registers the builtin datasets, for their metadata)
from onestage.cli import exit_on_user_error, split_overrides
from onestage.config import load_config
from onestage.inputs import read_image_bgr
from onestage.predictor import Predictor
from vis_eval.progress import ProgressLogger
from vis_eval.video import VideoRunner, annotate_frame, iter_frames

WINDOW_NAME = "onestage-seg"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# output extension -> FourCC of the video written there
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}
# options whose value is never a config override
VALUE_OPTIONS = ("--config-file", "--video-input", "--output", "--confidence-threshold")


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    return load_config(args.config_file, args.opts)


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
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="config overrides KEY VALUE ... (trailing KEY VALUE pairs without --opts work too)",
    )
    return parser


def expand_inputs(patterns: list[str]) -> list[str]:
    """Image paths from files, folders and globs, in order; a clear error if a pattern matches
    nothing or a folder holds no image."""
    files: list[str] = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(str(p) for p in Path(pattern).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise SystemExit(
                    f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {pattern}: nothing to do"
                )
            files += found
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
    path = output_path(output, default_name, many)
    if not cv2.imwrite(path, frame_rgb[:, :, ::-1]):
        raise SystemExit(f"cannot write {path} (an image extension such as .jpg / .png is needed)")


def is_folder_output(output: str, many: bool) -> bool:
    """``--output`` names a folder: several inputs, an existing folder, a trailing '/' or no extension."""
    return many or os.path.isdir(output) or output.endswith(("/", os.sep)) or not Path(output).suffix


def output_path(output: str, default_name: str, many: bool) -> str:
    """Where to write ``default_name`` for ``--output``; creates the folders on the way."""
    path = os.path.join(output, default_name) if is_folder_output(output, many) else output
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    except OSError as e:
        raise SystemExit(f"cannot create the output folder for {path}: {e.strerror or e}") from e
    return path


def run_images(cfg: CfgNode, files: list[str], args: argparse.Namespace, logger: logging.Logger) -> None:
    predictor = Predictor(cfg)
    metadata = test_metadata(cfg)
    for path in files:
        try:
            image = read_image_bgr(path)
        except ValueError as e:
            raise SystemExit(str(e)) from e
        start = time.perf_counter()
        instances = confident(predictor(image)["instances"].to("cpu"), args.confidence_threshold)
        logger.info(f"{path}: {len(instances)} instances in {time.perf_counter() - start:.2f}s")
        visualizer = Visualizer(image[:, :, ::-1], metadata, instance_mode=ColorMode.IMAGE)
        drawn = visualizer.draw_instance_predictions(instances).get_image()
        show_or_save(drawn, args.output, os.path.basename(path), many=len(files) > 1)


def video_writer(path: str, fps: float, width: int, height: int) -> cv2.VideoWriter:
    """A ``cv2.VideoWriter`` for ``path`` with the codec of its extension (:data:`VIDEO_CODECS`)."""
    codec = VIDEO_CODECS.get(Path(path).suffix.lower())
    if codec is None:
        raise SystemExit(f"--output {path}: unknown video extension; use one of {', '.join(VIDEO_CODECS)}")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), fps, (width, height))
    if not writer.isOpened():
        raise SystemExit(f"cannot open {path} for writing a {codec} video")
    return writer


def run_stream(
    cfg: CfgNode,
    frames: Iterator[np.ndarray],
    fps: float,
    args: argparse.Namespace,
    total: int | None = None,
    logger: logging.Logger | None = None,
) -> None:
    """Track instances through ``frames`` (BGR) and write or show the annotated video, logging
    progress every few seconds."""
    output = args.output
    if output is not None:
        name = Path(args.video_input).stem + "_pred.mp4" if args.video_input else "webcam.mp4"
        if is_folder_output(output, many=False) and Path(output).suffix.lower() not in VIDEO_CODECS:
            output = output_path(output, name, many=True)
        else:
            output = output_path(output, name, many=False)
        if Path(output).suffix.lower() not in VIDEO_CODECS:
            raise SystemExit(
                f"--output {output}: unknown video extension; use one of {', '.join(VIDEO_CODECS)}"
            )
    predictor = Predictor(cfg)
    metadata = test_metadata(cfg)
    visualizer = VideoVisualizer(metadata, ColorMode.IMAGE)
    progress = ProgressLogger(logger or logging.getLogger(__name__), "video", total, "frames")
    writer = None
    try:
        for tracked in VideoRunner.from_config(cfg, predictor).stream(frames):
            progress.step()
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
                writer = video_writer(output, fps, width, height)
            writer.write(drawn[:, :, ::-1])
    finally:
        if writer is not None:
            writer.release()
    if output is not None:
        if writer is None:
            raise SystemExit(
                f"no frame could be read from {args.video_input or 'the webcam'}: nothing written"
            )
        (logger or logging.getLogger(__name__)).info(f"wrote {progress.count} frames to {output}")


def readable(frames: Iterator[np.ndarray], source: str) -> Iterator[np.ndarray]:
    """``frames``, with a source that cannot be opened or decoded ending the demo with one line."""
    try:
        yield from frames
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot read video {source}: {e}") from e


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Arguments, with config overrides from ``--opts`` and from trailing ``KEY VALUE`` pairs."""
    own, overrides = split_overrides(sys.argv[1:] if argv is None else argv, VALUE_OPTIONS)
    args = get_parser().parse_args(own)
    args.opts = overrides
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="vis_eval")
    setup_logger(name="onestage")
    logger = setup_logger()
    logger.info("Arguments: " + str(args))
    with exit_on_user_error("demo.py"):
        cfg = setup_cfg(args)
        if args.input:
            run_images(cfg, expand_inputs(args.input), args, logger)
        elif args.video_input:
            if not os.path.isfile(args.video_input):
                raise SystemExit(f"video file not found: {args.video_input}")
            capture = cv2.VideoCapture(args.video_input)
            fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
            total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
            capture.release()
            run_stream(
                cfg, readable(iter_frames(args.video_input), args.video_input), fps, args, total, logger
            )
        else:
            run_stream(cfg, readable(iter_frames(0), "the webcam"), 25.0, args, None, logger)
    return 0


if __name__ == "__main__":
    sys.exit(main())
