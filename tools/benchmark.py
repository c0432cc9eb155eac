#!/usr/bin/env python
"""Measure model latency, FPS and peak memory of any onestage-seg config, per stage; or compare this
tree's speed and outputs with another commit's.

    python tools/benchmark.py --config-file configs/CenterMask/centermask_lite_V_39_eSE_FPN_ms_4x.yaml \\
        --device cpu --iters 20 [--input 'images/*.jpg'] [KEY VALUE ...]
    python tools/benchmark.py --compare REF --config-file CONFIG [--config-file CONFIG2 ...] \\
        --threads 2 --iters 7 --random-weights [KEY VALUE ...]

Model time only: images are read and resized (as ``DefaultPredictor`` does) before timing; no
visualisation or file I/O is timed. Stages are timed with forward hooks: ``backbone`` (bottom-up +
FPN), ``head`` (dense head towers / predictors and RoI mask heads), and ``post-processing`` (all the
rest: pre-processing, decoding, NMS, mask assembly and pasting). Without ``MODEL.WEIGHTS`` (or with
``--random-weights``, which ignores the config's weights, e.g. ImageNet backbone URLs) the model is
randomly initialised, which changes how many detections reach post-processing. Weights must fit the
model (``MODEL.WEIGHTS_PARTIAL True`` to load what fits). Overrides: trailing ``KEY VALUE`` pairs or
``--opts KEY VALUE ...``. ``--device cuda`` without CUDA falls back to CPU with a warning.

``--compare REF`` (a commit, e.g. ``HEAD`` or ``bb73538``, extracted with ``git archive`` into a
temporary folder, or the path of another tree) times the same model in both trees, each in its own
process, interleaved (REF, this tree, REF, ... ``--iters`` times each after ``--warmup``), on the same
input with the same weights: the reference process builds the model from ``--seed``, sets the
statistics of its frozen / batch norms from the input image (random scales and shifts of the
per-channel mean and variance each norm sees, as a trained checkpoint keeps a random network's
activations in range) and saves its state dict, which the other process loads (strict). With
``--detect`` (the default; ``--no-detect`` keeps the initialisation) the classifier biases are zeroed,
the box-regression biases set to 1 and the near-zero mask / MaskIoU predictors scaled up, so that the
untrained model fills its detection cap with masks that are not all at the threshold, and the
post-processing and the output comparison have something to work on. Printed per config: the median
latency of each tree, the speed-up, the load average, and the output differences (detections and
classes, boxes / scores / mask scores as the largest absolute difference over the field's largest
magnitude, mask pixels that differ). Config files are taken from each tree (same relative path);
``MODEL.WEIGHTS`` is ignored.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

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

# --detect: parameters set so that an untrained model detects, name suffix -> value ...
DETECT_BIASES: dict[str, float] = {
    "cls_logits.bias": 0.0,  # FCOS (CenterMask)
    "fcos_cls.bias": 0.0,  # SipMask
    "bbox_pred.bias": 1.0,  # FCOS distances of one stride
    "fcos_reg.bias": 1.0,
    # CenterMask: the pixels whose mask features are all zero (dead ReLUs of a random head) get the
    # logit -0.5, not exactly 0 (probability 0.5: the threshold itself, where any rounding flips them)
    "mask_head.predictor.bias": -0.5,
}
# ... and predictors initialised near zero scaled up, so that the masks are not all at the threshold
# (mask probabilities of 0.5 +- 1e-4 would flip with any rounding) and the MaskIoU predictions not all
# near 0: name suffix -> factor
DETECT_SCALES: dict[str, float] = {
    "mask_head.predictor.weight": 100.0,  # CenterMask, std 0.001
    "maskiou_head.maskiou.weight": 10.0,  # std 0.01
}


def setup_cfg(args: argparse.Namespace):
    from onestage.config import load_config

    opts = list(args.opts) + (["MODEL.WEIGHTS", ""] if args.random_weights else [])
    return load_config(args.config_file, opts, device=args.device)


def load_inputs(cfg, pattern: str | None, count: int) -> list[dict]:
    """Model inputs (``{"image", "height", "width"}``) resized like ``DefaultPredictor``."""
    import numpy as np
    import torch
    from detectron2.data import transforms as T

    if pattern:
        from onestage.inputs import read_image_bgr

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

    def __init__(self, model, stages: dict[str, tuple[str, ...]], sync: Callable[[], None]):
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

    def _hook(self, module, stage: str) -> None:
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


def _sync_for(device: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def benchmark(model, inputs: list[dict], warmup: int, iters: int, device: str) -> dict:
    import resource

    import torch

    cuda = device.startswith("cuda")
    sync = _sync_for(device)
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


# ---------------------------------------------------------------------------------------- --compare
def _tree_cfg(config_file: str, opts: list[str], device: str):
    """The config of the tree this process imports (older trees had no ``onestage.config``)."""
    try:
        from onestage.config import get_cfg

        cfg = get_cfg()
    except ImportError:
        from detectron2.config import get_cfg

        from centermask import add_centermask_config
        from sipmask import add_sipmask_config

        cfg = get_cfg()
        add_centermask_config(cfg)
        add_sipmask_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    return cfg


def calibrate_norms(model, inputs: list[dict], seed: int) -> None:
    """Set every batch norm's (frozen or eval-mode ``BatchNorm``) running variance to the per-channel
    mean square of what it sees on ``inputs`` (running mean 0), with random scales in [0.5, 1.5) and
    shifts of std 0.1: each norm then keeps the activations' scale, as in a trained checkpoint, and a
    random network keeps them in range instead of growing through the layers. (Subtracting the
    channel means too would make the random network amplify every rounding difference.)"""
    import torch

    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(getattr(m, "running_var", None), torch.Tensor)]

    def set_statistics(module, args):
        x = args[0].detach().float()
        dims = [d for d in range(x.dim()) if d != 1]
        n = module.running_var.numel()
        with torch.no_grad():
            module.running_mean.zero_()
            module.running_var.copy_(x.square().mean(dims))
            if getattr(module, "weight", None) is not None:
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)

    handles = [m.register_forward_pre_hook(set_statistics) for m in norms]
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        # autograd on (with nothing requiring grad): every module runs as written, in order
        for p in params:
            p.requires_grad_(False)
        with torch.enable_grad():
            model(inputs)
    finally:
        for h in handles:
            h.remove()
        for p in params:
            p.requires_grad_(True)


def _instance_fields(outputs: list[dict]) -> list[dict]:
    fields = []
    for out in outputs:
        inst = out["instances"].to("cpu")
        fields.append({k: (v.tensor if hasattr(v, "tensor") else v) for k, v in inst.get_fields().items()})
    return fields


def _worker_build(request: dict) -> tuple[object, list[dict], dict]:
    import torch
    from detectron2.modeling import build_model

    import onestage

    tree = os.path.realpath(os.getcwd())
    package = os.path.realpath(os.path.dirname(onestage.__file__))
    if not package.startswith(tree + os.sep):
        raise RuntimeError(f"this process imports onestage from {package}, not from the tree {tree}")
    if request["threads"]:
        torch.set_num_threads(request["threads"])
    cfg = _tree_cfg(request["config"], request["opts"], request["device"])
    torch.manual_seed(request["seed"])
    model = build_model(cfg).eval()
    inputs = load_inputs(cfg, None, 1)
    if request.get("weights_in"):
        state = torch.load(request["weights_in"], map_location=cfg.MODEL.DEVICE)
        model.load_state_dict(state, strict=True)
    else:
        calibrate_norms(model, inputs, request["seed"])
        if request["detect"]:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    for suffix, value in DETECT_BIASES.items():
                        if name.endswith(suffix):
                            p.fill_(value)
                    for suffix, factor in DETECT_SCALES.items():
                        if name.endswith(suffix):
                            p.mul_(factor)
        torch.save(model.state_dict(), request["weights_out"])
    info = {"package": package, "input_size": list(inputs[0]["image"].shape[1:])}
    return model, inputs, info


def run_worker() -> int:
    """``--compare`` worker: builds one model in the tree it imports, then answers JSON requests on
    stdin (``build``, ``run``, ``outputs``, ``quit``) with one JSON line each on stdout."""
    reply_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the libraries print goes to stderr, not into the replies
    model, inputs, device = None, None, "cpu"
    for line in sys.stdin:
        request = json.loads(line)
        try:
            import torch

            if request["cmd"] == "build":
                model, inputs, reply = _worker_build(request)
                device = request["device"]
            elif request["cmd"] == "run":
                sync = _sync_for(device)
                times = []
                with torch.no_grad():
                    for _ in range(request["n"]):
                        sync()
                        start = time.perf_counter()
                        model(inputs)
                        sync()
                        times.append(time.perf_counter() - start)
                reply = {"times": times}
            elif request["cmd"] == "outputs":
                with torch.no_grad():
                    torch.save(_instance_fields(model(inputs)), request["path"])
                reply = {}
            else:
                return 0
            reply["ok"] = True
        except Exception as e:  # reported by the parent with the worker's stderr
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        reply_stream.write(json.dumps(reply) + "\n")
        reply_stream.flush()
    return 0


class _Worker:
    """A ``--compare`` worker process importing the packages of ``tree``."""

    def __init__(self, tree: Path, name: str, log_dir: Path):
        self.name = name
        self.log = log_dir / f"{name}.log"
        env = dict(os.environ, PYTHONPATH=str(tree), PYTHONWARNINGS="ignore")
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--compare-worker"],
                cwd=str(tree),
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        reply = json.loads(line) if line else {"ok": False, "error": "the worker process ended"}
        if not reply["ok"]:
            tail = "".join(self.log.read_text().splitlines(keepends=True)[-15:])
            raise SystemExit(f"error: benchmark.py --compare: {self.name}: {reply['error']}\n{tail}")
        return reply

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()


def reference_tree(ref: str, workdir: Path) -> tuple[Path, str]:
    """(folder, label) of ``ref``: an existing folder as it is, else a commit of this repository
    extracted with ``git archive``."""
    if os.path.isdir(ref):
        return Path(ref).resolve(), str(Path(ref).resolve())
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", commit], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"error: benchmark.py --compare: {ref!r} is neither a folder nor a commit") from e
    folder = workdir / f"ref-{commit[:12]}"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder, f"{ref} ({commit[:7]})"


def _largest_relative(a, b) -> float:
    """max |a - b| over the largest |b| of the field (0 for empty or equal fields)."""
    if a.numel() == 0:
        return 0.0
    a, b = a.double(), b.double()
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff


def match_detections(a: dict, b: dict):
    """Indices (ia, ib) pairing the detections of two runs: same class, nearest boxes (L1), so that
    detections whose near-equal scores came out in another order still pair up."""
    import torch
    from scipy.optimize import linear_sum_assignment

    boxes_a, boxes_b = a["pred_boxes"].double(), b["pred_boxes"].double()
    cost = (
        torch.cdist(boxes_a, boxes_b, p=1)
        if len(boxes_a) and len(boxes_b)
        else boxes_a.new_zeros((len(boxes_a), len(boxes_b)))
    )
    cost = cost + 1e9 * (a["pred_classes"][:, None] != b["pred_classes"][None, :])
    ia, ib = linear_sum_assignment(cost.numpy())
    same_class = (a["pred_classes"][ia] == b["pred_classes"][ib]).numpy()
    return torch.as_tensor(ia[same_class]), torch.as_tensor(ib[same_class])


def compare_outputs(ref: list[dict], new: list[dict]) -> dict:
    """Differences of the output fields of two runs on the same images (per-image lists), over the
    detections paired by :func:`match_detections`."""
    result = {
        "detections": [],
        "paired": [],
        "reordered": 0,
        "max_relative": {},
        "mask_pixels": [0, 0, 0],
    }
    for a, b in zip(ref, new, strict=True):
        ia, ib = match_detections(a, b)
        result["detections"].append([len(a["scores"]), len(b["scores"])])
        result["paired"].append(len(ia))
        result["reordered"] += int((ia != ib).sum())
        for name in ("pred_boxes", "scores", "mask_scores"):
            if name in a and name in b:
                rel = _largest_relative(b[name][ib], a[name][ia])
                result["max_relative"][name] = max(result["max_relative"].get(name, 0.0), rel)
        if "pred_masks" in a and "pred_masks" in b:
            ma, mb = a["pred_masks"][ia].bool(), b["pred_masks"][ib].bool()
            counts = result["mask_pixels"]
            counts[0] += int((ma != mb).sum())
            counts[1] += ma.numel()
            counts[2] += int((ma | mb).sum())
    return result


def _describe_outputs(diff: dict) -> str:
    dets = diff["detections"]
    same = all(a == b == p for (a, b), p in zip(dets, diff["paired"]))
    text = (
        f"detections {' '.join(f'{a}/{b}' for a, b in dets)} (ref/this), "
        f"{'the same' if same else 'DIFFERENT: ' + ' '.join(map(str, diff['paired'])) + ' paired'} "
        f"(same class, nearest box), {diff['reordered']} in another order"
    )
    for name, value in diff["max_relative"].items():
        text += f"; {name} {value:.2g}"
    differ, total, foreground = diff["mask_pixels"]
    if total:
        text += (
            f"; masks {100 * (1 - differ / total):.4f}% of pixels equal "
            f"({differ} differ, {100 * differ / max(foreground, 1):.4f}% of the foreground)"
        )
    return text


def compare(args: argparse.Namespace) -> int:
    configs = args.config_file
    with tempfile.TemporaryDirectory(prefix="benchmark-compare-") as tmp:
        work = Path(tmp)
        ref_tree, ref_label = reference_tree(args.compare, work)
        results = []
        for config in configs:
            path = Path(config).resolve()
            rel = path.relative_to(REPO) if path.is_relative_to(REPO) else None
            trees = {"ref": (ref_tree, str(ref_tree / rel) if rel else str(path)), "this": (REPO, str(path))}
            workers = {name: _Worker(tree, name, work) for name, (tree, _) in trees.items()}
            try:
                common = dict(
                    cmd="build",
                    opts=list(args.opts),
                    device=args.device,
                    seed=args.seed,
                    threads=args.threads,
                    detect=args.detect,
                )
                weights = str(work / "weights.pth")
                info = workers["ref"].ask(config=trees["ref"][1], weights_out=weights, **common)
                workers["this"].ask(config=trees["this"][1], weights_in=weights, **common)
                outputs = {}
                for name, worker in workers.items():
                    worker.ask(cmd="run", n=args.warmup)
                    outputs[name] = str(work / f"{name}-outputs.pth")
                    worker.ask(cmd="outputs", path=outputs[name])
                load_before = os.getloadavg()
                times: dict[str, list[float]] = {"ref": [], "this": []}
                for _ in range(args.iters):
                    for name, worker in workers.items():
                        times[name] += worker.ask(cmd="run", n=1)["times"]
                load_after = os.getloadavg()
            finally:
                for worker in workers.values():
                    worker.close()
            import torch

            diff = compare_outputs(torch.load(outputs["ref"]), torch.load(outputs["this"]))
            medians = {name: statistics.median(t) for name, t in times.items()}
            result = {
                "config": config,
                "reference": ref_label,
                "input_size": info["input_size"],
                "device": args.device,
                "threads": args.threads,
                "iters": args.iters,
                "latency_ms": {name: 1000 * m for name, m in medians.items()},
                "times_ms": {name: [1000 * t for t in ts] for name, ts in times.items()},
                "speedup": medians["ref"] / medians["this"],
                "load_average": [list(load_before), list(load_after)],
                "outputs": diff,
            }
            results.append(result)
            h, w = info["input_size"]
            threads = f"{args.threads} threads" if args.threads else "default threads"
            print(
                f"{config} on {args.device} ({threads}), input {h}x{w}, {args.iters} interleaved runs each, "
                f"load average {load_before[0]:.2f} -> {load_after[0]:.2f}:\n"
                f"  reference {ref_label}: median {result['latency_ms']['ref']:.1f} ms\n"
                f"  this tree: median {result['latency_ms']['this']:.1f} ms\n"
                f"  speed-up x{result['speedup']:.2f} (latency ratio {1 / result['speedup']:.3f})\n"
                f"  outputs: {_describe_outputs(diff)}"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results if len(results) > 1 else results[0], f, indent=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--compare-worker"]:
        return run_worker()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, action="append", help="repeat with --compare")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--input", help="glob of images (default: one random image at the test size)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--iters", type=int, default=None, help="timed runs (default 20; --compare: 5 per tree)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="ignore MODEL.WEIGHTS: time a randomly initialised model (always so with --compare)",
    )
    parser.add_argument("--compare", metavar="REF", help="commit or folder to compare this tree with")
    parser.add_argument("--seed", type=int, default=0, help="--compare: seed of the random weights")
    parser.add_argument(
        "--detect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--compare: zero the classifier biases so that the untrained model detects (default)",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ... (or after --opts)"
    )
    if any(a in ("-h", "--help") for a in argv):
        parser.parse_args(["--help"])  # before the heavy imports: prints and exits

    from onestage.cli import exit_on_user_error, split_overrides

    own, overrides = split_overrides(argv, ("--config-file", "--device", "--input", "--json", "--compare"))
    args = parser.parse_args(own)
    args.opts = list(args.opts) + overrides
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.compare:
        args.iters = 5 if args.iters is None else args.iters
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit("error: benchmark.py --compare: --device cuda without CUDA")
        return compare(args)
    if len(args.config_file) > 1:
        raise SystemExit("error: benchmark.py: one --config-file (several only with --compare)")
    args.config_file = args.config_file[0]
    args.iters = 20 if args.iters is None else args.iters
    if args.threads:
        torch.set_num_threads(args.threads)
    from detectron2.modeling import build_model
    from detectron2.utils.logger import setup_logger

    from onestage.checkpoint import StrictCheckpointer

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
