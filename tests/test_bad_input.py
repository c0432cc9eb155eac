"""First contact and bad input (issue 12): every entry point answers a missing, corrupt, wrong-model
or wrong-shape input with one clear line, or handles it as documented."""

import json
import logging
import re
from argparse import Namespace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng

import train_net
from demo import demo
from onestage.checkpoint import CheckpointError, StrictCheckpointer
from onestage.config import ConfigError, load_config
from onestage.data import EmptyTrainingSetError, image_training_dicts
from onestage.inputs import read_image_bgr
from onestage.predictor import Predictor
from tools import benchmark, convert_checkpoint
from vis_eval.data.synthetic import DatasetRootError, ensure_generated
from vis_eval.file_io import read_json
from vis_eval.progress import ProgressLogger

REPO_ROOT = Path(__file__).resolve().parents[1]
CENTERMASK = str(REPO_ROOT / "configs/CenterMask/CenterMask-Lite-synthetic.yaml")
SIPMASK = str(REPO_ROOT / "configs/SipMask/SipMask-synthetic.yaml")
SMALL = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64"]


class Records(logging.Handler):
    """Collects the messages of one logger (Detectron2's setup_logger stops propagation to root)."""

    def __init__(self, name: str):
        super().__init__(logging.INFO)
        self.messages: list[str] = []
        self.logger = logging.getLogger(name)

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self):
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level)


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "Traceback" not in message, message
    return message


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Random-weight checkpoints of CenterMask-Lite (3 classes, 5 classes) and SipMask."""
    folder = tmp_path_factory.mktemp("ckpt")
    files = {}
    for name, config, opts in [
        ("centermask", CENTERMASK, []),
        ("centermask_5", CENTERMASK, ["MODEL.FCOS.NUM_CLASSES", "5", "MODEL.ROI_HEADS.NUM_CLASSES", "5"]),
        ("sipmask", SIPMASK, []),
    ]:
        model = build_model(load_config(config, [*SMALL, *opts]))
        files[name] = folder / f"{name}.pth"
        torch.save({"model": model.state_dict()}, files[name])
    data = files["centermask"].read_bytes()
    (folder / "truncated.pth").write_bytes(data[: len(data) // 2])
    (folder / "text.pth").write_text("not a checkpoint\n")
    files["truncated"], files["text"] = folder / "truncated.pth", folder / "text.pth"
    return files


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "color.png"
    cv2.imwrite(str(path), cv2.imread(DatasetCatalog.get("synthetic_shapes_tiny")[0]["file_name"]))
    return path


# ---------------------------------------------------------------- 1. wrong weights


def test_strict_loading_names_missing_unexpected_and_mis_shaped_keys(checkpoints):
    model = build_model(load_config(CENTERMASK, SMALL))
    with pytest.raises(CheckpointError) as e:
        StrictCheckpointer(model).load(str(checkpoints["sipmask"]))
    message = one_line(e)
    assert "missing" in message and "unexpected" in message and "head.cls_convs" in message
    with pytest.raises(CheckpointError, match=r"of another shape: proposal_generator\.fcos_head\.cls_logits"):
        StrictCheckpointer(model).load(str(checkpoints["centermask_5"]))
    # partial loading is asked for: what fits is loaded
    StrictCheckpointer(model, partial=True).load(str(checkpoints["centermask_5"]))
    saved = torch.load(checkpoints["centermask_5"], weights_only=True)["model"]
    key = "backbone.bottom_up.stem.stem_1/conv.weight"
    assert torch.equal(model.state_dict()[key], saved[key])


@pytest.mark.parametrize("kind", ["missing", "truncated", "text"])
def test_unusable_weight_files_are_one_line(checkpoints, tmp_path, kind):
    path = str(checkpoints.get(kind, tmp_path / "missing.pth"))
    model = build_model(load_config(CENTERMASK, SMALL))
    with pytest.raises(CheckpointError) as e:
        StrictCheckpointer(model).load(path)
    assert path in one_line(e)
    assert ("not found" if kind == "missing" else "not a readable checkpoint") in str(e.value)


def test_every_inference_entry_point_refuses_weights_of_another_model(checkpoints, image, tmp_path):
    weights = ["MODEL.WEIGHTS", str(checkpoints["sipmask"])]
    with pytest.raises(SystemExit, match="demo.py: checkpoint does not fit the model"):
        demo.main(
            ["--config-file", CENTERMASK, "--input", str(image), "--output", str(tmp_path), *SMALL, *weights]
        )
    with pytest.raises(SystemExit, match="benchmark.py: checkpoint does not fit the model"):
        benchmark.main(["--config-file", CENTERMASK, "--device", "cpu", "--iters", "1", *SMALL[2:], *weights])
    opts = [*SMALL, *weights, "OUTPUT_DIR", str(tmp_path)]
    args = Namespace(config_file=CENTERMASK, eval_only=True, resume=False, num_gpus=1, num_machines=1,
                     machine_rank=0, dist_url="auto", opts=opts)  # fmt: skip
    with pytest.raises(SystemExit, match="train_net.py: checkpoint does not fit the model"):
        train_net.main(args)
    cfg = load_config(CENTERMASK, [*SMALL, *weights])
    with pytest.raises(CheckpointError, match="does not fit"):
        Predictor(cfg)
    with pytest.raises(SystemExit, match=r"demo.py: .*truncated\.pth is not a readable checkpoint"):
        demo.main(["--config-file", CENTERMASK, "--input", str(image), "--output", str(tmp_path), *SMALL,
                   "MODEL.WEIGHTS", str(checkpoints["truncated"])])  # fmt: skip
    other_classes = ["MODEL.WEIGHTS", str(checkpoints["centermask_5"])]
    predictor = Predictor(load_config(CENTERMASK, [*SMALL, "MODEL.WEIGHTS_PARTIAL", "True", *other_classes]))
    saved = torch.load(checkpoints["centermask_5"], weights_only=True)["model"]
    key = "backbone.bottom_up.stem.stem_1/conv.weight"  # fits: loaded; the 5-class layers do not
    assert torch.equal(predictor.model.state_dict()[key], saved[key])
    bgr = cv2.imread(str(image))
    assert predictor(bgr)["instances"].image_size == bgr.shape[:2]


def test_converters_refuse_another_layout(checkpoints, tmp_path):
    out = tmp_path / "out.pth"
    with pytest.raises(SystemExit) as e:
        convert_checkpoint.main(["centermask2", str(checkpoints["sipmask"]), str(out)])
    assert "not a centermask2 checkpoint" in one_line(e) and "proposal_generator.fcos_head" in str(e.value)
    assert not out.exists()
    with pytest.raises(SystemExit, match="not a SipMask-mmdetection checkpoint.*expected backbone"):
        convert_checkpoint.main(["sipmask-mmdet", str(checkpoints["centermask"]), str(out)])
    with pytest.raises(SystemExit, match="cannot read .*not a PyTorch checkpoint, or truncated"):
        convert_checkpoint.main(["centermask2", str(checkpoints["truncated"]), str(out)])
    # 4. an output folder that cannot be made
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit, match="cannot write"):
        convert_checkpoint.main(["centermask2", str(checkpoints["centermask"]), str(blocker / "out.pth")])


# ---------------------------------------------------------------- 2. demo output and images


def test_demo_creates_output_folders_and_refuses_nothing_to_do(image, tmp_path):
    base = ["--config-file", CENTERMASK, "--input", str(image), "--confidence-threshold", "0.0", *SMALL]
    demo.main([*base, "--output", str(tmp_path / "out") + "/"])  # README: --output out/ with one image
    assert cv2.imread(str(tmp_path / "out" / "color.png")).shape == (128, 128, 3)
    demo.main([*base, "--output", str(tmp_path / "missing_dir" / "x.jpg")])
    assert cv2.imread(str(tmp_path / "missing_dir" / "x.jpg")) is not None
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no images .* in folder .*nothing to do"):
        demo.main(
            ["--config-file", CENTERMASK, "--input", str(empty), "--output", str(tmp_path / "o"), *SMALL]
        )


def test_16_bit_images_are_scaled_not_white(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0..65520
    cv2.imwrite(str(tmp_path / "deep.png"), ramp)
    bgr = read_image_bgr(str(tmp_path / "deep.png"))
    assert bgr.shape == (64, 64, 3) and bgr.dtype == np.uint8
    expected = np.rint(ramp / 257.0)
    assert np.abs(bgr[..., 0].astype(int) - expected).max() <= 1 and (bgr[..., 0] == bgr[..., 2]).all()
    with pytest.raises(ValueError, match="cannot read image"):
        read_image_bgr(str(tmp_path / "none.png"))


def test_video_codec_follows_extension(tmp_path):
    frame = np.zeros((32, 32, 3), np.uint8)
    for ext, codecs in [(".avi", {"mjpg"}), (".mp4", {"mp4v", "fmp4"})]:
        path = str(tmp_path / f"v{ext}")
        writer = demo.video_writer(path, 5.0, 32, 32)
        writer.write(frame)
        writer.release()
        fourcc = int(cv2.VideoCapture(path).get(cv2.CAP_PROP_FOURCC))
        assert fourcc.to_bytes(4, "little").decode().lower() in codecs
    with pytest.raises(SystemExit, match="unknown video extension"):
        demo.video_writer(str(tmp_path / "v.gif"), 5.0, 32, 32)


def test_long_work_shows_progress(tmp_path):
    with Records("vis_eval") as records:
        ensure_generated("tiny", tmp_path / "shapes")
        progress = ProgressLogger(logging.getLogger("vis_eval.test"), "video", 3, "frames", every_s=1e9)
        for _ in range(3):
            progress.step()
    assert any("generating" in m and "first use" in m for m in records.messages)
    assert any(re.search(r"synthetic_shapes_tiny: 8/8 images", m) for m in records.messages)
    assert [m.split(" (")[0] for m in records.messages if m.startswith("video")] == [
        "video: 1/3 frames",
        "video: 3/3 frames",
    ]


# ---------------------------------------------------------------- 3. arguments


def test_overrides_both_conventions_and_clear_config_errors(tmp_path):
    args = demo.parse_args(["--config-file", CENTERMASK, "--input", "a.png", "b.png", "MODEL.DEVICE", "cpu"])
    assert args.input == ["a.png", "b.png"] and args.opts == ["MODEL.DEVICE", "cpu"]
    args = demo.parse_args(
        ["--config-file", CENTERMASK, "--input", "a.png", "TEST.X", "1", "--opts", "SEED", "2"]
    )
    assert args.opts == ["TEST.X", "1", "SEED", "2"]
    args = train_net.parse_args(["--config-file", CENTERMASK, "--eval-only", "--opts", "SEED", "3"])
    assert args.eval_only and args.opts == ["SEED", "3"]
    with pytest.raises(SystemExit, match=r"unknown config key MODEL\.FCOS\.NUM_CLASES .*NUM_CLASSES"):
        demo.main(["--config-file", CENTERMASK, "--input", "a.png", "MODEL.FCOS.NUM_CLASES", "3"])
    with pytest.raises(SystemExit, match="KEY VALUE pairs; got 3 tokens"):
        benchmark.main(["--config-file", CENTERMASK, "MODEL.DEVICE", "cpu", "SOLVER.BASE_LR"])
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text(f"_BASE_: {CENTERMASK}\nMODEL:\n  FCOS:\n    NOT_A_KEY: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(bad_yaml))
    assert one_line(e) == f"unknown config key MODEL.FCOS.NOT_A_KEY in {bad_yaml}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback without a GPU")
def test_cuda_without_gpu_falls_back_to_cpu_with_a_warning(tmp_path):
    with Records("onestage") as records:
        benchmark.main(["--config-file", CENTERMASK, "--device", "cuda", "--warmup", "0", "--iters", "1",
                        "--json", str(tmp_path / "b.json"), *SMALL[2:]])  # fmt: skip
        cfg = load_config(CENTERMASK, SMALL)
        cfg.defrost()
        cfg.MODEL.DEVICE = "cuda"
        assert Predictor(cfg).model.device.type == "cpu"
    assert json.loads((tmp_path / "b.json").read_text())["device"] == "cpu"
    assert sum("CUDA is not available" in m for m in records.messages) == 2


# ---------------------------------------------------------------- 4. data and folders


def test_unusable_dataset_folder_and_empty_training_set(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(
        DatasetRootError, match="cannot generate the synthetic dataset in .*DETECTRON2_DATASETS"
    ):
        ensure_generated("tiny", not_a_dir / "synthetic_shapes")
    name = "issue12_no_annotations"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(
            name,
            lambda: [
                {"file_name": f"{i}.png", "image_id": i, "height": 8, "width": 8, "annotations": []}
                for i in range(3)
            ],  # fmt: skip
        )
        MetadataCatalog.get(name).set(thing_classes=["a", "b", "c"])
    cfg = load_config(CENTERMASK, [*SMALL, "DATASETS.TRAIN", f"('{name}',)"])
    with pytest.raises(EmptyTrainingSetError, match="nothing to train on: none of the 3 images"):
        image_training_dicts(cfg)


# ---------------------------------------------------------------- 5. arrays given to the models


@pytest.mark.parametrize("config", [CENTERMASK, SIPMASK], ids=["centermask", "sipmask"])
def test_models_refuse_non_finite_images(config):
    model = build_model(load_config(config, SMALL)).eval()
    image = torch.full((3, 64, 64), float("nan"))
    with torch.no_grad(), pytest.raises(ValueError, match="NaN / infinite"):
        model([{"image": image, "height": 64, "width": 64}])


def test_predictor_explains_wrong_arrays():
    predictor = Predictor(load_config(CENTERMASK, SMALL))
    for array in (np.zeros((64, 64), np.uint8), np.zeros((64, 64, 4), np.uint8)):
        with pytest.raises(ValueError, match=r"H x W x 3 uint8 BGR.*cv2\.cvtColor"):
            predictor(array)
    with pytest.raises(ValueError, match="empty"):
        predictor(np.zeros((0, 64, 3), np.uint8))


# ---------------------------------------------------------------- 6. documents


def test_documents_agree_with_the_code(tmp_path):
    # benchmark commands in the READMEs run offline: random weights where the config names a URL
    for readme in [REPO_ROOT / "README.md", *REPO_ROOT.glob("projects/*/README.md")]:
        text = readme.read_text().replace("\\\n", " ")  # continued lines
        for command in re.findall(r"tools/benchmark\.py [^\n`]*", text):
            config = re.search(r"--config-file (\S+\.yaml)", command)
            if config is None:
                continue
            weights = load_config(str(REPO_ROOT / config.group(1))).MODEL.WEIGHTS
            if weights:
                assert 'MODEL.WEIGHTS ""' in command or "--random-weights" in command, (readme, command)
    # every shipped config has VERSION: 2 (no "has no VERSION" warning)
    for path in REPO_ROOT.glob("configs/**/*.yaml"):
        assert yaml.safe_load(path.read_text()).get("VERSION") == 2, path
    # malformed JSON: one readable message
    (tmp_path / "bad.json").write_text('{"a": "abc')
    with pytest.raises(ValueError) as e:
        read_json(tmp_path / "bad.json")
    assert "at at" not in str(e.value) and "starting at line 1" in str(e.value)


@pytest.mark.parametrize("config", [CENTERMASK, SIPMASK], ids=["centermask", "sipmask"])
def test_readme_lists_every_output_field(config, image):
    opts = [*SMALL, "MODEL.FCOS.INFERENCE_TH_TEST", "0.0", "MODEL.SIPMASK.SCORE_THRESH_TEST", "0.0"]
    instances = Predictor(load_config(config, opts))(cv2.imread(str(image)))["instances"]
    assert len(instances) > 0
    readme = (REPO_ROOT / "README.md").read_text()
    for field in instances.get_fields():
        assert f"`{field}`" in readme, field


# ---------------------------------------------------------------- 7. batch size and learning rate


def test_synthetic_configs_scale_the_lr_for_small_batches():
    for config in (CENTERMASK, SIPMASK):
        lrs = {b: load_config(config, ["SOLVER.IMS_PER_BATCH", str(b)]).SOLVER.BASE_LR for b in (2, 8, 16)}
        assert lrs == pytest.approx({2: 0.005, 8: 0.02, 16: 0.02})
        # a saved config loaded again is not scaled twice
        cfg = load_config(config, ["SOLVER.IMS_PER_BATCH", "2"])
        saved = ["SOLVER.BASE_LR", str(cfg.SOLVER.BASE_LR), "SOLVER.REFERENCE_IMS_PER_BATCH", "2"]
        again = load_config(config, ["SOLVER.IMS_PER_BATCH", "2", *saved])
        assert again.SOLVER.BASE_LR == pytest.approx(0.005)
        # small batches are also clipped; the config's own batch is untouched
        assert cfg.SOLVER.CLIP_GRADIENTS.ENABLED and cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "norm"
        assert not load_config(config).SOLVER.CLIP_GRADIENTS.ENABLED


def test_synthetic_config_trains_at_batch_2(tmp_path, extra=()):
    # 25 iterations (warm-up compressed into them) on 8 images at 64 px: with the config's LR for batch
    # 8 and no clipping the MaskIoU loss blows up to NaN at iteration 16 (Detectron2 raises
    # FloatingPointError); the linear LR rule + small-batch clipping keep it finite
    opts = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "25", "DATASETS.TRAIN",
            "('synthetic_shapes_tiny',)", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
            "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "0",
            "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path), *extra]  # fmt: skip
    seed_all_rng(1)  # as default_setup does with SEED
    trainer = train_net.Trainer(load_config(CENTERMASK, opts))  # load_config: what train_net.py runs
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: 2 threads on 2 busy cores are ~10x slower
    try:
        trainer.train()
    finally:
        torch.set_num_threads(threads)
    losses = [json.loads(line)["total_loss"] for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert losses and all(np.isfinite(losses))
