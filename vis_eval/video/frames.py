"""Frame sources: BGR uint8 (H, W, 3) frames read lazily from images, folders, video files or a webcam."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "FrameSource", "iter_frames"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
FrameSource = str | Path | int | Iterable[Any]


def _read_image(path: str | Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"frame not found: {path}")
        raise ValueError(f"cannot decode image {path}")
    return image


def _check_frame(frame: Any, index: int) -> np.ndarray:
    if isinstance(frame, str | Path):
        return _read_image(frame)
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        desc = f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray) else type(frame)
        raise ValueError(f"frame {index}: expected a path or a uint8 (H, W, 3) BGR array, got {desc}")
    return frame


def _iter_capture(capture: cv2.VideoCapture, name: str, require_frames: bool) -> Iterator[np.ndarray]:
    if not capture.isOpened():
        raise OSError(f"cannot open video source {name}")
    try:
        count = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            yield frame
        if require_frames and count == 0:
            raise ValueError(f"video {name} has no readable frames")
    finally:
        capture.release()


def iter_frames(source: FrameSource) -> Iterator[np.ndarray]:
    """Lazily yield BGR uint8 (H, W, 3) frames from ``source``.

    ``source`` is one of: a folder (its images, sorted by name); a video file; an image file (one
    frame); an int or a digit string (webcam index, read until the stream ends); or an iterable of
    BGR uint8 (H, W, 3) arrays and/or image paths (a list, a generator, ...).
    """
    if isinstance(source, bool):
        raise TypeError("frame source must not be a bool")
    if isinstance(source, int) or (
        isinstance(source, str) and source.isdigit() and not Path(source).exists()
    ):
        yield from _iter_capture(cv2.VideoCapture(int(source)), f"webcam {source}", require_frames=False)
        return
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}")
            for file in files:
                yield _read_image(file)
            return
        if not path.is_file():
            raise FileNotFoundError(f"frame source not found: {path}")
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            yield _read_image(path)
            return
        yield from _iter_capture(cv2.VideoCapture(str(path)), str(path), require_frames=True)
        return
    if isinstance(source, np.ndarray) and source.ndim != 4:
        raise ValueError(f"an array source must be (T, H, W, 3), got shape {source.shape}")
    if not isinstance(source, Iterable):
        raise TypeError(f"unsupported frame source {type(source).__name__}")
    for index, frame in enumerate(source):
        yield _check_frame(frame, index)
