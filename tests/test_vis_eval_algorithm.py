"""YouTube-VIS video AP: the spec's hand-computed cases and fast == plain reference on random data."""

import copy
import logging

import numpy as np
import pycocotools.mask as mask_util
import pytest
from random_vis_cases import random_gt_and_results

from vis_eval import rle_accel
from vis_eval.evaluation import EvalParams, evaluate, reference_evaluate

IMPLS = [evaluate, reference_evaluate]


def use_rle_path(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``evaluate`` take the pure path (``VIS_EVAL_PURE=1``) or the C accelerator (skipping
    the test only where the accelerator is genuinely not built)."""
    if path == "pure":
        monkeypatch.setenv("VIS_EVAL_PURE", "1")
        assert rle_accel.get() is None
    else:
        if not rle_accel.available():
            pytest.skip("the C accelerator is not built here")
        monkeypatch.delenv("VIS_EVAL_PURE", raising=False)
        assert rle_accel.get() is not None


@pytest.fixture(autouse=True, params=["pure", "accel"])
def rle_path(request, monkeypatch):
    """Every test of this module runs on both RLE paths: same numbers as the reference on each."""
    use_rle_path(request.param, monkeypatch)
    return request.param


def rle(h, w, pixels=0, rows=None, cols=None):
    """RLE of an h x w mask: a rows x cols block at the top-left, or the first `pixels` pixels in
    column-major order."""
    m = np.zeros((h, w), np.uint8, order="F")
    if rows is not None:
        m[:rows, :cols] = 1
    else:
        m.T.flat[:pixels] = 1  # column-major fill
    r = mask_util.encode(np.asfortranarray(m))
    r["counts"] = r["counts"].decode()
    assert int(mask_util.area(r)) == (rows * cols if rows is not None else pixels)
    return r


def area(r):
    return int(mask_util.area(r)) if r else None


def make_gt(videos, tracks, n_cats=1):
    """videos: {id: (T, H, W)}; tracks: list of (video, category, segmentations[, iscrowd])."""
    anns = []
    for k, tr in enumerate(tracks):
        vid, cat, segs = tr[:3]
        anns.append(
            {
                "id": k + 1,
                "video_id": vid,
                "category_id": cat,
                "iscrowd": tr[3] if len(tr) > 3 else 0,
                "segmentations": segs,
                "areas": [area(s) for s in segs],
                "bboxes": [list(mask_util.toBbox(s)) if s else None for s in segs],
            }
        )
    return {
        "videos": [
            {"id": v, "length": t, "height": h, "width": w, "file_names": [f"{v}/{i}.jpg" for i in range(t)]}
            for v, (t, h, w) in videos.items()
        ],
        "categories": [{"id": c, "name": f"c{c}"} for c in range(1, n_cats + 1)],
        "annotations": anns,
    }


def det(vid, cat, score, segs):
    return {"video_id": vid, "category_id": cat, "score": score, "segmentations": segs}


def complement(r):
    """Compressed RLE of the complement of mask ``r``."""
    inv = np.asfortranarray(1 - mask_util.decode(r))
    return {"size": list(r["size"]), "counts": mask_util.encode(inv)["counts"].decode()}


def assert_same(fast, ref):
    assert np.array_equal(fast.precision, ref.precision)
    assert np.array_equal(fast.recall, ref.recall)
    assert np.array_equal(fast.scores, ref.scores)
    np.testing.assert_allclose(fast.stats, ref.stats, rtol=0, atol=1e-12)
    assert fast.ious.keys() == ref.ious.keys()
    for key in fast.ious:
        assert np.array_equal(fast.ious[key], ref.ious[key])


def both(gt, results, params=None):
    fast, ref = (impl(gt, results, params) for impl in IMPLS)
    assert_same(fast, ref)
    return fast


# ----------------------------------------------------------------------------- spec §4.10
def worked_example(d1=True, exact=False, wrong_size=False):
    g = [rle(10, 10, 20), None, rle(10, 10, 8)]
    if exact:
        d = [rle(10, 10, 20), None, rle(10, 10, 8)]
    else:
        d = [rle(10, 11 if wrong_size else 10, 10), rle(10, 10, 5) if d1 else None, None]
    return make_gt({1: (3, 10, 10)}, [(1, 1, g)]), [det(1, 1, 0.9, d)]


@pytest.mark.parametrize(
    "kwargs,iou",
    [
        ({}, 10 / 33),
        ({"d1": False}, 10 / 28),
        ({"exact": True, "d1": False}, 1.0),
        ({"wrong_size": True}, 0.0),
    ],
)
def test_worked_example_iou(kwargs, iou):
    gt, res = worked_example(**kwargs)
    out = both(gt, res)
    assert out.ious[1, 1][0, 0] == pytest.approx(iou, abs=1e-15)
    ap = out.stats[0]
    assert ap == pytest.approx(1.0 if iou >= 0.95 else 0.0, abs=1e-12)
    # the IoU sits exactly between thresholds placed around it
    if 0 < iou < 1:
        p = EvalParams(iou_thrs=[iou - 1e-9, iou + 1e-9])
        assert both(gt, res, p).stats[0] == pytest.approx(0.5)


def test_worked_example_wrong_size_warns_and_zip_truncation(caplog):
    gt, res = worked_example(wrong_size=True)
    with caplog.at_level(logging.WARNING, logger="vis_eval.evaluation.ytviseval"):
        evaluate(gt, res)
    assert "1 (result, GT) frame pairs have masks of different sizes" in caplog.text
    # a result with fewer frames than the video: frames past its end are ignored (zip)
    g = [rle(10, 10, 10)] * 3
    gt = make_gt({1: (3, 10, 10)}, [(1, 1, g)])
    out = both(gt, [det(1, 1, 0.5, [rle(10, 10, 10)] * 2)])
    assert out.ious[1, 1][0, 0] == 1.0
    # ... and extra frames beyond the GT's are ignored too
    out = both(gt, [det(1, 1, 0.5, [rle(10, 10, 10)] * 3 + [rle(10, 10, 50)])])
    assert out.ious[1, 1][0, 0] == 1.0


def test_empty_rle_equals_null():
    g = [rle(10, 10, 20), rle(10, 10, 20)]
    gt = make_gt({1: (2, 10, 10)}, [(1, 1, g)])
    a = both(gt, [det(1, 1, 0.5, [rle(10, 10, 20), None])])
    b = both(gt, [det(1, 1, 0.5, [rle(10, 10, 20), rle(10, 10, 0)])])
    assert a.ious[1, 1][0, 0] == b.ious[1, 1][0, 0] == 0.5


# ----------------------------------------------------------------------------- matching / accumulation rules
def test_interpolated_precision_101_points():
    # 2 GT in 2 videos; ranked TP (0.9), FP (0.8), TP (0.7): precision 1 up to recall 0.5, 2/3 after
    m = rle(10, 10, 30)
    gt = make_gt({1: (1, 10, 10), 2: (1, 10, 10)}, [(1, 1, [m]), (2, 1, [m])])
    res = [det(1, 1, 0.9, [m]), det(2, 1, 0.8, [rle(10, 10, rows=10, cols=10)]), det(2, 1, 0.7, [m])]
    # det 2 is an FP: IoU 30/100 with GT 2; det 3 then matches GT 2
    out = both(gt, res)
    expected = (51 * 1.0 + 50 * (2 / (3 + np.spacing(1)))) / 101
    assert out.stats[0] == pytest.approx(expected, abs=1e-12)
    assert out.stats[8] == 1.0  # AR100 (recall is exact)


def test_tied_scores_keep_load_order():
    m = rle(10, 10, 30)
    gt = make_gt({1: (1, 10, 10)}, [(1, 1, [m])])
    fp = det(1, 1, 0.5, [rle(10, 10, 30 + 70)])  # IoU 0.3
    tp = det(1, 1, 0.5, [m])
    assert both(gt, [fp, tp]).stats[1] == pytest.approx(0.5, abs=1e-12)  # FP ranked first
    assert both(gt, [tp, fp]).stats[1] == pytest.approx(1.0, abs=1e-12)


def test_max_dets_per_video_and_category():
    a = rle(20, 20, rows=10, cols=20)
    b = complement(a)
    gt = make_gt({1: (1, 20, 20)}, [(1, 1, [a]), (1, 1, [b])])
    out = both(gt, [det(1, 1, 0.9, [a]), det(1, 1, 0.8, [b])])
    assert out.stats[6] == 0.5  # AR1: one track per (video, category)
    assert out.stats[7] == 1.0  # AR10


def test_crowd_gt_absorbs_results():
    m1 = rle(20, 20, rows=10, cols=20)
    m2 = complement(m1)
    gt = make_gt({1: (1, 20, 20)}, [(1, 1, [m1]), (1, 1, [m2], 1)])
    res = [det(1, 1, 0.9, [m2]), det(1, 1, 0.8, [m2]), det(1, 1, 0.7, [m1])]
    out = both(gt, res)
    assert out.stats[0] == pytest.approx(1.0, abs=1e-12)  # both crowd matches are ignored, not FPs
    # without the crowd flag the second duplicate is a false positive ranked above the last TP
    gt["annotations"][1]["iscrowd"] = 0
    out = both(gt, res)
    assert out.stats[1] == pytest.approx((51 * 1.0 + 50 * 2 / (3 + np.spacing(1))) / 101, abs=1e-12)


def test_area_bands_use_average_of_nonzero_areas():
    # avg area of the truthy per-frame areas only: [0, 20000, null] -> 20000 (medium)
    h, w = 200, 200
    m = rle(h, w, pixels=20000)
    gt = make_gt({1: (3, h, w)}, [(1, 1, [rle(h, w, 0), m, None])])
    out = both(gt, [det(1, 1, 0.9, [None, m, None])])
    assert out.stats[3] == -1 and out.stats[4] == pytest.approx(1.0, abs=1e-12) and out.stats[5] == -1
    # exactly 128^2 is both small and medium (inclusive ranges)
    m = rle(h, w, pixels=128 * 128)
    gt = make_gt({1: (1, h, w)}, [(1, 1, [m])])
    out = both(gt, [det(1, 1, 0.9, [m])])
    assert out.stats[3:5] == pytest.approx([1.0, 1.0], abs=1e-12) and out.stats[5] == -1


def test_categories_without_gt_and_unknown_ones():
    m = rle(10, 10, 30)
    gt = make_gt({1: (1, 10, 10)}, [(1, 1, [m])], n_cats=3)
    res = [det(1, 1, 0.9, [m]), det(1, 2, 0.9, [m]), det(1, 7, 0.9, [m])]
    out = both(gt, res)
    # category 2 has no GT: -1, left out of the mean; 7 is not evaluated
    assert out.stats[0] == pytest.approx(1.0, abs=1e-12)
    assert np.isnan(out.per_category_ap()[2])
    with pytest.raises(ValueError, match="video_id 5"):
        evaluate(gt, [det(5, 1, 0.9, [m])])


def test_gt_formats_polygon_uncompressed_and_no_areas():
    h, w = 12, 16
    poly = [[2.0, 2.0, 10.0, 2.0, 10.0, 8.0, 2.0, 8.0]]
    poly_rle = mask_util.merge(mask_util.frPyObjects(poly, h, w))
    dense = mask_util.decode(poly_rle)
    flat = dense.ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.r_[0, change, flat.size]).tolist()
    if flat[0]:
        counts = [0] + counts
    gt = make_gt({1: (3, h, w)}, [(1, 1, [rle(h, w, 10)] * 3)])
    ann = gt["annotations"][0]
    ann["segmentations"] = [poly, {"size": [h, w], "counts": counts}, None]
    del ann["areas"]
    res = [det(1, 1, 0.9, [{"size": [h, w], "counts": poly_rle["counts"].decode()}] * 2 + [None])]
    out = both(gt, res)
    assert out.ious[1, 1][0, 0] == 1.0


def test_inputs_not_mutated():
    rng = np.random.default_rng(5)
    gt, res = random_gt_and_results(rng)
    gt0, res0 = copy.deepcopy(gt), copy.deepcopy(res)
    evaluate(gt, res)
    assert gt == gt0 and res == res0


# ----------------------------------------------------------------------------- randomised
CONFIGS = [
    dict(),
    dict(size_range=(8, 24), len_range=(1, 4), gt_per_video=(0, 3)),
    dict(size_range=(100, 300), len_range=(1, 3), n_videos=4),  # small / medium
    dict(size_range=(260, 400), len_range=(1, 2), n_videos=3, obj_frac=(0.3, 1.0)),  # large
    dict(n_videos=3, gt_per_video=(5, 9), dets_per_gt=(1, 4), n_cats=2),  # many GT per bucket
    dict(n_videos=2, gt_per_video=(2, 3), dets_per_gt=(40, 70), n_cats=1, len_range=(1, 2)),  # > 100 dets
    dict(p_null=0.6, p_crowd=0.4),
    dict(cats_per_video=1, obj_frac=(0.1, 0.5), gt_per_video=(2, 5)),
]


@pytest.mark.parametrize("seed", range(64))
def test_random_fast_equals_reference(seed):
    rng = np.random.default_rng(1000 + seed)
    gt, res = random_gt_and_results(rng, **CONFIGS[seed % len(CONFIGS)])
    params = None
    if seed % 5 == 4:
        params = EvalParams(max_dets=(1, 3, 5))
    both(gt, res, params)


@pytest.mark.parametrize("seed", range(4))
def test_batched_iou_call_splitting(seed, monkeypatch):
    """Tiny call / canvas / group bounds: many batched iou calls, one group per canvas, groups split
    between the batched and per-frame paths; same numbers."""
    import vis_eval.evaluation.ytviseval as fast_mod

    rng = np.random.default_rng(2000 + seed)
    gt, res = random_gt_and_results(rng, **CONFIGS[seed % len(CONFIGS)])
    ref = reference_evaluate(gt, res)
    monkeypatch.setattr(fast_mod, "_PAIRS_PER_CALL", 4)
    split = evaluate(gt, res)
    monkeypatch.setattr(fast_mod, "_MAX_CANVAS", 1)
    one_slot = evaluate(gt, res)
    monkeypatch.setattr(fast_mod, "_FRAME_CALL_MASKS", 3)  # mixes batched and per-frame groups
    mixed = evaluate(gt, res)
    monkeypatch.setattr(fast_mod, "_FRAME_CALL_MASKS", 1000)
    monkeypatch.setattr(fast_mod, "_VIDEO_FRAME_CALL_MASKS", 4)  # per-frame calls by (video, frame) size
    by_frame = evaluate(gt, res)
    assert_same(split, ref)
    assert_same(one_slot, ref)
    assert_same(mixed, ref)
    assert_same(by_frame, ref)


def test_bytes_and_unusual_rle_strings_take_exact_paths():
    """Bytes counts, and strings whose first run is written with redundant continuation groups or
    is longer than the batched path reads (per-frame fallback), give the reference's numbers."""
    rng = np.random.default_rng(7)
    gt, res = random_gt_and_results(rng, **CONFIGS[-1])

    def padded(counts: str, extra: int) -> str:  # same value, first run written with more groups
        k = next(i for i, ch in enumerate(counts) if ord(ch) - 48 < 32)
        head = [ord(ch) - 48 for ch in counts[: k + 1]]
        if head[-1] & 16:  # keep the sign bit clear: one more zero group
            head = head[:-1] + [head[-1] | 32, 0]
        head = [c | 32 for c in head[:-1]] + [head[-1] | 32] + [32] * (extra - 1) + [0]
        return "".join(chr(48 + c) for c in head) + counts[k + 1 :]

    n_changed = 0
    for i, r in enumerate(res):
        segs = []
        for s in r["segmentations"]:
            if s and isinstance(s.get("counts"), str):
                n_changed += 1
                if i % 3 == 0:
                    s = {"size": s["size"], "counts": s["counts"].encode()}
                elif i % 3 == 1:
                    s = {"size": s["size"], "counts": padded(s["counts"], 12)}  # > 7 characters
            segs.append(s)
        r["segmentations"] = segs
    assert n_changed
    assert_same(evaluate(gt, res), reference_evaluate(gt, res))
