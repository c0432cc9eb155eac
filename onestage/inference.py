"""Inference speed shared by the meta-architectures: a prepared copy of the convolutional network
and mixed precision.

**Prepared copy** (:class:`InferenceCopy`, :func:`runs_inference_copy`): at inference (eval mode,
autograd off) a module runs a private copy of itself in which every frozen batch norm
(``FrozenBatchNorm2d``, or ``BatchNorm2d`` in eval mode) is folded into the convolution before it, and
whose convolution weights are channels-last, so that the convolutions (and what follows the input's
memory format downstream: FPN, heads) run on NHWC tensors without converting a weight per call. The
copy is derived, never saved: the module's parameters, buffers and ``state_dict()`` keep their
unfolded values and keys, training never sees the copy, and the copy is rebuilt whenever a parameter
or buffer of the module changes (a checkpoint load, an optimizer step, ``.to()``, an in-place change,
``.data`` ones included: a checksum of the values is compared at each call). Folding and the
memory format change the floating-point rounding of the outputs, not their values. Forward hooks
registered on the module itself still run; hooks on its submodules do not run at inference.

**Mixed precision** (:func:`inference_autocast`): ``MODEL.INFERENCE.AMP`` ``"fp16"`` / ``"bf16"``
runs the network under ``torch.autocast``; the meta-architectures decode boxes, run NMS and assemble
masks in float32.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import types
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d as D2Conv2d
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

from onestage.layers import DeformConv

__all__ = [
    "AMP_DTYPES",
    "InferenceCopy",
    "check_amp",
    "fold_batchnorm_",
    "inference_autocast",
    "is_fpn_output_conv",
    "prepare_for_inference",
    "runs_inference_copy",
    "uses_inference_copy",
    "winograd_conv",
    "winograd_eligible",
    "winograd_ready",
]

# MODEL.INFERENCE.AMP -> autocast dtype
AMP_DTYPES: dict[str, torch.dtype | None] = {"": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def check_amp(amp: str, device: torch.device | str) -> str:
    """``amp`` if ``MODEL.INFERENCE.AMP`` can run on ``device``, else ``ValueError``: an unknown value,
    or fp16 on CPU (bf16 is the CPU's mixed precision)."""
    if amp not in AMP_DTYPES:
        raise ValueError(f"MODEL.INFERENCE.AMP must be one of {sorted(AMP_DTYPES)}, got {amp!r}")
    if amp == "fp16" and torch.device(device).type == "cpu":
        raise ValueError('MODEL.INFERENCE.AMP "fp16" needs a CUDA device; use "bf16" on CPU')
    return amp


def inference_autocast(amp: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` of ``MODEL.INFERENCE.AMP`` on ``device`` (``""``: a no-op context); see
    :func:`check_amp`."""
    if not check_amp(amp, device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=AMP_DTYPES[amp])


def uses_inference_copy(module: nn.Module) -> bool:
    """Whether ``module`` is running inference: eval mode and autograd off (``torch.no_grad()`` /
    ``torch.inference_mode()``, as Detectron2's predictor and evaluators run models)."""
    return not module.training and not torch.is_grad_enabled()


def _foldable_norm(norm: nn.Module | None) -> bool:
    if isinstance(norm, FrozenBatchNorm2d):
        return True
    # a BatchNorm2d normalises with its running statistics in eval mode (the copy is only used there)
    return (
        isinstance(norm, nn.modules.batchnorm._BatchNorm)
        and norm.track_running_stats
        and norm.running_mean is not None
        and norm.affine
    )


def _fold_into(conv: nn.Module, norm: nn.Module) -> None:
    """``norm(conv(x))`` -> ``conv'(x)``: scale the output channels of ``conv.weight`` and set its bias."""
    with torch.no_grad():
        w = conv.weight
        scale = norm.weight.double() * torch.rsqrt(norm.running_var.double() + norm.eps)
        bias = norm.bias.double() - norm.running_mean.double() * scale
        if conv.bias is not None:
            bias = bias + conv.bias.double() * scale
        shape = (-1,) + (1,) * (w.dim() - 1)
        conv.weight = nn.Parameter((w.double() * scale.reshape(shape)).to(w.dtype), requires_grad=False)
        conv.bias = nn.Parameter(bias.to(w.dtype), requires_grad=False)


def fold_batchnorm_(module: nn.Module) -> int:
    """Fold every frozen batch norm that directly follows a convolution into it, in place.

    Patterns: Detectron2's ``Conv2d`` and the project's deformable convs with a ``norm`` (and the
    activation after it), and an ``nn.Conv2d`` followed by the norm in an ``nn.Sequential``. Only for
    inference copies: the module's parameters are replaced. Returns the number of norms folded.
    """
    folded = 0
    for m in list(module.modules()):
        if isinstance(m, (D2Conv2d, DeformConv)) and _foldable_norm(getattr(m, "norm", None)):
            _fold_into(m, m.norm)
            m.norm = None
            folded += 1
        elif isinstance(m, nn.Sequential):
            names = list(m._modules)
            for prev, name in zip(names, names[1:]):
                conv, norm = m._modules[prev], m._modules[name]
                plain = not isinstance(conv, D2Conv2d) or (conv.norm is None and conv.activation is None)
                if isinstance(conv, nn.Conv2d) and plain and _foldable_norm(norm):
                    _fold_into(conv, norm)
                    m._modules[name] = nn.Identity()
                    folded += 1
    return folded


_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


# Where NNPACK's transforms beat oneDNN's NHWC direct 3x3 convolution on CPU (measured, 2 threads,
# AVX-512): at least 128 input channels and 240k input values per image (positions x channels),
# or 64 channels and 7000 positions; fewer channels or positions: the direct convolution
_WINOGRAD_MIN_VALUES = 240_000
_WINOGRAD_MIN_POSITIONS_64 = 7_000
_WINOGRAD_MIN_OUT_CHANNELS = 32


@functools.cache
def _nnpack_initialised() -> bool:
    # NNPACK is initialised by this query; its convolution fails until then
    available = getattr(torch, "_nnpack_available", None)
    return bool(available is not None and available() and hasattr(torch, "_nnpack_spatial_convolution"))


def winograd_ready() -> bool:
    """Whether :func:`winograd_conv` can use NNPACK here: available, and not turned off with
    ``torch.backends.nnpack.set_flags(False)`` / ``flags(enabled=False)``."""
    enabled = getattr(torch._C, "_get_nnpack_enabled", None)
    return _nnpack_initialised() and (enabled is None or bool(enabled()))


def winograd_eligible(conv: nn.Module) -> bool:
    """Whether ``conv`` is a 3x3, stride-1, "same"-padded dense convolution (:func:`winograd_conv`)."""
    return (
        type(conv) in (nn.Conv2d, D2Conv2d)
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.padding == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.in_channels >= 64
        and conv.out_channels >= _WINOGRAD_MIN_OUT_CHANNELS
    )


def _winograd_pays(shape: torch.Size) -> bool:
    n, c, h, w = shape
    positions = n * h * w
    if c >= 128:
        return positions * c >= _WINOGRAD_MIN_VALUES
    return c >= 64 and positions >= _WINOGRAD_MIN_POSITIONS_64


def winograd_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """3x3 "same" convolution of (N, C, H, W) ``x``: NNPACK's Winograd / FFT transforms on CPU in
    float32 where the output is large enough for them to pay (about 2x faster than the direct
    convolution; the result differs by float rounding, ~1e-5 of its magnitude), else ``F.conv2d``."""
    if (
        x.device.type == "cpu"
        and x.dtype == torch.float32 == weight.dtype
        and x.dim() == 4
        and _winograd_pays(x.shape)
        and not torch.is_autocast_enabled("cpu")
        and winograd_ready()
    ):
        try:
            y = torch._nnpack_spatial_convolution(x.contiguous(), weight.contiguous(), bias, [1, 1], [1, 1])
        except RuntimeError:  # a shape NNPACK refuses: the direct convolution below
            pass
        else:
            return y
    return F.conv2d(x, weight, bias, 1, 1)


def _winograd_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    x = winograd_conv(x, self.weight, self.bias)
    if getattr(self, "norm", None) is not None:
        x = self.norm(x)
    if getattr(self, "activation", None) is not None:
        x = self.activation(x)
    return x


def is_fpn_output_conv(name: str) -> bool:
    """``winograd`` predicate for FPNs (module names ``fpn_output*``): the bottom-up network stays
    NHWC, the 3x3 output convs (P3 at 256 channels: the largest) take Winograd and give NCHW maps."""
    return name.startswith("fpn_output")


def _nhwc_transposed_forward(self: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    # oneDNN's transposed convolution is ~1.7x faster on NHWC inputs (the mask heads' 2x up-sampling)
    if x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return nn.ConvTranspose2d.forward(self, x)


def prepare_for_inference(
    module: nn.Module, channels_last: bool = True, winograd: bool | Callable[[str], bool] = False
) -> nn.Module:
    """A copy of ``module`` for inference: frozen norms folded (:func:`fold_batchnorm_`), convolution
    weights channels-last (``nn.Conv2d``: the deformable convs' kernels take contiguous weights) or,
    with ``winograd`` (or for the submodule names it accepts), its 3x3 convolutions on
    :func:`winograd_conv` (NCHW weights and outputs), transposed convolutions on NHWC inputs, no
    autograd, no hooks
    (those of ``module`` run around the call that uses the copy), and no :class:`InferenceCopy` of its
    own. Submodules with a ``prepare_inference_()`` method (VoVNet's OSA blocks) then prepare an
    inference-only form of their own."""
    prepared = copy.deepcopy(module)
    for m in prepared.modules():
        for name in _HOOK_DICTS:
            if isinstance(getattr(m, name, None), dict):
                setattr(m, name, OrderedDict())
        if isinstance(m.__dict__.get("inference_copy"), InferenceCopy):
            m.inference_copy = None
    fold_batchnorm_(prepared)
    prepared.requires_grad_(False).eval()
    for name, m in prepared.named_modules():
        if winograd_eligible(m) and (winograd(name) if callable(winograd) else winograd):
            m.forward = types.MethodType(_winograd_forward, m)
        elif type(m) is nn.ConvTranspose2d:
            m.forward = types.MethodType(_nhwc_transposed_forward, m)
        elif channels_last and isinstance(m, nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
    for m in prepared.modules():  # modules with an inference-only form of their own
        if callable(getattr(m, "prepare_inference_", None)):
            m.prepare_inference_()
    return prepared


def _state_key(module: nn.Module) -> tuple[tuple, torch.Tensor | None]:
    """The parameters' and buffers' identities, versions and layouts, and a checksum of their values
    (in-place changes through ``.data`` leave the version counters as they are)."""
    tensors = [*module.parameters(), *module.buffers()]
    # inference tensors (made under torch.inference_mode) have no version counter
    key = tuple(
        (t.data_ptr(), 0 if t.is_inference() else t._version, t.dtype, t.device, t.shape) for t in tensors
    )
    # summed in their own dtype (a float64 sum converts every tensor first: ~6x slower on CPU)
    sums = [t.detach().sum().double() for t in tensors if t.device == tensors[0].device]
    return key, torch.stack(sums) if sums else None


def _same_state(a: tuple[tuple, torch.Tensor | None], b: tuple[tuple, torch.Tensor | None] | None) -> bool:
    if b is None or a[0] != b[0] or (a[1] is None) != (b[1] is None):
        return False
    return a[1] is None or bool(torch.equal(a[1].nan_to_num(), b[1].nan_to_num()))


class InferenceCopy:
    """The prepared copy (:func:`prepare_for_inference`) of one module, built on first use and rebuilt
    when the module's parameters or buffers change. The owner keeps it as a plain attribute named
    ``inference_copy`` (not a submodule: ``state_dict()`` never sees it) and calls :meth:`get` from its
    ``forward`` when :func:`uses_inference_copy`. Copying or pickling the owner drops the copy.
    ``channels_last`` / ``winograd``: as :func:`prepare_for_inference` (heads of GN towers take
    ``winograd``: on CPU its transforms beat the NHWC direct convolution there; in backbones the
    layout changes around single convs eat the gain, except in VoVNet's large OSA blocks, which
    run in NCHW as a whole: ``OSAModule.prepare_inference_``)."""

    def __init__(self, channels_last: bool = True, winograd: bool | Callable[[str], bool] = False):
        self.channels_last = channels_last
        self.winograd = winograd
        self._key: tuple | None = None
        self._copy: nn.Module | None = None

    def get(self, module: nn.Module) -> nn.Module:
        key = _state_key(module)
        if not _same_state(key, self._key):
            self._copy = None  # release the stale copy before building the new one
            self._copy = prepare_for_inference(module, self.channels_last, self.winograd)
            self._key = key
        return self._copy

    def __deepcopy__(self, memo) -> InferenceCopy:
        return InferenceCopy(self.channels_last, self.winograd)

    def __getstate__(self) -> dict:
        return {"channels_last": self.channels_last, "winograd": self.winograd, "_key": None, "_copy": None}


def runs_inference_copy(forward: Callable) -> Callable:
    """Decorates a module's ``forward``: at inference (:func:`uses_inference_copy`) the forward runs on
    the module's prepared copy, which the module keeps as ``self.inference_copy = InferenceCopy()``
    (``None`` turns the copy off); inputs of 4 dimensions are made channels-last first."""

    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        cache = self.__dict__.get("inference_copy")
        if cache is None or not uses_inference_copy(self):
            return forward(self, *args, **kwargs)
        prepared = cache.get(self)
        if cache.channels_last:
            args = tuple(_channels_last(a) for a in args)
        return forward(prepared, *args, **kwargs)

    return wrapper


def _channels_last(x):
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if isinstance(x, (list, tuple)):
        return type(x)(_channels_last(v) for v in x)
    return x
