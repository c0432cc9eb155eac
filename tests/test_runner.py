"""The streaming video runner: frame sources, per-video results, flat memory, visualisation."""

import json
import tracemalloc

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.video_visualizer import VideoVisualizer
from video_oracle import (
    GroundTruthTracker,
    OracleModel,
    load_gt_frames,
    single_thread,  # noqa: F401 (an autouse fixture)
)

from vis_eval.config import add_vis_eval_config
from vis_eval.data import synthetic_video
from vis_eval.rle import encode_masks
from vis_eval.video import (
    MaskIoUTracker,
    VideoResultBuilder,
    VideoRunner,
    annotate_frame,
    binary_masks,
    iter_frames,
)


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory):
    base = tmp_path_factory.mktemp("synthetic_vis")
    json_file, image_root = synthetic_video.ensure_generated("tiny", base)
    data = json.loads(json_file.read_text())
    return data, image_root, load_gt_frames(json_file)


def random_frames(n, h=24, w=32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


# ----------------------------------------------------------------------------- frame sources
def test_iter_frames_sources(tmp_path):
    frames = random_frames(3)
    assert all((a == b).all() for a, b in zip(iter_frames(frames), frames))
    assert all((a == b).all() for a, b in zip(iter_frames(iter(frames)), frames))  # a generator
    assert len(list(iter_frames(np.stack(frames)))) == 3
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), f)
    (tmp_path / "notes.txt").write_text("not a frame")
    from_folder = list(iter_frames(tmp_path))
    assert len(from_folder) == 3 and all((a == b).all() for a, b in zip(from_folder, frames))
    from_paths = list(iter_frames([tmp_path / "002.png", str(tmp_path / "000.png")]))
    assert (from_paths[0] == frames[2]).all() and (from_paths[1] == frames[0]).all()
    assert len(list(iter_frames(tmp_path / "001.png"))) == 1
    # a video file, written and read back with OpenCV
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 24))
    assert writer.isOpened()
    for f in random_frames(6, seed=1):
        writer.write(f)
    writer.release()
    decoded = list(iter_frames(video))
    assert len(decoded) == 6 and decoded[0].shape == (24, 32, 3) and decoded[0].dtype == np.uint8


def test_iter_frames_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(iter_frames(tmp_path / "missing.mp4"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        list(iter_frames(tmp_path / "empty"))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot decode"):
        list(iter_frames([tmp_path / "broken.jpg"]))
    with pytest.raises(FileNotFoundError):
        list(iter_frames([tmp_path / "nope.jpg"]))
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises((OSError, ValueError)):
        list(iter_frames(tmp_path / "broken.mp4"))
    with pytest.raises(ValueError, match="uint8"):
        list(iter_frames([np.zeros((4, 4, 3), np.float32)]))
    with pytest.raises(ValueError, match="uint8"):
        list(iter_frames([np.zeros((4, 4), np.uint8)]))
    with pytest.raises(TypeError):
        list(iter_frames(3.5))


# ----------------------------------------------------------------------------- results
def tracked(ids, classes, scores, masks, size=(6, 5)):
    inst = Instances(size)
    inst.ID = list(ids)
    inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_masks = torch.as_tensor(np.array(masks, dtype=bool).reshape(len(ids), *size))
    inst.pred_boxes = Boxes(torch.zeros(len(ids), 4))
    return inst


def test_encode_masks_round_trip():
    masks = torch.rand(3, 7, 9) > 0.5
    rles = encode_masks(masks)
    assert all(isinstance(r["counts"], str) and r["size"] == [7, 9] for r in rles)
    assert (mask_util.decode(rles).transpose(2, 0, 1) == masks.numpy()).all()
    assert encode_masks(masks.numpy().astype(np.uint8)) == rles
    assert encode_masks(torch.zeros(0, 7, 9, dtype=torch.bool)) == []
    soft = torch.tensor([[[0.7, 0.2], [0.5, 0.0]]])
    with pytest.raises(ValueError, match="threshold soft masks"):
        encode_masks(soft)
    assert mask_util.decode(encode_masks(binary_masks(soft)))[..., 0].tolist() == [[1, 0], [1, 0]]
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        encode_masks(np.ones((7, 9), bool))


def test_result_builder_scores_labels_and_null_frames():
    m = np.zeros((6, 5), bool)
    m[1:3, 1:4] = True
    builder = VideoResultBuilder()
    builder.add(0, tracked([4, 9], [1, 0], [0.9, 0.2], [m, ~m]))
    builder.add(1, tracked([], [], [], np.zeros((0, 6, 5))))
    builder.add(2, tracked([4], [2], [0.5], [m]))
    builder.add(3, tracked([4], [2], [0.4], [m]))
    builder.add(4, tracked([4], [1], [0.2], [m]))  # labels of 4: 1, 2, 2, 1 -> tie -> 1
    results = builder.results(video_id=17, category_map={0: 10, 1: 11, 2: 12}, num_frames=6)
    assert [r["video_id"] for r in results] == [17, 17]
    first, second = results
    assert first["category_id"] == 11 and first["score"] == pytest.approx(0.5)
    assert [s is None for s in first["segmentations"]] == [False, True, False, False, False, True]
    assert (mask_util.decode(first["segmentations"][2]) == m).all()
    assert second["category_id"] == 10 and second["score"] == pytest.approx(0.2)
    assert (mask_util.decode(second["segmentations"][0]) == ~m).all()
    soft = tracked([4], [2], [0.5], [m])
    soft.pred_masks = soft.pred_masks.float() * 0.6  # soft masks are thresholded at 0.5
    soft.ID = torch.tensor([4])  # an int64 tensor of ids is accepted as well
    other = VideoResultBuilder()
    other.add(0, soft)
    assert (mask_util.decode(other.results(1)[0]["segmentations"][0]) == m).all()
    assert len(builder.results(3)[0]["segmentations"]) == 5  # default: frames added
    with pytest.raises(KeyError, match="dataset id"):
        builder.results(3, category_map={0: 1})
    with pytest.raises(ValueError, match="num_frames"):
        builder.results(3, num_frames=2)


def test_result_builder_rejects_bad_frames():
    m = np.ones((6, 5), bool)
    builder = VideoResultBuilder(6, 5)
    with pytest.raises(ValueError, match="in order"):
        builder.add(1, tracked([0], [0], [0.5], [m]))
    with pytest.raises(ValueError, match="unique"):
        builder.add(0, tracked([3, 3], [0, 0], [0.5, 0.5], [m, m]))
    with pytest.raises(ValueError, match="unique ints"):
        VideoResultBuilder(6, 5).add(0, tracked([3, None], [0, 0], [0.5, 0.5], [m, m]))
    with pytest.raises(ValueError, match="size"):
        builder.add(1, tracked([0], [0], [0.5], [np.ones((7, 5), bool)], size=(7, 5)))
    no_masks = tracked([0], [0], [0.5], [m])
    no_masks.remove("pred_masks")
    with pytest.raises(KeyError, match="pred_masks"):
        builder.add(2, no_masks)


# ----------------------------------------------------------------------------- the runner
def test_runner_reproduces_ground_truth_exactly(tiny_split):
    data, image_root, gt = tiny_split
    sizes = {v["id"]: (v["height"], v["width"]) for v in data["videos"]}
    sequence = [(v["id"], t) for v in data["videos"] for t in range(v["length"])]
    model = OracleModel(gt, sizes, sequence).train()
    trackers = []  # one new tracker per video

    def make_tracker():
        trackers.append(GroundTruthTracker())
        return trackers[-1]

    runner = VideoRunner(model, make_tracker, input_format="RGB", min_size_test=64, max_size_test=1000)
    for video in data["videos"]:
        paths = [image_root / f for f in video["file_names"]]
        results = runner.run_video(
            paths, video["id"], category_map={0: 1, 1: 2, 2: 3}, num_frames=video["length"]
        )
        anns = {a["id"]: a for a in data["annotations"] if a["video_id"] == video["id"]}
        assert [r["video_id"] for r in results] == [video["id"]] * len(anns)
        for track_id, result in zip(sorted(anns), results):
            ann = anns[track_id]
            assert result["category_id"] == ann["category_id"]
            assert len(result["segmentations"]) == video["length"]
            for pred, truth in zip(result["segmentations"], ann["segmentations"]):
                assert (pred is None) == (truth is None)
                if truth is not None:
                    expected = mask_util.decode(mask_util.frPyObjects(truth, *sizes[video["id"]]))
                    assert pred["size"] == truth["size"] and (mask_util.decode(pred) == expected).all()
    assert model.calls == len(sequence) and len(trackers) == len(data["videos"])
    assert model.training  # restored after inference
    # test-time resize (short side 64 of a 128 x 160 frame) and CHW input
    assert set(model.input_shapes) == {(3, 64, 80)}
    with pytest.raises(ValueError, match="read 1 frames, expected 5"):
        model.calls = 0
        runner.run_video([image_root / data["videos"][0]["file_names"][0]], 1, num_frames=5)


def test_runner_channel_order_and_predictor_callables():
    frame = np.zeros((8, 10, 3), np.uint8)
    frame[..., 0] = 255  # blue in BGR
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, batched_inputs):
            seen.append(batched_inputs[0]["image"][:, 0, 0].tolist())
            inst = Instances((8, 10), pred_masks=torch.zeros(0, 8, 10, dtype=torch.bool))
            inst.scores, inst.pred_classes = torch.zeros(0), torch.zeros(0, dtype=torch.int64)
            inst.pred_boxes = Boxes(torch.zeros(0, 4))
            return [{"instances": inst}]

    for fmt, expected in (("RGB", [0.0, 0.0, 255.0]), ("BGR", [255.0, 0.0, 0.0])):
        list(VideoRunner(Probe(), MaskIoUTracker, input_format=fmt, min_size_test=8).stream([frame]))
        assert seen[-1] == expected
    # a callable predictor (e.g. DefaultPredictor) gets the BGR frame itself
    predictor_inputs = []

    def predictor(image):
        predictor_inputs.append(image)
        return Probe()([{"image": torch.zeros(3, 8, 10)}])[0]

    runner = VideoRunner(predictor)  # default tracker: a mask-IoU tracker per video
    out = list(runner.stream([frame, frame]))
    assert [f.index for f in out] == [0, 1] and out[0].image is frame and predictor_inputs[0] is frame
    assert all(isinstance(f.instances, Instances) and f.instances.ID == [] for f in out)
    assert isinstance(runner.tracker, MaskIoUTracker)
    with pytest.raises(TypeError):
        VideoRunner(object())
    with pytest.raises(TypeError, match="make_tracker"):
        VideoRunner(predictor, object())
    with pytest.raises(TypeError, match="BaseTracker"):
        list(VideoRunner(predictor, object).stream([frame]))
    # wrong output size, missing output
    with pytest.raises(ValueError, match="input height/width"):
        list(VideoRunner(predictor).stream([np.zeros((9, 10, 3), np.uint8)]))
    with pytest.raises(TypeError, match="instances"):
        list(VideoRunner(lambda image: {}).stream([frame]))
    with pytest.raises(ValueError, match="expected"):
        list(VideoRunner(predictor).stream([frame], frame_size=(9, 10)))


def test_runner_from_config_with_tracker_follows_objects(tiny_split):
    data, image_root, gt = tiny_split
    video = max(data["videos"], key=lambda v: v["length"])
    sizes = {video["id"]: (video["height"], video["width"])}
    model = OracleModel(gt, sizes, [(video["id"], t) for t in range(video["length"])])
    cfg = get_cfg()
    with pytest.raises(KeyError, match="add_vis_eval_config"):
        VideoRunner.from_config(cfg, model)
    add_vis_eval_config(cfg)
    cfg.INPUT.MIN_SIZE_TEST = 96
    cfg.TRACKER_HEADS.MASK_IOU_TRACKER.MAX_AGE = 3
    runner = VideoRunner.from_config(cfg, model)
    frames = list(runner.stream([image_root / f for f in video["file_names"]]))
    assert isinstance(runner.tracker, MaskIoUTracker) and runner.tracker.max_age == 3
    assert len(frames) == video["length"]
    # with ground-truth detections, each predicted track covers a single ground-truth track
    pairs = {(i, g) for f in frames for i, g in zip(f.instances.ID, f.instances.gt_ids.tolist())}
    assert len({i for i, _ in pairs}) == len(pairs)
    assert model.input_shapes[0] == (3, 96, 120)
    cfg.TRACKER_HEADS.TRACKER_NAME = "NoSuchTracker"
    with pytest.raises(KeyError, match="NoSuchTracker"):
        VideoRunner.from_config(cfg, model)


class ToyVideoModel(torch.nn.Module):
    """A video model with its own association: per-video state (the frame counter) that
    ``reset_video()`` clears; it returns two masks per frame with its own (arbitrary) ``ID``."""

    def __init__(self):
        super().__init__()
        self.resets = 0
        self.frame: int | None = None  # frame index within the current video; None before any reset
        self.seen: list[tuple[int, int]] = []  # (resets so far, frame index) per forward call
        self.ids: list[list[int]] = []  # the ids returned, per call

    def reset_video(self) -> None:
        self.resets += 1
        self.frame = 0

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        assert self.frame is not None, "reset_video() was not called before the first frame"
        (x,) = batched_inputs
        h, w = x["height"], x["width"]
        self.seen.append((self.resets, self.frame))
        masks = torch.zeros(2, h, w, dtype=torch.bool)
        masks[0, : h // 2], masks[1, h // 2 :] = True, True
        inst = Instances((h, w), pred_masks=masks, scores=torch.tensor([0.9, 0.8]))
        inst.pred_classes = torch.tensor([0, 1])
        inst.pred_boxes = BitMasks(masks).get_bounding_boxes()
        inst.ID = [1000 * self.resets + self.frame, 7]  # not what any tracker would give
        self.ids.append(inst.ID)
        self.frame += 1
        return [{"instances": inst}]


def test_video_model_is_reset_per_video_and_its_ids_pass_through():
    model = ToyVideoModel()
    runner = VideoRunner(model, min_size_test=8)
    lengths = (3, 1, 4)
    outputs = [list(runner.stream(random_frames(n, h=8, w=10, seed=n))) for n in lengths]
    # reset once at each video start, before the video's first frame
    assert model.resets == len(lengths)
    assert model.seen == [(v + 1, t) for v, n in enumerate(lengths) for t in range(n)]
    assert runner.tracker is None  # no tracker for a model that associates by itself
    assert [f.instances.ID for frames in outputs for f in frames] == model.ids  # unchanged
    # results: one record per id the model gave
    results = runner.run_video(random_frames(2, h=8, w=10), video_id=5)
    assert model.resets == 4 and len(results) == 3  # ids 4000, 4001 and 7
    # found behind a DefaultPredictor-like wrapper too; no tracker may be given
    wrapped = type("Predictor", (), {"model": model, "__call__": lambda self, image: model(
        [{"image": torch.zeros(3, 8, 10), "height": 8, "width": 10}])[0]})()  # fmt: skip
    list(VideoRunner(wrapped).stream(random_frames(1, h=8, w=10)))
    assert model.resets == 5
    with pytest.raises(ValueError, match="reset_video"):
        VideoRunner(model, MaskIoUTracker)
    assert VideoRunner.from_config(get_cfg(), model).make_tracker is None  # no TRACKER_HEADS needed

    class NoIds(ToyVideoModel):
        def forward(self, batched_inputs):
            out = super().forward(batched_inputs)
            out[0]["instances"].remove("ID")
            return out

    with pytest.raises(TypeError, match="must return Instances with ID"):
        list(VideoRunner(NoIds(), min_size_test=8).stream(random_frames(1, h=8, w=10)))


def test_memory_stays_flat_in_the_number_of_frames():
    """Peak traced memory of a 100-frame video is about that of a 10-frame one: masks are encoded
    and dropped frame by frame (100 frames x 4 masks x 120 x 160 would be 7.7 MB)."""
    h, w = 120, 160

    def frames(n):
        for t in range(n):
            yield np.full((h, w, 3), t % 255, np.uint8)

    def predictor(image):
        t = int(image[0, 0, 0])
        masks = np.zeros((4, h, w), bool)
        for k in range(4):
            masks[k, 10 + 20 * k : 30 + 20 * k, (t + 5 * k) % 100 : (t + 5 * k) % 100 + 40] = True
        inst = Instances((h, w), pred_masks=torch.from_numpy(masks), scores=torch.full((4,), 0.9))
        inst.pred_classes = torch.arange(4)
        inst.pred_boxes = BitMasks(torch.from_numpy(masks)).get_bounding_boxes()
        return {"instances": inst}

    def peak(n, keep_frames=False):
        tracemalloc.start()
        runner = VideoRunner(predictor, MaskIoUTracker)
        if keep_frames:  # negative control: a consumer that holds every tracked frame
            kept = list(runner.stream(frames(n)))
            assert len(kept) == n
        else:
            results = runner.run_video(frames(n), video_id=1)
            assert len(results) >= 4 and len(results[0]["segmentations"]) == n
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(10), peak(100)
    assert large < small + 1e6, (small, large)  # the RLE strings grow, nothing else
    assert peak(100, keep_frames=True) > small + 5e6  # the measurement does see retained masks


def test_runner_hands_free_heap_back_every_few_frames(monkeypatch):
    from vis_eval.video import runner as runner_module

    calls = []
    monkeypatch.setattr(runner_module, "release_free_heap", lambda: calls.append(len(calls)) or True)
    model = ToyVideoModel()
    list(VideoRunner(model, min_size_test=8, trim_heap_every=3).stream(random_frames(10, h=8, w=10)))
    assert len(calls) == 3  # after frames 3, 6 and 9
    calls.clear()
    list(VideoRunner(model, min_size_test=8, trim_heap_every=0).stream(random_frames(10, h=8, w=10)))
    assert calls == []
    with pytest.raises(ValueError, match="trim_heap_every"):
        VideoRunner(model, trim_heap_every=-1)
    assert VideoRunner.from_config(get_cfg(), model, trim_heap_every=5).trim_heap_every == 5
    monkeypatch.undo()
    # the real call: glibc's malloc_trim where there is one (this project's Linux machines)
    assert runner_module.release_free_heap() is (runner_module._malloc_trim() is not None)


def test_annotate_frame_colours_follow_track_ids():
    h, w = 120, 160
    metadata = MetadataCatalog.get("__test_runner_vis").set(thing_classes=["a", "b"])
    visualizer = VideoVisualizer(metadata)
    m1 = np.zeros((h, w), bool)
    m1[10:50, 10:50] = True
    m2 = np.zeros((h, w), bool)
    m2[60:110, 80:150] = True
    image = np.full((h, w, 3), 128, np.uint8)
    first = annotate_frame(visualizer, image, tracked([0, 1], [0, 1], [0.9, 0.8], [m1, m2], (h, w)))
    second = annotate_frame(visualizer, image, tracked([1, 0], [1, 0], [0.8, 0.9], [m2, m1], (h, w)))
    swapped = annotate_frame(visualizer, image, tracked([1, 0], [0, 1], [0.9, 0.8], [m1, m2], (h, w)))
    assert first.shape == (h, w, 3) and first.dtype == np.uint8
    assert not (first == image).all()
    # the same ids keep the same colours although their order changed
    # (pixels near the mask corners: the labels are written at the centres)
    a, b = (14, 14), (64, 84)
    assert (first[a] == second[a]).all() and (first[b] == second[b]).all()
    assert not (first[a] == first[b]).all()
    # colours follow the ids, not the positions
    assert (swapped[a] == first[b]).all() and (swapped[b] == first[a]).all()
    # instances below min_score are left out (ID is a list: filtered alongside the tensors)
    low = tracked([0, 1], [0, 1], [0.9, 0.8], [m1, m2], (h, w))
    only_first = annotate_frame(visualizer, image, low, min_score=0.85)
    assert (only_first[a] == first[a]).all() and (only_first[b] == image[b]).all()


def test_memory_benchmark_tool_worker(capsys):
    from tools.benchmark_runner_memory import main

    assert main(["--worker", "6", "--height", "60", "--width", "80", "--objects", "3"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["frames"] == 6 and row["size"] == [60, 80] and row["tracks"] >= 1
    assert row["peak_rss_mb"] >= row["rss_after_first_frame_mb"] > 0
    assert row["dense_masks_mb"] == round(6 * 3 * 60 * 80 / 2**20, 1)
