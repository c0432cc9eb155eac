"""The evaluation's mask work split by video over forked worker processes: the same numbers and
the same refusals as one process, and a part whose worker fails is computed by the parent."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from random_vis_cases import random_gt_and_results
from test_vis_eval_algorithm import CONFIGS, assert_same, use_rle_path

import vis_eval.evaluation.ytviseval as fast_mod
from vis_eval.evaluation import evaluate, reference_evaluate
from vis_eval.evaluation.workers import ForkedWorkers, can_fork

REPO_ROOT = Path(__file__).resolve().parents[1]
needs_fork = pytest.mark.skipif(not can_fork(), reason="worker processes are forked on Linux only")


@pytest.fixture(params=["pure", "accel"])
def rle_path(request, monkeypatch):
    """The pure path and the C accelerator (where built)."""
    use_rle_path(request.param, monkeypatch)
    return request.param


@pytest.fixture
def split_small(monkeypatch):
    """Split any case, however small, over the workers."""
    monkeypatch.setattr(fast_mod, "_MASKS_PER_WORKER", 1)


@needs_fork
@pytest.mark.parametrize("seed", range(6))
def test_workers_give_the_reference_numbers(seed, rle_path, split_small):
    rng = np.random.default_rng(5000 + seed)
    gt, res = random_gt_and_results(rng, **CONFIGS[seed % len(CONFIGS)])
    ref = reference_evaluate(gt, res)
    for workers in (2, 3):
        result = evaluate(gt, res, workers=workers)
        assert_same(result, ref)
        assert result.ious.keys() == evaluate(gt, res).ious.keys()


@needs_fork
def test_each_part_computed_by_its_own_process():
    with ForkedWorkers(3) as pool:
        pids = pool.map(lambda part: (part, os.getpid()), ["a", "b", "c"])
    assert [p for p, _ in pids] == ["a", "b", "c"]
    assert pids[0][1] == os.getpid() and len({pid for _, pid in pids}) == 3
    with ForkedWorkers(3) as pool:  # fewer parts than processes: the extra child sends nothing
        assert pool.map(lambda part: part * 2, [1, 2]) == [2, 4]


@pytest.mark.parametrize("workers", [1, 2])
def test_no_results_or_no_gt_tracks_with_workers(workers, split_small):
    gt, res = random_gt_and_results(np.random.default_rng(11), quirks=False, n_videos=4, gt_per_video=(1, 3))
    assert_same(evaluate(gt, [], workers=workers), reference_evaluate(gt, []))
    no_tracks = dict(gt, annotations=[])
    assert_same(evaluate(no_tracks, res, workers=workers), reference_evaluate(no_tracks, res))


@needs_fork
def test_workers_split_by_video_in_balanced_parts(split_small):
    d_segms = [[1] * 10, [1] * 10, [1] * 30, [1] * 10]
    d_vid = np.array([0, 1, 2, 3])
    g_segms = [[1] * 10] * 4
    g_vid = np.array([0, 1, 2, 3])
    assert fast_mod._video_parts(d_segms, d_vid, g_segms, g_vid, 4, 2) == [(0, 3), (3, 4)]
    assert fast_mod._video_parts(d_segms, d_vid, g_segms, g_vid, 4, 1) == [(0, 4)]
    assert fast_mod._video_parts([], d_vid[:0], [], g_vid[:0], 4, 2) == [(0, 4)]  # no work to share


@needs_fork
def test_malformed_mask_reported_alike_with_workers(rle_path, split_small):
    gt, res = random_gt_and_results(np.random.default_rng(4), quirks=False, n_videos=6, gt_per_video=(1, 3))
    bad = [i for i, r in enumerate(res) if any(r["segmentations"])]
    for k in (bad[0], bad[-1]):  # one in the first part, one in the last
        t = next(t for t, s in enumerate(res[k]["segmentations"]) if s)
        s = res[k]["segmentations"][t]
        res[k]["segmentations"][t] = {"size": s["size"], "counts": s["counts"] + "1"}
    with pytest.raises(ValueError) as one:
        evaluate(gt, res)
    with pytest.raises(ValueError) as two:
        evaluate(gt, res, workers=2)
    assert str(one.value) == str(two.value)
    assert str(one.value).startswith("2 malformed result mask(s)")


@needs_fork
def test_failed_workers_parts_computed_by_the_parent(monkeypatch, split_small):
    gt, res = random_gt_and_results(np.random.default_rng(8), quirks=False, n_videos=6, gt_per_video=(1, 3))
    ref = evaluate(gt, res)
    parent = os.getpid()
    real = fast_mod._bucket_ious

    def dies_in_children(*args):
        if os.getpid() != parent:
            os._exit(3)
        return real(*args)

    monkeypatch.setattr(fast_mod, "_bucket_ious", dies_in_children)
    assert_same(evaluate(gt, res, workers=3), ref)

    def fork_fails():
        raise OSError("no more processes")

    monkeypatch.setattr(fast_mod, "_bucket_ious", real)
    monkeypatch.setattr(os, "fork", fork_fails)
    pool = ForkedWorkers(3)
    assert pool.size == 1  # nothing forked: the parent computes every part
    assert_same(evaluate(gt, res, workers=pool), ref)


@needs_fork
def test_children_never_leave_the_pool_block(tmp_path):
    """A child that reaches the end of the ``with`` block without a ``map`` exits there; the
    parent collects nothing and goes on."""
    marker = tmp_path / "after"
    code = (
        "import os, sys\n"
        "from vis_eval.evaluation.workers import ForkedWorkers\n"
        "with ForkedWorkers(3) as pool:\n"
        "    rank = pool.rank\n"
        f"open({str(marker)!r} + str(rank), 'w').close()\n"
        "print('parent' if rank == 0 else 'child')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "parent\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["after0"]


@needs_fork
def test_command_with_workers_gives_the_same_stats(tmp_path):
    """``python -m vis_eval.evaluate --workers N``: children forked before the files are read give
    the stats of one process (with the split forced by a tiny ``_MASKS_PER_WORKER``)."""
    gt, res = random_gt_and_results(np.random.default_rng(9), quirks=False, n_videos=8, gt_per_video=(1, 4))
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    run = (
        "import sys, vis_eval.evaluation.ytviseval as m; m._MASKS_PER_WORKER = 1\n"
        "from vis_eval.evaluation.commands import evaluate_main\n"
        "sys.exit(evaluate_main(sys.argv[1:]))\n"
    )
    stats = []
    for workers in ("1", "2"):
        out = tmp_path / f"stats-{workers}.json"
        cmd = [sys.executable, "-c", run, str(tmp_path / "gt.json"), str(tmp_path / "res.json")]
        proc = subprocess.run(
            [*cmd, "--workers", workers, "--json", str(out)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("\nevaluated ") == 1  # the children print nothing
        stats.append(json.loads(out.read_text()))
    assert stats[0] == stats[1]
    assert stats[0]["stats"] == evaluate(gt, res).as_dict()


def test_default_workers_bounded_by_the_memory_for_parsed_copies(tmp_path, monkeypatch):
    from vis_eval.evaluation import commands

    f = tmp_path / "res.json"
    f.write_bytes(b"[]" * 500)  # 1000 bytes: a parsed copy needs ~5000
    pages = {"SC_PAGE_SIZE": 1000, "SC_AVPHYS_PAGES": 12}  # 12000 bytes available
    monkeypatch.setattr(os, "sysconf", lambda name: pages[name])
    assert commands._affordable_copies(str(f)) == 2
    pages["SC_AVPHYS_PAGES"] = 1
    assert commands._affordable_copies(str(f)) == 1
    assert commands._affordable_copies(str(tmp_path / "missing.json")) == 1
    pages["SC_AVPHYS_PAGES"] = 12
    z = tmp_path / "res.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("results.json", "[]" * 1000)  # 2000 bytes once unpacked, far fewer packed
    assert z.stat().st_size < 200 and commands._affordable_copies(str(z)) == 1
