"""MaskIoUTracker and the Associator interface."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.structures import Boxes, Instances

from vis_eval.tracker import Associator, MaskIoUTracker, add_tracker_config, build_associator, mask_iou

H, W = 20, 30


def box_mask(x0, y0, x1, y1):
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def frame(objects, with_masks=True):
    """objects: list of (box (x0, y0, x1, y1), class, score)."""
    inst = Instances((H, W))
    boxes = [o[0] for o in objects]
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.pred_classes = torch.tensor([o[1] for o in objects], dtype=torch.int64)
    inst.scores = torch.tensor([o[2] for o in objects], dtype=torch.float32)
    if with_masks:
        inst.pred_masks = (
            torch.stack([box_mask(*b) for b in boxes]) if boxes else torch.zeros(0, H, W, dtype=bool)
        )
    return {"instances": inst}


def test_mask_iou_matches_bruteforce():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, H, W, generator=g) > 0.5
    b = torch.rand(3, H, W, generator=g) > 0.7
    b[0] = False  # an empty mask
    iou = mask_iou(a, b)
    for i in range(4):
        for j in range(3):
            union = (a[i] | b[j]).sum()
            expected = (a[i] & b[j]).sum() / union if union else 0.0
            assert iou[i, j] == pytest.approx(float(expected))
    with pytest.raises(ValueError, match="sizes differ"):
        mask_iou(a, b[:, :5])


def test_tracks_keep_ids_through_motion_and_order_changes():
    tracker = MaskIoUTracker()
    out = tracker(frame([((0, 0, 10, 10), 0, 0.9), ((15, 5, 25, 15), 1, 0.8)]))
    assert out.pred_ids.tolist() == [0, 1]
    # both moved by 2 px; detection order reversed
    out = tracker(frame([((17, 5, 27, 15), 1, 0.7), ((2, 0, 12, 10), 0, 0.9)]))
    assert out.pred_ids.tolist() == [1, 0]
    # a new object appears, object 0 disappears for one frame
    out = tracker(frame([((18, 6, 28, 16), 1, 0.7), ((0, 12, 6, 20), 0, 0.5)]))
    assert out.pred_ids.tolist() == [1, 2]
    # object 0 comes back within max_age
    out = tracker(frame([((3, 0, 13, 10), 0, 0.6), ((0, 12, 6, 20), 0, 0.5)]))
    assert out.pred_ids.tolist() == [0, 2]


def test_class_mismatch_threshold_and_score_filter():
    tracker = MaskIoUTracker(iou_threshold=0.5, score_threshold=0.3)
    tracker(frame([((0, 0, 10, 10), 0, 0.9)]))
    # same place, other class -> new track; low score -> dropped
    out = tracker(frame([((0, 0, 10, 10), 2, 0.9), ((0, 0, 10, 10), 0, 0.1)]))
    assert out.pred_ids.tolist() == [1] and out.pred_classes.tolist() == [2]
    # IoU 0.25 with track 1 < 0.5 -> new track
    out = tracker(frame([((5, 5, 15, 15), 2, 0.9)]))
    assert out.pred_ids.tolist() == [2]
    relaxed = MaskIoUTracker(match_class=False)
    relaxed(frame([((0, 0, 10, 10), 0, 0.9)]))
    assert relaxed(frame([((0, 0, 10, 10), 2, 0.9)])).pred_ids.tolist() == [0]


def test_one_to_one_assignment_is_optimal():
    tracker = MaskIoUTracker(iou_threshold=0.3)
    tracker(frame([((0, 0, 10, 10), 0, 0.9), ((6, 0, 16, 10), 0, 0.9)]))
    # A: IoU 0.43 with track 0, 0.67 with track 1; B: IoU 0.43 with track 1 only.
    # Greedy by score would give A -> 1 and make B a new track; the optimum is A -> 0, B -> 1.
    out = tracker(frame([((4, 0, 14, 10), 0, 0.95), ((10, 0, 20, 10), 0, 0.5)]))
    assert out.pred_ids.tolist() == [0, 1]
    # two detections on one track (the other track is far): only one keeps the id
    out = tracker(frame([((4, 0, 14, 10), 0, 0.9), ((4, 0, 14, 9), 0, 0.8)]))
    assert sorted(out.pred_ids.tolist()) == [0, 2]


def test_state_is_pruned_after_max_age_and_reset():
    tracker = MaskIoUTracker(max_age=2)
    tracker(frame([((0, 0, 10, 10), 0, 0.9)]))
    for _ in range(2):
        tracker(frame([]))
        assert tracker.num_tracks == 1
    tracker(frame([]))
    assert tracker.num_tracks == 0
    assert tracker(frame([((0, 0, 10, 10), 0, 0.9)])).pred_ids.tolist() == [1]  # no revival
    # bounded state over a long video of disjoint objects
    for t in range(50):
        tracker(frame([((t % 25, 0, t % 25 + 1, 1), 0, 0.9)]))
    assert tracker.num_tracks <= 2 + 1
    tracker.reset()
    assert tracker.num_tracks == 0
    assert tracker(frame([((0, 0, 10, 10), 0, 0.9)])).pred_ids.tolist() == [0]


def test_box_iou_without_masks_and_errors():
    tracker = MaskIoUTracker()
    tracker(frame([((0, 0, 10, 10), 0, 0.9)], with_masks=False))
    out = tracker(frame([((1, 0, 11, 10), 0, 0.9)], with_masks=False))
    assert out.pred_ids.tolist() == [0]
    with pytest.raises(ValueError, match="consistently"):
        tracker(frame([((1, 0, 11, 10), 0, 0.9)]))
    with pytest.raises(KeyError, match="instances"):
        tracker({"sem_seg": None})
    tracker.reset()
    tracker(frame([((0, 0, 10, 10), 0, 0.9)]))
    other = frame([((0, 0, 10, 10), 0, 0.9)])
    other["instances"]._image_size = (H + 1, W)
    with pytest.raises(ValueError, match="frame size changed"):
        tracker(other)
    with pytest.raises(ValueError):
        MaskIoUTracker(iou_threshold=1.5)


def test_soft_masks_are_thresholded():
    tracker = MaskIoUTracker()
    out = frame([((0, 0, 10, 10), 0, 0.9)])
    out["instances"].pred_masks = out["instances"].pred_masks.float() * 0.4  # all below 0.5
    tracker(out)
    assert not tracker._tracks.pred_masks.any()


def test_build_associator_prefers_the_models_own():
    class OwnAssociator(Associator):
        def reset(self):
            pass

        def __call__(self, output):
            inst = output["instances"]
            inst.pred_ids = torch.arange(len(inst))
            return inst

    class VideoModel(torch.nn.Module):
        def build_associator(self):
            return OwnAssociator()

    class BadModel(torch.nn.Module):
        def build_associator(self):
            return object()

    cfg = get_cfg()
    assert isinstance(build_associator(cfg, VideoModel()), OwnAssociator)
    with pytest.raises(TypeError):
        build_associator(cfg, BadModel())
    add_tracker_config(cfg)
    cfg.MODEL.MASK_IOU_TRACKER.MAX_AGE = 7
    tracker = build_associator(cfg, torch.nn.Linear(1, 1))
    assert isinstance(tracker, MaskIoUTracker) and tracker.max_age == 7
