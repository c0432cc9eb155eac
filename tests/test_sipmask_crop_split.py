"""crop_split / crop_split_gt against a literal per-pixel re-statement of the CUDA kernels."""

import math

import pytest
import torch

from sipmask.modeling.crop_split import crop_split, crop_split_gt


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


def test_crop_split_from_basis_matches_reference():
    torch.manual_seed(1)
    k = 5
    basis = torch.rand(k, H, W)
    coeffs = torch.randn(len(BOXES), 4 * k)
    sub = torch.sigmoid(torch.einsum("nqk,khw->nqhw", coeffs.view(-1, 4, k), basis))
    out = crop_split(basis, coeffs, BOXES)
    torch.testing.assert_close(out, reference_crop_split(sub, BOXES), rtol=1e-6, atol=1e-6)


def _one_basis(h: int, w: int, quadrant_logits: list[float], requires_grad: bool = False):
    """K = 1 basis of ones: pixel values are sigmoid(logit of its quadrant), so the output shows which
    quadrant each pixel took."""
    basis = torch.ones(1, h, w, requires_grad=requires_grad)
    coeffs = torch.tensor([quadrant_logits], requires_grad=requires_grad)
    return basis, coeffs


def test_split_point_and_quadrant_order_hand_computed():
    logits = [-1.5, -0.5, 0.5, 1.5]
    p = [1 / (1 + math.exp(-v)) for v in logits]
    basis, coeffs = _one_basis(10, 10, logits)
    out = crop_split(basis, coeffs, torch.tensor([[4.0, 4.0, 8.0, 8.0]]))[0]
    expected = torch.zeros(10, 10)
    # cw = ch = 2.05: columns/rows 4, 5, 6 are the first half (6 - 4 = 2 < 2.05), 7 the second.
    expected[4:7, 4:7] = p[0]  # TL
    expected[4:7, 7:8] = p[1]  # TR
    expected[7:8, 4:7] = p[2]  # BL
    expected[7:8, 7:8] = p[3]  # BR
    torch.testing.assert_close(out, expected)


def test_box_on_the_canvas_border_and_partly_outside_hand_computed():
    logits = [-1.5, -0.5, 0.5, 1.5]
    p = [1 / (1 + math.exp(-v)) for v in logits]
    basis, coeffs = _one_basis(6, 8, logits)
    # x in [-3, 5): cw = 4.05, split at x = 1.05 -> columns 0, 1 | 2, 3, 4 (columns -3..-1 are cut);
    # y in [4, 9): ch = 2.55, split at y = 6.55 -> rows 4, 5 | (6 would be 2nd half but is beyond H=6)
    out = crop_split(basis, coeffs.repeat(2, 1), torch.tensor([[-3.0, 4.0, 5.0, 9.0], [5.0, 0.0, 8.0, 6.0]]))
    expected = torch.zeros(2, 6, 8)
    expected[0, 4:6, 0:2] = p[0]
    expected[0, 4:6, 2:5] = p[1]
    # the whole height, touching the right border: x in [5, 8), cw = 1.55 -> 5, 6 | 7;
    # y in [0, 6), ch = 3.05 -> rows 0..3 | 4, 5
    expected[1, 0:4, 5:7] = p[0]
    expected[1, 0:4, 7] = p[1]
    expected[1, 4:6, 5:7] = p[2]
    expected[1, 4:6, 7] = p[3]
    torch.testing.assert_close(out, expected)


def test_tiny_box_inside_one_cell():
    basis, coeffs = _one_basis(8, 8, [0.0] * 4)
    out = crop_split(basis, coeffs.repeat(2, 1), torch.tensor([[5.2, 5.2, 5.7, 5.9], [5.0, 5.0, 5.5, 5.5]]))
    assert out[0].sum() == 0  # no integer pixel in [5.2, 5.7)
    assert out[1].sum() == 0.5 and out[1, 5, 5] == 0.5  # exactly pixel (5, 5), sigmoid(0)


def test_empty_inputs():
    basis = torch.rand(4, 6, 7)
    out = crop_split(basis, torch.zeros(0, 16), torch.zeros(0, 4))
    assert out.shape == (0, 6, 7)
    # an empty (inverted) box and a box entirely outside give all-zero masks
    out = crop_split(
        basis, torch.randn(2, 16), torch.tensor([[5.0, 1.0, 2.0, 4.0], [10.0, 10.0, 12.0, 12.0]])
    )
    assert out.shape == (2, 6, 7) and (out == 0).all()
    assert crop_split_gt(torch.zeros(0, 6, 7), torch.zeros(0, 4)).shape == (0, 6, 7)


def test_crop_split_gt_matches_reference():
    torch.manual_seed(2)
    masks = (torch.rand(len(BOXES), H, W) > 0.5).float()
    torch.testing.assert_close(crop_split_gt(masks, BOXES), reference_crop_gt(masks, BOXES))


def test_gradient_goes_only_to_the_chosen_quadrant_inside_the_box():
    logits = [0.1, 0.2, 0.3, 0.4]
    basis, coeffs = _one_basis(10, 10, logits, requires_grad=True)
    crop_split(basis, coeffs, torch.tensor([[4.0, 4.0, 8.0, 8.0]])).sum().backward()
    ds = [torch.sigmoid(torch.tensor(v)) * (1 - torch.sigmoid(torch.tensor(v))) for v in logits]
    # d/dc_q sum_pixels sigmoid(c_q * 1): one term per pixel of quadrant q (9, 3, 3, 1 pixels)
    torch.testing.assert_close(coeffs.grad[0], torch.stack([n * d for n, d in zip((9, 3, 3, 1), ds)]))
    # d/d basis(y, x) = sigmoid'(c_q) * c_q of the pixel's quadrant; nothing outside the box
    expected = torch.zeros(10, 10)
    expected[4:7, 4:7] = ds[0] * logits[0]
    expected[4:7, 7] = ds[1] * logits[1]
    expected[7, 4:7] = ds[2] * logits[2]
    expected[7, 7] = ds[3] * logits[3]
    torch.testing.assert_close(basis.grad[0], expected)


def test_mismatched_coefficients_raise():
    with pytest.raises(ValueError, match="4 x 3"):
        crop_split(torch.rand(3, 5, 5), torch.rand(2, 8), torch.rand(2, 4))
