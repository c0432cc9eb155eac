"""train_net.py: training, evaluation, AMP, multi-process on CPU, config errors."""

import json
import math
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch

import train_net

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(REPO_ROOT / "configs/CenterMask/CenterMask-Lite-synthetic.yaml")
TINY = [
    "DATASETS.TRAIN", "('synthetic_shapes_tiny',)", "DATASETS.TEST", "('synthetic_shapes_tiny',)",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "64", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2",
    "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()", "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu",
    "SEED", "0",
]  # fmt: skip
# SEED: the same initial weights and batches in every run (with a random seed, one CI run in many
# ended its two iterations with weights that detect nothing, and AP was NaN)


def make_args(output_dir, *opts, eval_only=False, config=CONFIG):
    return Namespace(
        config_file=config, eval_only=eval_only, resume=False, num_gpus=1, num_machines=1,
        machine_rank=0, dist_url="auto", opts=[*TINY, "OUTPUT_DIR", str(output_dir), *opts],
    )  # fmt: skip


# score threshold 0: even after two iterations every image has (10) detections, so AP is a number
# (with none at all Detectron2 reports NaN)
SCORED = ["MODEL.FCOS.INFERENCE_TH_TEST", "0.0", "MODEL.FCOS.POST_NMS_TOPK_TEST", "10"]


def final_metrics(output_dir: Path) -> dict:
    """The metrics.json entries of the last iteration merged (the final evaluation included)."""
    entries = [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]
    last = max(m["iteration"] for m in entries)
    return {k: v for m in entries if m["iteration"] == last for k, v in m.items()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    train_net.main(make_args(out, *SCORED))
    return out


def test_train_writes_checkpoint_and_evaluates(trained):
    assert (trained / "model_final.pth").is_file()
    metrics = [json.loads(line) for line in (trained / "metrics.json").read_text().splitlines()]
    assert any("loss_fcos_cls" in m for m in metrics)
    final = final_metrics(trained)
    for key in ("segm/AP", "bbox/AP"):
        assert math.isfinite(final[key]) and 0.0 <= final[key] <= 100.0, (key, final[key])


def test_eval_only_loads_weights(trained, tmp_path, monkeypatch):
    evaluated = []
    test = train_net.Trainer.test  # bound to Trainer

    def recording_test(cls, cfg, model, evaluators=None):
        evaluated.append(model)
        return test(cfg, model, evaluators)

    monkeypatch.setattr(train_net.Trainer, "test", classmethod(recording_test))
    checkpoint = trained / "model_final.pth"
    args = make_args(tmp_path, *SCORED, "MODEL.WEIGHTS", str(checkpoint), eval_only=True)
    results = train_net.main(args)

    # the model that was evaluated carries exactly the checkpoint's weights
    (model,) = evaluated
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    state = model.state_dict()
    assert set(state) == set(saved)
    assert [k for k in saved if not torch.equal(state[k], saved[k])] == []
    # ... and predicts and scores what the trained model did in its final evaluation (after two
    # iterations AP may well be 0, but the detection scores tell other weights apart)
    detections = [
        json.loads((out / "inference/synthetic_shapes_tiny/coco_instances_results.json").read_text())
        for out in (trained, tmp_path)
    ]
    assert len(detections[0]) == len(detections[1]) > 0
    for before, after in zip(*detections, strict=True):
        assert (before["image_id"], before["category_id"]) == (after["image_id"], after["category_id"])
        assert after["score"] == pytest.approx(before["score"], abs=1e-6)
        assert after["bbox"] == pytest.approx(before["bbox"], abs=1e-3)
    assert set(results) == {"bbox", "segm"}
    final = final_metrics(trained)
    for task in ("bbox", "segm"):
        ap = results[task]["AP"]
        assert math.isfinite(ap) and 0.0 <= ap <= 100.0, (task, ap)
        assert ap == pytest.approx(final[f"{task}/AP"], abs=1e-9)


def test_amp_on_cpu_trains(tmp_path):
    cfg = train_net.setup(make_args(tmp_path, "SOLVER.AMP.ENABLED", "True", "SOLVER.MAX_ITER", "1"))
    trainer = train_net.Trainer(cfg)
    assert isinstance(trainer._trainer, train_net.CPUAutocastTrainer)
    trainer.train()
    metrics = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(m["total_loss"])) for m in metrics if "total_loss" in m)


def test_unknown_key_and_missing_config_fail_clearly(tmp_path):
    # one line naming the key, not a yacs traceback
    with pytest.raises(
        SystemExit, match="train_net.py: unknown config key MODEL.NOT_A_KEY on the command line"
    ):
        train_net.setup(make_args(tmp_path, "MODEL.NOT_A_KEY", "1"))
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text(f"_BASE_: {CONFIG}\nMODEL:\n  FCOS:\n    NOT_A_KEY: 1\n")
    with pytest.raises(SystemExit, match="unknown config key MODEL.FCOS.NOT_A_KEY in .*bad.yaml"):
        train_net.setup(make_args(tmp_path, config=str(bad_yaml)))
    with pytest.raises(SystemExit, match="config file not found"):
        train_net.setup(make_args(tmp_path, config=str(tmp_path / "missing.yaml")))


def test_unknown_backbone_is_a_clear_error(tmp_path):
    cfg = train_net.setup(make_args(tmp_path, "MODEL.VOVNET.CONV_BODY", "V-7-imaginary"))
    with pytest.raises(ValueError, match="V-7-imaginary"):
        train_net.Trainer.build_model(cfg)


def test_two_processes_on_cpu(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO_ROOT / "train_net.py"), "--config-file", CONFIG, "--num-gpus", "2",
           *TINY, "SOLVER.MAX_ITER", "1", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()",
           "OUTPUT_DIR", str(tmp_path)]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "model_final.pth").is_file()
    assert "world size: 2" in (result.stdout + result.stderr).lower() or "rank 1" in result.stderr.lower()
