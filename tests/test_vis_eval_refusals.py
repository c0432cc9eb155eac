"""Invalid results and ground truth are refused before scoring; the one-pass RLE run sums."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from random_vis_cases import random_gt_and_results

from vis_eval import evaluate as evaluate_cli
from vis_eval.evaluation import evaluate, reference_evaluate, validate_results
from vis_eval.evaluation.results import check_results
from vis_eval.file_io import read_json
from vis_eval.rle import decode_counts, encode_masks, run_sums

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def files(tmp_path):
    gt, res = random_gt_and_results(np.random.default_rng(4), quirks=False, n_videos=4, gt_per_video=(1, 3))
    return tmp_path, gt, res


def run_cli(tmp_path, gt, res, capsys):
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    code = evaluate_cli.main([str(tmp_path / "gt.json"), str(tmp_path / "res.json")])
    return code, capsys.readouterr().err


def test_good_file_is_scored(files, capsys):
    tmp_path, gt, res = files
    code, err = run_cli(tmp_path, gt, res, capsys)
    assert code == 0, err


def test_command_output_cut_short_exits_without_a_traceback(files):
    """``python -m vis_eval.evaluate ... | head``: a reader that has gone ends the command quietly,
    with status 1 (it did not finish)."""
    tmp_path, gt, res = files
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    cmd = [sys.executable, "-m", "vis_eval.evaluate", str(tmp_path / "gt.json"), str(tmp_path / "res.json")]
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first write
    try:
        proc = subprocess.run(cmd, stdout=w, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, timeout=120)
    finally:
        os.close(w)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1


def test_unknown_category_refused_with_contiguous_hint(files, capsys):
    tmp_path, gt, res = files
    res[0] = dict(res[0], category_id=0)  # a 0-based model class index instead of a dataset id
    code, err = run_cli(tmp_path, gt, res, capsys)
    assert code == 2 and "category_id 0 not in the ground truth's categories" in err
    assert "contiguous class indices" in err and "nothing scored" in err


@pytest.mark.parametrize("score", [float("nan"), float("inf"), "0.5", None])
def test_non_finite_score_refused(files, capsys, score):
    tmp_path, gt, res = files
    res[1] = dict(res[1], score=score)
    code, err = run_cli(tmp_path, gt, res, capsys)
    assert code == 2 and "is not a finite number" in err


@pytest.mark.parametrize("delta", [-1, 1])
def test_segmentations_length_refused(files, capsys, delta):
    tmp_path, gt, res = files
    segs = res[0]["segmentations"]
    res[0] = dict(res[0], segmentations=segs[:-1] if delta < 0 else segs + [None])
    code, err = run_cli(tmp_path, gt, res, capsys)
    n = len(segs)
    assert code == 2 and f"'segmentations' has {n + delta} entries, the video has {n} frames" in err


def test_duplicate_track_refused(files, capsys):
    tmp_path, gt, res = files
    k = next(i for i, r in enumerate(res) if any(r["segmentations"]))
    res.append(dict(res[k], score=0.123))
    code, err = run_cli(tmp_path, gt, res, capsys)
    assert code == 2 and f"duplicate of result #{k}" in err


def test_duplicates_need_every_frame_equal(files):
    """Tracks sharing video, category and first mask but differing later are not duplicates; an
    exact copy is, reported against the first of its kind; unhashable masks are not compared."""
    _, gt, res = files
    k = next(i for i, r in enumerate(res) if sum(map(bool, r["segmentations"])) >= 2)
    segms = res[k]["segmentations"]
    t = max(i for i, s in enumerate(segms) if s)
    later = list(segms)
    later[t] = None  # same first mask, one later frame differs
    uncompressed = list(segms)
    uncompressed[t] = {"size": segms[t]["size"], "counts": [1, 2]}  # unhashable
    extra = [dict(res[k], segmentations=later), dict(res[k], segmentations=uncompressed), dict(res[k])]
    errors: list[str] = []
    videos = {v["id"]: (v["length"], v["height"], v["width"]) for v in gt["videos"]}
    check_results(res + extra, videos, {c["id"] for c in gt["categories"]}, errors.append, lambda m: None)
    n = len(res)
    assert errors == [
        f"result #{n + 2} (video {res[k]['video_id']}): duplicate of result #{k} (same video, category and masks)"
    ]


@pytest.mark.parametrize(
    "where,key,msg",
    [
        ("annotations", "segmentations", "annotation #0 (id 1) has no 'segmentations'"),
        ("videos", "height", "has no 'height'"),
        (None, "videos", "'videos' list"),
    ],
)
def test_gt_missing_fields_give_clear_errors(files, capsys, where, key, msg):
    tmp_path, gt, res = files
    if where is None:
        del gt[key]
    else:
        del gt[where][0][key]
    code, err = run_cli(tmp_path, gt, res, capsys)
    assert code == 2 and msg in err and "Traceback" not in err
    with pytest.raises(ValueError, match="ground truth"):
        evaluate(gt, res)


def test_corrupt_zip_gives_clear_error(files, capsys):
    tmp_path, gt, res = files
    good = tmp_path / "results.zip"
    with zipfile.ZipFile(good, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("results.json", json.dumps(res))
    data = bytearray(good.read_bytes())
    data[40:80] = b"\0" * 40  # damage the compressed member, keep the central directory
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt zip archive"):
        read_json(bad)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    assert evaluate_cli.main([str(tmp_path / "gt.json"), str(bad)]) == 2
    assert "corrupt zip archive" in capsys.readouterr().err


def test_validate_reports_a_wrong_size_mask_once(files):
    _, gt, res = files
    v = gt["videos"][0]
    h, w, n = v["height"], v["width"], v["length"]
    wrong = encode_masks(np.ones((1, h, w + 1), bool))[0]
    rep = validate_results(
        [{"video_id": v["id"], "category_id": 1, "score": 0.5, "segmentations": [wrong] * n}], gt
    )
    assert rep.n_errors == n, rep.errors
    assert all("differs from the video's frame size" in e for e in rep.errors)


def test_malformed_mask_refused_by_the_evaluation(files):
    _, gt, res = files
    k = next(i for i, r in enumerate(res) if any(r["segmentations"]))
    t = next(t for t, s in enumerate(res[k]["segmentations"]) if s)
    s = res[k]["segmentations"][t]
    res[k]["segmentations"][t] = {"size": s["size"], "counts": s["counts"] + "1"}  # one pixel too many
    with pytest.raises(ValueError, match=rf"1 malformed result mask\(s\).*result #{k}, frame {t}"):
        evaluate(gt, res)


def _strings(rng, n):
    out = []
    for _ in range(n):
        h, w = (int(x) for x in rng.integers(1, 40, size=2))
        m = rng.random((h, w)) < rng.random()
        out.append(mask_util.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode())
    return out


def test_run_sums_equal_pycocotools_and_decode_counts():
    rng = np.random.default_rng(0)
    strings = _strings(rng, 300) + ["", "0", "1O", "a`", "ab~", "0\x7f", "O"]
    area, total, ok = run_sums(strings)
    bstrings = [s.encode() for s in strings]
    assert all(np.array_equal(a, b) for a, b in zip(run_sums(bstrings), (area, total, ok)))
    for i, s in enumerate(strings):
        try:
            runs, _ = decode_counts([s])
            expect = (True, int(runs[1::2].sum()), int(runs.sum()))
        except ValueError:
            expect = (False, None, None)
        got = (bool(ok[i]), int(area[i]), int(total[i]))
        assert got[0] == expect[0] and (not got[0] or got == expect), (s, got, expect)
    good = np.flatnonzero(ok[:300])
    rles = [{"size": [1, int(total[i])], "counts": strings[i]} for i in good]
    assert np.array_equal(area[good], np.asarray(mask_util.area(rles), np.int64))
    assert not ok[-1]  # a negative run
    # a first run padded with zero groups past 60 bits is valid for pycocotools; other bits are not
    area, total, ok = run_sums(["3" + "P" * 13 + "0", "3" + "o" * 13 + "0"])
    assert ok.tolist() == [True, False] and total[0] == 3 and area[0] == 0


def test_statistics_unchanged_by_the_checks():
    rng = np.random.default_rng(11)
    gt, res = random_gt_and_results(rng, quirks=False, n_videos=6)
    a, b = evaluate(gt, res), reference_evaluate(gt, res)
    assert list(a.as_dict()) == [
        "AP",
        "AP50",
        "AP75",
        "APs",
        "APm",
        "APl",
        "AR1",
        "AR10",
        "AR100",
        "ARs",
        "ARm",
        "ARl",
    ]
    np.testing.assert_array_equal(a.precision, b.precision)
