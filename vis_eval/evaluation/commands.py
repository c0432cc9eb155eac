"""The evaluation commands (they import neither torch nor Detectron2, so they start at once).

Evaluate a YouTube-VIS results file against annotations with the exact video AP::

    python -m vis_eval.evaluate GT.json RESULTS.json|results.zip [--per-category] [--json OUT]

Prints the 12 stats (AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l); -1 marks an undefined stat.
Invalid results are refused before scoring (exit status 2), with the checks of ``vis_eval.validate``
(:func:`vis_eval.evaluation.results.check_results`): unknown videos or categories, scores that are not
finite numbers, ``segmentations`` lists that are not one entry per frame, duplicate tracks. Masks
whose RLE runs do not cover their H x W pixels are refused by the evaluation itself (pycocotools
would loop forever on them), in the pass that computes the mask areas. Worker processes
(``--workers``) are forked before the files are read; each reads the GT and its piece of the
results file, checks it and computes its mask work, and the parent combines the pieces
(:class:`~vis_eval.evaluation.ytviseval.PieceEvaluation`; on any problem it reads the whole file
itself, so errors are reported as with one process).

Check a results file before evaluation or upload (exit status 1 when it has errors)::

    python -m vis_eval.validate RESULTS.json|results.zip GT.json|DATASET_NAME [--max-messages N]

Only a dataset name (not a file) imports Detectron2, to read the builtin registrations.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
import zipfile
from collections.abc import Callable
from typing import Any, NoReturn

from ..file_io import json_list_cuts, json_list_piece, read_bytes
from .params import EvalResult, format_summary, load_gt, load_results
from .reference import reference_evaluate
from .results import ValidationReport, check_results, malformed_masks, validate_results
from .workers import ForkedWorkers, default_workers
from .ytviseval import PieceEvaluation, evaluate

__all__ = ["evaluate_main", "run_command", "validate_main"]


# the parsed input files of a command run by ``run_command(..., fast_exit=True)``: kept here, they
# are not freed object by object when the command's function returns (the process exits instead)
_RETAINED: list = []
_retain_inputs = False


def run_command(main: Callable[[], int], fast_exit: bool = False) -> NoReturn:
    """Run a ``python -m`` entry point and exit with its status. A reader that stops early
    (``| head``) ends it with status 1 and no traceback. ``fast_exit``: leave without freeing the
    process's objects one by one (``os._exit`` after flushing the standard streams; for commands
    that parsed large files and closed their output files), the parsed inputs included."""
    global _retain_inputs
    _retain_inputs = fast_exit
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing left to flush at exit
        status = 1
    if not fast_exit:
        sys.exit(status)
    try:
        sys.stderr.flush()
    finally:
        os._exit(status)


def evaluate_main(argv: list[str] | None = None) -> int:
    """``python -m vis_eval.evaluate``: print the video AP of a results file; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m vis_eval.evaluate", description="YouTube-VIS video AP")
    parser.add_argument("gt", help="annotation JSON with 'annotations'")
    parser.add_argument("results", help="results JSON (list of video instances) or submission zip")
    parser.add_argument("--per-category", action="store_true", help="also print AP per category")
    parser.add_argument("--json", default=None, help="write the stats (and per-category AP) to this file")
    parser.add_argument("--reference", action="store_true", help="use the slow plain-loop implementation")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes, forked before the files are read, each reading and evaluating its piece of "
        "the results file "
        "(default: the usable CPUs, at most 4 and at most as many as the available memory holds "
        "parsed copies of the files; 1 on macOS / Windows)",
    )
    parser.add_argument("--no-mask-check", action="store_true", help=argparse.SUPPRESS)  # no longer needed
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    # the files' millions of objects hold no cycles: without this, every collection after the
    # loads would traverse all of them again (a short-lived command; the previous state is restored)
    was_enabled = gc.isenabled()
    gc.disable()
    workers = args.workers
    if args.reference:
        workers = 1
    elif workers is None:
        workers = min(default_workers(), _affordable_copies(args.gt, args.results))
    try:
        # the children read the files themselves, in parallel with this process (see workers.py)
        with ForkedWorkers(workers) as pool:
            return _evaluate_command(args, pool)
    finally:
        if was_enabled:
            gc.enable()


_PARSED_BYTES_PER_FILE_BYTE = 5  # memory of parsed RLE JSON over its size (measured ~4.5)


def _affordable_copies(*paths: str) -> int:
    """How many processes can each hold the parsed files in the memory available now (at least 1)."""
    try:
        size = 0
        for p in paths:
            if zipfile.is_zipfile(p):  # what is parsed is the uncompressed member
                with zipfile.ZipFile(p) as zf:
                    size += sum(info.file_size for info in zf.infolist())
            else:
                size += os.path.getsize(p)
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError, zipfile.BadZipFile):  # unknown: one process
        return 1
    return max(1, available // max(_PARSED_BYTES_PER_FILE_BYTE * size, 1))


_RESULT_KEYS = ("video_id", "category_id", "score", "segmentations")


def _video_lengths(gt: dict) -> dict[int, tuple[int, int, int]]:
    return {v["id"]: (int(v.get("length", len(v.get("file_names", [])))), 0, 0) for v in gt["videos"]}


def _evaluate_in_pieces(args: argparse.Namespace, gt: dict, pool: ForkedWorkers) -> EvalResult | None:
    """Each process reads, checks and evaluates its piece of the results file
    (:class:`~vis_eval.evaluation.ytviseval.PieceEvaluation`); the parent combines them.

    None when the file is read whole instead: in every process when it cannot be cut into one
    piece per process (then each process parses it and the mask work is split by video); in the
    parent when a piece does not parse, has a problem :func:`check_results` reports or may repeat
    a track of another piece, or a child gave nothing (then the parent alone reads, checks and
    evaluates the whole file, reporting the problems as usual).
    """
    k, n = pool.rank, pool.size
    if n <= 1:
        return None
    try:
        _, data = read_bytes(args.results)
    except (OSError, ValueError):
        return None
    cuts = json_list_cuts(data, n, _RESULT_KEYS)
    if len(cuts) < n - 1:
        return None
    piece = json_list_piece(data, cuts, k)
    del data
    track_keys: set[int] = set()
    ok = piece is not None and _piece_is_valid(piece, gt, track_keys)
    if not ok and k == 0:
        pool.close()
        return None
    split = PieceEvaluation(gt, n)

    def work(part: tuple[int, int]) -> tuple[set, Any] | None:
        return (track_keys, split.work(piece, k)) if ok else None

    got = pool.map(work, [(j, n) for j in range(n)], recompute=False)
    seen: set = set()
    for g in got:
        if g is None or not seen.isdisjoint(g[0]):  # maybe a duplicate track across pieces
            return None
        seen |= g[0]
    if _retain_inputs:
        _RETAINED.append(piece)
    return split.combine([w for _, w in got])


def _piece_is_valid(piece: list, gt: dict, track_keys: set[int]) -> bool:
    """Whether a piece of a results file has none of the problems :func:`check_results` reports
    (collects the hashes of the duplicate check's keys of its tracks in ``track_keys``)."""
    try:
        load_results(piece)
    except ValueError:
        return False
    n_errors = 0

    def err(msg: str) -> None:
        nonlocal n_errors
        n_errors += 1

    cats = {c["id"] for c in gt["categories"]}
    check_results(piece, _video_lengths(gt), cats, err, lambda msg: None, duplicate_keys=track_keys)
    return n_errors == 0


def _evaluate_command(args: argparse.Namespace, workers: ForkedWorkers) -> int:
    try:
        gt = load_gt(args.gt)
    except (OSError, ValueError) as e:
        print(
            f"error: {args.gt}: {e}" if str(e).startswith("ground truth") else f"error: {e}", file=sys.stderr
        )
        return 2
    if not gt.get("annotations"):
        print(
            f"error: {args.gt} has no annotations (valid/test splits are scored by the server)",
            file=sys.stderr,
        )
        return 2
    if _retain_inputs:
        _RETAINED.append(gt)
    start = time.perf_counter()
    try:
        res = None if args.reference else _evaluate_in_pieces(args, gt, workers)
    except ValueError as e:  # malformed masks
        print(f"error: {e}", file=sys.stderr)
        return 2
    if res is None:  # the file read whole, in this process
        start = time.perf_counter()
        try:
            results = load_results(args.results)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if _retain_inputs:
            _RETAINED.append(results)
        report = ValidationReport()

        def err(msg: str) -> None:
            report.n_errors += 1
            if len(report.errors) < 20:
                report.errors.append(msg)

        check_results(results, _video_lengths(gt), {c["id"] for c in gt["categories"]}, err, lambda msg: None)
        if args.reference and not report.n_errors:  # the fast evaluation checks the masks itself
            for m in malformed_masks(results)[0]:
                err(m)
        if report.n_errors:
            for m in report.errors:
                print(f"error: {m}", file=sys.stderr)
            print(f"error: {report.n_errors} problem(s) in {args.results}; nothing scored", file=sys.stderr)
            return 2
        try:
            res = (
                reference_evaluate(gt, results) if args.reference else evaluate(gt, results, workers=workers)
            )
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    elapsed = time.perf_counter() - start
    print(format_summary(res.stats, res.params))
    names = {c["id"]: c.get("name", str(c["id"])) for c in gt["categories"]}
    per_cat = res.per_category_ap()
    if args.per_category:
        print()
        for cat, ap in per_cat.items():
            print(f"AP {names.get(cat, cat):<24} {ap:7.4f}")
    print(f"\nevaluated {len(res.vid_ids)} videos, {len(res.cat_ids)} categories in {elapsed:.2f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"stats": res.as_dict(), "per_category_ap": {names.get(k, k): v for k, v in per_cat.items()}},
                f,
                indent=1,
            )
    return 0


def validate_main(argv: list[str] | None = None) -> int:
    """``python -m vis_eval.validate``: print the problems of a results file; 1 if it has errors."""
    parser = argparse.ArgumentParser(
        prog="python -m vis_eval.validate", description="Validate a YouTube-VIS results file"
    )
    parser.add_argument("results", help="results JSON or submission zip")
    parser.add_argument(
        "gt", help="annotation JSON of the split (valid/test JSONs work) or a registered dataset"
    )
    parser.add_argument("--max-messages", type=int, default=20)
    parser.add_argument("--no-decode", action="store_true", help="skip decoding every RLE string")
    args = parser.parse_args(argv)
    report = validate_results(
        args.results, args.gt, max_messages=args.max_messages, check_counts=not args.no_decode
    )
    print(report)
    return 0 if report.ok else 1
