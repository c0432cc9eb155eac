"""Deformable convolution v1 / v2 on ``torchvision.ops.deform_conv2d``.

This is the project's only deformable convolution; VoVNet-DCN, the deformable ResNet, the SipMask head
and STMask all use it. The modules mirror the constructor and ``forward`` signatures of Detectron2's
``DeformConv`` / ``ModulatedDeformConv`` (which need Detectron2's compiled extension), so code written
against those runs unchanged on top of torchvision.

Offsets predicted by a conv on the same input are wired in one place: :func:`offset_conv` builds that
conv (its geometry and channel count follow the deformable conv), :meth:`DeformConv.forward_offset_conv`
splits its output into offsets (and, v2, sigmoid modulation). The owner registers the offset conv under
whatever name its checkpoint layout uses (``conv2_offset``, ``OSA3_1_0/conv_offset``, ...).

Offset / mask layout (identical in Detectron2, mmcv and torchvision), for a kernel of size kh x kw and
``G = deformable_groups``:

* ``offset``: (N, 2 * G * kh * kw, Ho, Wo). For group ``g`` and kernel tap ``k = i * kw + j`` (row-major,
  ``i`` = kernel row) channel ``2 * (g * kh * kw + k)`` is the vertical displacement dy and channel
  ``2 * (g * kh * kw + k) + 1`` the horizontal displacement dx, in input pixels.
* ``mask`` (v2 only): (N, G * kh * kw, Ho, Wo), channel ``g * kh * kw + k``; multiplies the sampled value
  (already passed through a sigmoid by the caller).

Deformable group ``g`` covers input channels ``[g * C / G, (g + 1) * C / G)``. Samples falling outside the
input are bilinearly interpolated against zeros.

On CPU without autograd (inference) the convolution samples its input with ``grid_sample`` (vectorised,
multi-threaded) and multiplies by the weight (:func:`deform_conv2d_sampled`): the same values as
torchvision's single-threaded kernel up to float rounding, and faster (multi-threaded). With autograd on
CPU the forward stays torchvision's (the same values and losses as the authors' kernels) and the
backward is that of the sampled form (:class:`SampledGradDeformConv2d`): the same gradients up to
float rounding, and a training step several times faster than with torchvision's single-threaded CPU
backward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

__all__ = [
    "DeformConv",
    "SampledGradDeformConv2d",
    "ModulatedDeformConv",
    "deform_conv2d_sampled",
    "offset_conv",
]


def deform_conv2d_sampled(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``torchvision.ops.deform_conv2d`` (groups 1) as bilinear sampling then a matrix product.

    Kernel tap ``(i, j)`` of output ``(y, x)`` samples the input at ``(y * s - p + i * d + dy,
    x * s - p + j * d + dx)`` with zero padding, which is ``grid_sample(align_corners=False)`` at the
    normalised coordinate ``(2 * pos + 1) / size - 1`` (float rounding of that mapping aside). The
    samples of all taps form the (C * kh * kw, Ho * Wo) columns of a regular convolution.
    """
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = offset.shape[-2:]
    taps = kh * kw
    groups = offset.shape[1] // (2 * taps)
    dev, dt = x.device, x.dtype
    off = offset.reshape(n, groups, taps, 2, ho, wo)
    rows = torch.arange(ho, device=dev, dtype=dt)[:, None] * stride[0] - padding[0]
    cols = torch.arange(wo, device=dev, dtype=dt)[None, :] * stride[1] - padding[1]
    tap_y = (torch.arange(kh, device=dev, dtype=dt) * dilation[0]).repeat_interleave(kw)[:, None, None]
    tap_x = (torch.arange(kw, device=dev, dtype=dt) * dilation[1]).repeat(kh)[:, None, None]
    pos_y = rows + tap_y + off[:, :, :, 0]  # (N, G, taps, Ho, Wo)
    pos_x = cols + tap_x + off[:, :, :, 1]
    grid = torch.stack([(2 * pos_x + 1) / w - 1, (2 * pos_y + 1) / h - 1], dim=-1)
    samples = F.grid_sample(
        x.reshape(n * groups, c // groups, h, w),
        grid.reshape(n * groups, taps * ho, wo, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    ).reshape(n, groups, c // groups, taps, ho * wo)
    if mask is not None:
        samples = samples * mask.reshape(n, groups, 1, taps, ho * wo)
    out = weight.reshape(o, c * taps) @ samples.reshape(n, c * taps, ho * wo)
    if bias is not None:
        out = out + bias[:, None]
    return out.reshape(n, o, ho, wo)


class SampledGradDeformConv2d(torch.autograd.Function):
    """``torchvision.ops.deform_conv2d`` (groups 1) whose backward differentiates
    :func:`deform_conv2d_sampled` (recomputed from the saved inputs) instead of running torchvision's
    backward kernel, which is single-threaded on CPU. Call ``apply(x, offset, weight, bias, mask,
    stride, padding, dilation)``; ``bias`` and ``mask`` may be ``None``."""

    @staticmethod
    def forward(ctx, x, offset, weight, bias, mask, stride, padding, dilation):
        ctx.geometry = (stride, padding, dilation)
        ctx.save_for_backward(x, offset, weight, bias, mask)
        return deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)

    @staticmethod
    def backward(ctx, grad_out):
        saved = ctx.saved_tensors
        wanted = [need and t is not None for t, need in zip(saved, ctx.needs_input_grad)]
        if grad_out.numel() == 0:  # an empty batch: grid_sample refuses it
            grads = [torch.zeros_like(t) if need else None for t, need in zip(saved, wanted)]
            return (*grads, None, None, None)
        leaves = [None if t is None else t.detach().requires_grad_(need) for t, need in zip(saved, wanted)]
        x, offset, weight, bias, mask = leaves
        with torch.enable_grad(), torch.autocast(device_type=grad_out.device.type, enabled=False):
            out = deform_conv2d_sampled(x, offset, weight, bias, *ctx.geometry, mask=mask)
            found = iter(torch.autograd.grad(out, [t for t, need in zip(leaves, wanted) if need], grad_out))
        return (*[next(found) if need else None for need in wanted], None, None, None)


class DeformConv(nn.Module):
    """Deformable convolution v1: ``forward(x, offset)``.

    Args follow ``torch.nn.Conv2d`` / Detectron2 ``Conv2d``; ``deformable_groups`` splits the input
    channels into groups that share one offset field; ``norm`` and ``activation`` are applied after the
    convolution in that order.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = False,
        norm: nn.Module | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__()
        if in_channels % groups != 0 or out_channels % groups != 0:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible "
                f"by groups ({groups})"
            )
        if in_channels % deformable_groups != 0:
            raise ValueError(
                f"in_channels ({in_channels}) must be divisible by deformable_groups ({deformable_groups})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.norm = norm
        self.activation = activation

        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @property
    def num_offset_points(self) -> int:
        """Kernel taps times deformable groups: offsets have twice this many channels, masks this many."""
        return self.deformable_groups * self.kernel_size[0] * self.kernel_size[1]

    def _conv(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # torchvision has no bfloat16 / float16 CPU kernel: under autocast the op runs in the weight's
        # dtype. Non-finite offsets (a diverged step) can crash torchvision's kernel outright: NaN -> 0
        # and |offset| <= 1e4, which samples the same zero padding as any larger offset.
        dtype = self.weight.dtype
        offset = torch.nan_to_num(offset.to(dtype), nan=0.0).clamp(-1e4, 1e4)
        mask = None if mask is None else mask.to(dtype)
        with torch.autocast(device_type=x.device.type, enabled=False):
            geometry = (self.stride, self.padding, self.dilation)
            if x.device.type != "cpu" or self.groups != 1:
                x = deform_conv2d(x.to(dtype), offset, self.weight, self.bias, *geometry, mask)
            elif torch.is_grad_enabled():
                x = SampledGradDeformConv2d.apply(
                    x.to(dtype), offset, self.weight, self.bias, mask, *geometry
                )
            else:
                x = deform_conv2d_sampled(x.to(dtype), offset, self.weight, self.bias, *geometry, mask)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (N, C_in, H, W).
            offset: (N, 2 * G * kh * kw, Ho, Wo), layout in the module docstring.
        Returns:
            (N, C_out, Ho, Wo).
        """
        return self._conv(x, offset, None)

    @property
    def offset_channels(self) -> int:
        """Output channels of the conv that predicts this conv's offsets (and masks, v2)."""
        return 2 * self.num_offset_points

    def forward_offset_conv(self, x: torch.Tensor, offset_out: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` with offsets given as the raw output (N, offset_channels, Ho, Wo) of an
        offset conv (see :func:`offset_conv`)."""
        return self._conv(x, offset_out, None)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}, "
            f"deformable_groups={self.deformable_groups}, bias={self.bias is not None}"
        )


class ModulatedDeformConv(DeformConv):
    """Modulated deformable convolution (v2): ``forward(x, offset, mask)``.

    Same arguments as :class:`DeformConv`; like Detectron2's class it has a bias by default.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = True,
        norm: nn.Module | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        # Detectron2's signature (positional order included); only the bias default differs.
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            deformable_groups,
            bias,
            norm,
            activation,
        )

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """
        Args:
            x: (N, C_in, H, W).
            offset: (N, 2 * G * kh * kw, Ho, Wo).
            mask: (N, G * kh * kw, Ho, Wo), modulation scalars (sigmoid already applied).
        Returns:
            (N, C_out, Ho, Wo).
        """
        return self._conv(x, offset, mask)

    @property
    def offset_channels(self) -> int:
        """Offsets then mask logits: ``3 * G * kh * kw`` channels."""
        return 3 * self.num_offset_points

    def forward_offset_conv(self, x: torch.Tensor, offset_out: torch.Tensor) -> torch.Tensor:
        """``offset_out`` (N, 3 * G * kh * kw, Ho, Wo): channels ``[0, 2GK)`` are the offsets, the last
        ``GK`` the mask logits (passed through a sigmoid here)."""
        n = 2 * self.num_offset_points
        return self._conv(x, offset_out[:, :n], offset_out[:, n:].sigmoid())


def offset_conv(conv: DeformConv, in_channels: int | None = None) -> nn.Conv2d:
    """The conv predicting ``conv``'s offsets (and masks) from its input: same kernel, stride, padding
    and dilation (so the same output size), with bias, zero-initialised so that ``conv`` starts as a
    regular conv (v2: with every modulation scalar 0.5)."""
    layer = nn.Conv2d(
        conv.in_channels if in_channels is None else in_channels,
        conv.offset_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=True,
    )
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer
