"""STMask inference (spec stmask.md §4.2-§4.6): candidates, Fast NMS against plain-Python references of
the rules, the Track_TF tracker on hand-made detections, and the postprocessing to ``Instances``."""

import math

import pytest
import torch

from stmask.modeling.inference import detect_frame, frame_masks, generate_candidates
from stmask.modeling.postprocess import tracks_to_instances
from stmask.modeling.tracker import STMaskTracker

# ---------------------------------------------------------------------------------------------------
# Candidates and NMS
# ---------------------------------------------------------------------------------------------------


def _py_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _py_fast_nms(items, top_k, thresh):
    """items: [(score, box, payload)]; YOLACT's rule: the top_k by score, j kept iff its IoU with every
    higher-scored one of the top_k (suppressed or not) is <= thresh."""
    top = sorted(items, key=lambda t: -t[0])[:top_k]
    return [t for j, t in enumerate(top) if all(_py_iou(top[i][1], t[1]) <= thresh for i in range(j))]


def _random_frame(n=60, num_classes=4, seed=0):
    """Random head outputs whose loc is 0, so that the decoded boxes are the priors' corners."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 2, generator=g) * 0.6 + 0.2
    sizes = torch.rand(n, 2, generator=g) * 0.2 + 0.1
    priors = torch.cat([centres, sizes], dim=1)
    logits = torch.randn(n, num_classes + 1, generator=g) * 3
    ctr = torch.rand(n, generator=g) * 1.8 - 0.9  # tanh range, many negative
    track = torch.nn.functional.normalize(torch.randn(n, 8, generator=g), dim=1)
    coeffs = torch.randn(n, 5, generator=g)
    coeffs[:, 0] = torch.arange(n)  # identifies the anchor
    return torch.zeros(n, 4), logits, ctr, track, coeffs, priors


def _py_corners(prior):
    cx, cy, w, h = prior
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _py_softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def test_candidates_threshold_is_strict_on_the_best_object_class():
    logits = torch.tensor(
        [
            [0.0, 1.0, 0.5],  # reference anchor: its best object probability is the threshold
            [0.0, 1.2, 0.5],  # a little above
            [5.0, 2.2, -9.0],  # background dominant, object prob ~0.05 (checked below)
            [9.0, 0.0, 0.0],  # background only
        ]
    )
    thresh = torch.softmax(logits, -1)[0, 1:].max().item()
    n = len(logits)
    cand = generate_candidates(
        torch.zeros(n, 4),
        logits,
        torch.ones(n),
        torch.eye(n),
        torch.arange(n, dtype=torch.float32)[:, None],
        torch.tensor([[0.5, 0.5, 0.2, 0.2]] * n),
        candidate_thresh=thresh,
    )
    # anchor 0 sits exactly on the threshold (excluded); background probability is never counted
    probs = torch.softmax(logits, -1)
    expected = [i for i in range(n) if probs[i, 1:].max().item() > thresh]
    assert 0 not in expected and 1 in expected
    assert cand["coeffs"][:, 0].long().tolist() == expected
    assert torch.allclose(cand["conf"], probs[expected])
    assert torch.allclose(cand["boxes"], torch.tensor([[0.4, 0.4, 0.6, 0.6]] * len(expected)))


def test_cross_class_nms_matches_the_plain_rule_with_negative_centerness():
    loc, logits, ctr, track, coeffs, priors = _random_frame(n=40)
    # An anchor whose negative centerness makes argmax(conf * ctr) differ from argmax(conf).
    logits[0] = torch.tensor([0.0, 4.0, 1.0, 0.0, 0.0])
    ctr[0] = -0.01
    priors[0] = torch.tensor([0.05, 0.05, 0.04, 0.04])  # isolated corner box: never suppressed
    top_k = 30
    out = detect_frame(loc, logits, ctr, track, coeffs, priors, nms_top_k=top_k, cross_class=True)

    items = []
    for a in range(len(logits)):
        p = _py_softmax(logits[a].tolist())
        best = max(p[1:])
        if best > 0.05:
            items.append((best * ctr[a].item(), _py_corners(priors[a].tolist()), (a, p[1:].index(best) + 1)))
    ref = _py_fast_nms(items, top_k, 0.5)
    assert len(items) > top_k and len(ref) < top_k  # the top-k cut and some suppression happened
    assert any(s <= 0 for s, _, _ in ref)  # negative scores survive: no score threshold
    ref_anchors = [a for _, _, (a, _) in ref]
    assert out["coeffs"][:, 0].long().tolist() == ref_anchors
    assert torch.equal(out["coeffs"], coeffs[ref_anchors])
    assert out["classes"].tolist() == [c for _, _, (_, c) in ref]
    assert out["scores"].tolist() == pytest.approx([s for s, _, _ in ref], abs=1e-6)
    assert torch.allclose(out["boxes"], torch.tensor([b for _, b, _ in ref]), atol=1e-6)
    assert torch.equal(out["track"], track[ref_anchors])
    assert torch.equal(out["centerness"], ctr[ref_anchors])
    assert 0 in ref_anchors and out["classes"][ref_anchors.index(0)].item() == 1
    assert out["classes"].dtype == torch.int64


def test_per_class_nms_matches_the_plain_rule_with_the_cap():
    loc, logits, ctr, track, coeffs, priors = _random_frame(n=80, num_classes=3, seed=1)
    ctr = ctr.abs()  # mostly positive scores so that many pass the 0.05 threshold
    top_k, cap = 30, 12
    out = detect_frame(
        loc, logits, ctr, track, coeffs, priors, nms_top_k=top_k, cross_class=False, max_detections=cap
    )

    pooled = []
    for c in range(1, 4):
        items = []
        for a in range(len(logits)):
            p = _py_softmax(logits[a].tolist())
            if max(p[1:]) > 0.05:
                items.append((p[c] * ctr[a].item(), _py_corners(priors[a].tolist()), (a, c)))
        pooled += [t for t in _py_fast_nms(items, top_k, 0.5) if t[0] > 0.05]
    assert len(pooled) > cap
    ref = sorted(pooled, key=lambda t: -t[0])[:cap]
    assert len(out["scores"]) == cap
    assert out["scores"].tolist() == pytest.approx([s for s, _, _ in ref], abs=1e-6)
    assert out["classes"].tolist() == [c for _, _, (_, c) in ref]
    ref_anchors = [a for _, _, (a, _) in ref]
    assert torch.equal(out["coeffs"], coeffs[ref_anchors])
    assert torch.allclose(out["boxes"], torch.tensor([b for _, b, _ in ref]), atol=1e-6)


def test_per_class_nms_keeps_one_anchor_in_several_classes():
    logits = torch.tensor([[-5.0, 3.0, 3.0], [2.0, 1.0, -5.0]])  # probs ~(0, .5, .5), (.73, .27, 0)
    priors = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.31, 0.3, 0.2, 0.2]])  # heavy overlap
    out = detect_frame(
        torch.zeros(2, 4),
        logits,
        torch.ones(2),
        torch.eye(2),
        torch.eye(2),
        priors,
        cross_class=False,
    )
    # anchor 0 survives in classes 1 and 2; anchor 1 is suppressed in class 1 by anchor 0
    assert sorted(out["classes"].tolist()) == [1, 2]
    assert torch.equal(out["coeffs"], torch.eye(2)[[0, 0]])
    cross = detect_frame(torch.zeros(2, 4), logits, torch.ones(2), torch.eye(2), torch.eye(2), priors)
    assert len(cross["scores"]) == 1


def test_detect_frame_with_no_candidates():
    n = 5
    logits = torch.tensor([[9.0, 0.0, 0.0]] * n)
    for cross in (True, False):
        out = detect_frame(
            torch.zeros(n, 4),
            logits,
            torch.ones(n),
            torch.zeros(n, 3),
            torch.zeros(n, 4),
            torch.rand(n, 4),
            cross_class=cross,
        )
        assert out["boxes"].shape == (0, 4) and out["coeffs"].shape == (0, 4) and out["track"].shape == (0, 3)
        assert out["classes"].shape == (0,) and out["scores"].shape == (0,)


# ---------------------------------------------------------------------------------------------------
# Tracker
# ---------------------------------------------------------------------------------------------------

HP, WP, M, E = 24, 40, 2, 4


def _frame():
    """Prototypes whose assembled masks are ~1 inside the crop box for coefficients (5, 0)."""
    proto = torch.zeros(HP, WP, M)
    proto[..., 0] = 10.0
    return {"proto": proto}


def _emb(*idx_sign):
    rows = []
    for i in idx_sign:
        v = torch.zeros(E)
        v[abs(i) % E] = 1.0 if i >= 0 else -1.0
        rows.append(v)
    return torch.stack(rows)


def _dets(boxes, scores, classes, track):
    n = len(scores)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(n, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "classes": torch.tensor(classes, dtype=torch.int64),
        "coeffs": torch.tensor([[5.0, 0.0]] * n).reshape(n, M),
        "track": track.reshape(n, E),
        "centerness": torch.ones(n),
    }


def _no_dets():
    return _dets([], [], [], torch.zeros(0, E))


class ZeroShift:
    """Stub temporal fusion: zero deltas; records its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, prev, cur, boxes):
        self.calls.append((prev, cur, boxes.clone()))
        return torch.zeros(len(boxes), 4), torch.zeros(len(boxes), M)


BOX_A = [0.1, 0.1, 0.3, 0.4]
BOX_B = [0.6, 0.5, 0.9, 0.9]
BOX_C = [0.35, 0.0, 0.55, 0.2]


def test_first_frame_gives_ids_in_detection_order():
    tracker, shift = STMaskTracker(), ZeroShift()
    dets = _dets([BOX_A, BOX_B, BOX_C], [0.9, 0.8, 0.7], [3, 1, 2], _emb(0, 1, 2))
    out = tracker.update(dets, _frame(), shift)
    assert out["ids"].tolist() == [0, 1, 2] and out["ids"].dtype == torch.int64
    assert out["classes"].tolist() == [3, 1, 2]
    assert torch.equal(out["scores"], dets["scores"]) and torch.equal(out["boxes"], dets["boxes"])
    assert out["masks"].shape == (3, HP, WP)
    assert torch.allclose(out["masks"], frame_masks(_frame()["proto"], dets["coeffs"], dets["boxes"]))
    assert shift.calls == []


def test_matched_detection_keeps_its_id_and_new_object_gets_the_next():
    tracker, shift = STMaskTracker(), ZeroShift()
    f0, f1 = _frame(), _frame()
    tracker.update(_dets([BOX_A, BOX_B], [0.9, 0.8], [1, 2], _emb(0, 1)), f0, shift)
    a1 = [0.11, 0.1, 0.31, 0.41]
    # B' first (higher score), then A', then an unrelated object (far, orthogonal embedding)
    dets = _dets([BOX_B, a1, BOX_C], [0.85, 0.7, 0.6], [2, 1, 1], _emb(1, 0, -2))
    out = tracker.update(dets, f1, shift)
    assert len(shift.calls) == 1 and shift.calls[0][0] is f0 and shift.calls[0][1] is f1
    assert torch.equal(shift.calls[0][2], torch.tensor([BOX_A, BOX_B]))
    assert out["ids"].tolist() == [0, 1, 2]
    assert torch.allclose(out["boxes"], torch.tensor([a1, BOX_B, BOX_C]))
    assert out["scores"].tolist() == pytest.approx([0.7, 0.85, 0.6])
    assert tracker.num_tracks == 3


def test_dummy_column_wins_for_a_dissimilar_overlapping_detection():
    # sim 0 (opposite embedding), box IoU of two shifted boxes = 1/3 -> 0 + mIoU + 2/3 < 1.4
    tracker, shift = STMaskTracker(), ZeroShift()
    tracker.update(_dets([[0.0, 0.0, 0.4, 0.4]], [0.9], [1], _emb(0)), _frame(), shift)
    out = tracker.update(_dets([[0.2, 0.0, 0.6, 0.4]], [0.9], [1], _emb(-4)), _frame(), shift)
    assert out["ids"].tolist() == [0, 1]


def test_two_claimants_the_lower_scored_is_discarded():
    for scores in ([0.9, 0.8], [0.8, 0.9]):  # sorted input; unsorted input: strict higher score wins
        tracker, shift = STMaskTracker(), ZeroShift()
        tracker.update(_dets([BOX_A], [0.95], [1], _emb(0)), _frame(), shift)
        boxes = [BOX_A, [0.1, 0.1, 0.31, 0.4]]
        out = tracker.update(_dets(boxes, scores, [1, 1], _emb(0, 0)), _frame(), shift)
        winner = scores.index(max(scores))
        assert tracker.num_tracks == 1
        assert out["ids"].tolist() == [0]
        assert out["scores"].tolist() == pytest.approx([0.9])
        assert torch.allclose(out["boxes"][0], torch.tensor(boxes[winner]))
    # equal scores: the first claimant keeps the track
    tracker = STMaskTracker()
    tracker.update(_dets([BOX_A], [0.95], [1], _emb(0)), _frame(), shift)
    out = tracker.update(_dets(boxes, [0.9, 0.9], [1, 1], _emb(0, 0)), _frame(), shift)
    assert tracker.num_tracks == 1 and torch.allclose(out["boxes"][0], torch.tensor(boxes[0]))


def test_new_tracks_of_a_frame_cannot_be_claimed_in_that_frame():
    tracker, shift = STMaskTracker(), ZeroShift()
    tracker.update(_dets([BOX_A], [0.9], [1], _emb(0)), _frame(), shift)
    # two copies of the same new object: both pick the dummy column, both start tracks
    out = tracker.update(_dets([BOX_C, BOX_C], [0.8, 0.7], [1, 1], _emb(2, 2)), _frame(), shift)
    assert out["ids"].tolist() == [0, 1, 2]


def test_unmatched_track_is_propagated_ten_frames_then_hidden_and_can_be_revived():
    tracker, shift = STMaskTracker(), ZeroShift()
    tracker.update(_dets([BOX_A], [0.9], [2], _emb(0)), _frame(), shift)
    for k in range(1, 12):
        out = tracker.update(_no_dets(), _frame(), shift)
        if k <= 10:
            assert out["ids"].tolist() == [0]
            assert out["scores"].item() == pytest.approx(0.9 * 0.95**k, rel=1e-5)
            assert out["classes"].tolist() == [2]
        else:
            assert out["ids"].tolist() == []
            assert out["masks"].shape == (0, HP, WP)
    assert tracker.num_tracks == 1  # never pruned (the authors)
    out = tracker.update(_dets([BOX_A], [0.7], [2], _emb(0)), _frame(), shift)
    assert out["ids"].tolist() == [0] and out["scores"].tolist() == pytest.approx([0.7])


def test_propagation_applies_the_temporal_deltas_on_the_current_prototypes():
    tracker = STMaskTracker(score_decay=0.5)
    tracker.update(_dets([[0.2, 0.2, 0.4, 0.6]], [0.9], [1], _emb(0)), _frame(), ZeroShift())
    cur = {"proto": torch.zeros(HP, WP, M)}
    cur["proto"][..., 1] = 10.0  # only the second coefficient lights the mask in this frame

    def shift(prev, frame, boxes):
        return torch.tensor([[1.0, -2.0, 0.0, math.log(2) / 0.2]]), torch.tensor([[-5.0, 5.0]])

    out = tracker.update(_no_dets(), cur, shift)
    # centre-size (0.3, 0.4, 0.2, 0.4) -> cx + 0.1 * 1 * 0.2, cy - 0.1 * 2 * 0.4, w, h * 2
    assert torch.allclose(out["boxes"], torch.tensor([[0.22, -0.08, 0.42, 0.72]]), atol=1e-6)
    assert out["scores"].tolist() == pytest.approx([0.45])
    expected = frame_masks(cur["proto"], torch.tensor([[0.0, 5.0]]), out["boxes"])
    assert torch.allclose(out["masks"], expected)
    # crop in proto pixels: columns [0.22 * 40 - 1, 0.42 * 40 + 1) = 8..17, rows [0, 0.72 * 24 + 1) = 0..18
    assert expected[0].gt(0.5).sum() == 10 * 19


def test_first_frame_without_detections_and_reset():
    tracker, shift = STMaskTracker(), ZeroShift()
    out = tracker.update(_no_dets(), _frame(), shift)
    assert tracker.num_tracks == 0 and shift.calls == []
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, HP, WP) and out["ids"].shape == (0,)
    out = tracker.update(_dets([BOX_A, BOX_B], [0.9, 0.8], [1, 1], _emb(0, 1)), _frame(), shift)
    assert out["ids"].tolist() == [0, 1] and shift.calls == []
    tracker.update(_dets([BOX_C], [0.9], [1], _emb(2)), _frame(), shift)
    assert tracker.num_tracks == 3
    tracker.reset()
    assert tracker.num_tracks == 0
    out = tracker.update(_dets([BOX_C], [0.9], [1], _emb(2)), _frame(), shift)
    assert out["ids"].tolist() == [0] and len(shift.calls) == 1


def test_class_change_keeps_the_id():
    tracker, shift = STMaskTracker(), ZeroShift()
    tracker.update(_dets([BOX_A, BOX_B], [0.9, 0.8], [1, 2], _emb(0, 1)), _frame(), shift)
    out = tracker.update(_dets([BOX_A], [0.9], [5], _emb(0)), _frame(), shift)
    assert out["ids"].tolist() == [0, 1] and out["classes"].tolist() == [5, 2]


def test_low_score_and_one_pixel_tracks_are_not_output():
    tracker, shift = STMaskTracker(), ZeroShift()
    corner = [0.0, 0.0, 0.0, 0.0]  # the 1-pixel crop padding leaves exactly pixel (0, 0): not > 1
    dets = _dets([BOX_A, BOX_B, corner], [0.9, 0.05, 0.8], [1, 1, 1], _emb(0, 1, 2))
    out = tracker.update(dets, _frame(), shift)
    assert frame_masks(_frame()["proto"], dets["coeffs"], dets["boxes"])[2].gt(0.5).sum() == 1
    assert out["ids"].tolist() == [0]  # score 0.05 is not > 0.05
    assert tracker.num_tracks == 3


def test_max_age_prunes_tracks_and_keeps_ids_stable():
    for max_age in (0, 2):
        tracker, shift = STMaskTracker(max_age=max_age), ZeroShift()
        tracker.update(_dets([BOX_A, BOX_B], [0.9, 0.8], [1, 1], _emb(0, 1)), _frame(), shift)
        for _ in range(3):  # only B is seen: A unmatched for 1, 2, 3 frames
            out = tracker.update(_dets([BOX_B], [0.8], [1], _emb(1)), _frame(), shift)
        out = tracker.update(_dets([BOX_B, BOX_C], [0.8, 0.7], [1, 1], _emb(1, 2)), _frame(), shift)
        if max_age == 0:
            assert tracker.num_tracks == 3 and out["ids"].tolist() == [0, 1, 2]
        else:
            assert tracker.num_tracks == 2 and out["ids"].tolist() == [1, 2]
            assert torch.allclose(out["boxes"], torch.tensor([BOX_B, BOX_C]))


def test_memory_is_bounded_when_objects_come_and_go_with_max_age():
    # 40 disjoint spots: a detection never matches an older object (box and mask IoU 0, sim <= 1)
    spots = [[0.1 * (i % 8), 0.15 * (i // 8), 0.1 * (i % 8) + 0.08, 0.15 * (i // 8) + 0.1] for i in range(40)]
    for max_age, bound in ((1, 2), (0, None)):
        tracker, shift = STMaskTracker(max_age=max_age), ZeroShift()
        for t in range(40):  # a new short-lived object every frame, each at its own spot
            out = tracker.update(_dets([spots[t]], [0.9], [1], _emb(t % E)), _frame(), shift)
            assert out["ids"][-1].item() == t
            if bound is not None:
                assert tracker.num_tracks <= bound
        if bound is None:
            assert tracker.num_tracks == 40  # the authors' never-pruned memory


# ---------------------------------------------------------------------------------------------------
# Postprocessing
# ---------------------------------------------------------------------------------------------------


def _tracks(boxes, scores, classes, ids, masks):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "classes": torch.tensor(classes, dtype=torch.int64),
        "ids": torch.tensor(ids, dtype=torch.int64),
        "masks": masks,
    }


GEOM = {"input_hw": (360, 640), "padded_hw": (384, 640), "output_hw": (300, 400)}  # 4:3 original


def test_postprocess_drops_low_scores_and_centres_in_the_padding():
    masks = torch.ones(4, 96, 160)
    boxes = [
        [0.1, 0.2, 0.5, 0.6],  # kept
        [0.1, 0.9, 0.5, 0.95],  # centre y 0.925 <= 360/384: kept, y2 clamped
        [0.1, 0.9, 0.5, 1.0],  # centre y 0.95 > 0.9375: dropped
        [0.1, 0.2, 0.5, 0.6],  # score 0.05: dropped
    ]
    inst = tracks_to_instances(
        _tracks(boxes, [0.9, 0.8, 0.7, 0.05], [1, 3, 2, 2], [4, 7, 9, 11], masks), **GEOM
    )
    assert inst.image_size == (300, 400)
    assert inst.ID == [4, 7] and all(type(i) is int for i in inst.ID)
    assert inst.pred_classes.tolist() == [0, 2]
    assert inst.scores.tolist() == pytest.approx([0.9, 0.8])
    # x * 400, y * 384 * 300 / 360 = y * 320, clamped to the frame
    assert torch.allclose(
        inst.pred_boxes.tensor, torch.tensor([[40.0, 64.0, 200.0, 192.0], [40.0, 288.0, 200.0, 300.0]])
    )
    assert inst.pred_masks.dtype == torch.bool and inst.pred_masks.shape == (2, 300, 400)

    beyond = _tracks([[0.95, 0.1, 1.1, 0.2]], [0.9], [1], [0], torch.ones(1, 96, 160))  # cx 1.025 > 1
    assert len(tracks_to_instances(beyond, **GEOM)) == 0


def test_postprocess_masks_cut_the_padding_and_upsample_to_the_original_size():
    masks = torch.zeros(2, 96, 160)
    masks[0, :90, :80] = 1.0  # left half of the un-padded part; padded rows 90..95 are 0
    masks[1, :45, :] = 1.0  # top half of the un-padded part
    masks[1, 90:, :] = 1.0  # padding garbage, cut away
    tracks = _tracks([[0.1, 0.1, 0.9, 0.9]] * 2, [0.9, 0.9], [1, 1], [0, 1], masks)
    out = tracks_to_instances(tracks, **GEOM).pred_masks
    # column j samples x = (j + 0.5) * 160 / 400 - 0.5: > 0.5 iff x < 79.5 iff j <= 199 (all 300 rows,
    # which would not hold without the cut: rows >= 280 would sample the zero padding)
    assert out[0, :, :200].all() and not out[0, :, 200:].any()
    # row i samples y = (i + 0.5) * 90 / 300 - 0.5: > 0.5 iff y < 44.5 iff i <= 149
    assert out[1, :150].all() and not out[1, 150:].any()


def test_postprocess_with_no_tracks():
    inst = tracks_to_instances(_tracks([], [], [], [], torch.zeros(0, 96, 160)), **GEOM)
    assert len(inst) == 0 and inst.ID == [] and inst.pred_masks.shape == (0, 300, 400)
    assert inst.pred_boxes.tensor.shape == (0, 4)


def test_tracker_from_config():
    from detectron2.config import get_cfg

    from stmask.config import add_stmask_config

    cfg = get_cfg()
    add_stmask_config(cfg)
    cfg.MODEL.STMASK.TRACK_MAX_AGE = 7
    tracker = STMaskTracker(cfg)
    assert tracker.match_coeffs == (0.0, 1.0, 2.0, 0.0) and tracker.max_hidden == 10
    assert tracker.score_decay == 0.95 and tracker.max_age == 7 and tracker.variances == (0.1, 0.2)
