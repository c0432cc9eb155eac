"""demo/demo.py on image files (incl. grayscale and RGBA) and tools/benchmark.py."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog

from demo import demo
from tools import benchmark

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(REPO_ROOT / "configs/CenterMask/CenterMask-Lite-synthetic.yaml")
SMALL = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64"]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """A colour, a grayscale and an RGBA version of a synthetic image."""
    folder = tmp_path_factory.mktemp("images")
    bgr = cv2.imread(DatasetCatalog.get("synthetic_shapes_tiny")[0]["file_name"])
    cv2.imwrite(str(folder / "color.png"), bgr)
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    return folder


def test_demo_draws_every_image(image_dir, tmp_path):
    out = tmp_path / "vis"
    args = ["--config-file", CONFIG, "--input", str(image_dir), "--output", str(out)]
    demo.main([*args, "--confidence-threshold", "0.0", "--opts", *SMALL])
    for name in ("color.png", "gray.png", "rgba.png"):
        drawn = cv2.imread(str(out / name))
        assert drawn is not None and drawn.shape == (128, 128, 3)


def test_demo_bad_inputs_fail_clearly(tmp_path):
    with pytest.raises(SystemExit, match="no file matches"):
        demo.main(["--config-file", CONFIG, "--input", str(tmp_path / "*.jpg"), "--output", str(tmp_path)])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(SystemExit, match="cannot read image"):
        demo.main(
            ["--config-file", CONFIG, "--input", str(empty), "--output", str(tmp_path), "--opts", *SMALL]
        )
    with pytest.raises(SystemExit, match="config file not found"):
        demo.main(["--config-file", str(tmp_path / "no.yaml"), "--input", str(empty)])


def test_benchmark_reports_latency_and_stages(tmp_path):
    out = tmp_path / "bench.json"
    benchmark.main(["--config-file", CONFIG, "--device", "cpu", "--warmup", "1", "--iters", "1",
                    "--json", str(out), *SMALL[2:]])  # fmt: skip
    result = json.loads(out.read_text())
    assert result["input_size"] == [48, 64]  # a 3:4 random image resized to at most 64 px
    assert result["latency_ms"] > 0 and result["fps"] == pytest.approx(1000 / result["latency_ms"])
    assert set(result["stages_ms"]) == {"backbone", "head", "post-processing"}
    assert result["hooked_modules"]["backbone"] == ["backbone"]
    assert "proposal_generator.fcos_head" in result["hooked_modules"]["head"]
    # one timed iteration: the stages add up to the total
    assert sum(result["stages_ms"].values()) == pytest.approx(result["latency_ms"], rel=1e-6)
    assert result["stages_ms"]["backbone"] > 0 and result["peak_rss_mb"] > 0


def test_demo_video_writes_annotated_video(image_dir, tmp_path):
    frame = cv2.imread(str(image_dir / "color.png"))
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (128, 128))
    for shift in range(4):
        writer.write(np.roll(frame, 3 * shift, axis=1))
    writer.release()
    out = tmp_path / "clip_pred.mp4"
    demo.main(["--config-file", CONFIG, "--video-input", str(clip), "--output", str(out),
               "--confidence-threshold", "0.0", "--opts", *SMALL])  # fmt: skip
    capture = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, drawn = capture.read()
        if not ok:
            break
        frames.append(drawn)
    assert len(frames) == 4 and frames[0].shape == (128, 128, 3)
    with pytest.raises(SystemExit, match="video file not found"):
        demo.main(
            ["--config-file", CONFIG, "--video-input", str(tmp_path / "none.mp4"), "--output", str(out)]
        )
