"""demo/demo.py and tools/benchmark.py with SipMask configs (random weights, small inputs).

DefaultPredictor + Visualizer (what demo.py runs on images) are exercised for every config in
test_sipmask_model.py."""

import json

import cv2
import numpy as np
import pytest

from demo import demo
from tests.conftest import REPO_ROOT
from tools import benchmark

CONFIGS = REPO_ROOT / "configs" / "SipMask"
SYNTHETIC = str(CONFIGS / "SipMask-synthetic.yaml")
REAL_TIME = str(CONFIGS / "sipmask_r50_caffe_fpn_ssd_6x.yaml")
REAL_TIME_SMALL = [
    "MODEL.WEIGHTS",
    "",
    "MODEL.DEVICE",
    "cpu",
    "MODEL.SIPMASK.FIXED_INPUT_SIZE_TEST",
    "[64, 64]",
]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sipmask_images")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    cv2.circle(img, (60, 45), 25, (20, 200, 40), -1)
    cv2.imwrite(str(folder / "a.png"), img)
    return folder


@pytest.mark.parametrize(
    "config,opts",
    [
        (SYNTHETIC, ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96"]),
        (REAL_TIME, REAL_TIME_SMALL),
    ],
    ids=["synthetic", "real-time"],
)
def test_demo_draws_sipmask_predictions(image_dir, tmp_path, config, opts):
    out = tmp_path / "vis.png"
    demo.main(["--config-file", config, "--input", str(image_dir / "a.png"), "--output", str(out),
               "--confidence-threshold", "0.0", "--opts", *opts])  # fmt: skip
    drawn = cv2.imread(str(out))
    assert drawn is not None and drawn.shape == (90, 120, 3)


def test_benchmark_times_backbone_head_and_postprocessing(image_dir, tmp_path):
    out = tmp_path / "bench.json"
    benchmark.main(["--config-file", REAL_TIME, "--device", "cpu", "--warmup", "0", "--iters", "1",
                    "--input", str(image_dir / "a.png"), "--json", str(out), *REAL_TIME_SMALL])  # fmt: skip
    result = json.loads(out.read_text())
    assert set(result["stages_ms"]) == {"backbone", "head", "post-processing"}
    assert result["hooked_modules"] == {"backbone": ["backbone"], "head": ["head"]}
    assert result["latency_ms"] > 0
