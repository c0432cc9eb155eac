"""SipMask-VIS association (spec sipmask_vis.md §6) and tracking-branch helpers (§3.2, §4.3), checked
against hand-computed values."""

import math

import pytest
import torch
from detectron2.structures import Boxes, Instances

from sipmask.modeling.tracking import EmbeddingTracker, embeddings_at, jittered_centres, match_logits


def frame(boxes, scores, classes, size=(100, 100)) -> Instances:
    inst = Instances(size)
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
    return inst


def emb(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), -1)


BOX_A = [0.0, 0.0, 10.0, 10.0]
BOX_B = [50.0, 50.0, 60.0, 60.0]


def test_embeddings_at_floor_rule_and_clamping():
    track = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)  # D=2, H=3, W=4
    centres = torch.tensor([[15.9, 8.0], [16.0, 23.9], [-3.0, -1.0], [100.0, 100.0]])
    out = embeddings_at(track, centres, stride=8)
    # (cx, cy) -> (x, y) = (1, 1), (2, 2), clamped (0, 0), clamped (3, 2)
    expected = torch.stack([track[:, 1, 1], track[:, 2, 2], track[:, 0, 0], track[:, 2, 3]])
    assert torch.equal(out, expected)


def test_jittered_centres_stay_within_five_percent_of_the_size():
    boxes = torch.tensor([[10.0, 20.0, 110.0, 60.0]] * 2000)
    centres = jittered_centres(boxes, 0.05)
    offset = centres - torch.tensor([60.0, 40.0])
    assert offset[:, 0].abs().max() <= 5.0 + 1e-4 and offset[:, 1].abs().max() <= 2.0 + 1e-4
    assert offset[:, 0].abs().max() > 4.0 and offset[:, 0].std() > 2.0  # spread, not fixed
    assert torch.equal(jittered_centres(boxes[:3], 0.0), torch.tensor([[60.0, 40.0]] * 3))


def test_match_logits_have_the_zero_new_object_column():
    q, r = emb([1.0, 2.0], [0.0, -1.0]), emb([3.0, 1.0], [1.0, 1.0], [0.0, 0.0])
    assert torch.equal(match_logits(q, r), torch.tensor([[0.0, 5.0, 3.0, 0.0], [0.0, -1.0, -1.0, 0.0]]))


def test_first_frame_ids_in_detection_order_and_memory():
    tracker = EmbeddingTracker()
    out = tracker.update(frame([BOX_A, BOX_B], [0.9, 0.8], [0, 1]), emb([1.0, 0.0], [0.0, 1.0]))
    assert out.ID == [0, 1] and len(tracker) == 2
    assert tracker.labels.tolist() == [0, 1]


def test_comp_matches_the_hand_computed_formula():
    tracker = EmbeddingTracker()
    tracker.update(frame([BOX_A, BOX_B], [0.9, 0.8], [0, 1]), emb([1.0, 0.0], [0.0, 1.0]))
    det_box = [0.0, 0.0, 10.0, 5.0]  # IoU with BOX_A 0.5, with BOX_B 0
    comp = tracker.comp(emb([2.0, 1.0]), torch.tensor([det_box]), torch.tensor([0.5]), torch.tensor([0]))
    logits = torch.tensor([0.0, 2.0, 1.0])
    p = logits - torch.logsumexp(logits, 0)
    expected = p + math.log(0.5) + 2.0 * torch.tensor([0.0, 0.5, 0.0]) + 10.0 * torch.tensor([1.0, 1.0, 0.0])
    assert torch.allclose(comp[0], expected, atol=1e-6)


def test_tracking_across_frames_and_a_new_object():
    tracker = EmbeddingTracker()
    tracker.update(frame([BOX_A, BOX_B], [0.9, 0.8], [0, 1]), emb([5.0, 0.0], [0.0, 5.0]))
    # swapped detection order, a third object far away with an unrelated embedding
    out = tracker.update(
        frame([BOX_B, [80, 0, 90, 10], BOX_A], [0.9, 0.7, 0.6], [1, 0, 0]),
        emb([0.0, 5.0], [-5.0, -5.0], [5.0, 0.0]),
    )
    assert out.ID == [1, 2, 0]
    assert len(tracker) == 3 and tracker.ids.tolist() == [0, 1, 2]


def test_two_detections_claiming_one_instance_keep_the_highest_comp():
    tracker = EmbeddingTracker()
    tracker.update(frame([BOX_A], [0.9], [0]), emb([3.0, 0.0]))
    # both match instance 0; the second has the higher IoU hence the higher Comp
    out = tracker.update(
        frame([[2, 2, 12, 12], BOX_A], [0.9, 0.5], [0, 0]),
        emb([3.0, 0.1], [3.0, 0.2]),
    )
    comp = tracker.comp  # memory now holds the winner
    assert out.ID == [0] and torch.equal(out.pred_boxes.tensor, torch.tensor([BOX_A]))
    assert torch.equal(tracker.embeddings, emb([3.0, 0.2])) and callable(comp)
    # the higher score alone decides between identical appearance and boxes: ln(s) matters here
    tracker.reset()
    tracker.update(frame([BOX_A], [0.9], [0]), emb([3.0, 0.0]))
    out = tracker.update(frame([BOX_A, BOX_A], [0.4, 0.8], [0, 0]), emb([3.0, 0.0], [3.0, 0.0]))
    assert out.ID == [0] and out.scores.tolist() == [pytest.approx(0.8)]


def test_log_score_never_changes_a_detections_own_choice():
    tracker = EmbeddingTracker()
    tracker.update(frame([BOX_A, BOX_B], [0.9, 0.9], [0, 0]), emb([2.0, 0.0], [0.0, 2.0]))
    boxes, labels, e = torch.tensor([BOX_A]), torch.tensor([0]), emb([1.0, 1.5])
    choices = {int(tracker.comp(e, boxes, torch.tensor([s]), labels).argmax()) for s in (0.04, 0.3, 0.99)}
    assert len(choices) == 1


def test_frame_without_detections_outputs_nothing_and_keeps_the_memory():
    tracker = EmbeddingTracker()
    tracker.update(frame([BOX_A], [0.9], [0]), emb([3.0, 0.0]))
    out = tracker.update(frame([], [], []), torch.zeros(0, 2))
    assert len(out) == 0 and out.ID == [] and len(tracker) == 1
    out = tracker.update(frame([BOX_A], [0.9], [0]), emb([3.0, 0.0]))
    assert out.ID == [0]


@pytest.mark.parametrize("legacy", [False, True])
def test_first_frame_without_detections(legacy):
    tracker = EmbeddingTracker(legacy_first_frame=legacy)
    tracker.update(frame([BOX_A, BOX_B], [0.9, 0.9], [0, 1]), emb([3.0, 0.0], [0.0, 3.0]))
    tracker.reset()  # next video: its first frame has no detection
    assert len(tracker.update(frame([], [], []), torch.zeros(0, 2))) == 0
    out = tracker.update(frame([BOX_B], [0.9], [1]), emb([0.0, 3.0]))
    # fixed: a fresh memory, id 0; legacy (the authors): matched to the previous video's instance 1
    assert out.ID == ([1] if legacy else [0])
    assert len(tracker) == (2 if legacy else 1)


def test_reset_with_detections_on_the_first_frame_replaces_the_memory_in_both_modes():
    for legacy in (False, True):
        tracker = EmbeddingTracker(legacy_first_frame=legacy)
        tracker.update(frame([BOX_A, BOX_B], [0.9, 0.9], [0, 1]), emb([3.0, 0.0], [0.0, 3.0]))
        tracker.reset()
        assert tracker.update(frame([BOX_B], [0.9], [1]), emb([0.0, 3.0])).ID == [0]
        assert len(tracker) == 1


def test_instance_that_vanishes_and_returns_keeps_its_id():
    tracker = EmbeddingTracker()
    tracker.update(frame([BOX_A, BOX_B], [0.9, 0.9], [0, 1]), emb([4.0, 0.0], [0.0, 4.0]))
    for _ in range(5):  # only B is seen
        assert tracker.update(frame([BOX_B], [0.9], [1]), emb([0.0, 4.0])).ID == [1]
    assert tracker.update(frame([BOX_A], [0.9], [0]), emb([4.0, 0.0])).ID == [0]


def test_max_age_drops_stale_instances_without_reusing_ids():
    tracker = EmbeddingTracker(max_age=2)
    tracker.update(frame([BOX_A, BOX_B], [0.9, 0.9], [0, 1]), emb([4.0, 0.0], [0.0, 4.0]))
    for _ in range(3):
        tracker.update(frame([BOX_B], [0.9], [1]), emb([0.0, 4.0]))
    assert tracker.ids.tolist() == [1]  # A unmatched for 3 > 2 frames
    assert tracker.update(frame([BOX_A], [0.9], [0]), emb([4.0, 0.0])).ID == [2]


def test_memory_is_bounded_by_live_instances_with_max_age():
    tracker = EmbeddingTracker(max_age=3)
    for t in range(500):  # a new object every frame, each seen once (no overlap, no appearance)
        x = float(t * 37 % 900)
        out = tracker.update(frame([[x, 0, x + 10, 10]], [0.9], [t % 3]), emb([0.0, 0.0]))
        assert out.ID == [t] and len(tracker) <= 4
    assert tracker.next_id > 100


def test_class_change_of_a_tracked_object():
    # the dummy column always gets the +10 label bonus: a changed class starts a new instance unless
    # the appearance term wins by more than 10 - 2 IoU
    tracker = EmbeddingTracker()
    tracker.update(frame([BOX_A], [0.9], [0]), emb([2.0, 0.0]))
    out = tracker.update(frame([BOX_A], [0.9], [2]), emb([2.0, 0.0]))  # P[0] - P[m] = 4 < 8
    assert out.ID == [1]
    tracker.reset()
    tracker.update(frame([BOX_A], [0.9], [0]), emb([4.0, 0.0]))
    out = tracker.update(frame([BOX_A], [0.9], [2]), emb([4.0, 0.0]))  # dot 16: 16 + 2 > 10
    assert out.ID == [0] and out.pred_classes.tolist() == [2]
    assert tracker.labels.tolist() == [0]  # the memory's label is never updated (§6.4)


def test_memory_does_not_share_storage_with_outputs():
    tracker = EmbeddingTracker()
    inst = frame([BOX_A], [0.9], [0])
    e = emb([3.0, 0.0])
    out = tracker.update(inst, e)
    out.pred_boxes.tensor.add_(100.0)
    e.add_(5.0)
    assert torch.equal(tracker.boxes, torch.tensor([BOX_A])) and torch.equal(
        tracker.embeddings, emb([3.0, 0.0])
    )


def test_bad_tracker_settings_are_refused():
    with pytest.raises(ValueError, match="MATCH_COEFFS"):
        EmbeddingTracker(match_coeffs=(1.0, 2.0))
    with pytest.raises(ValueError, match="TRACK_MAX_AGE"):
        EmbeddingTracker(max_age=-1)
    with pytest.raises(ValueError, match="embeddings"):
        EmbeddingTracker().update(frame([BOX_A], [0.9], [0]), torch.zeros(2, 2))
