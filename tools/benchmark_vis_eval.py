#!/usr/bin/env python
"""Time the fast YouTube-VIS evaluator against the plain per-pair loop implementation.

Writes a synthetic 100-video ground truth and results file (random tracks; results are jittered
copies of the GT tracks plus false positives, as a tracker would produce), reads them, evaluates
them with ``vis_eval.evaluation.evaluate`` and with the loop transcription
``vis_eval.evaluation.reference_evaluate`` (the official YouTube-VIS API's algorithm and loop structure),
checks that the results are identical and prints both times and the ratio (evaluation only, and
including the JSON parsing both need).

    python tools/benchmark_vis_eval.py [--videos 100] [--regime dense|crowded|sparse|busy] [--repeat 3] [--out DIR]

Whole processes (``--whole-process``): writes a 300-video ``busy`` file (about 12k result tracks,
165k masks, 27 MB of RLE) and a 300-video ``sparse`` one, then runs, interleaved (A B A B ...),
``python -m vis_eval.evaluate GT RESULTS --json OUT`` and the official baseline process
(``--official-process GT RESULTS``: imports numpy and pycocotools, ``json.load`` of both files,
the plain transcription of the official algorithm), checks that the 12 stats are equal and prints
the median times and their ratio, plus the time of ``python -m vis_eval.evaluate --help``::

    python tools/benchmark_vis_eval.py --whole-process [--rounds 5] [--out DIR]

Both implementations spend their per-mask time in the same pycocotools C routines (parsing each
RLE string, its area; the reference also its box and two merges per (pair, frame)); the fast one
batches the IoU calls (about one per video) and removes the Python loops. Its floor is that C work
(decoding every result mask for its area, one merge per overlapping same-frame pair), so the
speed-up grows with the number of same-category (result, GT) pairs per frame: measured on 2
idle CPU cores, 8.5x on ``dense``, 5.2x on ``crowded`` and 3.7x on ``sparse`` files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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


def make_files(out_dir: str, n_videos: int, seed: int, regime: str = "crowded") -> tuple[str, str]:
    """Write ``gt.json`` and ``results.json`` with ``n_videos`` random videos; return their paths."""
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


def _run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=REPO_ROOT)
    return time.perf_counter() - t0


def whole_process(out_dir: str, rounds: int) -> int:
    """Interleaved whole-process timings of ``vis_eval.evaluate`` and the official baseline."""
    py = sys.executable
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min)")
    helps = [_run([py, "-m", "vis_eval.evaluate", "--help"]) for _ in range(5)]
    print(f"python -m vis_eval.evaluate --help: median {np.median(helps):.3f} s")
    status = 0
    for regime in ("busy", "sparse"):
        sub = os.path.join(out_dir, regime)
        os.makedirs(sub, exist_ok=True)
        gt_path, res_path = make_files(sub, 300, 0, regime)
        ours_json, off_json = os.path.join(sub, "ours.json"), os.path.join(sub, "official.json")
        ours_cmd = [py, "-m", "vis_eval.evaluate", gt_path, res_path, "--json", ours_json]
        off_cmd = [py, os.path.abspath(__file__), "--official-process", gt_path, res_path, "--json", off_json]
        t_ours, t_off = [], []
        for _ in range(rounds):
            t_off.append(_run(off_cmd))
            t_ours.append(_run(ours_cmd))
        with open(ours_json) as f:
            a = json.load(f)["stats"]
        with open(off_json) as f:
            b = json.load(f)["stats"]
        same = list(a) == list(b) and all(abs(a[k] - b[k]) <= 1e-12 for k in a)
        mo, mu = float(np.median(t_off)), float(np.median(t_ours))
        print(
            f"{regime}: official {mo:.2f} s, vis_eval.evaluate {mu:.2f} s (medians of {rounds}), "
            f"speed-up {mo / mu:.2f}x, equal stats: {same}; load {os.getloadavg()[0]:.2f}"
        )
        status |= 0 if same else 1
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--whole-process", action="store_true", help="time whole processes (see above)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of --whole-process")
    parser.add_argument("--official-process", nargs=2, metavar=("GT", "RESULTS"), help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--videos", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--regime", choices=sorted(REGIMES), default="crowded")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs for each implementation")
    parser.add_argument("--out", default=None, help="directory for the generated JSON files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if args.official_process:
        return official_process(*args.official_process, args.json)
    if args.whole_process:
        with tempfile.TemporaryDirectory() as tmp:
            return whole_process(args.out or tmp, args.rounds)

    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out or tmp
        os.makedirs(out_dir, exist_ok=True)
        gt_path, res_path = make_files(out_dir, args.videos, args.seed, args.regime)
        t_json, (gt, results) = _time(_load, gt_path, res_path, repeat=args.repeat)
        t_fast, fast = _time(evaluate, gt, results, repeat=args.repeat)
        t_ref, ref = _time(reference_evaluate, gt, results, repeat=args.repeat)
    print(format_summary(fast.stats))
    diff = float(np.max(np.abs(fast.stats - ref.stats)))
    same = np.array_equal(fast.precision, ref.precision) and np.array_equal(fast.recall, ref.recall)
    n_gt = len(gt["annotations"])
    print(f"\n{args.videos} videos ({args.regime}), {n_gt} GT tracks, {len(results)} result tracks")
    print(f"max |stats difference| = {diff:.3g}, identical precision/recall arrays: {same}")
    print(f"reading the two JSON files (common to both): {t_json:8.3f} s")
    print(f"reference (per-pair loops):                  {t_ref:8.3f} s")
    print(f"vis_eval.evaluation.evaluate:                {t_fast:8.3f} s")
    print(f"speed-up:                                    {t_ref / t_fast:8.1f}x")
    print(f"speed-up including reading the files:        {(t_ref + t_json) / (t_fast + t_json):8.1f}x")
    if not same or diff > 1e-12:
        print("ERROR: the two implementations disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
