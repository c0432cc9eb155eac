"""Checkpoints: the strict loader every inference entry point uses (:class:`StrictCheckpointer`), and
the helpers every converter uses: DDP prefixes, a layout check, maskrcnn-benchmark FPN names, and the
FrozenBatchNorm epsilon of maskrcnn-benchmark (none) versus Detectron2 (1e-5)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import Tensor

__all__ = [
    "CheckpointError",
    "LayoutError",
    "StrictCheckpointer",
    "check_layout",
    "check_weights_file",
    "fold_frozen_bn_eps",
    "rename_mb_fpn_key",
    "strip_prefix",
]

_MB_FPN = re.compile(r"^backbone\.fpn\.fpn_(inner|layer)(\d+)\.(weight|bias)$")
_MB_TOP = re.compile(r"^backbone\.fpn\.top_blocks\.(p6|p7)\.(weight|bias)$")


def strip_prefix(state_dict: dict[str, Tensor], prefix: str = "module.") -> dict[str, Tensor]:
    """``state_dict`` with ``prefix`` (a DistributedDataParallel wrapper's, by default) removed from
    the keys that have it."""
    return {k.removeprefix(prefix): v for k, v in state_dict.items()}


def rename_mb_fpn_key(key: str) -> str | None:
    """maskrcnn-benchmark FPN key -> Detectron2 ``FPN`` key, or None if ``key`` is not one.

    maskrcnn-benchmark numbers its FPN blocks by bottom-up stage index (``fpn_inner2`` acts on
    stage 3), Detectron2 by log2 of the stride (``fpn_lateral3``); ``top_blocks`` is ``top_block``.
    """
    m = _MB_FPN.match(key)
    if m:
        kind = "lateral" if m.group(1) == "inner" else "output"
        return f"backbone.fpn_{kind}{int(m.group(2)) + 1}.{m.group(3)}"
    m = _MB_TOP.match(key)
    if m:
        return f"backbone.top_block.{m.group(1)}.{m.group(2)}"
    return None


def fold_frozen_bn_eps(state_dict: dict[str, Tensor], prefix: str, eps: float = 1e-5) -> dict[str, Tensor]:
    """Make maskrcnn-benchmark FrozenBatchNorm parameters (``weight / sqrt(var)``, no epsilon) compute
    the same in Detectron2's ``FrozenBatchNorm2d`` (``weight / sqrt(var + eps)``).

    Every ``{prefix}...norm.weight`` / ``bn.weight`` with a ``running_var`` beside it is multiplied by
    ``sqrt(var + eps) / sqrt(var)``; the bias term ``bias - mean * scale`` then follows. Returns a new
    dict; ``state_dict`` is not modified.
    """
    out = dict(state_dict)
    for key, var in state_dict.items():
        if not (key.startswith(prefix) and key.endswith(".running_var")):
            continue
        wkey = key[: -len("running_var")] + "weight"
        if wkey in out:
            var = var.float()
            factor = torch.sqrt(var + eps) / torch.sqrt(var.clamp(min=1e-12))
            out[wkey] = (out[wkey].float() * factor).to(out[wkey].dtype)
    return out


class CheckpointError(ValueError):
    """A weights file that cannot be used: missing, not a checkpoint, truncated, or not of the model."""


class LayoutError(CheckpointError, KeyError):
    """A state dict given to a converter that is not of the converter's layout (also a ``KeyError``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def check_layout(
    state_dict: dict[str, Tensor], layout: str, expected: str, fits: Callable[[str], bool]
) -> None:
    """Raise :class:`LayoutError` unless ``state_dict`` is non-empty and ``fits(key)`` for every key;
    the message names ``layout``, what it ``expected`` and the keys that do not fit."""
    if not state_dict:
        raise LayoutError(f"not a {layout} checkpoint: the state dict is empty (expected {expected})")
    foreign = sorted(k for k in state_dict if not fits(k))
    if foreign:
        raise LayoutError(
            f"not a {layout} checkpoint: {len(foreign)} keys (of {len(state_dict)}) outside its layout "
            f"({_summarise(foreign, 5)}); expected {expected}"
        )


def _summarise(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_weights_file(path: str) -> None:
    """Raise :class:`CheckpointError` if ``path`` (``MODEL.WEIGHTS``) names a local file that does not
    exist; "" (no weights) and URLs pass."""
    if path and "://" not in path and not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path} (MODEL.WEIGHTS)")


class StrictCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` for inference: a checkpoint must fit the model exactly.

    * a missing file, a file that is not a PyTorch / Detectron2 checkpoint, or a truncated one raises
      :class:`CheckpointError` with one line naming the file;
    * missing, unexpected or shape-mismatched keys raise :class:`CheckpointError` naming them, unless
      ``partial=True`` (config key ``MODEL.WEIGHTS_PARTIAL``), which keeps Detectron2's behaviour:
      the mismatches are logged and the rest is loaded (e.g. fine-tuning from another dataset).

    Used by ``demo/demo.py``, ``train_net.py --eval-only``, ``tools/benchmark.py`` and
    :class:`onestage.predictor.Predictor`; training loads with ``partial=True`` (ImageNet backbones).
    """

    def __init__(
        self, model: torch.nn.Module, save_dir: str = "", *, partial: bool = False, **checkpointables
    ):
        super().__init__(model, save_dir, **checkpointables)
        self.partial = partial

    def load(self, path: str, *args, **kwargs) -> dict[str, Any]:
        check_weights_file(path)
        try:
            return super().load(path, *args, **kwargs)
        except CheckpointError:
            raise
        except (OSError, RuntimeError, AssertionError) as e:
            if "://" in path:  # a download that failed (offline, 404, ...)
                raise CheckpointError(f"cannot fetch checkpoint {path}: {_first_line(e)}") from e
            raise

    def _load_file(self, filename: str) -> dict[str, Any]:
        try:
            loaded = super()._load_file(filename)
        except Exception as e:  # unpickling errors, zip reader errors, EOF, ...
            raise CheckpointError(
                f"{filename} is not a readable checkpoint (corrupt, truncated or not a PyTorch / "
                f"Detectron2 file): {type(e).__name__}: {_first_line(e)}"
            ) from e
        model = loaded.get("model") if isinstance(loaded, dict) else None
        if not isinstance(model, dict) or not model:
            raise CheckpointError(f"{filename} holds no model state dict")
        return loaded

    def _log_incompatible_keys(self, incompatible) -> None:
        problems = []
        if incompatible.missing_keys:
            problems.append(
                f"{len(incompatible.missing_keys)} missing: {_summarise(incompatible.missing_keys)}"
            )
        if incompatible.unexpected_keys:
            problems.append(
                f"{len(incompatible.unexpected_keys)} unexpected: {_summarise(incompatible.unexpected_keys)}"
            )
        if incompatible.incorrect_shapes:
            shapes = [
                f"{k} {tuple(a)} in file vs {tuple(b)} in model" for k, a, b in incompatible.incorrect_shapes
            ]
            problems.append(f"{len(shapes)} of another shape: {_summarise(shapes, 4)}")
        if problems and not self.partial:
            raise CheckpointError(
                "checkpoint does not fit the model (another model, or other NUM_CLASSES?): "
                + "; ".join(problems)
                + ". Set MODEL.WEIGHTS_PARTIAL True to load what fits and keep the rest random."
            )
        super()._log_incompatible_keys(incompatible)


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
