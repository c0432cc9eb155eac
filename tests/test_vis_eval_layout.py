"""vis_eval's layout contracts: torch-free commands and algorithm, registration on ``import vis_eval.data``
only, and the one JSON / zip reader."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from random_vis_cases import random_gt_and_results

from vis_eval.file_io import read_json

REPO_ROOT = Path(__file__).resolve().parents[1]
NO_TORCH = "assert 'torch' not in sys.modules and 'detectron2' not in sys.modules, sorted(m for m in sys.modules if m.startswith(('torch', 'detectron2')))"  # noqa: E501


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *(["-c", code] if code else []), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "module",
    ["vis_eval", "vis_eval.evaluate", "vis_eval.validate", "vis_eval.evaluation", "vis_eval.rle",
     "vis_eval.file_io", "vis_eval.evaluation.ytviseval", "vis_eval.evaluation.commands"],
)  # fmt: skip
def test_commands_and_algorithm_import_neither_torch_nor_detectron2(module):
    proc = run_python(f"import {module}, sys; {NO_TORCH}")
    assert proc.returncode == 0, proc.stderr


def test_commands_run_without_torch(tmp_path):
    gt, res = random_gt_and_results(np.random.default_rng(0), quirks=False, n_videos=3, gt_per_video=(1, 2))
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    code = f"""import sys
from vis_eval.evaluate import main as evaluate
from vis_eval.validate import main as validate
for main in (evaluate, validate):
    try:
        main(["--help"])
    except SystemExit as e:
        assert e.code == 0
assert evaluate([{str(tmp_path / "gt.json")!r}, {str(tmp_path / "res.json")!r}]) == 0
assert validate([{str(tmp_path / "res.json")!r}, {str(tmp_path / "gt.json")!r}]) == 0
{NO_TORCH}
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert (
        "usage: python -m vis_eval.evaluate" in proc.stdout and "AP50" in proc.stdout and "OK" in proc.stdout
    )
    for command in ("vis_eval.evaluate", "vis_eval.validate"):  # the documented invocations
        proc = run_python("", "-m", command, "--help")
        assert proc.returncode == 0 and f"usage: python -m {command}" in proc.stdout, proc.stderr


def test_datasets_register_on_import_of_vis_eval_data_only():
    code = """from detectron2.data import DatasetCatalog
import vis_eval, vis_eval.evaluation, vis_eval.video
assert "ytvis_2019_val" not in DatasetCatalog.list()
import vis_eval.data
names = DatasetCatalog.list()
assert {"ytvis_2019_val", "ovis_train", "synthetic_vis_tiny", "synthetic_shapes_tiny"} <= set(names), names
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr


def test_read_json_and_its_zip_rule(tmp_path):
    data = [{"video_id": 1}]

    def archive(name, members):
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as zf:
            for member, text in members.items():
                zf.writestr(member, text)
        return path

    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(data))
    assert read_json(plain) == data and read_json(str(plain)) == data
    text = json.dumps(data)
    assert read_json(archive("results.zip", {"results.json": text})) == data
    # the one root-level .json member, whatever its name; folders and other files are ignored
    assert (
        read_json(archive("gt.zip", {"valid.json": text, "__MACOSX/._valid.json": "x", "a.txt": ""})) == data
    )
    assert read_json(archive("named.json", {"results.json": text})) == data  # a zip by content
    with pytest.raises(ValueError, match="exactly one .json file at its root"):
        read_json(archive("two.zip", {"a.json": text, "b.json": text}))
    with pytest.raises(ValueError, match="found none"):
        read_json(archive("none.zip", {"sub/results.json": text}))
    with pytest.raises(FileNotFoundError, match="not found"):
        read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[1,,]")
    with pytest.raises(ValueError, match="malformed JSON"):
        read_json(bad)
    with pytest.raises(ValueError, match=r"bad.zip:results.json: malformed JSON"):
        read_json(archive("bad.zip", {"results.json": "[1,,]"}))
