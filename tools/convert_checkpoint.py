"""Convert the authors' released checkpoints into plain Detectron2 checkpoints.

Usage::

    python tools/convert_checkpoint.py LAYOUT IN.pth OUT.pth

``LAYOUT`` names the release the file comes from (see ``--help``). The output is
``{"model": state_dict}``, which ``DetectionCheckpointer`` loads into the matching config's model
with no missing and no unexpected keys.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from onestage.checkpoint import strip_prefix

# layout name -> "module:function"; each function maps an authors' state dict to ours.
LAYOUTS: dict[str, str] = {
    "centermask2": "centermask.convert:convert_centermask2",
    "centermask": "centermask.convert:convert_centermask_mb",
    "sipmask-mmdet": "sipmask.convert:convert_sipmask_mmdet",
    "sipmask-benchmark": "sipmask.convert:convert_sipmask_benchmark",
    "sipmask-vis": "sipmask.convert:convert_sipmask_vis",
    "sipmask-coco-to-vis": "sipmask.convert:convert_sipmask_coco_to_vis",
    "stmask": "stmask.convert:convert_stmask",
}
# layout name -> "module:function" returning a report printed after converting (e.g. the config that
# fits the file); it raises ValueError / KeyError to refuse a file that no config can use.
REPORTS: dict[str, str] = {
    "stmask": "stmask.convert:stmask_report",
}


def converter_for(layout: str) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    if layout not in LAYOUTS:
        raise SystemExit(f"unknown layout {layout!r}; choose one of: {', '.join(sorted(LAYOUTS))}")
    module_name, func_name = LAYOUTS[layout].split(":")
    return getattr(importlib.import_module(module_name), func_name)


def report_for(layout: str) -> Callable[[dict[str, torch.Tensor]], str] | None:
    if layout not in REPORTS:
        return None
    module_name, func_name = REPORTS[layout].split(":")
    return getattr(importlib.import_module(module_name), func_name)


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an authors' file: a raw state dict or one under "model" / "state_dict"."""
    if not path.is_file():
        raise SystemExit(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a pickle from another framework version, a truncated file, ...
        reason = (str(e).strip() or type(e).__name__).splitlines()[0]
        raise SystemExit(f"cannot read {path}: not a PyTorch checkpoint, or truncated ({reason})") from e
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SystemExit(f"{path} holds no state dict of tensors")
    return strip_prefix(obj)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert an authors' checkpoint to Detectron2.")
    parser.add_argument("layout", choices=sorted(LAYOUTS), help="which release the file comes from")
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    report = report_for(args.layout)
    try:
        state_dict = load_state_dict(args.input)
        converted = converter_for(args.layout)(state_dict)
        summary = report(state_dict) if report is not None else None
    except (KeyError, ValueError) as e:  # a state dict of another layout (LayoutError names it)
        raise SystemExit(f"{args.input}: {e.args[0] if isinstance(e, KeyError) and e.args else e}") from e
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": converted, "__author__": args.layout}, args.output)
    except OSError as e:  # a parent that is a file, no permission, disk full, ...
        raise SystemExit(f"cannot write {args.output}: {e.strerror or e}") from e
    print(f"wrote {len(converted)} tensors to {args.output}")
    if summary:
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
