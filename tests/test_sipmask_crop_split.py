"""crop_split / crop_split_gt against a literal per-pixel re-statement of the CUDA kernels."""

import math

import pytest
import torch

from sipmask.modeling.crop_split import crop_split, crop_split_gt, crop_split_probs


def reference_crop_split(sub: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Plain loops over instances and pixels, following the CUDA kernel statement by statement."""
    n, _, h, w = sub.shape
    out = torch.zeros(n, h, w, dtype=sub.dtype)
    for i in range(n):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        cw = (x2 - x1 + 0.1) / 2
        ch = (y2 - y1 + 0.1) / 2
        for y in range(h):
            for x in range(w):
                if x >= x1 and y >= y1 and x < x2 and y < y2:
                    qx = math.trunc((x - x1) / cw)
                    qy = math.trunc((y - y1) / ch)
                    out[i, y, x] = sub[i, 2 * qy + qx, y, x]
    return out


def reference_crop_gt(masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    n, h, w = masks.shape
    out = torch.zeros_like(masks)
    for i in range(n):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        for y in range(h):
            for x in range(w):
                if x >= x1 and y >= y1 and x < x2 and y < y2:
                    out[i, y, x] = masks[i, y, x]
    return out


H, W = 13, 17
BOXES = torch.tensor(
    [
        [2.3, 1.7, 11.2, 9.9],  # interior, fractional
        [0.0, 0.0, float(W), float(H)],  # the whole canvas
        [-4.5, -3.0, 5.2, 6.4],  # partly outside top-left
        [12.0, 8.0, 25.0, 20.0],  # partly outside bottom-right, touching the border
        [5.2, 5.2, 5.7, 5.9],  # smaller than one mask cell: no integer pixel inside
        [5.0, 5.0, 5.5, 5.5],  # smaller than one cell but containing pixel (5, 5)
        [3.0, 3.0, 4.0, 9.0],  # one column wide
        [7.0, 2.0, 3.0, 6.0],  # inverted in x: empty
        [30.0, 30.0, 40.0, 40.0],  # entirely outside
        [4.0, 4.0, 8.0, 8.0],  # integer box: split at x1 + 2.05, i.e. columns 4, 5, 6 | 7
    ]
)


def test_crop_split_probs_matches_reference():
    torch.manual_seed(0)
    sub = torch.rand(len(BOXES), 4, H, W)
    out = crop_split_probs(sub, BOXES)
    assert out.shape == (len(BOXES), H, W)
    torch.testing.assert_close(out, reference_crop_split(sub, BOXES), rtol=0, atol=0)


def test_crop_split_from_basis_matches_reference():
    torch.manual_seed(1)
    k = 5
    basis = torch.rand(k, H, W)
    coeffs = torch.randn(len(BOXES), 4 * k)
    sub = torch.sigmoid(torch.einsum("nqk,khw->nqhw", coeffs.view(-1, 4, k), basis))
    out = crop_split(basis, coeffs, BOXES)
    torch.testing.assert_close(out, reference_crop_split(sub, BOXES), rtol=1e-6, atol=1e-6)


def test_split_point_and_quadrant_order_hand_computed():
    # Quadrant q holds the constant q + 1, so the output shows which quadrant each pixel took.
    sub = torch.arange(1, 5, dtype=torch.float32).view(1, 4, 1, 1).expand(1, 4, 10, 10).contiguous()
    out = crop_split_probs(sub, torch.tensor([[4.0, 4.0, 8.0, 8.0]]))[0]
    expected = torch.zeros(10, 10)
    # cw = ch = 2.05: columns/rows 4, 5, 6 are the first half (6 - 4 = 2 < 2.05), 7 the second.
    expected[4:7, 4:7] = 1  # TL
    expected[4:7, 7:8] = 2  # TR
    expected[7:8, 4:7] = 3  # BL
    expected[7:8, 7:8] = 4  # BR
    torch.testing.assert_close(out, expected)


def test_tiny_box_inside_one_cell():
    sub = torch.ones(2, 4, 8, 8)
    out = crop_split_probs(sub, torch.tensor([[5.2, 5.2, 5.7, 5.9], [5.0, 5.0, 5.5, 5.5]]))
    assert out[0].sum() == 0  # no integer pixel in [5.2, 5.7)
    assert out[1].sum() == 1 and out[1, 5, 5] == 1  # exactly pixel (5, 5)


def test_empty_inputs():
    basis = torch.rand(4, 6, 7)
    out = crop_split(basis, torch.zeros(0, 16), torch.zeros(0, 4))
    assert out.shape == (0, 6, 7)
    assert crop_split_probs(torch.zeros(0, 4, 6, 7), torch.zeros(0, 4)).shape == (0, 6, 7)
    assert crop_split_gt(torch.zeros(0, 6, 7), torch.zeros(0, 4)).shape == (0, 6, 7)


def test_crop_split_gt_matches_reference():
    torch.manual_seed(2)
    masks = (torch.rand(len(BOXES), H, W) > 0.5).float()
    torch.testing.assert_close(crop_split_gt(masks, BOXES), reference_crop_gt(masks, BOXES))


def test_gradient_goes_only_to_the_chosen_quadrant_inside_the_box():
    sub = torch.rand(1, 4, 10, 10, requires_grad=True)
    box = torch.tensor([[4.0, 4.0, 8.0, 8.0]])
    crop_split_probs(sub, box).sum().backward()
    grad = sub.grad[0]
    assert grad.sum() == 16  # 4x4 inside pixels, one quadrant each
    assert grad[0, 4:7, 4:7].eq(1).all() and grad[0].sum() == 9
    assert grad[3, 7, 7] == 1 and grad[3].sum() == 1
    assert grad[:, :4].sum() == 0 and grad[:, :, :4].sum() == 0


def test_mismatched_coefficients_raise():
    with pytest.raises(ValueError, match="4 x 3"):
        crop_split(torch.rand(3, 5, 5), torch.rand(2, 8), torch.rand(2, 4))
