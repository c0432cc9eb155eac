"""Batched mask pasting: low-resolution soft masks resampled (bilinear) into image-sized bit masks.

Bilinear resampling is separable: a mask's resampled window is ``R_y @ mask @ R_x^T``, with ``R_y``,
``R_x`` the interpolation matrices (two non-zero weights per row) of the output rows / columns. Each
mask is resampled only on the window of output pixels that its non-zero samples reach; masks are
processed in chunks of similar window sizes, padded to the chunk's largest window, with two batched
matrix products per chunk, on CPU and GPU alike. The results equal those of the per-mask reference
up to float rounding (about 1e-7 of the soft value: a pixel can only flip where its soft value is
that close to the threshold).

* :func:`paste_masks_in_image`: Detectron2's ``paste_masks_in_image`` (RoI masks stretched over their
  boxes as ``grid_sample(align_corners=False)`` with zero padding does), which pastes one mask at a
  time on CPU; :class:`BatchPastedROIMasks` makes Detectron2's ``detector_postprocess`` use it.
* :func:`upsample_windows_into`: ``F.interpolate(mode="bilinear", align_corners=False)`` of image-grid
  masks that are zero outside a window, thresholded and pasted top-left into the output canvas
  (SipMask).
"""

from __future__ import annotations

import torch
from detectron2.structures import BitMasks, Boxes, ROIMasks
from torch import Tensor

__all__ = [
    "BatchPastedROIMasks",
    "bilinear_source_index",
    "paste_masks_in_image",
    "paste_windows",
    "upsample_windows_into",
    "window_chunks",
]

# elements of one chunk's padded windows (bounds the temporaries to a few hundred MiB)
_CHUNK_ELEMENTS = 1 << 24


def window_chunks(areas: Tensor, budget: int = _CHUNK_ELEMENTS) -> list[Tensor]:
    """Indices of the windows grouped by increasing area, each group padded to its largest window
    holding at most ``budget`` elements (or one window)."""
    order = areas.argsort()
    sizes = areas[order].clamp(min=1).tolist()
    chunks, start = [], 0
    while start < len(sizes):
        end = start + 1
        while end < len(sizes) and sizes[end] * (end + 1 - start) <= budget:
            end += 1
        chunks.append(order[start:end])
        start = end
    return chunks


def _interp_weights(src: Tensor, size: int, clamp: bool, start: Tensor, length: int) -> Tensor:
    """(c, L) source coordinates (pixels) on an axis of ``size`` pixels -> (c, L, length) bilinear
    weights of the source pixels ``[start, start + length)`` (``start``: (c,)). Taps outside the axis
    are dropped (``grid_sample`` zero padding) or, with ``clamp``, the upper tap is clamped to the last
    pixel (``F.interpolate``); taps outside the window are dropped (the source is zero there)."""
    lo = src.floor()
    frac = (src - lo)[..., None]
    lo = lo.long()
    hi = (lo + 1).clamp(max=size - 1) if clamp else lo + 1
    idx = start[:, None, None] + torch.arange(length, device=src.device)
    return (idx == lo[..., None]) * (1 - frac) + (idx == hi[..., None]) * frac


def paste_windows(out: Tensor, idx: Tensor, crops: Tensor, windows: Tensor) -> None:
    """``out[i, y0:y1, x0:x1] = crops[k, :y1 - y0, :x1 - x0]`` for the k-th index i of ``idx`` and its
    ``windows[k] = (x0, y0, x1, y1)`` (one slice copy per window: the windows differ in size)."""
    for k, (i, (x0, y0, x1, y1)) in enumerate(zip(idx.tolist(), windows.tolist())):
        if x1 > x0 and y1 > y0:
            out[i, y0:y1, x0:x1] = crops[k, : y1 - y0, : x1 - x0]


def paste_masks_in_image(
    masks: Tensor, boxes: Tensor | Boxes, image_shape: tuple[int, int], threshold: float = 0.5
) -> Tensor:
    """Detectron2's ``paste_masks_in_image`` (with a threshold >= 0), batched.

    Each (M, M) mask is stretched over its box (continuous coordinates, pixel centres at ``+ 0.5``,
    bilinear with zero padding, ``align_corners=False``) and binarised with ``>= threshold`` on the
    pixels from ``floor(x0) - 1`` to ``ceil(x1) + 1`` (clipped to the image), as Detectron2 on CPU.

    Args:
        masks: (N, M, M) soft masks in [0, 1].
        boxes: (N, 4) ``(x0, y0, x1, y1)`` in output-image pixels.
        image_shape: (H, W) of the output.

    Returns:
        (N, H, W) bool.
    """
    if isinstance(boxes, Boxes):
        boxes = boxes.tensor
    if threshold < 0:
        raise ValueError("paste_masks_in_image: only thresholded (bool) pastes are supported")
    img_h, img_w = int(image_shape[0]), int(image_shape[1])
    n, mh, mw = masks.shape
    out = torch.zeros((n, img_h, img_w), dtype=torch.bool, device=masks.device)
    if n == 0:
        return out
    masks = masks if masks.dtype.is_floating_point else masks.float()
    boxes = boxes.to(device=masks.device, dtype=torch.float32)
    window = torch.stack(
        [
            (boxes[:, 0].floor() - 1).clamp(min=0),
            (boxes[:, 1].floor() - 1).clamp(min=0),
            (boxes[:, 2].ceil() + 1).clamp(max=img_w),
            (boxes[:, 3].ceil() + 1).clamp(max=img_h),
        ],
        dim=1,
    ).long()
    heights = (window[:, 3] - window[:, 1]).clamp(min=0)
    widths = (window[:, 2] - window[:, 0]).clamp(min=0)
    zero = torch.zeros(n, dtype=torch.long, device=masks.device)
    for idx in window_chunks(heights * widths):
        hmax, wmax = int(heights[idx].max()), int(widths[idx].max())
        if hmax == 0 or wmax == 0:
            continue
        b = boxes[idx]
        # pixel centres -> grid_sample's normalised coordinates -> their unnormalisation
        ys = window[idx, 1, None] + torch.arange(hmax, device=masks.device) + 0.5
        xs = window[idx, 0, None] + torch.arange(wmax, device=masks.device) + 0.5
        gy = (ys - b[:, 1, None]) / (b[:, 3, None] - b[:, 1, None]) * 2 - 1
        gx = (xs - b[:, 0, None]) / (b[:, 2, None] - b[:, 0, None]) * 2 - 1
        ry = _interp_weights(((gy + 1) * mh - 1) / 2, mh, False, zero[idx], mh).to(masks.dtype)
        rx = _interp_weights(((gx + 1) * mw - 1) / 2, mw, False, zero[idx], mw).to(masks.dtype)
        values = torch.bmm(torch.bmm(ry, masks[idx]), rx.transpose(1, 2))
        paste_windows(out, idx, values >= threshold, window[idx])
    return out


def bilinear_source_index(in_size: int, out_size: int, device: torch.device | str) -> Tensor:
    """``F.interpolate`` bilinear (``align_corners=False``, explicit size) source coordinate of every
    output pixel: ``max((i + 0.5) * in / out - 0.5, 0)`` in float32."""
    dst = torch.arange(out_size, device=device, dtype=torch.float32)
    return ((dst + 0.5) * (in_size / out_size) - 0.5).clamp(min=0)


def upsample_windows_into(
    out: Tensor,
    idx: Tensor,
    crops: Tensor,
    windows: Tensor,
    mask_hw: tuple[int, int],
    size: tuple[int, int],
    threshold: float,
) -> None:
    """``F.interpolate(masks, size, mode="bilinear", align_corners=False) > threshold`` pasted top-left
    into ``out[idx]``, for (h, w) masks that are zero outside a window and given as its crop.

    Args:
        out: (N, H, W) bool canvas, written on the output pixels each window reaches.
        idx: (c,) indices into ``out`` of the masks.
        crops: (c, hh, ww): ``crops[k, :y1 - y0, :x1 - x0]`` is mask k on its window (the rest is
            ignored).
        windows: (c, 4) int64 ``(x0, y0, x1, y1)``: the mask pixels ``[x0, x1) x [y0, y1)`` of the
            (h, w) = ``mask_hw`` grid that may be non-zero, within the grid.
        size: (H', W') the masks are upsampled to; rows / columns beyond ``out`` are dropped.
    """
    c, hh, ww = crops.shape
    h, w = mask_hw
    up_h, up_w = size
    out_h, out_w = out.shape[1:]
    if c == 0 or hh == 0 or ww == 0:
        return
    device = crops.device
    src_y = bilinear_source_index(h, up_h, device)[:out_h]
    src_x = bilinear_source_index(w, up_w, device)[:out_w]
    # the output rows / columns whose lower tap lies in [x0 - 1, x1): their taps can reach the window
    tap_y, tap_x = src_y.floor().long(), src_x.floor().long()
    x0, y0, x1, y1 = (v.contiguous() for v in windows.unbind(dim=1))
    target = torch.stack(
        [
            torch.searchsorted(tap_x, x0 - 1),
            torch.searchsorted(tap_y, y0 - 1),
            torch.searchsorted(tap_x, x1),
            torch.searchsorted(tap_y, y1),
        ],
        dim=1,
    )
    ho = int((target[:, 3] - target[:, 1]).max())
    wo = int((target[:, 2] - target[:, 0]).max())
    if ho <= 0 or wo <= 0:
        return
    rows = (target[:, 1, None] + torch.arange(ho, device=device)).clamp(max=src_y.numel() - 1)
    cols = (target[:, 0, None] + torch.arange(wo, device=device)).clamp(max=src_x.numel() - 1)
    # zero the padding of each crop beyond its own window
    valid_y = torch.arange(hh, device=device) < (windows[:, 3] - windows[:, 1])[:, None]
    valid_x = torch.arange(ww, device=device) < (windows[:, 2] - windows[:, 0])[:, None]
    crops = crops * (valid_y[:, :, None] & valid_x[:, None, :])
    ry = _interp_weights(src_y[rows], h, True, windows[:, 1], hh).to(crops.dtype)
    rx = _interp_weights(src_x[cols], w, True, windows[:, 0], ww).to(crops.dtype)
    values = torch.bmm(torch.bmm(ry, crops), rx.transpose(1, 2))
    paste_windows(out, idx, values > threshold, target)


class BatchPastedROIMasks(ROIMasks):
    """Detectron2's ``ROIMasks`` whose ``to_bitmasks`` (what ``detector_postprocess`` calls) pastes all
    masks at once with :func:`paste_masks_in_image`."""

    def __getitem__(self, item) -> BatchPastedROIMasks:
        return BatchPastedROIMasks(super().__getitem__(item).tensor)

    def to(self, device: torch.device) -> BatchPastedROIMasks:
        return BatchPastedROIMasks(self.tensor.to(device))

    def to_bitmasks(self, boxes: Tensor | Boxes, height, width, threshold: float = 0.5) -> BitMasks:
        return BitMasks(paste_masks_in_image(self.tensor, boxes, (int(height), int(width)), threshold))
