"""Sound-source localisation metrics (numpy only), computed as the reference evaluators do.

- cIoU and AUC, the VGG-SS / Flickr-SoundNet protocol of the localisation literature: the
  evaluators of LVS (Chen et al. 2021, hche11/Localizing-Visual-Sounds-the-Hard-Way, test.py
  and utils.py), EZ-VSL (stoneMo/EZ-VSL, test.py and utils.py) and SLAVC (stoneMo/SLAVC,
  utils.py). The heatmap is min-max normalised and cut at its median: the pixels at or above
  the value at sorted index N // 2 are the prediction (EZ-VSL's and SLAVC's `relative_prediction`
  rule: `infer >= thr`; LVS's test.py keeps only the pixels strictly above it, which differs
  only when pixels tie with the median). cIoU = |pred ∩ gt| / (|gt| + |pred \\ gt|); the
  reported "cIoU" is the share of clips with cIoU >= 0.5 and "AUC" the area under the share
  with cIoU >= t over t = 0, 0.05, ..., 1 (sklearn.metrics.auc, the trapezoid rule).
- pixel AP and IoU as DenseAV reports them (mhamilton723/DenseAV, denseav/eval_utils.py,
  get_paired_heatmaps; averaged in train.py's semseg_validation): the heatmaps of all images
  prompted with one class are pooled pixel by pixel, torchmetrics' binary_average_precision and
  `multi_iou` (the best IoU over 20 thresholds evenly spaced from the pooled minimum to the
  maximum, pixels strictly above) are taken over that pool, and the per-class values averaged.
  DenseAV's released evaluation has no cIoU: its localisation numbers are these two.
- `upsample_heatmap`: DenseAV's prep_heatmap brings a patch-grid heatmap to the image's pixels
  with F.interpolate(mode="bilinear") (align_corners=False).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from assets.core.average_precision import average_precision

AUC_THRESHOLDS = [0.05 * i for i in range(21)]  # the evaluators' list, float rounding included
DENSEAV_IOU_THRESHOLDS = 20  # multi_iou's k


def _pair(heatmap, gt_mask) -> tuple[np.ndarray, np.ndarray]:
    heatmap, gt_mask = np.asarray(heatmap, np.float64), np.asarray(gt_mask)
    if heatmap.shape != gt_mask.shape:
        raise ValueError(f"heatmap {heatmap.shape} and ground truth {gt_mask.shape} differ in shape")
    return heatmap, gt_mask


def _min_max(heatmap: np.ndarray) -> np.ndarray:
    """(h - min) / (max - min), or h unchanged when it is constant (the evaluators' normalize_img)."""
    low, high = heatmap.min(), heatmap.max()
    return heatmap if high == low else (heatmap - low) / (high - low)


def ciou(heatmap, gt_mask, threshold: float | None = None) -> float:
    """The consensus IoU of one heatmap against its ground truth (same shape).

    threshold None: the median rule of the module docstring (the VGG-SS protocol); a number:
    the pixels of the min-max normalised heatmap at or above it. gt_mask is boolean, or weights
    in [0, 1] as Flickr-SoundNet's consensus map. A frame without a sounding object has no cIoU
    (the evaluators leave such frames out), so an empty ground truth is an error.
    """
    heatmap, gt = _pair(heatmap, gt_mask)
    gt = gt.astype(np.float64)
    if gt.sum() == 0:
        raise ValueError("cIoU needs a ground truth with at least one pixel")
    scores = _min_max(heatmap)
    if threshold is None:
        threshold = np.sort(scores, axis=None)[scores.size // 2]
    pred = scores >= threshold
    return float((pred * gt).sum() / (gt.sum() + (pred * (gt == 0)).sum()))


def localisation_summary(cious: Sequence[float]) -> dict[str, float]:
    """{"cIoU": share of clips with cIoU >= 0.5, "AUC": area under the success-rate curve}."""
    cious = np.asarray(cious, np.float64)
    if cious.size == 0:
        raise ValueError("no cIoU values to summarise")
    x = np.asarray(AUC_THRESHOLDS)
    success = np.array([np.mean(cious >= t) for t in AUC_THRESHOLDS])
    return {"cIoU": float(np.mean(cious >= 0.5)), "AUC": float(np.sum(np.diff(x) * (success[1:] + success[:-1]) / 2))}


def pixel_average_precision(heatmap, gt_mask) -> float:
    """Average precision of the heatmap's pixels as scores for the mask's pixels
    (`assets.core.average_precision`)."""
    heatmap, gt = _pair(heatmap, gt_mask)
    if not gt.any():
        raise ValueError("average precision needs at least one positive pixel")
    return average_precision(heatmap, gt)


def best_threshold_iou(heatmap, gt_mask, thresholds: int = DENSEAV_IOU_THRESHOLDS) -> float:
    """DenseAV's multi_iou: the best IoU of (heatmap > t) against the mask over `thresholds`
    values of t evenly spaced from the heatmap's minimum to its maximum; an empty union counts 0."""
    heatmap, gt = _pair(heatmap, gt_mask)
    target = gt > 0.5
    best = 0.0
    for t in np.linspace(heatmap.min(), heatmap.max(), thresholds):
        pred = heatmap > t
        union = np.logical_or(pred, target).sum()
        best = max(best, np.logical_and(pred, target).sum() / max(union, 1))
    return float(best)


def _per_class_mean(metric: Callable, heatmaps: Sequence, gt_masks: Sequence, classes: Sequence) -> float:
    """DenseAV's pooling: the metric over all pixels of the images of each class, then the mean over classes."""
    classes = np.asarray(classes)
    if not len(heatmaps) == len(gt_masks) == len(classes):
        raise ValueError(f"{len(heatmaps)} heatmaps, {len(gt_masks)} masks and {len(classes)} classes")
    per_class = []
    for cls in np.unique(classes):
        members = np.flatnonzero(classes == cls)
        per_class.append(metric(np.concatenate([np.ravel(heatmaps[i]) for i in members]),
                                np.concatenate([np.ravel(gt_masks[i]) for i in members])))
    return float(np.mean(per_class))


def mean_pixel_ap(heatmaps: Sequence, gt_masks: Sequence, classes: Sequence) -> float:
    """DenseAV's mAP: pixel_average_precision over the pooled pixels of each class's images, averaged
    over classes. Pooling ranks pixels of different images against each other, so the heatmaps must
    share one scale: raw model scores, or all shifted and scaled alike (DenseAV's prep_heatmap
    normalises by the minimum and maximum of the whole evaluation batch), never one by one."""
    return _per_class_mean(pixel_average_precision, heatmaps, gt_masks, classes)


def mean_best_iou(heatmaps: Sequence, gt_masks: Sequence, classes: Sequence) -> float:
    """DenseAV's mIoU: best_threshold_iou over the pooled pixels of each class's images, averaged over classes."""
    return _per_class_mean(best_threshold_iou, heatmaps, gt_masks, classes)


def _source_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index: the two input indices and the weight of the second, as PyTorch's linear
    upsampling with align_corners=False (source = (i + 0.5) * in / out - 0.5, clamped at 0)."""
    source = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    first = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    second = np.minimum(first + 1, in_size - 1)
    return first, second, source - first


def upsample_heatmap(heatmap, size: int | tuple[int, int]) -> np.ndarray:
    """(gh, gw) patch heatmap -> (H, W) float64 by bilinear interpolation, as
    F.interpolate(mode="bilinear", align_corners=False) computes it (there in float32).
    Row 0 is the image's top and column 0 its left: a ViT's patch tokens reshaped row-major."""
    heatmap = np.asarray(heatmap, np.float64)
    out_h, out_w = (size, size) if isinstance(size, int) else size
    y0, y1, wy = _source_taps(out_h, heatmap.shape[0])
    x0, x1, wx = _source_taps(out_w, heatmap.shape[1])
    rows = heatmap[y0] * (1 - wy)[:, None] + heatmap[y1] * wy[:, None]  # (H, gw)
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx
