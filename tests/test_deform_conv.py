"""DeformConv / ModulatedDeformConv (and ``offset_conv`` / ``forward_offset_conv``) against a plain-torch
bilinear-sampling reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from onestage.layers import DeformConv, ModulatedDeformConv, offset_conv


def _bilinear_zero(x: torch.Tensor, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """Sample x (N, C, H, W) at float positions py, px (N, Ho, Wo); pixels outside the image read 0."""
    n, c, h, w = x.shape
    y0, x0 = py.floor(), px.floor()
    out = x.new_zeros(n, c, *py.shape[1:])
    flat = x.reshape(n, c, h * w)
    for cy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for cx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            inside = (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
            idx = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).long().reshape(n, 1, -1).expand(n, c, -1)
            vals = flat.gather(2, idx).reshape(out.shape)
            out = out + vals * (wy * wx * inside).unsqueeze(1)
    return out


def reference_deform_conv(x, offset, weight, bias, stride, padding, dilation, groups, dgroups, mask=None):
    """Direct definition: out[o] = sum_{c,k} w[o,c,k] * m_k * bilinear(x_c, p0 + p_k + dp_k)."""
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = offset.shape[2:]
    k_taps = kh * kw
    cg = c // dgroups
    base_y = (torch.arange(ho, dtype=x.dtype) * stride[0] - padding[0]).view(1, ho, 1)
    base_x = (torch.arange(wo, dtype=x.dtype) * stride[1] - padding[1]).view(1, 1, wo)
    cols = []  # per tap: (N, C, Ho, Wo)
    for k in range(k_taps):
        i, j = divmod(k, kw)
        per_group = []
        for g in range(dgroups):
            ch = 2 * (g * k_taps + k)
            py = base_y + i * dilation[0] + offset[:, ch]
            px = base_x + j * dilation[1] + offset[:, ch + 1]
            s = _bilinear_zero(x[:, g * cg : (g + 1) * cg], py, px)
            if mask is not None:
                s = s * mask[:, g * k_taps + k].unsqueeze(1)
            per_group.append(s)
        cols.append(torch.cat(per_group, dim=1))
    cols = torch.stack(cols, dim=2).reshape(n, groups, c // groups, k_taps, ho, wo)
    wt = weight.reshape(groups, o // groups, c // groups, k_taps)
    out = torch.einsum("ngckhw,gock->ngohw", cols, wt).reshape(n, o, ho, wo)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


CASES = [
    # (in, out, kernel, stride, padding, dilation, groups, deformable_groups, bias)
    (4, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, False),
    (4, 6, (3, 3), (2, 2), (1, 1), (1, 1), 2, 2, True),
    (6, 4, (3, 2), (1, 2), (2, 0), (2, 1), 2, 3, True),
    (4, 4, (1, 1), (1, 1), (0, 0), (1, 1), 4, 4, False),
    (6, 4, (3, 2), (2, 1), (1, 0), (1, 2), 1, 3, True),  # groups 1 on CPU: the sampled backward
]


def _inputs(case, modulated, seed=0):
    cin, cout, k, s, p, d, groups, dg, bias = case
    gen = torch.Generator().manual_seed(seed)
    cls = ModulatedDeformConv if modulated else DeformConv
    m = cls(cin, cout, k, stride=s, padding=p, dilation=d, groups=groups, deformable_groups=dg, bias=bias)
    m = m.double()
    with torch.no_grad():
        m.weight.copy_(torch.randn(m.weight.shape, generator=gen, dtype=torch.float64))
        if m.bias is not None:
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen, dtype=torch.float64))
    h, w = 7, 6
    ho, wo = _out_size(h, k[0], s[0], p[0], d[0]), _out_size(w, k[1], s[1], p[1], d[1])
    x = torch.randn(2, cin, h, w, generator=gen, dtype=torch.float64)
    # offsets up to +-3 px: many samples land between pixels and some fall outside the image
    offset = 3 * (2 * torch.rand(2, 2 * dg * k[0] * k[1], ho, wo, generator=gen, dtype=torch.float64) - 1)
    mask = torch.rand(2, dg * k[0] * k[1], ho, wo, generator=gen, dtype=torch.float64) if modulated else None
    return m, x, offset, mask


def _run_both(m, x, offset, mask):
    tensors = [x, offset] + ([mask] if mask is not None else [])
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    args = leaves[:2] + ([leaves[2]] if mask is not None else [])
    ours = m(*args)
    ref_leaves = [t.clone().requires_grad_(True) for t in tensors]
    ref_w = m.weight.detach().clone().requires_grad_(True)
    ref_b = m.bias.detach().clone().requires_grad_(True) if m.bias is not None else None
    ref = reference_deform_conv(
        ref_leaves[0],
        ref_leaves[1],
        ref_w,
        ref_b,
        m.stride,
        m.padding,
        m.dilation,
        m.groups,
        m.deformable_groups,
        mask=ref_leaves[2] if mask is not None else None,
    )
    return ours, ref, leaves, ref_leaves, ref_w, ref_b


@pytest.mark.parametrize("modulated", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("case", CASES)
def test_forward_backward_match_reference(case, modulated):
    m, x, offset, mask = _inputs(case, modulated)
    ours, ref, leaves, ref_leaves, ref_w, ref_b = _run_both(m, x, offset, mask)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)

    grad_out = torch.randn(ours.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (ours * grad_out).sum().backward()
    (ref * grad_out).sum().backward()
    names = ["input", "offset", "mask"]
    for name, a, b in zip(names, leaves, ref_leaves):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-7, atol=1e-9, msg=f"grad wrt {name}")
        assert b.grad.abs().sum() > 0
    torch.testing.assert_close(m.weight.grad, ref_w.grad, rtol=1e-7, atol=1e-9)
    if ref_b is not None:
        torch.testing.assert_close(m.bias.grad, ref_b.grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("modulated", [False, True], ids=["v1", "v2"])
def test_cpu_training_keeps_torchvision_forward_and_its_gradients(modulated):
    # float32, 4 deformable groups (the SipMask head's feature alignment)
    gen = torch.Generator().manual_seed(0)
    cls = ModulatedDeformConv if modulated else DeformConv
    m = cls(16, 8, 3, padding=1, deformable_groups=4, bias=True)
    x = torch.randn(2, 16, 9, 11, generator=gen)
    # fractional parts in [0.1, 0.9]: no sample lies within float rounding of a pixel row or column,
    # where bilinear interpolation has a kink and the two implementations may take either side
    whole = torch.randint(-3, 4, (2, 72, 9, 11), generator=gen)
    offset = whole + 0.1 + 0.8 * torch.rand(2, 72, 9, 11, generator=gen)
    mask = torch.rand(2, 36, 9, 11, generator=gen) if modulated else None
    tensors = [x, offset] + ([mask] if modulated else [])
    ours_in = [t.clone().requires_grad_(True) for t in tensors]
    ref_in = [t.clone().requires_grad_(True) for t in tensors]
    weight = m.weight.detach().clone().requires_grad_(True)
    bias = m.bias.detach().clone().requires_grad_(True)

    out = m(*ours_in)
    assert type(out.grad_fn).__name__ == "SampledGradDeformConv2dBackward"
    ref = deform_conv2d(*ref_in[:2], weight, bias, (1, 1), (1, 1), (1, 1), ref_in[2] if modulated else None)
    assert torch.equal(out, ref)  # torchvision's forward, bit for bit

    grad_out = torch.randn(out.shape, generator=gen)
    ours = torch.autograd.grad(out, [*ours_in, m.weight, m.bias], grad_out)
    expected = torch.autograd.grad(ref, [*ref_in, weight, bias], grad_out)
    for name, a, b in zip(["input", "offset", "mask"][: len(tensors)] + ["weight", "bias"], ours, expected):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item(), msg=f"grad wrt {name}")


def test_hand_computed_bilinear_and_zero_padding():
    # 1x1 kernel, weight 1: the output is just the bilinear sample at (y + dy, x + dx).
    m = DeformConv(1, 1, 1).double()
    with torch.no_grad():
        m.weight.fill_(1.0)
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]], dtype=torch.float64)
    offset = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    offset[:, 0] = 0.5  # dy
    offset[:, 1] = 0.25  # dx
    out = m(x, offset)
    # (0,0) samples (0.5, 0.25): .5*.75*0 + .5*.25*1 + .5*.75*2 + .5*.25*3 = 1.25
    # (0,1) samples (0.5, 1.25): .5*.75*1 + .5*.75*3 (right corners are outside -> 0) = 1.5
    # (1,0) samples (1.5, 0.25): .5*.75*2 + .5*.25*3 = 1.125
    # (1,1) samples (1.5, 1.25): only (1,1) inside, weight .5*.75 -> 1.125
    expected = torch.tensor([[[[1.25, 1.5], [1.125, 1.125]]]], dtype=torch.float64)
    torch.testing.assert_close(out, expected)

    mm = ModulatedDeformConv(1, 1, 1, bias=True).double()
    with torch.no_grad():
        mm.weight.fill_(2.0)
        mm.bias.fill_(1.0)
    mask = torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64)
    torch.testing.assert_close(mm(x, offset, mask), expected + 1.0)


def test_offset_channel_layout_dy_dx_and_groups():
    # 1x1 kernel, 2 deformable groups, identity weight (groups=2 so each output channel sees one input).
    m = DeformConv(2, 2, 1, groups=2, deformable_groups=2).double()
    with torch.no_grad():
        m.weight.fill_(1.0)
    x = torch.arange(2 * 4 * 4, dtype=torch.float64).reshape(1, 2, 4, 4)
    offset = torch.zeros(1, 4, 4, 4, dtype=torch.float64)
    offset[:, 2] = 1.0  # group 1, tap 0, dy = +1: channel 1 reads the row below
    out = m(x, offset)
    torch.testing.assert_close(out[:, 0], x[:, 0])
    torch.testing.assert_close(out[:, 1, :3], x[:, 1, 1:])
    assert (out[:, 1, 3] == 0).all()
    offset.zero_()
    offset[:, 1] = -1.0  # group 0, tap 0, dx = -1: channel 0 reads the column to the left
    out = m(x, offset)
    torch.testing.assert_close(out[:, 0, :, 1:], x[:, 0, :, :3])
    assert (out[:, 0, :, 0] == 0).all()
    torch.testing.assert_close(out[:, 1], x[:, 1])


@pytest.mark.parametrize("case", CASES)
def test_zero_offset_equals_conv2d(case):
    cin, cout, k, s, p, d, groups, dg, bias = case
    m, x, offset, _ = _inputs(case, modulated=False)
    offset = torch.zeros_like(offset)
    expected = F.conv2d(x, m.weight, m.bias, s, p, d, groups)
    torch.testing.assert_close(m(x, offset), expected)

    mm, x, offset, mask = _inputs(case, modulated=True)
    expected = F.conv2d(x, mm.weight, mm.bias, s, p, d, groups)
    torch.testing.assert_close(mm(x, torch.zeros_like(offset), torch.ones_like(mask)), expected)


def test_empty_batch():
    for m, extra in ((DeformConv(4, 8, 3, padding=1), ()), (ModulatedDeformConv(4, 8, 3, padding=1), (9,))):
        x = torch.zeros(0, 4, 5, 6, requires_grad=True)
        offset = torch.zeros(0, 18, 5, 6, requires_grad=True)
        args = [x, offset] + [torch.zeros(0, c, 5, 6) for c in extra]
        y = m(*args)
        assert y.shape == (0, 8, 5, 6)
        y.sum().backward()
        assert x.grad.shape == x.shape
        assert m.weight.grad is not None and (m.weight.grad == 0).all()


def test_norm_activation_and_defaults():
    norm = torch.nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        norm.bias.fill_(-100.0)
    m = DeformConv(2, 3, 3, padding=1, norm=norm, activation=torch.relu)
    assert m.bias is None and ModulatedDeformConv(2, 3, 3).bias is not None
    assert ModulatedDeformConv(2, 3, 3, 1, 0, 1, 1, 1, False).bias is None  # Detectron2 positional order
    x = torch.randn(1, 2, 4, 4)
    assert (m(x, torch.zeros(1, 18, 4, 4)) == 0).all()  # bias -100 then relu
    with pytest.raises(ValueError, match="deformable_groups"):
        DeformConv(6, 4, 3, deformable_groups=4)
    with pytest.raises(ValueError, match="groups"):
        DeformConv(6, 4, 3, groups=4)


@pytest.mark.parametrize("modulated", [False, True], ids=["v1", "v2"])
def test_offset_conv_geometry_and_zero_init(modulated):
    cls = ModulatedDeformConv if modulated else DeformConv
    m = cls(4, 6, 3, stride=2, padding=2, dilation=2, deformable_groups=2, bias=True)
    oc = offset_conv(m)
    # 2 (dy, dx) [+ 1 mask logit] per tap and deformable group: (2 or 3) x 2 groups x 9 taps
    assert oc.in_channels == 4 and oc.out_channels == (3 if modulated else 2) * 2 * 9
    assert oc.out_channels == m.offset_channels
    assert (oc.kernel_size, oc.stride, oc.padding, oc.dilation) == ((3, 3), (2, 2), (2, 2), (2, 2))
    assert oc.bias is not None
    assert (oc.weight == 0).all() and (oc.bias == 0).all()
    assert offset_conv(m, in_channels=7).in_channels == 7  # offsets from another tensor than the input


@pytest.mark.parametrize("modulated", [False, True], ids=["v1", "v2"])
def test_zero_init_offset_conv_is_a_plain_conv(modulated):
    torch.manual_seed(0)
    cls = ModulatedDeformConv if modulated else DeformConv
    m = cls(4, 6, 3, stride=2, padding=1, deformable_groups=2, bias=True).double()
    with torch.no_grad():
        m.bias.uniform_(-1, 1)
    oc = offset_conv(m).double()
    x = torch.randn(1, 4, 7, 8, dtype=torch.float64)
    conv = F.conv2d(x, m.weight, None, 2, 1)
    # zero offsets: plain conv (v1); v2 also multiplies every sample by sigmoid(0) = 0.5, before the bias
    expected = conv * (0.5 if modulated else 1.0) + m.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(m.forward_offset_conv(x, oc(x)), expected)


@pytest.mark.parametrize("modulated", [False, True], ids=["v1", "v2"])
def test_forward_offset_conv_splits_offsets_and_sigmoid_mask(modulated):
    """Nonzero offset-conv output: the first 2GK channels are the offsets, (v2) the last GK channels
    the mask logits; checked against the bilinear reference with that split done by hand."""
    gen = torch.Generator().manual_seed(3)
    cls = ModulatedDeformConv if modulated else DeformConv
    m = cls(4, 6, 3, stride=2, padding=1, deformable_groups=2, bias=True).double()
    oc = offset_conv(m).double()
    with torch.no_grad():
        m.weight.copy_(torch.randn(m.weight.shape, generator=gen, dtype=torch.float64))
        m.bias.copy_(torch.randn(m.bias.shape, generator=gen, dtype=torch.float64))
        oc.weight.copy_(0.3 * torch.randn(oc.weight.shape, generator=gen, dtype=torch.float64))
        oc.bias.copy_(2 * torch.rand(oc.bias.shape, generator=gen, dtype=torch.float64) - 1)
    x = torch.randn(2, 4, 7, 6, generator=gen, dtype=torch.float64)
    out_raw = oc(x)
    assert out_raw.shape == (2, m.offset_channels, 4, 3)
    n = 2 * 2 * 9
    mask = torch.sigmoid(out_raw[:, n:]) if modulated else None
    assert (mask is None) == (out_raw.shape[1] == n)
    ref = reference_deform_conv(x, out_raw[:, :n], m.weight, m.bias, (2, 2), (1, 1), (1, 1), 1, 2, mask=mask)
    out = m.forward_offset_conv(x, out_raw)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    if modulated:  # a mask not passed through the sigmoid gives another result
        raw_mask = reference_deform_conv(
            x, out_raw[:, :n], m.weight, m.bias, (2, 2), (1, 1), (1, 1), 1, 2, mask=out_raw[:, n:]
        )
        assert not torch.allclose(out, raw_mask)
    # the offset conv is trained through the deformable sampling
    m.forward_offset_conv(x, oc(x)).square().sum().backward()
    assert oc.weight.grad.abs().sum() > 0 and oc.bias.grad.abs().sum() > 0


def test_runs_in_float32_under_cpu_autocast_and_survives_nan_offsets():
    torch.manual_seed(0)
    conv = ModulatedDeformConv(4, 6, 3, padding=1)
    x = torch.randn(1, 4, 5, 5)
    offset = torch.randn(1, 18, 5, 5)
    mask = torch.rand(1, 9, 5, 5)
    expected = conv(x, offset, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x.bfloat16(), offset.bfloat16(), mask.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=0.1, rtol=0.05)  # inputs were rounded to bfloat16
    bad = offset.clone()
    bad[0, :, 2, 2] = float("nan")
    bad[0, 0, 0, 0] = float("inf")
    out = conv(x, bad, mask)
    assert torch.isfinite(out).all()
    # a NaN offset samples like a zero offset
    zero = offset.clone()
    zero[0, :, 2, 2] = 0.0
    torch.testing.assert_close(out[0, :, 2, 2], conv(x, zero, mask)[0, :, 2, 2])
