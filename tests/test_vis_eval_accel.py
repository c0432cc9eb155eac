"""The optional C accelerator of the RLE work and the pure path: same numbers, built where it can be.

The accelerated half of each comparison is skipped only where the extension is genuinely not built;
``test_accelerator_is_built_where_a_compiler_is`` fails when a C compiler and the Python headers are
present but the build did not happen (``make setup`` / ``pip install -e .`` compile it).
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from random_vis_cases import random_gt_and_results
from test_vis_eval_algorithm import CONFIGS, assert_same, use_rle_path

import vis_eval.rle as rle_mod
from vis_eval import rle_accel
from vis_eval.evaluation import EvalParams, evaluate, reference_evaluate
from vis_eval.rle import join_counts, run_sums

REPO_ROOT = Path(__file__).resolve().parents[1]
needs_accel = pytest.mark.skipif(not rle_accel.available(), reason="the C accelerator is not built here")


def _compiler_present() -> bool:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"], "Python.h").exists()
    return shutil.which(cc) is not None and headers


def test_accelerator_is_built_where_a_compiler_is():
    if not _compiler_present():
        pytest.skip("no C compiler or no Python headers: the pure path is the only one")
    assert rle_accel.available(), (
        "a C compiler is present but vis_eval._rle_accel is not built: run `make setup` "
        "(pip install --no-deps --no-build-isolation -e .) and read its build_ext warning"
    )


@pytest.fixture(params=["pure", "accel"])
def rle_path(request, monkeypatch):
    """Runs a test once with the pure path (``VIS_EVAL_PURE=1``) and once with the accelerator."""
    use_rle_path(request.param, monkeypatch)
    return request.param


@pytest.mark.parametrize("value,pure", [("1", True), ("yes", True), ("0", False), ("", False)])
def test_vis_eval_pure_switch(monkeypatch, value, pure):
    monkeypatch.setenv("VIS_EVAL_PURE", value)
    assert rle_accel.forced_pure() is pure
    assert (rle_accel.get() is None) is (pure or not rle_accel.available())


def test_missing_extension_falls_back_to_the_pure_path(monkeypatch):
    """No compiled module (as after an install without a compiler): same statistics."""
    gt, res = random_gt_and_results(np.random.default_rng(5), **CONFIGS[0])
    monkeypatch.delenv("VIS_EVAL_PURE", raising=False)
    monkeypatch.setitem(sys.modules, "vis_eval._rle_accel", None)  # import fails
    rle_accel._load.cache_clear()
    try:
        assert rle_accel.get() is None and not rle_accel.available()
        assert_same(evaluate(gt, res), reference_evaluate(gt, res))
    finally:
        monkeypatch.delitem(sys.modules, "vis_eval._rle_accel")
        rle_accel._load.cache_clear()


def _fuzz_strings(rng: np.random.Generator, n: int) -> list[str]:
    """Valid strings of random masks and damaged ones (foreign characters, truncation, over-long
    numbers, random characters), plus hand cases."""
    out = []
    for _ in range(n):
        h, w = (int(x) for x in rng.integers(1, 30, 2))
        m = rng.random((h, w)) < rng.random()
        s = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode()
        r = rng.random()
        if r < 0.3:
            chars = list(s)
            for _ in range(int(rng.integers(1, 4))):
                chars[int(rng.integers(0, len(chars)))] = chr(int(rng.integers(40, 120)))
            s = "".join(chars)
        elif r < 0.4:
            s += chr(int(rng.integers(80, 112)))  # a last character saying "more groups follow"
        elif r < 0.5:
            s = "".join(chr(int(c)) for c in rng.integers(48, 112, int(rng.integers(0, 40))))
        elif r < 0.55:  # a long run written over 11-16 groups
            s = s[:1] + "P" * int(rng.integers(10, 16)) + chr(int(rng.integers(48, 80))) + s[1:]
        out.append(s)
    return out + ["", "0", "1O", "a`", "ab~", "0\x7f", "O", "é1", "3" + "P" * 13 + "0", "3" + "o" * 13 + "0"]


@needs_accel
def test_accelerated_stats_equal_run_sums():
    """Area, run total and well-formedness identical to the pure pass on every string, malformed too."""
    strings = _fuzz_strings(np.random.default_rng(0), 3000)
    area, total, ok = run_sums(strings)
    assert 1000 < ok.sum() < len(strings) - 500  # both kinds well represented
    buf, off, ascii_ok = join_counts(strings)
    a2, t2, ok2, lo, hi = rle_accel.get().stats(buf, off)
    np.testing.assert_array_equal(ok2 & ascii_ok, ok)
    np.testing.assert_array_equal(a2, area)
    np.testing.assert_array_equal(t2, total)
    # foreground extents of the well-formed strings, from the decoded runs
    n_checked = 0
    for i in np.flatnonzero(ok)[:300].tolist():
        try:
            runs, _ = rle_mod.decode_counts([strings[i]])
        except ValueError:  # exact integers, where pycocotools (and both paths) add modulo 2**32
            continue
        if int(runs.sum()) != total[i]:  # a run of 2**32 pixels or more: same remark
            continue
        n_checked += 1
        ends = np.cumsum(runs)
        fg = [(int(e - r), int(e)) for k, (r, e) in enumerate(zip(runs, ends)) if k % 2 and r]
        assert (lo[i], hi[i]) == ((fg[0][0], fg[-1][1]) if fg else (0, 0)), strings[i]
    assert n_checked > 200


def test_run_sums_in_slices_equal_one_pass(monkeypatch):
    strings = _fuzz_strings(np.random.default_rng(1), 500)
    whole = rle_mod._run_sums(strings)
    monkeypatch.setattr(rle_mod, "_CHUNK_CHARS", 37)  # many slices, boundaries inside long strings
    sliced = run_sums(strings)
    assert len(sliced) == 3
    for a, b in zip(sliced, whole):
        np.testing.assert_array_equal(a, b)


def _random_masks(rng: np.random.Generator, n: int, h: int, w: int) -> list[np.ndarray]:
    masks = []
    for k in range(n):
        kind = k % 5
        if kind == 0:
            m = rng.random((h, w)) < rng.random()  # noise
        elif kind == 1:
            m = np.zeros((h, w), bool)
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            m[y0 : y0 + rng.integers(1, h + 1), x0 : x0 + rng.integers(1, w + 1)] = True
        elif kind == 2:
            yy, xx = np.mgrid[:h, :w]
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(1, max(h, w))
            m = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        elif kind == 3:
            m = np.zeros((h, w), bool) if rng.random() < 0.5 else np.ones((h, w), bool)
        else:
            m = np.zeros((h, w), bool)
            m.flat[rng.integers(0, h * w)] = True
        masks.append(m)
    return masks


@needs_accel
def test_group_intersections_equal_pycocotools():
    rng = np.random.default_rng(2)
    a_rles, b_rles, ia, ib, ga, gb, expect = [], [], [], [], [0], [0], []
    for _ in range(120):  # groups of masks of one size, sizes differing between groups
        h, w = (int(x) for x in rng.integers(1, 50, 2))
        na, nb = (int(x) for x in rng.integers(0, 5, 2))
        am = _random_masks(rng, na, h, w)
        bm = _random_masks(rng, nb, h, w)
        ra = [mask_util.encode(np.asfortranarray(m.astype(np.uint8))) for m in am]
        rb = [mask_util.encode(np.asfortranarray(m.astype(np.uint8))) for m in bm]
        order_a = rng.permutation(na) + len(a_rles)  # masks referenced out of storage order
        a_rles += ra
        b_rles += rb
        ia += order_a.tolist()
        ib += list(range(len(b_rles) - nb, len(b_rles)))
        ga.append(len(ia))
        gb.append(len(ib))
        for i in order_a.tolist():
            for r in rb:
                both = mask_util.merge([a_rles[i], r], intersect=True)
                expect.append(int(mask_util.area(both)))
    a_buf, a_off, _ = join_counts([r["counts"] for r in a_rles])
    b_buf, b_off, _ = join_counts([r["counts"] for r in b_rles])
    got = rle_accel.get().group_intersections((a_buf, a_off), ia, ga, (b_buf, b_off), ib, gb)
    assert len(expect) > 200 and np.count_nonzero(expect) > 100
    np.testing.assert_array_equal(got, expect)


@needs_accel
def test_group_intersections_refuse_bad_indices():
    buf, off, _ = join_counts(["1", "01"])
    accel = rle_accel.get()
    with pytest.raises(ValueError, match="out of range"):
        accel.group_intersections((buf, off), [0, 2], [0, 2], (buf, off), [0], [0, 1])
    with pytest.raises(ValueError, match="group bounds"):
        accel.group_intersections((buf, off), [0], [0, 2], (buf, off), [0], [0, 1])


ALL_CONFIGS = [*CONFIGS, dict(quirks=False, n_videos=5, gt_per_video=(3, 6), n_cats=2, dets_per_gt=(1, 4))]


@pytest.mark.parametrize("seed", range(24))
def test_random_cases_pure_and_accelerated_identical(seed, rle_path):
    """Both paths give the reference's numbers (arrays equal, stats to 1e-12) on random cases."""
    rng = np.random.default_rng(3000 + seed)
    gt, res = random_gt_and_results(rng, **ALL_CONFIGS[seed % len(ALL_CONFIGS)])
    params = EvalParams(max_dets=(1, 3, 5)) if seed % 6 == 5 else None
    assert_same(evaluate(gt, res, params), reference_evaluate(gt, res, params))


def test_both_paths_bit_identical():
    """Pure and accelerated evaluations of the same files: every array equal, bit for bit."""
    if not rle_accel.available():
        pytest.skip("the C accelerator is not built here")
    for seed in range(6):
        gt, res = random_gt_and_results(
            np.random.default_rng(4000 + seed), **ALL_CONFIGS[seed % len(ALL_CONFIGS)]
        )
        os.environ["VIS_EVAL_PURE"] = "1"
        try:
            pure = evaluate(gt, res)
        finally:
            del os.environ["VIS_EVAL_PURE"]
        fast = evaluate(gt, res)
        assert_same(fast, pure)
        np.testing.assert_array_equal(fast.stats, pure.stats)


def test_malformed_masks_refused_on_both_paths(rle_path):
    gt, res = random_gt_and_results(np.random.default_rng(4), quirks=False, n_videos=4, gt_per_video=(1, 3))
    k = next(i for i, r in enumerate(res) if any(r["segmentations"]))
    t = next(t for t, s in enumerate(res[k]["segmentations"]) if s)
    s = res[k]["segmentations"][t]
    res[k]["segmentations"][t] = {"size": s["size"], "counts": s["counts"] + "1"}
    with pytest.raises(ValueError, match=rf"1 malformed result mask\(s\).*result #{k}, frame {t}"):
        evaluate(gt, res)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="needs a compiler")
def test_install_succeeds_without_a_compiler(tmp_path):
    """An editable build with a failing compiler (``CC=/bin/false``) still succeeds, without the
    extension; the same build with the compiler makes it. Built from a copy of the packaging files."""
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    (tmp_path / "vis_eval").mkdir()
    for name in ("__init__.py", "_rle_accel.c", "rle_accel.py"):
        shutil.copy(REPO_ROOT / "vis_eval" / name, tmp_path / "vis_eval" / name)
    code = "from setuptools import build_meta; print(build_meta.build_editable({!r}))"
    for cc, built in (("/bin/false", False), (None, True)):
        env = {k: v for k, v in os.environ.items() if k != "CC"}
        if cc:
            env["CC"] = cc
        out = tmp_path / ("wheel-" + str(built))
        out.mkdir()
        proc = subprocess.run(
            [sys.executable, "-c", code.format(str(out))],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert list(out.glob("*.whl")), proc.stdout[-2000:]
        assert bool(list((tmp_path / "vis_eval").glob("_rle_accel*.so"))) is built, proc.stderr[-2000:]
        if not built:
            assert "failed" in proc.stderr + proc.stdout


def test_command_gives_the_same_stats_on_both_paths(tmp_path):
    """``python -m vis_eval.evaluate --json``: the same 12 stats with and without ``VIS_EVAL_PURE``."""
    gt, res = random_gt_and_results(np.random.default_rng(6), quirks=False, n_videos=5, gt_per_video=(1, 4))
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    stats = []
    for pure in ("1", "0"):
        out = tmp_path / f"stats-{pure}.json"
        env = dict(os.environ, VIS_EVAL_PURE=pure)
        cmd = [
            sys.executable,
            "-m",
            "vis_eval.evaluate",
            str(tmp_path / "gt.json"),
            str(tmp_path / "res.json"),
        ]
        proc = subprocess.run(
            [*cmd, "--json", str(out)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        stats.append(json.loads(out.read_text())["stats"])
    assert stats[0] == stats[1]
    assert stats[0] == evaluate(gt, res).as_dict()


def test_a_broken_build_is_ignored_with_a_warning(monkeypatch, tmp_path):
    """A compiled module that does not hold the functions (stale or foreign build): a warning and
    the pure path, not a crash."""
    built = rle_accel.available()
    fake = tmp_path / "fake.py"
    fake.write_text("")
    module = type(sys)("vis_eval._rle_accel")
    module.__file__ = str(fake)  # not a shared library
    monkeypatch.delenv("VIS_EVAL_PURE", raising=False)
    monkeypatch.setitem(sys.modules, "vis_eval._rle_accel", module)
    rle_accel._load.cache_clear()
    try:
        with pytest.warns(UserWarning, match="ignoring the RLE accelerator"):
            assert rle_accel.get() is None
    finally:
        monkeypatch.delitem(sys.modules, "vis_eval._rle_accel")
        rle_accel._load.cache_clear()
    assert rle_accel.available() is built  # the real build is found again
