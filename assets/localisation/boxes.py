"""Ground-truth boxes in the frame cache's pixels, and as pixel masks (plain numpy, no Dagster).

The frame cache stores every frame as open_clip's eval transform leaves it: Resize(size,
bicubic) of the short side (the long side to int(size * long / short)), then CenterCrop(size)
at int(round((new - size) / 2)) (assets.caches.video_frames). A source box goes through the
same arithmetic: both axes scale by new / old, the crop offset is subtracted, and what leaves
the crop is cut off. Pillow samples output pixel i at source coordinate (i + 0.5) * old / new,
so the continuous map x -> x * new / old is the one its pixels follow.
"""

from __future__ import annotations

import math

import numpy as np

from assets.caches.video_frames import FrameParams, _geometry

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) in pixels, x1 and y1 exclusive


def box_in_crop(box: Box, source_size: tuple[int, int], params_or_crop_size: FrameParams | int) -> Box | None:
    """A box in source pixels -> the same box in the cached (crop_size, crop_size) frame's pixels,
    clipped to the crop; None when nothing of it is left in the crop.

    source_size is (width, height), as the frame cache's source_width / source_height.
    """
    size = params_or_crop_size.size if isinstance(params_or_crop_size, FrameParams) else int(params_or_crop_size)
    width, height = source_size
    new_w, new_h, left, top = _geometry(width, height, size)
    x0, y0, x1, y1 = box
    sx, sy = new_w / width, new_h / height
    x0, x1 = max(x0 * sx - left, 0.0), min(x1 * sx - left, float(size))
    y0, y1 = max(y0 * sy - top, 0.0), min(y1 * sy - top, float(size))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def box_mask(box: Box, size: int) -> np.ndarray:
    """(size, size) bool mask of the pixels whose centre lies in the box (x0 <= i + 0.5 < x1):
    for an integer box exactly rows y0..y1-1 and columns x0..x1-1, as the VGG-SS and Flickr
    evaluators fill their ground-truth maps (gt[y0:y1, x0:x1] = 1)."""
    x0, y0, x1, y1 = (min(max(math.ceil(v - 0.5), 0), size) for v in box)
    mask = np.zeros((size, size), bool)
    mask[y0:y1, x0:x1] = True
    return mask
