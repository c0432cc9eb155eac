"""The one shape renderer behind both synthetic datasets (COCO-format images, YouTube-VIS videos).

A scene is a textured background with unannotated distractors, on which annotated shapes are
painted in order: later shapes occlude earlier ones. Every annotated shape is a polygon, so its
visible mask is exact and can always be written back as polygons (scenes whose occlusions would
punch a hole into a visible region are avoided by :func:`creates_hole`, since COCO polygons
cannot express holes).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CLASS_NAMES: tuple[str, ...] = ("circle", "triangle", "square")
# One colour family per class (RGB); instances jitter around it.
CLASS_COLORS: tuple[tuple[int, int, int], ...] = ((220, 60, 50), (60, 190, 70), (50, 90, 220))
_COLOR_JITTER = 35
# Vertices of each class's polygon on its circumcircle.
_NUM_VERTICES: dict[str, int] = {"circle": 32, "triangle": 3, "square": 4}


@dataclass(frozen=True)
class Shape:
    """An annotated shape. ``size`` is the circumradius in pixels, ``angle`` in radians."""

    category: int
    cx: float
    cy: float
    size: float
    angle: float
    color: tuple[int, int, int]

    def moved(self, dx: float = 0.0, dy: float = 0.0, scale: float = 1.0, rotate: float = 0.0) -> Shape:
        return Shape(
            self.category, self.cx + dx, self.cy + dy, self.size * scale, self.angle + rotate, self.color
        )


def shape_polygon(shape: Shape) -> np.ndarray:
    """Vertices (P, 2) as float (x, y) pixel coordinates, counter-clockwise."""
    num = _NUM_VERTICES[CLASS_NAMES[shape.category]]
    theta = shape.angle + np.arange(num) * (2 * np.pi / num)
    return np.stack([shape.cx + shape.size * np.cos(theta), shape.cy + shape.size * np.sin(theta)], axis=1)


def random_shape(
    rng: np.random.Generator, height: int, width: int, min_size: float, max_size: float
) -> Shape:
    """A shape of a random class whose extent (about twice ``size``) lies in [min_size, max_size] px.

    The centre may lie near the border, so shapes can be partly outside the image.
    """
    category = int(rng.integers(len(CLASS_NAMES)))
    # log-uniform extent: as many small as large objects
    extent = float(np.exp(rng.uniform(np.log(min_size), np.log(max_size))))
    base = np.array(CLASS_COLORS[category])
    color = np.clip(base + rng.integers(-_COLOR_JITTER, _COLOR_JITTER + 1, size=3), 0, 255)
    return Shape(
        category=category,
        cx=float(rng.uniform(0.05 * width, 0.95 * width)),
        cy=float(rng.uniform(0.05 * height, 0.95 * height)),
        size=extent / 2,
        angle=float(rng.uniform(0, 2 * np.pi)),
        color=(int(color[0]), int(color[1]), int(color[2])),
    )


def render_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, 3) RGB: a noisy colour gradient with unannotated distractor strokes and blobs."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    corners = rng.uniform(60, 200, size=(2, 2, 3)).astype(np.float32)
    fy, fx = (ys / max(height - 1, 1))[..., None], (xs / max(width - 1, 1))[..., None]
    top = corners[0, 0] * (1 - fx) + corners[0, 1] * fx
    bottom = corners[1, 0] * (1 - fx) + corners[1, 1] * fx
    image = top * (1 - fy) + bottom * fy
    image += rng.normal(0, 8, size=image.shape).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    # Distractors: muted ellipses and line segments that belong to no class.
    for _ in range(int(rng.integers(1, 5))):
        color = tuple(int(c) for c in rng.integers(70, 180, size=3))
        center = (int(rng.integers(width)), int(rng.integers(height)))
        if rng.random() < 0.5:
            axes = (int(rng.integers(3, max(4, width // 6))), int(rng.integers(2, max(3, height // 12))))
            cv2.ellipse(image, center, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
        else:
            end = (int(rng.integers(width)), int(rng.integers(height)))
            cv2.line(image, center, end, color, int(rng.integers(1, 4)))
    return image


def rasterize(shape: Shape, height: int, width: int) -> np.ndarray:
    """bool (H, W) mask of the whole shape (ignoring occlusion), clipped to the image."""
    mask = np.zeros((height, width), dtype=np.uint8)
    # 4 fractional bits give sub-pixel vertex placement.
    pts = np.round(shape_polygon(shape) * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def visible_masks(full_masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool full masks in paint order -> (N, H, W) visible parts (later ones on top)."""
    if len(full_masks) == 0:
        return full_masks.copy()
    # covered_by_later[i] = OR of masks i+1..N-1
    later = np.logical_or.accumulate(full_masks[::-1], axis=0)[::-1]
    covered = np.concatenate([later[1:], np.zeros_like(full_masks[:1])], axis=0)
    return full_masks & ~covered


def paint(image: np.ndarray, shapes: list[Shape]) -> list[np.ndarray]:
    """Paint ``shapes`` in order onto ``image`` (in place); return each one's visible bool mask."""
    height, width = image.shape[:2]
    full = (
        np.stack([rasterize(s, height, width) for s in shapes])
        if shapes
        else np.zeros((0, height, width), bool)
    )
    for shape, mask in zip(shapes, full):
        image[mask] = shape.color
    return list(visible_masks(full))


def creates_hole(mask: np.ndarray) -> bool:
    """True if the visible region has a hole (not expressible as COCO polygons)."""
    if not mask.any():
        return False
    _, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    # hierarchy[0, i, 3] >= 0 marks a contour nested in another one: a hole
    return hierarchy is not None and bool((hierarchy[0, :, 3] >= 0).any())


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of a hole-free bool mask as COCO polygons ``[[x0, y0, x1, y1, ...], ...]``.

    Vertices run through the centres of the boundary pixels, in Detectron2's continuous coordinates
    (pixel (i, j) has its centre at (j + 0.5, i + 0.5)). Parts of fewer than 3 vertices are dropped.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        if len(contour) < 3:
            continue
        polygons.append((contour.reshape(-1, 2).astype(np.float64) + 0.5).reshape(-1).round(2).tolist())
    return polygons


def mask_bbox(mask: np.ndarray) -> list[float]:
    """COCO ``[x, y, w, h]`` of a non-empty bool mask, in pixel-boundary coordinates."""
    ys, xs = np.nonzero(mask)
    x0, y0 = float(xs.min()), float(ys.min())
    return [x0, y0, float(xs.max()) + 1 - x0, float(ys.max()) + 1 - y0]
