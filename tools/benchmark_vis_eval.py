#!/usr/bin/env python
"""Time the fast YouTube-VIS evaluator against the plain per-pair loop implementation.

Writes a synthetic 100-video ground truth and results file (random tracks; results are jittered
copies of the GT tracks plus false positives, as a tracker would produce), reads them, then
evaluates them in interleaved rounds (reference, pure, accelerated, reference, ...) with the loop
transcription ``vis_eval.evaluation.reference_evaluate`` (the official YouTube-VIS API's algorithm
and loop structure) and with ``vis_eval.evaluation.evaluate`` on its pure path (``VIS_EVAL_PURE=1``)
and, when the C extension is built, its accelerated path; checks that the results are identical
and prints the median CPU seconds and the ratios (evaluation only).

    python tools/benchmark_vis_eval.py [--videos 100] [--regime dense|crowded|sparse|busy] [--repeat 3] [--out DIR]

Whole processes (``--whole-process``): writes a 300-video ``busy`` file (about 12k result tracks,
165k masks, 27 MB of RLE) and a 300-video ``sparse`` one, then runs, interleaved (A B C A B C ...),
the official baseline process (``--official-process GT RESULTS``: imports numpy and pycocotools,
``json.load`` of both files, the plain transcription of the official algorithm) and
``python -m vis_eval.evaluate GT RESULTS --json OUT`` pure (``VIS_EVAL_PURE=1``) and accelerated,
each with its default worker processes and with ``--workers 1`` (``pure-1``, ``accelerated-1``),
checks that the 12 stats are equal and prints the median wall-clock and CPU (user + system, all
processes) times and their ratios, the load averages, and the time of
``python -m vis_eval.evaluate --help``. Bytecode caches are written first, as after an install::

    python tools/benchmark_vis_eval.py --whole-process [--rounds 5] [--files busy sparse] [--by-video] [--out DIR]

The results of these files are in random order; ``--by-video`` orders them by video, as inference
writes them (then each worker process's piece of the file holds the results of fewer videos).

On a shared machine the CPU-time ratios are the steadier figures; wall-clock ratios follow them
when the load is below the number of cores. Figures: ``projects/vis_eval/README.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)  # run as a script from anywhere
from vis_eval.evaluation import evaluate, format_summary, reference_evaluate  # noqa: E402

TESTS_DIR = os.path.join(REPO_ROOT, "tests")

# random-data regimes: frames of 240-480 px, 15-36 frames per video, 40 categories; results are
# jittered copies of the GT tracks (1-3 per object) plus false positives (2-6 per video)
REGIMES = {
    # OVIS-like crowded videos: 3-8 objects of 2 categories per video (OVIS: ~5.8 objects per video)
    "crowded": dict(gt_per_video=(3, 8), cats_per_video=2, obj_frac=(0.08, 0.3)),
    # OVIS-like scenes of many instances of one category (herds, schools, crowds)
    "dense": dict(gt_per_video=(4, 10), cats_per_video=1, obj_frac=(0.08, 0.25)),
    # YouTube-VIS-like sparse videos: 1-3 objects of any category (YouTube-VIS: ~1.7 per video)
    "sparse": dict(gt_per_video=(1, 3), cats_per_video=None, obj_frac=(0.1, 0.5)),
    # many tracks of many categories per video (~40 result tracks, shorter videos): the issue's
    # 300-video file (12k result tracks, 174k masks, 26 MB)
    "busy": dict(
        gt_per_video=(4, 10),
        cats_per_video=None,
        obj_frac=(0.08, 0.25),
        dets_per_gt=(3, 6),
        false_pos=(4, 10),
        len_range=(10, 22),
    ),
}


def make_files(
    out_dir: str, n_videos: int, seed: int, regime: str = "crowded", by_video: bool = False
) -> tuple[str, str]:
    """Write ``gt.json`` and ``results.json`` with ``n_videos`` random videos (results in random
    order, or ``by_video``: ordered by video as inference writes them); return their paths."""
    sys.path.insert(0, TESTS_DIR)  # the random cases generator is a test fixture (tests/random_vis_cases.py)
    from random_vis_cases import random_gt_and_results

    rng = np.random.default_rng(seed)
    kwargs = dict(
        n_videos=n_videos,
        n_cats=40,
        size_range=(240, 480),
        len_range=(15, 36),
        dets_per_gt=(1, 3),
        false_pos=(2, 6),
        p_null=0.1,
        quirks=False,
    )
    kwargs.update(REGIMES[regime])
    gt, results = random_gt_and_results(rng, **kwargs)
    if by_video:
        results.sort(key=lambda r: r["video_id"])
    gt_path = os.path.join(out_dir, "gt.json")
    res_path = os.path.join(out_dir, "results.json")
    with open(gt_path, "w") as f:
        json.dump(gt, f)
    with open(res_path, "w") as f:
        json.dump(results, f)
    return gt_path, res_path


def _time(fn: Callable, *args: object, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, out


def _load(gt_path: str, res_path: str) -> tuple[dict, list]:
    with open(gt_path) as f:
        gt = json.load(f)
    with open(res_path) as f:
        return gt, json.load(f)


def official_process(gt_path: str, res_path: str, json_out: str | None) -> int:
    """The official whole process: json.load of both files, then the official algorithm."""
    with open(gt_path) as f:
        gt = json.load(f)
    with open(res_path) as f:
        results = json.load(f)
    res = reference_evaluate(gt, results)
    print(format_summary(res.stats))
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"stats": res.as_dict()}, f)
    return 0


def _run(cmd: list[str], env: dict[str, str] | None = None) -> float:
    return _run_cpu(cmd, env)[0]


def _run_cpu(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=REPO_ROOT, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def whole_process(out_dir: str, rounds: int, regimes: list[str], by_video: bool = False) -> int:
    """Interleaved whole-process timings of ``vis_eval.evaluate`` (accelerated when the C extension
    is built, and pure with ``VIS_EVAL_PURE=1``) and the official baseline."""
    from vis_eval import rle_accel

    py = sys.executable
    # bytecode caches, as after any install (PYTHONDONTWRITEBYTECODE would otherwise make every
    # process compile the modules it imports, ours and the baseline's)
    subprocess.run(
        [py, "-m", "compileall", "-q", os.path.join(REPO_ROOT, "vis_eval"), os.path.join(REPO_ROOT, "tools")],
        check=True,
    )
    print(f"load: {_load_avg()} (1/5/15 min)")
    helps = [_run([py, "-m", "vis_eval.evaluate", "--help"]) for _ in range(5)]
    print(f"python -m vis_eval.evaluate --help: median {np.median(helps):.3f} s")
    pure_env = dict(os.environ, VIS_EVAL_PURE="1")
    accel_env = {k: v for k, v in os.environ.items() if k != "VIS_EVAL_PURE"}
    from vis_eval.evaluation.workers import default_workers

    workers = default_workers()
    print(f"worker processes of python -m vis_eval.evaluate (its default here): {workers}")
    variants = ["official", "pure"] + (["pure-1"] if workers > 1 else [])
    if rle_accel.available():
        variants += ["accelerated"] + (["accelerated-1"] if workers > 1 else [])
    else:
        print("the C accelerator is not built: timing the pure path only")
    status = 0
    for regime in regimes:
        sub = os.path.join(out_dir, regime)
        os.makedirs(sub, exist_ok=True)
        gt_path, res_path = make_files(sub, 300, 0, regime, by_video)
        outs = {v: os.path.join(sub, f"{v}.json") for v in variants}
        ours = [py, "-m", "vis_eval.evaluate", gt_path, res_path]
        cmds = {
            "official": ([py, os.path.abspath(__file__), "--official-process", gt_path, res_path], None),
            "pure": (ours, pure_env),
            "pure-1": ([*ours, "--workers", "1"], pure_env),
            "accelerated": (ours, accel_env),
            "accelerated-1": ([*ours, "--workers", "1"], accel_env),
        }
        times: dict[str, list[float]] = {v: [] for v in variants}
        cpu: dict[str, list[float]] = {v: [] for v in variants}
        load_before = _load_avg()
        for _ in range(rounds):  # interleaved: official, pure, pure-1, accelerated, ..., official, ...
            for v in variants:
                cmd, env = cmds[v]
                wall, used = _run_cpu([*cmd, "--json", outs[v]], env)
                times[v].append(wall)
                cpu[v].append(used)
        stats = {}
        for v in variants:
            with open(outs[v]) as f:
                stats[v] = json.load(f)["stats"]
        ref = stats["official"]
        same = all(
            list(x) == list(ref) and all(abs(x[k] - ref[k]) <= 1e-12 for k in ref) for x in stats.values()
        )
        med = {v: float(np.median(t)) for v, t in times.items()}
        parts = ", ".join(
            f"{v} {med[v]:.2f} s" + ("" if v == "official" else f" ({med['official'] / med[v]:.2f}x)")
            for v in variants
        )
        print(
            f"{regime}: {parts} (medians of {rounds} interleaved rounds); equal stats: {same}; "
            f"load before {load_before}, after {_load_avg()}"
        )
        cmed = {v: float(np.median(t)) for v, t in cpu.items()}
        print(
            "  CPU seconds (user + system, medians): "
            + ", ".join(
                f"{v} {cmed[v]:.2f}" + ("" if v == "official" else f" ({cmed['official'] / cmed[v]:.2f}x)")
                for v in variants
            )
        )
        status |= 0 if same else 1
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--whole-process", action="store_true", help="time whole processes (see above)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of --whole-process")
    parser.add_argument(
        "--files",
        nargs="+",
        choices=["busy", "sparse"],
        default=["busy", "sparse"],
        help="files of --whole-process",
    )
    parser.add_argument(
        "--by-video",
        action="store_true",
        help="--whole-process files with the results ordered by video (as inference writes them; "
        "default: random order)",
    )
    parser.add_argument("--official-process", nargs=2, metavar=("GT", "RESULTS"), help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--videos", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--regime", choices=sorted(REGIMES), default="crowded")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument("--out", default=None, help="directory for the generated JSON files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if args.official_process:
        return official_process(*args.official_process, args.json)
    if args.whole_process:
        with tempfile.TemporaryDirectory() as tmp:
            return whole_process(args.out or tmp, args.rounds, args.files, args.by_video)

    from vis_eval import rle_accel

    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out or tmp
        os.makedirs(out_dir, exist_ok=True)
        gt_path, res_path = make_files(out_dir, args.videos, args.seed, args.regime)
        t_json, (gt, results) = _time(_load, gt_path, res_path, repeat=args.repeat)
    # interleaved rounds (reference, pure, accelerated, reference, ...), CPU seconds, medians
    variants = ["reference", "pure"] + (["accelerated"] if rle_accel.available() else [])
    times: dict[str, list[float]] = {v: [] for v in variants}
    out: dict[str, object] = {}
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    for _ in range(args.repeat):
        for v in variants:
            if v == "pure":
                os.environ["VIS_EVAL_PURE"] = "1"
            try:
                fn = reference_evaluate if v == "reference" else evaluate
                t0 = time.process_time()
                out[v] = fn(gt, results)
                times[v].append(time.process_time() - t0)
            finally:
                os.environ.pop("VIS_EVAL_PURE", None)
    ref = out["reference"]
    print(format_summary(ref.stats))
    n_gt = len(gt["annotations"])
    print(f"\n{args.videos} videos ({args.regime}), {n_gt} GT tracks, {len(results)} result tracks")
    print(f"reading the two JSON files (common to all): {t_json:8.3f} s (best of {args.repeat})")
    med = {v: float(np.median(t)) for v, t in times.items()}
    status = 0
    for v in variants:
        res = out[v]
        diff = float(np.max(np.abs(res.stats - ref.stats)))
        same = np.array_equal(res.precision, ref.precision) and np.array_equal(res.recall, ref.recall)
        ratio = "" if v == "reference" else f", speed-up {med['reference'] / med[v]:.1f}x"
        print(f"{v:<12} {med[v]:8.3f} CPU s (median of {args.repeat}){ratio}; identical arrays: {same}")
        if not same or diff > 1e-12:
            status = 1
    print(f"load before {load_before}, after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if status:
        print("ERROR: the implementations disagree", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
