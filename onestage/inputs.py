"""What the models and the predictor accept, checked once for every method.

* :func:`read_image_bgr`: an image file as the H x W x 3 uint8 BGR array ``DefaultPredictor`` expects,
  read like Detectron2's ``read_image`` (EXIF orientation, grayscale / RGBA / palette converted) and
  16-bit images scaled to 8 bits instead of clipped to white.
* :func:`check_image_array`: the array given to a predictor is H x W x 3 uint8 with H, W > 0, or one
  line says what it is and how to convert it.
* :func:`normalize_images`: the dense models' pre-processing (normalise, optional fixed-size resize,
  pad, batch), which checks the result with :func:`check_finite_images`.
* :func:`check_finite_images`: called where our models first see the normalised image tensor (SipMask's
  ``preprocess_image``, the FCOS proposal generator of CenterMask), so that a NaN / inf image is an
  error instead of zero detections.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data.detection_utils import read_image
from detectron2.structures import ImageList
from detectron2.utils.file_io import PathManager
from PIL import Image

__all__ = [
    "CONVERT_HINT",
    "check_finite_images",
    "check_image_array",
    "normalize_images",
    "read_image_bgr",
]

# The one line that makes a grayscale (H, W) or RGBA / BGRA (H, W, 4) array what the predictor expects.
CONVERT_HINT = (
    "convert with cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) for (H, W) grayscale or "
    "cv2.cvtColor(image, cv2.COLOR_BGRA2BGR) for (H, W, 4)"
)
# PIL modes of more than 8 bits per sample (16-bit PNG / TIFF grayscale, 32-bit integer, float).
_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def read_image_bgr(path: str) -> np.ndarray:
    """``path`` as an H x W x 3 uint8 BGR array; 16-bit / 32-bit images are scaled from their full
    range (``value / 257`` for 16 bits) to 8 bits. Raises ``ValueError`` (one line) when the file is
    missing or not an image."""
    try:
        with PathManager.open(path, "rb") as f:
            mode = Image.open(f).mode
        if mode not in _HIGH_DEPTH_MODES:
            return read_image(path, format="BGR")
        array = np.asarray(read_image(path, format=None)).astype(np.float64)
    except Exception as e:  # missing file, not an image, truncated, ...
        reason = (str(e).strip() or type(e).__name__).splitlines()[0]
        raise ValueError(f"cannot read image {path}: {reason}") from e
    if mode == "F":
        scale = 255.0 if array.size and array.max() <= 1.0 else 1.0
    else:  # 16-bit data, also when PIL widens it to 32-bit mode "I"
        scale = 255.0 / 65535.0 if array.size and array.max() <= 65535 else 255.0 / max(array.max(), 1.0)
    gray = np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)
    if gray.ndim == 3:
        gray = gray[..., 0]
    return np.repeat(gray[:, :, None], 3, axis=2)


def check_image_array(image: object) -> np.ndarray:
    """``image`` if it is an H x W x 3 uint8 array with H, W > 0; otherwise ``ValueError``, one line
    saying what it is (and how to convert grayscale / RGBA)."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected an H x W x 3 uint8 BGR numpy array, got {type(image).__name__}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 4)):
        raise ValueError(f"expected an H x W x 3 uint8 BGR array, got shape {image.shape}: {CONVERT_HINT}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 BGR array, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"the image is empty: shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(
            f"expected a uint8 BGR array (0-255), got {image.dtype}: scale and convert, e.g. "
            "np.clip(image * 255, 0, 255).astype(np.uint8) for floats in [0, 1]"
        )
    return image


def check_finite_images(images: torch.Tensor, model: str) -> None:
    """Raise ``ValueError`` if the normalised image batch ``images`` holds NaN or infinite values
    (a float image with NaN, ``MODEL.PIXEL_STD`` with a 0, ...): ``model`` would otherwise predict
    nothing, silently."""
    if not bool(torch.isfinite(images).all()):
        bad = int((~torch.isfinite(images)).sum())
        raise ValueError(
            f"{model}: the input image holds {bad} NaN / infinite values after normalisation "
            f"(of {images.numel()}); give finite pixel values (uint8 BGR 0-255) and a MODEL.PIXEL_STD "
            "without 0"
        )


def normalize_images(
    images: list[torch.Tensor],
    pixel_mean: torch.Tensor,
    pixel_std: torch.Tensor,
    size_divisibility: int,
    fixed_size: tuple[int, int] | None,
    model: str,
) -> ImageList:
    """(C, H, W) images -> an ``ImageList`` on ``pixel_mean``'s device: each resized to ``fixed_size``
    (H, W) ignoring its aspect ratio (bilinear) when given and different, normalised with
    ``pixel_mean`` / ``pixel_std`` (C, 1, 1), zero-padded (after normalisation) to a multiple of
    ``size_divisibility``. A wrong shape or a non-finite result raises ``ValueError`` naming ``model``."""
    out = []
    for img in images:
        img = img.to(pixel_mean.device).float()
        if img.dim() != 3 or img.shape[0] != pixel_mean.shape[0]:
            raise ValueError(
                f"expected a (C, H, W) image with {pixel_mean.shape[0]} channels, got {tuple(img.shape)}"
            )
        if fixed_size is not None and tuple(img.shape[-2:]) != tuple(fixed_size):
            img = F.interpolate(img[None], size=tuple(fixed_size), mode="bilinear", align_corners=False)[0]
        out.append((img - pixel_mean) / pixel_std)
    batch = ImageList.from_tensors(out, size_divisibility)
    check_finite_images(batch.tensor, model)
    return batch
