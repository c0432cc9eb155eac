#!/usr/bin/env python
"""Check that a refactor changed no model's behaviour: fp32 losses, gradients and inference outputs of
every shipped config, bit for bit, between two trees.

    python tools/check_parity.py --out /tmp/old            # in the old tree: records weights + outputs
    python tools/check_parity.py --out /tmp/new --ref /tmp/old   # in the new tree: same weights, compare

Each config is built at its own settings (only the fixed SipMask real-time input size is shrunk, for speed; SipMask++ re-scoring needs a mask grid of >= 127 px), its
classifier biases are zeroed so that an untrained model still detects, and it runs one training
forward / backward and one inference on two fixed synthetic images. With ``--ref`` the weights are
loaded from the reference run (strict), so the comparison does not depend on initialisation order.
Exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _get_cfg():
    try:
        from onestage.config import get_cfg

        return get_cfg()
    except ImportError:  # trees from before the shared core
        from detectron2.config import get_cfg

        from centermask import add_centermask_config
        from sipmask import add_sipmask_config

        cfg = get_cfg()
        add_centermask_config(cfg)
        add_sipmask_config(cfg)
        return cfg


def config_files() -> list[Path]:
    return sorted(p for p in (REPO / "configs").glob("*/*.yaml") if not p.name.startswith("Base-"))


def make_inputs(training: bool):
    import numpy as np
    import torch
    from detectron2.structures import Boxes, Instances, PolygonMasks

    rng = np.random.default_rng(0)
    inputs = []
    for h, w in ((128, 160), (112, 144)):
        image = torch.as_tensor(rng.integers(0, 256, (3, h, w)), dtype=torch.uint8)
        d = {"image": image, "height": h, "width": w}
        if training:
            polys = [
                [[10.0, 12.0, 70.0, 12.0, 70.0, 60.0, 10.0, 60.0]],
                [[80.0, 20.0, 140.0, 20.0, 110.0, 100.0]],
                [[30.0, 70.0, 60.0, 70.0, 60.0, 105.0, 30.0, 105.0]],
            ]
            inst = Instances((h, w))
            boxes = [[min(p[0][0::2]), min(p[0][1::2]), max(p[0][0::2]), max(p[0][1::2])] for p in polys]
            inst.gt_boxes = Boxes(torch.tensor(boxes))
            inst.gt_classes = torch.tensor([0, 1, 2])
            inst.gt_masks = PolygonMasks(polys)
            d["instances"] = inst
        inputs.append(d)
    return inputs


def run_config(path: Path, ref: dict | None) -> dict | None:
    """Records of one config, or None for a video model (this check feeds images)."""
    import torch
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    cfg = _get_cfg()
    cfg.merge_from_file(str(path))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    if "SIPMASK" in cfg.MODEL and cfg.MODEL.SIPMASK.FIXED_INPUT_SIZE_TRAIN:
        cfg.MODEL.SIPMASK.FIXED_INPUT_SIZE_TRAIN = [320, 352]
        cfg.MODEL.SIPMASK.FIXED_INPUT_SIZE_TEST = [288, 320]
    torch.manual_seed(0)
    model = build_model(cfg)
    if hasattr(model, "reset_video"):  # the video-model contract: clips in training, not images
        return None
    if ref is not None:
        model.load_state_dict(ref["state_dict"], strict=True)
    else:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(("cls_logits.bias", "fcos_cls.bias")):
                    p.zero_()
                if name.endswith("bbox_pred.bias"):
                    p.fill_(1.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    model.train()
    with EventStorage():
        losses = model(make_inputs(training=True))
    total = sum(losses.values())
    model.zero_grad()
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.eval()
    with torch.no_grad():
        outputs = model(make_inputs(training=False))
    fields = []
    for out in outputs:
        inst = out["instances"]
        fields.append(
            {k: (v.tensor if hasattr(v, "tensor") else v).clone() for k, v in inst.get_fields().items()}
        )
    return {
        "state_dict": state,
        "losses": {k: v.detach() for k, v in losses.items()},
        "grads": grads,
        "outputs": fields,
    }


def compare(new: dict, ref: dict) -> list[str]:
    import torch

    problems = []

    def same(a, b, what):
        if isinstance(a, dict):
            if set(a) != set(b):
                problems.append(f"{what}: keys differ: {sorted(set(a) ^ set(b))}")
                return
            for k in a:
                same(a[k], b[k], f"{what}.{k}")
        elif isinstance(a, list):
            if len(a) != len(b):
                problems.append(f"{what}: lengths {len(a)} vs {len(b)}")
                return
            for i, (x, y) in enumerate(zip(a, b)):
                same(x, y, f"{what}[{i}]")
        elif a.shape != b.shape or a.dtype != b.dtype:
            problems.append(f"{what}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}")
        elif not torch.equal(a, b):
            diff = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
            problems.append(f"{what}: max abs diff {diff:.3g}")

    for key in ("losses", "grads", "outputs"):
        same(new[key], ref[key], key)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for this tree's records")
    parser.add_argument("--ref", help="folder of a reference run to load weights from and compare with")
    parser.add_argument("--only", default="", help="substring filter on config names")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in config_files():
        name = f"{path.parent.name}-{path.stem}"
        if args.only not in name:
            continue
        ref_file = Path(args.ref) / f"{name}.pt" if args.ref else None
        if ref_file is not None and not ref_file.is_file():
            print(f"{name}: not in the reference run, skipped")
            continue
        ref = torch.load(ref_file, weights_only=False) if ref_file is not None else None
        record = run_config(path, ref)
        if record is None:
            print(f"{name}: video model, skipped (this check feeds images)")
            continue
        torch.save(record, out / f"{name}.pt")
        if ref is None:
            print(f"{name}: recorded ({len(record['grads'])} grads, losses {sorted(record['losses'])})")
            continue
        problems = compare(record, ref)
        failed += bool(problems)
        print(f"{name}: {'IDENTICAL' if not problems else 'DIFFERENT'}", flush=True)
        for p in problems[:10]:
            print(f"    {p}")
    if args.ref:
        print(f"{failed} config(s) differ")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
