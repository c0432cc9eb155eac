#!/usr/bin/env python
"""Peak memory of the streaming video runner as a function of the number of frames.

    python tools/benchmark_runner_memory.py [--frames 50 500] [--height 720 --width 1280] \
        [--objects 8] [--config-file CONFIG [--opts KEY VALUE ...]] [--json out.json]

Each frame count runs in a fresh process (so the peak RSS is that run's own): frames of moving,
occluding shapes are rendered on the fly at the given size, go through a model, the mask-IoU
tracker and the per-video result builder, and the process reports its peak RSS, the peak RSS
growth over the state after the first frame (the model, the caches and one frame), the size of
the per-video results and the time. The default model is a deterministic stand-in that returns
each shape's full-resolution mask (exact, cheap, and independent of training); ``--config-file``
uses a real (randomly initialised) model instead. Flat memory = the growth does not scale with
the number of frames beyond the results themselves (compressed RLE strings). Video models (with
``reset_video()``, e.g. SipMask-VIS) use their own association instead of the tracker;
``MODEL.WEIGHTS`` in ``--opts`` loads trained weights.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class PeakRSS:
    """Samples the process RSS in a background thread (plus ``ru_maxrss`` at the end)."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = _rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def synthetic_frames(num_frames: int, height: int, width: int, num_objects: int, seed: int = 0):
    """Yields (BGR uint8 (H, W, 3) frame, bool (K, H, W) visible masks, class ids (K,)) lazily."""
    from vis_eval.data.shapes import paint, random_shape, render_background

    rng = np.random.default_rng(seed)
    background = render_background(rng, height, width)
    extent = min(height, width)
    shapes = [random_shape(rng, height, width, extent / 10, extent / 3) for _ in range(num_objects)]
    velocity = rng.uniform(-0.01, 0.01, size=(num_objects, 2)) * (width, height)
    for t in range(num_frames):
        # bounce inside the frame so that objects stay visible for any length
        current = []
        for shape, (vx, vy) in zip(shapes, velocity):
            x = (shape.cx + vx * t) % (2 * width)
            y = (shape.cy + vy * t) % (2 * height)
            current.append(
                shape.moved(dx=min(x, 2 * width - x) - shape.cx, dy=min(y, 2 * height - y) - shape.cy)
            )
        image = background.copy()
        masks = np.stack(paint(image, current))
        yield np.ascontiguousarray(image[:, :, ::-1]), masks, np.array([s.category for s in current])


class ShapeOracle:
    """Stand-in model: returns the visible mask of every shape of the frame it is given."""

    def __init__(self, masks_iter):
        self._masks_iter = masks_iter

    def __call__(self, frame: np.ndarray) -> dict:
        import torch
        from detectron2.structures import BitMasks, Instances

        masks, classes = next(self._masks_iter)
        visible = masks.any(axis=(1, 2))  # fully occluded shapes are not detected
        masks, classes = masks[visible], classes[visible]
        inst = Instances(frame.shape[:2])
        inst.pred_masks = torch.from_numpy(masks)
        inst.pred_boxes = BitMasks(inst.pred_masks).get_bounding_boxes()
        inst.pred_classes = torch.from_numpy(classes).long()
        inst.scores = torch.linspace(0.9, 0.5, len(classes))
        return {"instances": inst}


def worker(args: argparse.Namespace, num_frames: int) -> dict:
    import torch

    from vis_eval.video import MaskIoUTracker, VideoResultBuilder, VideoRunner
    from vis_eval.video.runner import video_model

    torch.set_num_threads(args.threads)
    source = synthetic_frames(num_frames, args.height, args.width, args.objects)
    frames_only = _FrameTee(source)
    if args.config_file:
        from detectron2.modeling import build_model

        from onestage.config import load_config

        cfg = load_config(args.config_file, args.opts, device="cpu")
        model = build_model(cfg).eval()
        if cfg.MODEL.WEIGHTS:
            from detectron2.checkpoint import DetectionCheckpointer

            DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        # video models (SipMask-VIS) associate by themselves; image models get the mask-IoU tracker
        runner = VideoRunner.from_config(
            cfg,
            model,
            None if video_model(model) else MaskIoUTracker,
            trim_heap_every=args.trim_heap_every,
        )
        model_name = Path(args.config_file).name
    else:
        runner = VideoRunner(
            ShapeOracle(frames_only.masks()), MaskIoUTracker, trim_heap_every=args.trim_heap_every
        )
        model_name = f"shape oracle ({args.objects} objects)"

    builder = VideoResultBuilder()
    # a real model reads the frames only: the rendered masks are not kept for an oracle
    frames = (frame for frame, _, _ in source) if args.config_file else frames_only.frames()
    stream = runner.stream(frames, builder=builder)
    start = time.perf_counter()
    next(stream)  # the first frame: model, allocator caches and one frame's worth of buffers
    baseline = _rss_bytes()
    with PeakRSS() as peak:
        for _ in stream:
            pass
        results = builder.results(video_id=1)
    elapsed = time.perf_counter() - start
    results_bytes = len(json.dumps(results))
    return {
        "frames": num_frames,
        "size": [args.height, args.width],
        "model": model_name,
        "tracks": len(results),
        "peak_rss_mb": round(
            max(peak.peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20, 1
        ),
        "rss_after_first_frame_mb": round(baseline / 2**20, 1),
        "growth_mb": round((peak.peak - baseline) / 2**20, 1),
        "results_json_mb": round(results_bytes / 2**20, 2),
        "seconds": round(elapsed, 1),
        # what holding the masks would cost: frames x objects x H x W bytes
        "dense_masks_mb": round(num_frames * args.objects * args.height * args.width / 2**20, 1),
    }


class _FrameTee:
    """Splits the (frame, masks, classes) stream: the runner reads frames, the oracle the masks."""

    def __init__(self, source):
        self._source = source
        self._pending: list = []

    def frames(self):
        for frame, masks, classes in self._source:
            self._pending.append((masks, classes))
            yield frame

    def masks(self):
        while True:
            yield self._pending.pop(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--config-file", default="")
    parser.add_argument(
        "--trim-heap-every", type=int, default=16, help="VideoRunner's trim_heap_every (0: never)"
    )
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.config_file and not os.path.isfile(args.config_file):
        parser.error(f"config file not found: {args.config_file}")
    if args.worker is not None:
        print(json.dumps(worker(args, args.worker)))
        return 0

    rows = []
    for n in args.frames:
        cmd = [sys.executable, __file__, "--worker", str(n), "--height", str(args.height)]
        cmd += ["--width", str(args.width), "--objects", str(args.objects), "--threads", str(args.threads)]
        cmd += ["--trim-heap-every", str(args.trim_heap_every)]
        if args.config_file:
            cmd += ["--config-file", args.config_file, "--opts", *args.opts]
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        row = rows[-1]
        print(
            f"{row['frames']:5d} frames {row['size'][0]}x{row['size'][1]}  {row['model']}: peak RSS "
            f"{row['peak_rss_mb']:.1f} MB (after frame 1: {row['rss_after_first_frame_mb']:.1f} MB, growth "
            f"{row['growth_mb']:.1f} MB), results {row['results_json_mb']:.2f} MB, {row['tracks']} tracks, "
            f"{row['seconds']:.1f} s; dense masks would be {row['dense_masks_mb']:.0f} MB",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
