"""The fast inference path (onestage.inference, onestage.layers.mask_ops, the CenterMask meta-architecture,
SipMask's windowed mask assembly, the sampled deformable conv, the NMS on the best candidates, AMP) gives
the outputs of the plain path; tools/benchmark.py --compare."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, FrozenBatchNorm2d, batched_nms
from detectron2.layers.mask_ops import _do_paste_mask
from detectron2.layers.mask_ops import paste_masks_in_image as d2_paste_masks_in_image
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import BitMasks, Boxes, Instances, pairwise_iou
from detectron2.utils.events import EventStorage
from torch import nn
from torchvision.ops import deform_conv2d

from onestage.backbone import VOVNET_SPECS, VoVNet
from onestage.backbone.vovnet import OSAModule
from onestage.config import load_config
from onestage.fcos.head import FCOSHead
from onestage.inference import (
    InferenceCopy,
    check_amp,
    fold_batchnorm_,
    inference_autocast,
    prepare_for_inference,
    winograd_conv,
    winograd_eligible,
)
from onestage.layers import (
    BatchPastedROIMasks,
    DeformConv,
    deform_conv2d_sampled,
    paste_masks_in_image,
    top_batched_nms,
    upsample_windows_into,
    window_chunks,
)
from sipmask.modeling.crop_split import box_pixel_windows, crop_split, crop_split_windows
from tools import benchmark

REPO_ROOT = Path(__file__).resolve().parents[1]
LITE_SYNTHETIC = str(REPO_ROOT / "configs/CenterMask/CenterMask-Lite-synthetic.yaml")
SIPMASK_SYNTHETIC = str(REPO_ROOT / "configs/SipMask/SipMask-synthetic.yaml")
# FrozenBN backbones, at a small input: VoVNet (CenterMask-Lite), caffe ResNet-50 (SipMask real-time),
# the deformable ResNet-101 of SipMask++ (FrozenBN folded into deformable convs)
FROZEN_BN = {
    "centermask_lite": ("configs/CenterMask/centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yaml", ["INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128"]),
    "sipmask_rt": ("configs/SipMask/sipmask_r50_caffe_fpn_ssd_6x.yaml", ["MODEL.SIPMASK.FIXED_INPUT_SIZE_TEST", "[96, 96]"]),
    "sipmask++_dcn": ("configs/SipMask/sipmask++_r101_caffe_fpn_ssd_6x.yaml", ["MODEL.SIPMASK.FIXED_INPUT_SIZE_TEST", "[256, 256]"]),  # re-scoring: >= 254 px
}  # fmt: skip


def _random_norms(model: nn.Module, seed: int = 0) -> None:
    """Frozen / batch norms with statistics of a trained model (not the identity they start as)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


def _detecting_model(config: str, opts=(), amp: str = ""):
    """A random model that detects (classifier biases 0, distances of one stride), its input."""
    cfg = load_config(config, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.INFERENCE.AMP", amp, *opts])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            for suffix, value in benchmark.DETECT_BIASES.items():
                if name.endswith(suffix):
                    p.fill_(value)
    return model, benchmark.load_inputs(cfg, None, 1)


def _copies_off(model: nn.Module) -> list:
    """Turn every prepared copy off (the plain path); returns what to restore."""
    saved = []
    for m in model.modules():
        if isinstance(m.__dict__.get("inference_copy"), InferenceCopy):
            saved.append((m, m.inference_copy))
            m.inference_copy = None
    return saved


def _outputs(model, inputs) -> list[dict]:
    with torch.no_grad():
        return benchmark._instance_fields(model(inputs))


def _assert_same_outputs(a: list[dict], b: list[dict], rel: float = 1e-4, pixels: float = 0.999) -> None:
    diff = benchmark.compare_outputs(a, b)
    assert all(n_a == n_b == p for (n_a, n_b), p in zip(diff["detections"], diff["paired"])), diff
    assert sum(n for n, _ in diff["detections"]) > 0
    for name, value in diff["max_relative"].items():
        assert value <= rel, (name, value)
    differ, total, _ = diff["mask_pixels"]
    assert total > 0 and 1 - differ / total >= pixels


# ---------------------------------------------------------------------------------- folding


def test_fold_batchnorm_patterns_give_the_same_outputs():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, bias=False), FrozenBatchNorm2d(16), nn.ReLU())
    d2 = Conv2d(8, 16, 3, padding=1, bias=True, norm=FrozenBatchNorm2d(16), activation=nn.ReLU())
    bn = nn.Sequential(nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16)).eval()
    dcn = DeformConv(8, 16, 3, padding=1, norm=FrozenBatchNorm2d(16))
    # a norm after an activation, or a norm that normalises with batch statistics, is left alone
    after_act = nn.Sequential(Conv2d(8, 16, 1, activation=nn.ReLU()), FrozenBatchNorm2d(16))
    batch_stats = nn.Sequential(nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16, track_running_stats=False)).eval()
    x, offset = torch.randn(2, 8, 12, 10), torch.randn(2, 18, 12, 10)
    for module in (seq, d2, bn, dcn, after_act, batch_stats):
        _random_norms(module)
    with torch.no_grad():
        expected = [m(x) for m in (seq, d2, bn, after_act, batch_stats)] + [dcn(x, offset)]
        assert [fold_batchnorm_(m) for m in (seq, d2, bn, after_act, batch_stats, dcn)] == [1, 1, 1, 0, 0, 1]
        folded = [m(x) for m in (seq, d2, bn, after_act, batch_stats)] + [dcn(x, offset)]
    assert isinstance(seq[1], nn.Identity) and d2.norm is None and dcn.norm is None
    for a, b in zip(folded, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(FROZEN_BN))
def test_inference_copy_keeps_state_dict_and_training_and_outputs(name):
    config, opts = FROZEN_BN[name]
    model, inputs = _detecting_model(str(REPO_ROOT / config), opts)
    benchmark.calibrate_norms(model, inputs, seed=0)  # norms of a trained model, activations in range
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fast = _outputs(model, inputs)
    # the prepared copies exist, with the norms folded; the model itself is untouched
    copies = [
        m.inference_copy
        for m in model.modules()
        if isinstance(m.__dict__.get("inference_copy"), InferenceCopy)
    ]
    assert copies and all(c._copy is not None for c in copies)
    backbone_copy = model.backbone.inference_copy._copy
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in backbone_copy.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules()) > 0
    new_state = model.state_dict()
    assert list(new_state) == list(state)  # the same keys, no key of a copy
    assert all(torch.equal(new_state[k], v) for k, v in state.items())
    # eval outputs equal those of the plain (unfolded, contiguous) path
    saved = _copies_off(model)
    plain = _outputs(model, inputs)
    for m, c in saved:
        m.inference_copy = c
    _assert_same_outputs(plain, fast)
    # a changed parameter (e.g. a checkpoint load) rebuilds the copy
    stem = model.backbone.bottom_up.stem
    with torch.no_grad():
        (stem[0] if isinstance(stem, nn.Sequential) else stem.conv1).weight.mul_(0.5)
    changed = _outputs(model, inputs)
    assert model.backbone.inference_copy._copy is not backbone_copy
    saved = _copies_off(model)
    _assert_same_outputs(_outputs(model, inputs), changed)
    for m, c in saved:
        m.inference_copy = c
    # so does a change through .data (which PyTorch's version counters do not see)
    head_conv = next(
        m
        for m in (model.roi_heads.mask_head if hasattr(model, "roi_heads") else model.head).modules()
        if isinstance(m, nn.Conv2d)
    )
    head_conv.weight.data.mul_(-1)
    changed = _outputs(model, inputs)
    _copies_off(model)
    _assert_same_outputs(_outputs(model, inputs), changed)


def test_training_never_uses_the_copy_and_hooks_still_run():
    model, inputs = _detecting_model(LITE_SYNTHETIC)
    calls = []
    model.backbone.register_forward_hook(lambda *_: calls.append("backbone"))
    _outputs(model, inputs)  # builds the copies
    assert calls == ["backbone"]
    image = inputs[0]["image"]
    inst = Instances(tuple(image.shape[1:]))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 60.0, 50.0]]))
    inst.gt_classes = torch.tensor([1])
    masks = torch.zeros(1, *image.shape[1:], dtype=torch.bool)
    masks[0, 12:50, 10:60] = True
    inst.gt_masks = BitMasks(masks)
    batch = [{"image": image, "instances": inst}]

    def losses():
        torch.manual_seed(1)
        model.train()
        with EventStorage():
            out = model(batch)
        model.eval()
        return {k: v.detach() for k, v in out.items()}

    with_copies = losses()
    saved = _copies_off(model)
    without = losses()
    for m, c in saved:
        m.inference_copy = c
    assert with_copies.keys() == without.keys()
    for k in with_copies:
        assert torch.equal(with_copies[k], without[k]), k
    # eval with autograd on (no torch.no_grad()) runs the plain path too
    model.eval()
    with torch.enable_grad():
        model(inputs)


# ---------------------------------------------------------------------------- mask pasting


def _random_boxes(g, n: int, h: int, w: int) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 1.2 - 20
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 0.6 + 0.3
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)  # as detector_postprocess clips them
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    return boxes


@pytest.mark.parametrize("seed", range(4))
def test_batched_paste_equals_detectron2(seed):
    g = torch.Generator().manual_seed(seed)
    h, w = [(120, 160), (37, 61), (200, 90), (64, 64)][seed]
    n = [30, 1, 12, 0][seed]
    boxes = _random_boxes(g, n, h, w)
    boxes[:2, 2:] = boxes[:2, :2] + 0.4  # sub-pixel boxes
    masks = torch.rand(n, 28, 28, generator=g)
    for threshold in (0.5, 0.3):
        ours = paste_masks_in_image(masks, boxes, (h, w), threshold)
        reference = d2_paste_masks_in_image(masks, boxes, (h, w), threshold)
        assert ours.dtype == torch.bool and ours.shape == reference.shape == (n, h, w)
        differ = ours != reference
        if differ.any():  # only where the soft value is at the threshold up to float rounding
            soft, _ = _do_paste_mask(masks[:, None], boxes, h, w, skip_empty=False)
            assert (soft[differ] - threshold).abs().max() < 1e-5
        assert differ.sum() <= 1e-4 * differ.numel()


def test_detector_postprocess_with_batch_pasted_masks():
    g = torch.Generator().manual_seed(0)
    boxes = _random_boxes(g, 8, 100, 120)
    boxes[0] = torch.tensor([5.0, 5.0, 5.0, 30.0])  # empty: dropped by the postprocess
    masks = torch.rand(8, 1, 28, 28, generator=g)
    # detector_postprocess scales the boxes in place: each call gets its own
    reference = Instances((100, 120), pred_boxes=Boxes(boxes.clone()), pred_masks=masks)
    reference = detector_postprocess(reference, 150, 180)
    ours = Instances((100, 120), pred_boxes=Boxes(boxes.clone()), pred_masks=BatchPastedROIMasks(masks[:, 0]))
    ours = detector_postprocess(ours, 150, 180)
    assert len(ours) == len(reference) < 8  # the empty box (and any clipped to nothing) dropped
    assert torch.equal(ours.pred_masks, reference.pred_masks)


@pytest.mark.parametrize("seed", range(3))
def test_windowed_crop_split_and_upsample_equal_the_full_canvas(seed):
    g = torch.Generator().manual_seed(seed)
    k, h, w = 8, [40, 33, 50][seed], [48, 40, 31][seed]
    n = 12
    basis = torch.rand(k, h, w, generator=g)
    coeffs = torch.randn(n, 4 * k, generator=g)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 1.2 - 5
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 0.7], dim=1)
    full = crop_split(basis, coeffs, boxes)
    windows = box_pixel_windows(boxes, h, w)
    up, out_hw = [((80, 96), (80, 96)), ((70, 85), (60, 90)), ((100, 62), (100, 62))][seed]
    expected = F.interpolate(full[:, None], size=up, mode="bilinear", align_corners=False)[:, 0] > 0.4
    canvas = torch.zeros(n, *out_hw, dtype=torch.bool)
    ch, cw = min(up[0], out_hw[0]), min(up[1], out_hw[1])
    canvas[:, :ch, :cw] = expected[:, :ch, :cw]
    masks = torch.zeros(n, *out_hw, dtype=torch.bool)
    for idx in window_chunks((windows[:, 2:] - windows[:, :2]).clamp(min=0).prod(dim=1), budget=600):
        crops = crop_split_windows(basis, coeffs[idx], boxes[idx], windows[idx])
        for crop, i, (x0, y0, x1, y1) in zip(crops, idx.tolist(), windows[idx].tolist()):
            torch.testing.assert_close(
                crop[: y1 - y0, : x1 - x0], full[i, y0:y1, x0:x1], rtol=1e-6, atol=1e-6
            )
            assert (crop[y1 - y0 :] == 0).all() and (crop[:, x1 - x0 :] == 0).all()
        upsample_windows_into(masks, idx, crops, windows[idx], (h, w), up, 0.4)
    assert (masks != canvas).float().mean() < 1e-4


# ------------------------------------------------------------------------------- Winograd


def _ran_nnpack(fn) -> bool:
    with torch.profiler.profile() as prof:
        fn()
    return any("nnpack" in e.key for e in prof.key_averages())


@pytest.mark.parametrize(
    "shape, bias, channels_last, transforms",
    [
        ((1, 128, 48, 48), True, False, True),  # large enough: NNPACK
        ((1, 128, 48, 48), False, True, True),  # an NHWC input, no bias
        ((1, 64, 90, 90), True, False, True),
        ((50, 256, 14, 14), True, False, True),  # RoI batches
        ((1, 128, 20, 24), True, False, False),  # too small: the direct convolution, bit for bit
        ((1, 64, 60, 60), True, False, False),
        ((1, 32, 200, 200), True, False, False),  # too few channels
    ],
)
def test_winograd_conv_equals_the_direct_convolution(shape, bias, channels_last, transforms):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(48, shape[1], 3, 3, generator=g) * 0.1
    b = torch.randn(48, generator=g) if bias else None
    expected = F.conv2d(x, weight, b, padding=1)
    ours = winograd_conv(x, weight, b)
    assert ours.shape == expected.shape
    # transforms change the rounding, not the values: ~1e-5 of the output's magnitude
    assert (ours - expected).abs().max() <= 1e-4 * expected.abs().max()
    if torch._nnpack_available():
        assert _ran_nnpack(lambda: winograd_conv(x, weight, b)) == transforms
    if not transforms:
        assert torch.equal(ours, expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision: the direct convolution
        assert not _ran_nnpack(lambda: winograd_conv(x, weight, b))
    with torch.backends.nnpack.flags(enabled=False):  # NNPACK turned off by the user
        assert not _ran_nnpack(lambda: winograd_conv(x, weight, b))
        assert torch.equal(winograd_conv(x, weight, b), expected)


def test_prepared_head_runs_its_3x3_convs_on_winograd():
    torch.manual_seed(0)
    head = FCOSHead(in_channels=64, num_classes=3, num_levels=2, num_cls_convs=2, num_box_convs=2)
    with torch.no_grad():
        for m in head.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(std=0.05)
    head.eval()
    features = [torch.randn(1, 64, 96, 96), torch.randn(1, 64, 48, 48)]
    eligible = {n for n, m in head.named_modules() if winograd_eligible(m)}
    # tower convs and the 3-class logits (3 output channels: too few to pay) are told apart
    assert eligible == {f"{t}_tower.{i}" for t in ("cls", "bbox") for i in (0, 3)}
    prepared = prepare_for_inference(head, channels_last=False, winograd=True)
    assert {n for n, m in prepared.named_modules() if "forward" in m.__dict__} == eligible
    assert isinstance(head.inference_copy, InferenceCopy) and head.inference_copy.winograd
    with torch.no_grad():
        plain = FCOSHead.forward.__wrapped__(head, features)
        fast = head(features)
        if torch._nnpack_available():
            assert _ran_nnpack(lambda: head(features))
    for a_level, b_level in zip(plain, fast, strict=True):
        for a, b in zip(a_level, b_level, strict=True):
            assert (a - b).abs().max() <= 1e-4 * a.abs().max()


@pytest.mark.skipif(not torch._nnpack_available(), reason="NNPACK is not available")
def test_prepared_vovnet_runs_large_osa_blocks_on_winograd(monkeypatch):
    """Prepared copies run OSA blocks on maps of >= 5000 positions with NNPACK 3x3 convs and the
    aggregation conv as per-part matrix products into an NHWC output: the plain outputs (batch of
    two); smaller blocks, deformable stages and depthwise bodies keep the plain forward."""
    torch.manual_seed(0)
    net = VoVNet(VOVNET_SPECS["V-19-slim-eSE"], out_features=("stage2", "stage3", "stage4")).eval()
    _random_norms(net)
    x = torch.randn(2, 3, 288, 300)  # stage 2: 72 x 75 = 5400 positions; stage 3: 36 x 38
    with torch.no_grad():
        plain = net(x)
    prepared = prepare_for_inference(net)
    assert net.stage2.OSA2_1._winograd is None  # only the copy holds the split weights
    # the split weights are plain attributes of the copy: nothing new in its state (besides the
    # biases the folded norms give the convs)
    assert {k for k in prepared.state_dict() if not k.endswith("conv.bias")} <= set(net.state_dict())
    calls = []
    real = OSAModule._forward_winograd
    monkeypatch.setattr(OSAModule, "_forward_winograd", lambda m, t: calls.append(t.shape[-2:]) or real(m, t))
    with torch.no_grad():
        fast = prepared(x)
        assert _ran_nnpack(lambda: prepared(x))
    assert calls[0] == (72, 75) and all(c == (72, 75) for c in calls)  # stage 2 only
    assert fast["stage2"].is_contiguous(memory_format=torch.channels_last)
    for name in plain:
        assert (fast[name] - plain[name]).abs().max() <= 1e-4 * plain[name].abs().max(), name
    dcn = VoVNet(VOVNET_SPECS["V-19-slim-eSE"], stage_with_dcn=(True, False, False, False))
    depthwise = VoVNet(VOVNET_SPECS["V-19-slim-dw-eSE"])
    for model in (dcn, depthwise):
        assert prepare_for_inference(model.eval()).stage2.OSA2_1._winograd is None
    assert prepare_for_inference(dcn.eval()).stage3.OSA3_1._winograd is not None


# ------------------------------------------------------------------ deformable conv, NMS


@pytest.mark.parametrize("modulated", [False, True])
def test_sampled_deformable_conv_equals_torchvision(modulated):
    g = torch.Generator().manual_seed(0)
    for stride, padding, dilation, groups in [(1, 1, 1, 1), (2, 1, 1, 2), (1, 2, 2, 4)]:
        x = torch.randn(2, 16, 13, 11, generator=g)
        weight = torch.randn(8, 16, 3, 3, generator=g) * 0.1
        bias = torch.randn(8, generator=g)
        ho = (13 + 2 * padding - dilation * 2 - 1) // stride + 1
        wo = (11 + 2 * padding - dilation * 2 - 1) // stride + 1
        offset = torch.randn(2, 2 * groups * 9, ho, wo, generator=g) * 4  # many samples off the input
        mask = torch.rand(2, groups * 9, ho, wo, generator=g) if modulated else None
        args = ((stride,) * 2, (padding,) * 2, (dilation,) * 2)
        ours = deform_conv2d_sampled(x, offset, weight, bias, *args, mask=mask)
        reference = deform_conv2d(x, offset, weight, bias, *args, mask=mask)
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num", [300, 3000, 20000])
def test_nms_on_the_best_candidates_equals_full_nms(num):
    g = torch.Generator().manual_seed(num)
    xy = torch.rand(num, 2, generator=g) * 300
    boxes = torch.cat([xy, xy + torch.rand(num, 2, generator=g) * 80 + 5], dim=1)
    scores = torch.rand(num, generator=g)
    classes = torch.randint(0, 20, (num,), generator=g)
    for max_dets in (100, 10, 0):
        expected = batched_nms(boxes, scores, classes, 0.5)
        expected = expected[:max_dets] if max_dets > 0 else expected
        assert torch.equal(top_batched_nms(boxes, scores, classes, 0.5, max_dets), expected)


# -------------------------------------------------------------------------------------- AMP


def test_amp_values_and_fp16_on_cpu_are_refused():
    assert (
        check_amp("", "cpu") == ""
        and check_amp("bf16", "cpu") == "bf16"
        and check_amp("fp16", "cuda") == "fp16"
    )
    with pytest.raises(ValueError, match='"fp16" needs a CUDA device; use "bf16" on CPU'):
        check_amp("fp16", "cpu")
    with pytest.raises(ValueError, match="MODEL.INFERENCE.AMP must be one of"):
        inference_autocast("fp8", "cpu")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        _detecting_model(LITE_SYNTHETIC, amp="fp16")


@pytest.mark.parametrize("config", [LITE_SYNTHETIC, SIPMASK_SYNTHETIC], ids=["centermask_lite", "sipmask"])
def test_bf16_on_cpu_gives_the_same_detections(config):
    model, inputs = _detecting_model(config)
    amp_model, _ = _detecting_model(config, amp="bf16")
    amp_model.load_state_dict(model.state_dict())
    full, amp = _outputs(model, inputs)[0], _outputs(amp_model, inputs)[0]
    assert len(full["scores"]) == len(amp["scores"]) > 10
    assert amp["scores"].dtype == amp["pred_boxes"].dtype == torch.float32
    top = {k: v[:10] for k, v in full.items()}  # the 10 best: the same class, box, score and mask
    ia, ib = benchmark.match_detections(top, amp)
    assert len(ia) == 10
    iou = pairwise_iou(Boxes(top["pred_boxes"][ia]), Boxes(amp["pred_boxes"][ib])).diag()
    assert iou.min() > 0.95
    assert (top["scores"][ia] - amp["scores"][ib]).abs().max() < 0.01
    assert (top["pred_masks"][ia] == amp["pred_masks"][ib]).float().mean() > 0.98


# -------------------------------------------------------------------------- the meta-arch


def test_centermask_meta_arch_equals_generalized_rcnn():
    model, inputs = _detecting_model(LITE_SYNTHETIC)
    assert type(model).__name__ == "CenterMask"
    rcnn, _ = _detecting_model(LITE_SYNTHETIC, ["MODEL.META_ARCHITECTURE", "GeneralizedRCNN"])
    rcnn.load_state_dict(model.state_dict())
    _assert_same_outputs(_outputs(rcnn, inputs), _outputs(model, inputs))


# ------------------------------------------------------------------- benchmark --compare


def test_compare_reports_ratio_and_no_difference_against_the_same_tree(tmp_path, capsys):
    out = tmp_path / "compare.json"
    small = ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64"]
    benchmark.main(["--compare", str(REPO_ROOT), "--config-file", LITE_SYNTHETIC, "--device", "cpu",
                    "--threads", "1", "--warmup", "0", "--iters", "1", "--json", str(out), *small])  # fmt: skip
    printed = capsys.readouterr().out
    assert "speed-up x" in printed and "this tree: median" in printed
    result = json.loads(out.read_text())
    assert result["speedup"] > 0 and len(result["times_ms"]["ref"]) == len(result["times_ms"]["this"]) == 1
    diff = result["outputs"]
    assert diff["detections"][0][0] == diff["detections"][0][1] == diff["paired"][0] > 0
    assert all(v == 0 for v in diff["max_relative"].values()) and diff["mask_pixels"][0] == 0


def test_compare_extracts_a_commit(tmp_path):
    try:
        subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    tree, label = benchmark.reference_tree("HEAD", tmp_path)
    assert (tree / "tools/benchmark.py").is_file() and (tree / "configs/CenterMask").is_dir()
    assert label.startswith("HEAD (")
    with pytest.raises(SystemExit, match="neither a folder nor a commit"):
        benchmark.reference_tree("no-such-commit-xyz", tmp_path)


def test_benchmark_help_needs_no_model_imports():
    result = subprocess.run(
        [str(REPO_ROOT / ".venv/bin/python") if (REPO_ROOT / ".venv/bin/python").exists() else "python",
         "-X", "importtime", str(REPO_ROOT / "tools/benchmark.py"), "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "--compare" in result.stdout
    assert "torch" not in {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()}


def test_random_window_chunks_cover_every_index_once():
    areas = torch.as_tensor(np.random.default_rng(0).integers(0, 5000, 50))
    chunks = window_chunks(areas, budget=20000)
    assert sorted(torch.cat(chunks).tolist()) == list(range(50))
    for idx in chunks:
        assert len(idx) == 1 or int(areas[idx].max().clamp(min=1)) * len(idx) <= 20000


def test_sipmask_vis_tracking_branch_runs_on_the_prepared_copy():
    cfg = load_config(
        str(REPO_ROOT / "configs/SipMaskVIS/SipMaskVIS-synthetic.yaml"), ["MODEL.DEVICE", "cpu"]
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _random_norms(model)
    calls = []
    model.head.track_convs[0].register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 128, 160))
        features = [features[f] for f in model.head_in_features]
        plain = type(model.head).forward.__wrapped__(model.head, features)
        assert len(calls) == 3  # the plain path: the module itself, on P3-P5
        fast = model.head(features)
    assert len(calls) == 3  # the prepared copy ran the tracking branch, not the module
    assert set(fast) == set(plain) and "track" in fast
    torch.testing.assert_close(fast["track"], plain["track"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast["basis"], plain["basis"], rtol=1e-4, atol=1e-5)


def test_stmask_backbone_protonet_and_head_run_on_prepared_copies():
    cfg = load_config(
        str(REPO_ROOT / "configs/STMask/STMask_plus_resnet50_ali.yaml"),
        ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"],
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    benchmark.calibrate_norms(model.backbone, torch.randn(1, 3, 256, 320) * 50, seed=0)
    images = torch.randn(1, 3, 256, 320) * 50
    with torch.no_grad():
        plain_features = type(model.backbone).forward.__wrapped__(model.backbone, images)
        features = model.backbone(images)
        levels = [features[f] for f in model.in_features]
        plain_levels = [plain_features[f] for f in model.in_features]
        plain = {
            "proto": type(model.proto_net).forward.__wrapped__(model.proto_net, plain_levels[0]),
            **type(model.head).forward.__wrapped__(model.head, plain_levels),
        }
        fast = {"proto": model.proto_net(levels[0]), **model.head(levels)}
    for module in (model.backbone, model.proto_net, model.head):
        assert module.inference_copy._copy is not None
    for name in plain_features:
        a, b = plain_features[name], features[name]
        assert (a - b).abs().max() <= 1e-4 * a.abs().max(), name
    assert set(fast) == set(plain)
    for name in plain:
        a, b = plain[name], fast[name]
        assert (a - b).abs().max() <= 1e-4 * a.abs().max(), name
