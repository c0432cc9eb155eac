#!/usr/bin/env python
"""Measure model latency, FPS and peak memory of any onestage-seg config, per stage.

    python tools/benchmark.py --config-file configs/CenterMask/centermask_lite_V_39_eSE_FPN_ms_4x.yaml \
        --device cpu --iters 20 [--input 'images/*.jpg'] [KEY VALUE ...]

Model time only: images are read and resized (as ``DefaultPredictor`` does) before timing; no
visualisation or file I/O is timed. Stages are timed with forward hooks: ``backbone`` (bottom-up +
FPN), ``head`` (dense head towers / predictors and RoI mask heads), and ``post-processing`` (all the
rest: pre-processing, decoding, NMS, mask assembly and pasting). Without ``MODEL.WEIGHTS`` (or with
``--random-weights``, which ignores the config's weights, e.g. ImageNet backbone URLs) the model is
randomly initialised, which changes how many detections reach post-processing. Weights must fit the
model (``MODEL.WEIGHTS_PARTIAL True`` to load what fits). Overrides: trailing ``KEY VALUE`` pairs or
``--opts KEY VALUE ...``. ``--device cuda`` without CUDA falls back to CPU with a warning.
"""

from __future__ import annotations

import argparse
import glob
import json
import resource
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from onestage.checkpoint import StrictCheckpointer
from onestage.cli import exit_on_user_error, split_overrides
from onestage.config import load_config
from onestage.inputs import read_image_bgr

# Stage name -> dotted paths of the submodules it covers (those present in a model are hooked).
STAGES: dict[str, tuple[str, ...]] = {
    "backbone": ("backbone",),
    "head": (
        "proposal_generator.fcos_head",
        "roi_heads.mask_head",
        "roi_heads.maskiou_head",
        "head",
    ),
}


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    opts = list(args.opts) + (["MODEL.WEIGHTS", ""] if args.random_weights else [])
    return load_config(args.config_file, opts, device=args.device)


def load_inputs(cfg: CfgNode, pattern: str | None, count: int) -> list[dict]:
    """Model inputs (``{"image", "height", "width"}``) resized like ``DefaultPredictor``."""
    if pattern:
        files = sorted(glob.glob(pattern))
        if not files:
            raise SystemExit(f"no image matches {pattern!r}")
        try:
            images = [read_image_bgr(f) for f in files[:count]]
        except ValueError as e:
            raise SystemExit(str(e)) from e
    else:  # a random 3:4 image at the test size (480 x 640 where the model resizes by itself)
        size = cfg.INPUT.MIN_SIZE_TEST or 480
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, size=(size, size * 4 // 3, 3), dtype=np.uint8)]
    # MIN_SIZE_TEST 0: no resize here (e.g. the real-time SipMask models resize inside the model)
    resize = (
        T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        if cfg.INPUT.MIN_SIZE_TEST
        else None
    )
    inputs = []
    for bgr in images:
        image = bgr[:, :, ::-1] if cfg.INPUT.FORMAT == "RGB" else bgr
        h, w = image.shape[:2]
        resized = resize.get_transform(image).apply_image(image) if resize else image
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        inputs.append({"image": tensor, "height": h, "width": w})
    return inputs


class StageTimer:
    """Accumulates wall time spent inside chosen submodules (CUDA-synchronised)."""

    def __init__(self, model: torch.nn.Module, stages: dict[str, tuple[str, ...]], sync: Callable[[], None]):
        self.seconds: dict[str, float] = defaultdict(float)
        self.sync = sync
        self.handles = []
        modules = dict(model.named_modules())
        self.hooked: dict[str, list[str]] = {}
        for stage, paths in stages.items():
            for path in paths:
                if path in modules:
                    self.hooked.setdefault(stage, []).append(path)
                    self._hook(modules[path], stage)

    def _hook(self, module: torch.nn.Module, stage: str) -> None:
        start: list[float] = []

        def before(_module, _inputs):
            self.sync()
            start.append(time.perf_counter())

        def after(_module, _inputs, _outputs):
            self.sync()
            self.seconds[stage] += time.perf_counter() - start.pop()

        self.handles.append(module.register_forward_pre_hook(before))
        self.handles.append(module.register_forward_hook(after))

    def reset(self) -> None:
        self.seconds.clear()


def benchmark(model: torch.nn.Module, inputs: list[dict], warmup: int, iters: int, device: str) -> dict:
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    timer = StageTimer(model, STAGES, sync)
    totals, per_stage = [], defaultdict(list)
    with torch.no_grad():
        for i in range(warmup + iters):
            batch = [inputs[i % len(inputs)]]
            if i == warmup and cuda:
                torch.cuda.reset_peak_memory_stats()
            timer.reset()
            sync()
            start = time.perf_counter()
            model(batch)
            sync()
            total = time.perf_counter() - start
            if i >= warmup:
                totals.append(total)
                for stage in STAGES:
                    per_stage[stage].append(timer.seconds.get(stage, 0.0))
                per_stage["post-processing"].append(total - sum(timer.seconds.values()))
    median = statistics.median(totals)
    result = {
        "device": device,
        "iters": iters,
        "latency_ms": 1000 * median,
        "fps": 1.0 / median,
        "stages_ms": {k: 1000 * statistics.median(v) for k, v in per_stage.items()},
        "hooked_modules": timer.hooked,
        "input_size": list(inputs[0]["image"].shape[1:]),
    }
    if cuda:
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:  # Linux reports ru_maxrss in KiB: the process's peak resident memory
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--input", help="glob of images (default: one random image at the test size)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="ignore MODEL.WEIGHTS: time a randomly initialised model",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ... (or after --opts)"
    )
    own, overrides = split_overrides(
        sys.argv[1:] if argv is None else argv, ("--config-file", "--device", "--input", "--json")
    )
    args = parser.parse_args(own)
    args.opts = list(args.opts) + overrides
    if args.threads:
        torch.set_num_threads(args.threads)
    setup_logger(name="onestage")
    with exit_on_user_error("benchmark.py"):
        cfg = setup_cfg(args)
        model = build_model(cfg).eval()
        if cfg.MODEL.WEIGHTS:
            StrictCheckpointer(model, partial=cfg.MODEL.WEIGHTS_PARTIAL).load(cfg.MODEL.WEIGHTS)
    device = cfg.MODEL.DEVICE  # "cpu" when CUDA was asked for and is not available
    inputs = load_inputs(cfg, args.input, args.warmup + args.iters)
    result = benchmark(model, inputs, args.warmup, args.iters, device)
    result["config"] = args.config_file
    result["threads"] = torch.get_num_threads()
    memory = (
        f"peak GPU memory {result['peak_memory_mb']:.0f} MiB"
        if "peak_memory_mb" in result
        else f"peak RSS {result['peak_rss_mb']:.0f} MiB"
    )
    print(
        f"{args.config_file} on {device} ({result['threads']} threads), input "
        f"{result['input_size'][0]}x{result['input_size'][1]}: median {result['latency_ms']:.1f} ms/img, "
        f"{result['fps']:.2f} FPS, {memory}"
    )
    for stage, ms in result["stages_ms"].items():
        print(f"  {stage:16s} {ms:9.1f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
