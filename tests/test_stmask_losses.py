"""STMask targets and losses (spec stmask.md §3.3-3.5) against hand-computed values and plain
loop references."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from stmask.modeling.box_ops import center_size, encode, make_priors
from stmask.modeling.losses import STMaskLoss, mask_bce, ohem_conf_loss, positive_weights, track_loss
from stmask.modeling.matching import match


def cs(box):
    """(x1, y1, x2, y2) -> centre-size list."""
    x1, y1, x2, y2 = box
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


def priors_of(boxes):
    return torch.tensor([cs(b) for b in boxes], dtype=torch.float32)


def q_of(p):
    return 2 * p / (1 + p)


# ---------------------------------------------------------------------------------------- matching
def test_forced_match_after_demotion_and_conflict():
    # GT1 overlaps GT0 heavily; anchor a0 is GT0's exact box (IoU 1 / 0.818 -> demoted to 0.45).
    # a1 overlaps GT1 with IoU 0.212 only (< 0.4): it is forced after a0 went to GT0.
    gts = torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.02, 0.0, 0.22, 0.2]])
    priors = priors_of([[0.0, 0.0, 0.2, 0.2], [0.15, 0.0, 0.35, 0.2], [0.7, 0.7, 0.9, 0.9]])
    out = match(gts, torch.tensor([1, 2]), torch.tensor([7, 8]), priors, torch.zeros(3, 3))
    assert out["conf_t"].tolist() == [1, 2, 0]
    assert out["ids_t"].tolist() == [7, 8, 0]
    assert out["idx_t"][:2].tolist() == [0, 1]
    torch.testing.assert_close(out["gt_box_t"][:2], gts)
    torch.testing.assert_close(out["loc_t"][:2], encode(gts, priors[:2]))
    assert out["conf_t"].dtype == torch.long and out["ids_t"].dtype == torch.long


def test_multi_instance_demotion_makes_neutral():
    gt0, gt1 = [0.0, 0.0, 0.2, 0.2], [0.02, 0.0, 0.22, 0.2]
    gts = torch.tensor([gt0, gt1])
    # d: IoU 0.905 with both GTs -> 0.45 -> neutral (no anchor above 0.5, so thresholds stay 0.5 / 0.4)
    priors = priors_of([gt0, gt1, [0.01, 0.0, 0.21, 0.2], [0.7, 0.7, 0.9, 0.9]])
    out = match(gts, torch.tensor([1, 1]), torch.tensor([3, 4]), priors, torch.zeros(4, 2))
    assert out["conf_t"].tolist() == [1, 1, -1, 0]
    assert out["ids_t"].tolist() == [3, 4, 0, 0]
    # a single GT: the same anchor is simply positive
    out1 = match(gts[:1], torch.tensor([1]), torch.tensor([3]), priors, torch.zeros(4, 2))
    assert out1["conf_t"][2].item() == 1


def _logits_for(p, num_classes=3, label=1):
    """Logits whose softmax gives probability ``p`` to ``label`` and splits the rest evenly."""
    rest = (1 - p) / (num_classes - 1)
    probs = torch.full((num_classes,), rest, dtype=torch.float64)
    probs[label] = p
    return probs.log().float()


@pytest.mark.parametrize(
    "p_exact, p_other, expected",
    [
        # confident (p = 0.5, q = 2/3): thresholds 1.167 / 1.067 -> the 0.45 anchor is negative
        (0.5, 0.5, [1, 1, 0, 0]),
        # unsure (p = 0.01, q = 0.0198): thresholds 0.52 / 0.42 -> the 0.45 anchor is neutral
        (0.01, 0.01, [1, 1, -1, 0]),
        # exact anchor sure, the IoU-0.6 anchor not: mean q = 0.51 -> 0.62 < 0.91 -> negative
        (0.999999, 0.01, [1, 0, 0, 0]),
    ],
)
def test_class_aware_threshold_shift(p_exact, p_other, expected):
    gt = [0.0, 0.0, 0.2, 0.2]
    # IoUs with the GT: 1 (forced), 0.6, 0.45, 0
    priors = priors_of([gt, [0.0, 0.0, 0.2, 1 / 3], [0.0, 0.0, 0.2, 0.2 / 0.45], [0.7, 0.7, 0.9, 0.9]])
    conf = torch.stack(
        [_logits_for(p_exact), _logits_for(p_other), _logits_for(0.3), _logits_for(0.3)]
    ).requires_grad_()
    out = match(torch.tensor([gt]), torch.tensor([1]), torch.tensor([5]), priors, conf)
    assert out["conf_t"].tolist() == expected
    # hand check of the thresholds of the third case
    if p_exact > 0.9:
        shift = (q_of(p_exact) + q_of(p_other)) / 2
        assert 0.6 + q_of(p_other) < 0.4 + shift
    assert not out["conf_t"].requires_grad


def test_match_no_gt_is_all_background():
    priors = priors_of([[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]])
    out = match(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                priors, torch.randn(2, 3))  # fmt: skip
    assert out["conf_t"].tolist() == [0, 0] and out["ids_t"].tolist() == [0, 0]
    assert out["loc_t"].shape == (2, 4) and out["gt_box_t"].shape == (2, 4)


# -------------------------------------------------------------------------------------------- OHEM
def _ce(logits, label):
    z = [float(v) for v in logits]
    return math.log(sum(math.exp(v) for v in z)) - z[label]


def _ohem_case():
    big = [-5.0, 5.0, 5.0]  # positives / neutral would be mined first if they were not excluded
    neg = {(0, 0): 3.0, (0, 2): 0.0, (0, 4): 1.0, (1, 0): 2.0, (1, 3): -1.0, (1, 4): 4.0}
    conf = torch.zeros(2, 5, 3)
    for (f, a), s in neg.items():
        conf[f, a] = torch.tensor([0.0, s, 0.3 * s])
    for f, a in [(0, 1), (0, 3), (1, 1), (1, 2)]:
        conf[f, a] = torch.tensor(big)
    conf[1, 2, 2] = 1.0  # a different CE for the second positive of frame 1
    conf_t = torch.tensor([[0, 1, 0, -1, 0], [0, 2, 2, 0, 0]])
    return conf, conf_t


@pytest.mark.parametrize("authors", [False, True])
def test_ohem_both_weight_orders(authors):
    conf, conf_t = _ohem_case()
    weights = positive_weights(conf_t)
    assert weights.tolist() == [[0, 1, 0, 0, 0], [0, 0.5, 0.5, 0, 0]]
    # ratio 1: 3 positives -> 3 negatives mined batch-wide: (1,4) s=4, (0,0) s=3, (1,0) s=2
    kept = [(0, 0, 0), (0, 1, 1), (1, 0, 0), (1, 1, 2), (1, 2, 2), (1, 4, 0)]  # index order, label
    ce = [_ce(conf[f, a], lab) for f, a, lab in kept]
    w_neg = 1 * 2 / 3  # ratio * F / num_neg
    if authors:
        w = [1.0, 0.5, 0.5, w_neg, w_neg, w_neg]  # [positives ; negatives] position-wise
    else:
        w = [w_neg, 1.0, w_neg, 0.5, 0.5, w_neg]
    expected = sum(a * b for a, b in zip(w, ce, strict=True)) / 2
    got = ohem_conf_loss(conf, conf_t, weights, negpos_ratio=1, authors_weight_order=authors)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_ohem_default_ratio_uses_all_available_negatives():
    conf, conf_t = _ohem_case()
    weights = positive_weights(conf_t)
    # ratio 3: num_neg = min(9, 9) but only 6 negatives exist -> weights 3 * 2 / 6 = 1
    negs = [(0, 0), (0, 2), (0, 4), (1, 0), (1, 3), (1, 4)]
    expected = sum(_ce(conf[f, a], 0) for f, a in negs)
    expected += _ce(conf[0, 1], 1) + 0.5 * _ce(conf[1, 1], 2) + 0.5 * _ce(conf[1, 2], 2)
    got = ohem_conf_loss(conf, conf_t, weights, negpos_ratio=3)
    assert got.item() == pytest.approx(expected / 4, rel=1e-5)


# ------------------------------------------------------------------------------ mask loss helper
PROFILE_IN = [1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.25, 0.0]  # 4 px, cols 0-2 kept, upsampled x2
PROFILE_SHIFTED = [0.0, 0.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0]  # 4 px, cols 1-3 kept, upsampled x2


def _bce(p, y):
    lp = max(math.log(p), -100.0) if p > 0 else -100.0
    lq = max(math.log(1 - p), -100.0) if p < 1 else -100.0
    return -(y * lp + (1 - y) * lq)


def _ref_mask_loss(value, py, px, gt, area):
    total = 0.0
    for i in range(len(py)):
        for j in range(len(px)):
            total += _bce(value * py[i] * px[j], float(gt[i][j]))
    return total / area


def test_mask_bce_crop_and_log_clamp():
    proto = torch.full((4, 4, 1), 20.0)
    coeffs = torch.tensor([[10.0]])  # sigmoid(20 tanh(10)) == 1 in float32
    box = torch.tensor([[0.25, 0.25, 0.5, 0.5]])  # proto px 1-2, padded to 0 <= j < 3
    gt = torch.ones(1, 8, 8)
    got = mask_bce(proto, coeffs, box, gt)
    # area max(0.25 * 8, 1) ** 2 = 4; the 15 zero pixels (last row / column) cost 100 each
    expected = _ref_mask_loss(1.0, PROFILE_IN, PROFILE_IN, gt[0].tolist(), 4.0)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert expected > 15 * 100 / 4
    # tiny boxes: each side of the normaliser is clamped to >= 1 only with clamp_area
    tiny = torch.tensor([[0.0, 0.0, 0.01, 0.01]])
    a = mask_bce(proto, coeffs, tiny, gt, clamp_area=True)
    b = mask_bce(proto, coeffs, tiny, gt, clamp_area=False)
    assert b.item() == pytest.approx(a.item() / 0.08**2, rel=1e-4)


# ------------------------------------------------------------------------------------ track loss
def test_track_loss_matches_double_loop():
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(7, 5, generator=g), dim=1)
    ids = torch.tensor([1, 2, 1, 3, 2, 1, 4])
    w = torch.rand(7, generator=g) + 0.1
    num, den = 0.0, 0.0
    for i in range(7):
        for j in range(i + 1, 7):
            s = (float(emb[i] @ emb[j]) + 1) / 2
            if ids[i] == ids[j]:
                loss = -math.log(max(s, 1e-10))
            else:
                loss = -math.log(max(1 - s, 1e-10))
            num += float(w[i] * w[j]) * loss
            den += float(w[i] * w[j])
    assert track_loss(emb, ids, w).item() == pytest.approx(num / den, rel=1e-5)
    # fewer than two positives: 0, not NaN
    one = track_loss(emb[:1].requires_grad_(), ids[:1], w[:1])
    assert one.item() == 0.0


# ------------------------------------------------------------------------------ whole STMaskLoss
def _preds(num_frames, num_anchors, num_classes=2, m=1, e=4, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    preds = {
        "loc": torch.zeros(num_frames, num_anchors, 4),
        "conf": torch.zeros(num_frames, num_anchors, num_classes),
        "centerness": torch.zeros(num_frames, num_anchors),
        "track": F.normalize(torch.randn(num_frames, num_anchors, e, generator=g), dim=-1),
        "mask_coeff": torch.zeros(num_frames, num_anchors, m),
    }
    if requires_grad:
        for v in preds.values():
            v.requires_grad_()
    return preds


def _target(boxes, ids, masks=None, size=8):
    n = len(boxes)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(n, 4),
        "labels": torch.ones(n, dtype=torch.long),
        "ids": torch.tensor(ids, dtype=torch.long),
        "masks": torch.zeros(n, size, size) if masks is None else masks,
    }


def test_box_center_and_mask_losses_single_positive():
    gt = [0.4, 0.4, 0.6, 0.6]
    priors = priors_of([gt, [0.0, 0.0, 0.1, 0.1]])
    preds = _preds(2, 2)
    with torch.no_grad():
        preds["loc"][0, 0] = torch.tensor([5.0, 0.0, 0.0, 0.0])  # decoded [0.5, 0.4, 0.7, 0.6]
        preds["centerness"][0, 0] = 0.5
        preds["mask_coeff"][0, 0] = 0.7
    masks = torch.zeros(1, 8, 8)
    masks[0, 3:5, 3:6] = 1
    targets = [_target([gt], [1], masks), _target([], [])]
    proto = torch.ones(2, 4, 4, 1, requires_grad=True)
    losses = STMaskLoss()(preds, proto, priors, targets)
    assert set(losses) == {"loss_box", "loss_mask", "loss_conf", "loss_center", "loss_track"}
    d = 1 / 3 - 0.01 / 0.13  # IoU 1/3, centre distance^2 0.01, enclosing diagonal^2 0.13
    assert losses["loss_box"].item() == pytest.approx(5 * (1 - d) / 2, rel=1e-5)
    assert losses["loss_center"].item() == pytest.approx(20 * 0.5 * (0.5 - d) ** 2 / 2, rel=1e-5)
    # mask: crop = 1.2x the predicted box [0.5, 0.4, 0.7, 0.6] = [0.48, 0.38, 0.72, 0.62], clamped
    crop = torch.tensor([[0.48, 0.38, 0.72, 0.62]])
    ref = mask_bce(proto[0].detach(), torch.tensor([[0.7]]), crop, masks)
    assert losses["loss_mask"].item() == pytest.approx(6.125 * ref.item() / 2, rel=1e-5)
    # one positive: no pair for the track loss
    assert losses["loss_track"].item() == 0.0

    # the centerness target is not detached: loss_center alone moves loc
    (g,) = torch.autograd.grad(losses["loss_center"], preds["loc"])
    assert g[0, 0].abs().sum() > 0 and g[0, 1].abs().sum() == 0 and g[1].abs().sum() == 0


def test_ohem_switch_from_config():
    from detectron2.config import get_cfg

    from stmask import add_stmask_config

    cfg = get_cfg()
    add_stmask_config(cfg)
    cfg.MODEL.STMASK.OHEM_AUTHORS_WEIGHT_ORDER = True
    cfg.MODEL.STMASK.BOX_WEIGHT = 2.0
    loss = STMaskLoss(cfg)
    assert loss.authors_weight_order is True and loss.box_weight == 2.0
    assert loss.mask_crop_expand == 1.2 and loss.variances == (0.1, 0.2)


# ------------------------------------------------------------------------------------ shift losses
SHIFT_PRIORS = [[0.4, 0.4, 0.6, 0.6], [0.4, 0.39, 0.6, 0.61], [0.1, 0.1, 0.3, 0.3], [0.7, 0.7, 0.9, 0.9]]


def _shift_setup():
    """3 clips: clip 0 one instance (2 ref anchors), clip 1 one kept instance (id 2) and one that leaves
    (id 9), clip 2 no next-frame GT."""
    next0 = torch.zeros(1, 8, 8)
    next0[0, 3:5, 3:6] = 1
    next1 = torch.zeros(2, 8, 8)
    next1[1, 0:3, 0:2] = 1  # id 2 is the second GT of the next frame
    targets = [
        _target([[0.4, 0.4, 0.6, 0.6]], [1]),
        _target([[0.45, 0.4, 0.65, 0.6]], [1], next0),
        _target([[0.1, 0.1, 0.3, 0.3], [0.7, 0.7, 0.9, 0.9]], [2, 9]),
        _target([[0.4, 0.4, 0.6, 0.6], [0.1, 0.1, 0.3, 0.34]], [5, 2], next1),
        _target([[0.4, 0.4, 0.6, 0.6]], [3]),
        _target([], []),
    ]
    return targets


class StubTemporal:
    def __init__(self, box_by_clip, coeff=0.3):
        self.box_by_clip = box_by_clip
        self.coeff = coeff
        self.calls = []

    def __call__(self, z, boxes, batch_idx):
        self.calls.append((boxes.clone(), batch_idx.clone()))
        delta_box = self.box_by_clip[batch_idx] + 0 * z.sum()
        delta_coeff = torch.full((boxes.shape[0], 1), self.coeff) + 0 * z.sum()
        return delta_box, delta_coeff


def test_shift_losses_with_stub():
    targets = _shift_setup()
    priors = priors_of(SHIFT_PRIORS)
    preds = _preds(6, 4)
    with torch.no_grad():
        preds["mask_coeff"].fill_(0.2)
    proto = torch.ones(6, 4, 4, 1, requires_grad=True)
    z = torch.rand(3, 5, 4, 4, requires_grad=True)
    zeros = StubTemporal(torch.zeros(3, 4))
    losses = STMaskLoss()(preds, proto, priors, targets, z, zeros)

    # one batched call: clip 0's two anchors, then clip 1's id-2 anchor (id 9 left, clip 2 has nothing)
    assert len(zeros.calls) == 1
    boxes, batch_idx = zeros.calls[0]
    assert batch_idx.tolist() == [0, 0, 1]
    torch.testing.assert_close(boxes, torch.tensor(SHIFT_PRIORS[:3]))  # loc = 0 -> the priors

    # box targets: clip 0 (2.5, 0, 0, 0) -> 2.0; clip 1 (0, 1, 0, ln(1.2) / 0.2) -> 0.5 + th^2 / 2
    th = math.log(1.2) / 0.2
    clip1 = 0.5 + 0.5 * th**2
    assert losses["loss_box_shift"].item() == pytest.approx(5 * (2.0 + clip1) / 3, rel=1e-5)

    # masks: sigmoid(1 * tanh(0.2 + 0.3)) in the crop of the next GT box, 1-px padding at 4 px
    v = 1 / (1 + math.exp(-math.tanh(0.5)))
    l0 = _ref_mask_loss(
        v, PROFILE_SHIFTED, PROFILE_SHIFTED, targets[1]["masks"][0].tolist(), 0.2 * 8 * 0.2 * 8
    )
    l1 = _ref_mask_loss(v, PROFILE_IN, PROFILE_IN, targets[3]["masks"][1].tolist(), 0.2 * 8 * 0.24 * 8)
    assert losses["loss_mask_shift"].item() == pytest.approx(6.125 * (l0 + l1) / 3, rel=1e-5)

    # the ref predictions and the next prototypes are detached; Z is not
    total = losses["loss_box_shift"] + losses["loss_mask_shift"]
    grads = torch.autograd.grad(total, [z, proto, preds["loc"], preds["mask_coeff"]], allow_unused=True)
    assert grads[0] is not None
    assert all(g is None or g.abs().sum() == 0 for g in grads[1:])

    # a stub returning the GT-to-GT encoding gives ~0 box-shift loss
    gt_codes = torch.zeros(3, 4)
    gt_codes[0] = encode(targets[1]["boxes"][0], center_size(targets[0]["boxes"][0]))
    gt_codes[1] = encode(targets[3]["boxes"][1], center_size(targets[2]["boxes"][0]))
    torch.testing.assert_close(gt_codes[:2], torch.tensor([[2.5, 0, 0, 0], [0, 1.0, 0, th]]))
    exact = STMaskLoss()(preds, proto, priors, targets, z, StubTemporal(gt_codes))
    assert exact["loss_box_shift"].item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------- random and empty
class TinyTemporal(torch.nn.Module):
    """roi_align (aligned) on Z in its pixel units + a linear layer (a stand-in for TemporalNet)."""

    def __init__(self, channels, m):
        super().__init__()
        self.fc = torch.nn.Linear(channels * 4, 4 + m)

    def forward(self, z, boxes, batch_idx):
        h, w = z.shape[-2:]
        scaled = boxes * boxes.new_tensor([w, h, w, h])
        rois = torch.cat([batch_idx[:, None].to(boxes.dtype), scaled], dim=1)
        feats = roi_align(z, rois, (2, 2), spatial_scale=1.0, sampling_ratio=0, aligned=True)
        out = self.fc(feats.flatten(1))
        return out[:, :4], out[:, 4:]


def _random_case(seed, empty=False):
    g = torch.Generator().manual_seed(seed)
    num_frames, m, c, hp, wp, hpad, wpad = 4, 8, 5, 12, 20, 48, 80
    priors = make_priors([(6, 10), (3, 5)])
    n = priors.shape[0]
    preds = {
        "loc": torch.randn(num_frames, n, 4, generator=g) * 0.5,
        "conf": torch.randn(num_frames, n, c, generator=g),
        "centerness": torch.tanh(torch.randn(num_frames, n, generator=g)),
        "track": F.normalize(torch.randn(num_frames, n, 16, generator=g), dim=-1),
        "mask_coeff": torch.randn(num_frames, n, m, generator=g),
    }
    for v in preds.values():
        v.requires_grad_()
    proto = torch.relu(torch.randn(num_frames, hp, wp, m, generator=g)).requires_grad_()
    targets = []
    for f in range(num_frames):
        k = 0 if empty or f == 3 else (3 if f % 2 == 0 else 2)
        xy = torch.rand(k, 2, generator=g) * 0.6
        wh = torch.rand(k, 2, generator=g) * 0.3 + 0.1
        boxes = torch.cat([xy, xy + wh], dim=1)
        masks = torch.zeros(k, hpad, wpad)
        for i in range(k):
            x1, y1, x2, y2 = (boxes[i] * torch.tensor([wpad, hpad, wpad, hpad])).long().tolist()
            masks[i, y1:y2, x1:x2] = 1
        targets.append(
            {
                "boxes": boxes,
                "labels": torch.randint(1, c, (k,), generator=g),
                "ids": torch.arange(1, k + 1) + 10 * (f // 2),
                "masks": masks,
            }
        )
    z = torch.rand(num_frames // 2, 6, 6, 10, generator=g).requires_grad_()
    return preds, proto, priors, targets, z, TinyTemporal(6, m)


@pytest.mark.parametrize("authors", [False, True])
def test_random_batch_finite_and_backward(authors):
    preds, proto, priors, targets, z, net = _random_case(1)
    losses = STMaskLoss(authors_weight_order=authors)(preds, proto, priors, targets, z, net)
    assert set(losses) == {
        "loss_box", "loss_mask", "loss_conf", "loss_center", "loss_track", "loss_box_shift",
        "loss_mask_shift",
    }  # fmt: skip
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), k
        assert v.item() > 0, k
    sum(losses.values()).backward()
    for name in ("loc", "conf", "centerness", "track", "mask_coeff"):
        assert torch.isfinite(preds[name].grad).all() and preds[name].grad.abs().sum() > 0, name
    assert proto.grad.abs().sum() > 0 and z.grad.abs().sum() > 0
    assert net.fc.weight.grad.abs().sum() > 0


def test_frames_without_gt_give_connected_zeros():
    preds, proto, priors, targets, z, net = _random_case(2, empty=True)
    losses = STMaskLoss()(preds, proto, priors, targets, z, net)
    assert len(losses) == 7
    for k, v in losses.items():
        assert v.item() == 0.0 and v.requires_grad, k
    sum(losses.values()).backward()
    for name in ("loc", "conf", "mask_coeff", "track", "centerness"):
        assert preds[name].grad is not None and torch.isfinite(preds[name].grad).all(), name
    assert net.fc.weight.grad is not None  # the temporal net stays in the graph (n = 0 call)
