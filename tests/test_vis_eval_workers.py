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


# --- the results file read in pieces, one per process (``python -m vis_eval.evaluate``)

RESULT_KEYS = ("video_id", "category_id", "score", "segmentations")


def _tricky_results() -> list:
    """Results whose strings hold what a boundary between elements looks like, nested objects
    whose first key is a result's, and an element with nothing nested."""
    rs = []
    for i in range(12):
        r = {
            "video_id": i,
            "score": 0.5,
            "category_id": 1,
            "segmentations": [{"size": [4, 4], "counts": "04" + "\\" * (i % 3) + "]0"}, None],
        }
        if i % 4 == 1:
            r["note"] = '}, {"video_id": 3, "x": "\\"}, {\\"score\\": 1'
        if i % 4 == 2:
            r["segmentations"].append({"score": 1, "nested": [{"video_id": 2}, {"video_id": 3}]})
        if i % 4 == 3:
            r = {"segmentations": [], "video_id": i, "category_id": 2, "score": 1e-3}
        rs.append(r)
    return rs


def read_json_list_piece(path, k, n, keys):
    """Piece ``k`` of ``n`` as the command reads it (None: it does not parse, or the text does not
    have the ``n - 1`` cuts: then the command reads the file whole)."""
    from vis_eval.file_io import json_list_cuts, json_list_piece, read_bytes

    try:
        _, data = read_bytes(path)
    except OSError:
        return None
    cuts = json_list_cuts(data, n, keys)
    return json_list_piece(data, cuts, k) if len(cuts) == n - 1 else None


@pytest.mark.parametrize("layout", ["compact", "indented", "zip"])
def test_json_list_pieces_are_the_whole_list_in_order(tmp_path, layout):
    rs = _tricky_results()
    text = json.dumps(rs, indent=2 if layout == "indented" else None)
    path = tmp_path / "res.json"
    path.write_text(text)
    if layout == "zip":
        path = tmp_path / "res.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("results.json", text)
    for n in range(1, 6):
        pieces = [read_json_list_piece(path, k, n, RESULT_KEYS) for k in range(n)]
        assert sum(pieces, []) == rs, n
        assert all(len(p) > 0 for p in pieces), n  # a boundary near each k/n point
    assert read_json_list_piece(tmp_path / "missing.json", 0, 2, RESULT_KEYS) is None


def test_json_list_piece_none_unless_the_pieces_are_elements_of_the_list(tmp_path):
    """A boundary inside a nested list, a file that is not a list, a malformed file: the pieces
    that do not parse are None (the file is then read whole)."""

    path = tmp_path / "f.json"
    like = {key: 1 for key in RESULT_KEYS}  # nested objects that look like results
    path.write_text(json.dumps({"a": [dict(like, pad="x" * 50) for _ in range(6)]}))
    assert [read_json_list_piece(path, k, 2, RESULT_KEYS) for k in range(2)] == [None, None]
    inner = [dict(like, segmentations=[dict(like, pad="y" * 40) for _ in range(8)])]
    path.write_text(json.dumps(inner))  # boundaries only between the nested objects
    assert read_json_list_piece(path, 0, 2, RESULT_KEYS) is None
    top = [dict(like, pad="z" * 40) for _ in range(8)]
    path.write_text(json.dumps(top))
    halves = [read_json_list_piece(path, k, 2, RESULT_KEYS) for k in range(2)]
    assert halves[0] and halves[1] and halves[0] + halves[1] == top
    path.write_text(json.dumps(_tricky_results())[:-40])  # truncated
    assert read_json_list_piece(path, 0, 2, RESULT_KEYS) is not None
    assert read_json_list_piece(path, 1, 2, RESULT_KEYS) is None


@needs_fork
def test_map_without_recompute_gives_none_for_a_failed_child():
    parent = os.getpid()

    def part(k):
        if os.getpid() != parent:
            os._exit(3)
        return k

    with ForkedWorkers(2) as pool:
        assert pool.map(part, [0, 1], recompute=False) == [0, None]


def _cli(tmp_path, gt, res, workers, capsys):
    from vis_eval.evaluation.commands import evaluate_main

    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    out = tmp_path / f"stats-{workers}.json"
    argv = [
        str(tmp_path / "gt.json"),
        str(tmp_path / "res.json"),
        "--workers",
        str(workers),
        "--json",
        str(out),
    ]
    code = evaluate_main(argv)
    captured = capsys.readouterr()
    return code, captured.err, json.loads(out.read_text())["stats"] if code == 0 else None


@needs_fork
@pytest.mark.parametrize("config", [0, 4, 5, 6])  # 5: buckets of over 100 results, across pieces
def test_command_pieces_give_the_reference_stats(config, rle_path, tmp_path, monkeypatch, capsys):
    """Each process reads and evaluates its piece of the results file; the parent combines them
    (checked to be the path taken) into the reference's stats, whatever the results' order."""
    from vis_eval.evaluation import commands

    rng = np.random.default_rng(7000 + config)
    gt, res = random_gt_and_results(rng, **dict(CONFIGS[config], quirks=False))
    seen: set = set()  # without the duplicate tracks the command refuses
    keys = [json.dumps([r["video_id"], r["category_id"], r["segmentations"]]) for r in res]
    res = [r for r, key in zip(res, keys) if not (key in seen or seen.add(key))]
    if config == 5:
        assert max(np.unique([r["video_id"] for r in res], return_counts=True)[1]) > 100
    if config % 2:
        res.sort(key=lambda r: r["video_id"])  # as written video by video
    ref = reference_evaluate(gt, res).as_dict()
    combined = []
    real = commands.PieceEvaluation.combine
    monkeypatch.setattr(
        commands.PieceEvaluation, "combine", lambda self, w: combined.append(len(w)) or real(self, w)
    )
    for workers in (2, 3):
        code, err, stats = _cli(tmp_path, gt, res, workers, capsys)
        assert code == 0, err
        assert stats.keys() == ref.keys() and all(abs(stats[k] - ref[k]) <= 1e-12 for k in ref)
    assert combined == [2, 3]


@needs_fork
def test_command_reads_a_file_without_cuts_whole_in_each_process(tmp_path, monkeypatch, capsys):
    """Results whose objects start with another key cannot be cut: every process parses the
    whole file and the mask work is split by video, as the reference's stats show."""
    gt, res = random_gt_and_results(np.random.default_rng(3), quirks=False, n_videos=8, gt_per_video=(1, 3))
    res = [{"id": i, **r} for i, r in enumerate(res)]
    parts = []
    real = fast_mod._part_work
    monkeypatch.setattr(fast_mod, "_MASKS_PER_WORKER", 1)
    monkeypatch.setattr(fast_mod, "_part_work", lambda g, r, *a: parts.append(len(r)) or real(g, r, *a))
    code, err, stats = _cli(tmp_path, gt, res, 2, capsys)
    assert code == 0, err
    ref = reference_evaluate(gt, res).as_dict()
    assert all(abs(stats[k] - ref[k]) <= 1e-12 for k in ref)
    assert parts == [len(res)]  # the parent's part of the videos, from the whole list


@needs_fork
@pytest.mark.parametrize(
    "problem", ["duplicate across pieces", "bad score in the last piece", "malformed mask"]
)
def test_command_pieces_report_problems_as_one_process(problem, tmp_path, capsys):
    gt, res = random_gt_and_results(np.random.default_rng(12), quirks=False, n_videos=8, gt_per_video=(1, 3))
    k = next(i for i, r in enumerate(res) if any(r["segmentations"]))
    if problem == "duplicate across pieces":
        res.append(dict(res[k], score=0.25))
    elif problem == "bad score in the last piece":
        res[-1] = dict(res[-1], score=float("nan"))
    else:
        j = max(i for i, r in enumerate(res) if any(r["segmentations"]))
        t = next(t for t, s in enumerate(res[j]["segmentations"]) if s)
        s = res[j]["segmentations"][t]
        res[j]["segmentations"][t] = {"size": s["size"], "counts": s["counts"] + "1"}
    one = _cli(tmp_path, gt, res, 1, capsys)
    assert one[0] == 2
    assert _cli(tmp_path, gt, res, 2, capsys) == one


@needs_fork
def test_children_reaped_after_their_answers():
    """The parent does not wait for a child's exit to use its answer; the children are reaped at
    the end of the pool's block (no zombie left)."""
    from vis_eval.evaluation import workers as workers_mod

    with ForkedWorkers(3) as pool:
        pids = pool.map(lambda part: os.getpid(), [1, 2, 3])[1:]
        assert len(workers_mod._exited) <= 2  # answered, maybe not reaped yet
    assert workers_mod._exited == []
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # already reaped
