"""YouTube-VIS results files: writing, zipping for the server, validation (spec §3).

A results file is a JSON list of video instances::

    {"video_id": int, "category_id": int (dataset id), "score": float,
     "segmentations": [{"size": [H, W], "counts": str} or null] * T}
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..file_io import read_json
from ..rle import json_rle, run_sums
from .params import check_gt_fields

__all__ = [
    "normalize_results",
    "write_results_json",
    "write_submission_zip",
    "ValidationReport",
    "validate_results",
    "malformed_masks",
    "check_results",
]

_RLE_CHARS = re.compile(r"^[0-o]*$")  # compressed RLE uses the characters 48..111


def normalize_results(results: list[dict]) -> list[dict]:
    """JSON-ready copies: Python ints/floats, RLE ``counts`` as str, no extra keys."""
    out = []
    for r in results:
        out.append(
            {
                "video_id": int(r["video_id"]),
                "category_id": int(r["category_id"]),
                "score": float(r["score"]),
                "segmentations": [json_rle(s) if isinstance(s, dict) else s for s in r["segmentations"]],
            }
        )
    return out


def write_results_json(results: list[dict], path: str | os.PathLike) -> str:
    """Write the results list as JSON (normalised); returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(normalize_results(results), f)
    return path


def write_submission_zip(results: list[dict] | str | os.PathLike, zip_path: str | os.PathLike) -> str:
    """Zip a results list (or an existing results JSON file) as ``results.json`` at the archive root,
    the layout the CodaLab servers expect (spec §3.2); returns the zip path."""
    zip_path = os.fspath(zip_path)
    os.makedirs(os.path.dirname(os.path.abspath(zip_path)), exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        if isinstance(results, list):
            zf.writestr("results.json", json.dumps(normalize_results(results)))
        else:
            zf.write(os.fspath(results), arcname="results.json")
    return zip_path


@dataclass
class ValidationReport:
    """Problems found by :func:`validate_results`: errors make the file unusable, warnings do not."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n_errors: int = 0
    n_warnings: int = 0

    @property
    def ok(self) -> bool:
        return self.n_errors == 0

    def __str__(self) -> str:
        lines = [f"ERROR: {m}" for m in self.errors]
        if self.n_errors > len(self.errors):
            lines.append(f"... and {self.n_errors - len(self.errors)} more errors")
        lines += [f"warning: {m}" for m in self.warnings]
        if self.n_warnings > len(self.warnings):
            lines.append(f"... and {self.n_warnings - len(self.warnings)} more warnings")
        lines.append("OK" if self.ok else f"{self.n_errors} error(s)")
        return "\n".join(lines)

    def raise_if_invalid(self) -> None:
        if not self.ok:
            raise ValueError(f"invalid results:\n{self}")


def _videos_and_categories(gt: Any) -> tuple[dict[int, tuple[int, int, int]], set[int] | None]:
    """``{video_id: (length, height, width)}`` and the dataset category ids (None if unknown)."""
    if isinstance(gt, (str, os.PathLike)) and not os.path.exists(os.fspath(gt)):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        from .. import data  # noqa: F401  (registers the builtin datasets)

        name = os.fspath(gt)
        if name not in DatasetCatalog.list():
            raise FileNotFoundError(f"{name} is neither a file nor a registered dataset")
        meta = MetadataCatalog.get(name)
        json_file = meta.get("json_file")
        if json_file and os.path.isfile(json_file):
            return _videos_and_categories(json_file)
        cats = meta.get("thing_dataset_id_to_contiguous_id")
        videos, _ = _videos_and_categories(DatasetCatalog.get(name))
        return videos, set(cats) if cats else None
    if isinstance(gt, (str, os.PathLike)):
        gt = read_json(gt)
    if isinstance(gt, dict):
        check_gt_fields(gt)
        videos = {
            v["id"]: (int(v.get("length", len(v["file_names"]))), int(v["height"]), int(v["width"]))
            for v in gt["videos"]
        }
        return videos, {c["id"] for c in gt.get("categories", [])} or None
    if isinstance(gt, list):  # dataset dicts
        return {d["video_id"]: (len(d["file_names"]), int(d["height"]), int(d["width"])) for d in gt}, None
    raise TypeError(f"unsupported ground truth type {type(gt).__name__}")


def _is_int(x: Any) -> bool:
    return type(x) is int or (isinstance(x, numbers.Integral) and not isinstance(x, bool))


def validate_results(
    results: Any,
    gt: Any,
    *,
    max_messages: int = 20,
    check_counts: bool = True,
    max_dets: int = 100,
) -> ValidationReport:
    """Check a results list (or file path) against the dataset before evaluation or upload.

    Args:
        results: results list, or a path to a ``.json`` / submission zip (:func:`vis_eval.file_io.read_json`).
        gt: GT/valid/test JSON (path or dict), a registered dataset name, or a list of video dicts.
        max_messages: messages kept per kind (all are counted).
        check_counts: decode every RLE string and check that its runs cover exactly ``H x W`` pixels.
        max_dets: warn about (video, category) pairs with more tracks (the extra ones are ignored).
    """
    rep = ValidationReport()

    def err(msg: str) -> None:
        rep.n_errors += 1
        if len(rep.errors) < max_messages:
            rep.errors.append(msg)

    def warn(msg: str) -> None:
        rep.n_warnings += 1
        if len(rep.warnings) < max_messages:
            rep.warnings.append(msg)

    if not isinstance(results, list):
        try:
            results = read_json(results) if isinstance(results, (str, os.PathLike)) else results
        except (OSError, ValueError) as e:
            err(str(e))
            return rep
    if not isinstance(results, list):
        err("results must be a JSON list of video instances")
        return rep
    videos, cat_ids = _videos_and_categories(gt)
    if not results:
        warn("the results list is empty")
    rle_at: list[str] = []  # RLE strings to decode: location, counts, pixels of their own size
    rle_counts: list[str] = []
    rle_pixels: list[int] = []
    usable = check_results(results, videos, cat_ids, err, warn, max_dets=max_dets)
    for k in usable:
        r = results[k]
        vid = r["video_id"]
        where = f"result #{k} (video {vid})"
        _, h, w = videos[vid]
        for t, s in enumerate(r["segmentations"]):
            if s is None:
                continue
            at = f"{where}, frame {t}"
            if not isinstance(s, dict) or "counts" not in s or "size" not in s:
                err(f"{at}: expected null or a compressed RLE {{'size': [H, W], 'counts': str}}")
                continue
            size, counts = s["size"], s["counts"]
            size_ok = isinstance(size, list) and len(size) == 2 and all(_is_int(x) and x >= 0 for x in size)
            if not size_ok:
                err(f"{at}: RLE size {size!r} is not [H, W]")
            elif size != [h, w]:
                err(f"{at}: RLE size {size} differs from the video's frame size [{h}, {w}]")
            if isinstance(counts, list):
                err(f"{at}: uncompressed RLE (list counts); the server needs compressed RLE (str counts)")
            elif not isinstance(counts, str):
                err(f"{at}: RLE counts must be a str, got {type(counts).__name__}")
            elif not _RLE_CHARS.match(counts):
                err(f"{at}: RLE counts contain characters outside the compressed RLE alphabet")
            elif check_counts and size_ok:
                rle_at.append(at)
                rle_counts.append(counts)
                rle_pixels.append(size[0] * size[1])
    for j in _bad_run_totals(rle_counts, rle_pixels):
        err(f"{rle_at[j]}: RLE counts do not decode to a mask of their stated size")
    return rep


def _contiguous_hint(bad: set, cat_ids: set) -> str:
    """A hint when unknown category ids look like contiguous (0-based) model class indices."""
    n = len(cat_ids)
    if bad and min(bad) >= 0 and max(bad) < n and (0 in bad or cat_ids != set(range(1, n + 1))):
        return " (contiguous class indices? results need the dataset's category ids)"
    return ""


def _mask_key(s: Any) -> Any:
    return s.get("counts") if isinstance(s, dict) else s


class _Duplicates:
    """Finds tracks equal to an earlier one (same video, category and per-frame masks).

    Tracks are first keyed by video, category, length and first non-empty mask only; the full key
    (every frame's ``counts``) is built only for tracks sharing such a key, i.e. almost never.
    Tracks with unhashable masks (e.g. uncompressed RLE) are not compared.
    """

    def __init__(self) -> None:
        self._by_head: dict[Any, list[int]] = {}
        self._full: dict[int, Any] = {}  # full keys built so far (None: unhashable)
        self._segms: dict[int, list] = {}

    def _full_key(self, k: int) -> Any:
        if k not in self._full:
            key = tuple(map(_mask_key, self._segms[k]))
            try:
                hash(key)
            except TypeError:
                key = None
            self._full[k] = key
        return self._full[k]

    def key_hashes(self) -> set[int]:
        """Hashes of a key per track registered and comparable: its first-level key, the frames of
        its first and last masks and its last mask (equal tracks have equal keys)."""
        out = set()
        for head, tracks in self._by_head.items():
            for k in tracks:
                segms = self._segms[k]
                first = next((t for t, s in enumerate(segms) if s), -1)
                last = len(segms) - 1 - next((t for t, s in enumerate(reversed(segms)) if s), 0)
                key = (head, first, last, _mask_key(segms[last]) if segms else None)
                try:
                    out.add(hash(key))
                except TypeError:  # an unhashable mask: not compared
                    pass
        return out

    def first_of(self, k: int, vid: Any, cat: Any, segms: list) -> int | None:
        """The first earlier track equal to track ``k``, or None (registers ``k``)."""
        first = next(filter(None, segms), None)
        try:
            head = (vid, cat, len(segms), _mask_key(first))
            earlier = self._by_head.setdefault(head, [])
        except TypeError:  # unhashable first mask: not compared
            return None
        self._segms[k] = segms
        if earlier:
            key = self._full_key(k)
            if key is None:
                return None
            for j in earlier:
                if self._full_key(j) == key:  # same head: same video and category
                    return j
        earlier.append(k)
        return None


def check_results(
    results: list,
    videos: dict[int, tuple[int, int, int]],
    cat_ids: set[int] | None,
    err: Callable[[str], None],
    warn: Callable[[str], None],
    max_dets: int = 100,
    duplicate_keys: set | None = None,
) -> list[int]:
    """The per-result checks shared by ``vis_eval.validate`` and ``vis_eval.evaluate``.

    ``videos``: ``{video_id: (length, height, width)}``; ``cat_ids``: the dataset category ids (None:
    unknown). Reports through ``err`` / ``warn`` each problem once: not an object, missing fields, an
    unknown video or category, a score that is not a finite number, ``segmentations`` not a list or
    not one entry per frame, duplicate tracks (same video, category and masks). Returns the indices of
    the results whose ``video_id`` and ``segmentations`` list are usable for per-frame checks.
    ``duplicate_keys``: receives hashes of keys of the tracks compared by the duplicate check (two
    lists with no common hash hold no duplicate of each other's tracks).
    """
    usable: list[int] = []
    per_bucket: Counter = Counter()
    seen_videos: set = set()
    empty_tracks: list[int] = []
    duplicates = _Duplicates()
    unknown_cats: dict = {}
    required = ("video_id", "category_id", "score", "segmentations")
    required_set = frozenset(required)
    for k, r in enumerate(results):
        # messages are formatted only for the results that have a problem (the loop is hot)
        if type(r) is not dict and not isinstance(r, dict):
            err(f"result #{k}: not an object")
            continue
        if not r.keys() >= required_set:
            err(f"result #{k}: missing {', '.join(key for key in required if key not in r)}")
            continue
        vid, cat, score, segms = r["video_id"], r["category_id"], r["score"], r["segmentations"]
        if not (type(vid) is int or _is_int(vid)) or vid not in videos:
            err(f"result #{k}: unknown video_id {vid!r}")
            continue
        seen_videos.add(vid)
        cat_is_int = type(cat) is int or _is_int(cat)
        if not cat_is_int:
            err(f"result #{k} (video {vid}): category_id {cat!r} is not an integer")
        elif cat_ids is not None and cat not in cat_ids:
            unknown_cats.setdefault(cat, f"result #{k} (video {vid})")
        if not (type(score) is float and math.isfinite(score)) and (
            isinstance(score, bool) or not isinstance(score, numbers.Real) or not math.isfinite(score)
        ):
            err(f"result #{k} (video {vid}): score {score!r} is not a finite number")
        per_bucket[vid, cat if cat_is_int else None] += 1
        length = videos[vid][0]
        if type(segms) is not list and not isinstance(segms, list):
            err(f"result #{k} (video {vid}): 'segmentations' must be a list with one entry per frame")
            continue
        usable.append(k)
        if len(segms) != length:
            err(
                f"result #{k} (video {vid}): 'segmentations' has {len(segms)} entries, "
                f"the video has {length} frames"
            )
        if segms.count(None) == len(segms):
            empty_tracks.append(k)
            continue
        j = duplicates.first_of(k, vid, cat, segms)
        if j is not None:
            err(f"result #{k} (video {vid}): duplicate of result #{j} (same video, category and masks)")
    if unknown_cats:
        ids = sorted(unknown_cats)
        hint = _contiguous_hint(set(ids), cat_ids or set())
        err(
            f"category_id {', '.join(map(str, ids[:10]))} not in the ground truth's categories "
            f"(first at {unknown_cats[ids[0]]}){hint}"
        )
    if empty_tracks:
        warn(f"{len(empty_tracks)} results have every frame null (e.g. result #{empty_tracks[0]})")
    for (vid, cat), n in per_bucket.items():
        if n > max_dets:
            warn(f"video {vid}, category {cat}: {n} tracks; only the {max_dets} best-scored are evaluated")
    if duplicate_keys is not None:
        duplicate_keys.update(duplicates.key_hashes())
    missing_videos = sorted(set(videos) - seen_videos)
    if missing_videos and results:
        warn(f"{len(missing_videos)} of {len(videos)} videos have no results (e.g. {missing_videos[:5]})")
    return usable


def _bad_run_totals(counts: list[str | bytes], pixels: list[int]) -> list[int]:
    """Indices of compressed RLE ``counts`` strings that do not decode to runs totalling ``pixels``."""
    _, total, ok = run_sums(counts)
    return np.flatnonzero(~ok | (total != np.asarray(pixels, np.int64).reshape(-1))).tolist()


def malformed_masks(results: list, max_messages: int = 20) -> tuple[list[str], int]:
    """Result masks whose RLE runs do not cover exactly the ``H x W`` pixels of their own ``size``.

    pycocotools does not check this: comparing such a mask with another one loops forever or reads
    out of bounds, in the official evaluation code as in ours, so the evaluation command runs this
    check first. Polygons are not checked. Returns (messages, number of bad masks).
    """
    where: list[tuple[int, int]] = []  # (result, frame) of each compressed RLE string
    strings: list[str | bytes] = []
    pixels: list[int] = []
    msgs: list[str] = []
    n_bad = 0
    for k, r in enumerate(results):
        segms = r.get("segmentations") if isinstance(r, dict) else None
        for t, s in enumerate(segms if isinstance(segms, list) else []):
            if not isinstance(s, dict):
                continue
            size, counts = s.get("size"), s.get("counts")
            if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(x) for x in size)):
                n_bad += 1
                msgs.append(f"result #{k}, frame {t}: RLE size {size!r} is not [H, W]")
            elif isinstance(counts, (str, bytes)):
                where.append((k, t))
                strings.append(counts)
                pixels.append(int(size[0]) * int(size[1]))
            elif isinstance(counts, list):
                total = sum(counts) if all(_is_int(x) and x >= 0 for x in counts) else None
                if total != int(size[0]) * int(size[1]):
                    n_bad += 1
                    msgs.append(
                        f"result #{k}, frame {t}: RLE runs do not cover its {size[0]} x {size[1]} pixels"
                    )
    for j in _bad_run_totals(strings, pixels):
        n_bad += 1
        k, t = where[j]
        msgs.append(f"result #{k}, frame {t}: RLE counts do not decode to a mask of their stated size")
    return msgs[:max_messages], n_bad
