"""A PNG grid of audio-prompted heatmaps over their frames, for a person to look at in the UI.

One row per (audio, frame) pair; columns: the frame, then each map laid over it (DenseAV's
heads, then their combination; or the global baseline's one map), upsampled bilinearly to the
frame (`assets.localisation.metrics.upsample_heatmap`) and min-max scaled per map, with the
ground-truth box (SynthAV) drawn when there is one. Row 0 of a map is the frame's top.
"""

from __future__ import annotations

import numpy as np

from assets.core.plots import figure_png, subplots
from assets.localisation.metrics import upsample_heatmap


def heatmap_grid_png(frames: np.ndarray, maps: np.ndarray, titles: list[str], row_labels: list[str],
                     boxes: list | None = None) -> bytes:
    """frames (N, S, S, 3) uint8, maps (N, M, h, w), M column titles, N row labels, boxes: per row
    [x0, y0, x1, y1] in frame pixels or None."""
    n, m = maps.shape[:2]
    if len(titles) != m or len(row_labels) != n or len(frames) != n:
        raise ValueError(f"{n} rows x {m} maps need {n} frames, {m} titles and {n} labels")
    fig, axes = subplots(n, m + 1, figsize=(1.6 * (m + 1), 1.6 * n), squeeze=False)
    size = frames.shape[1:3]
    for i in range(n):
        axes[i, 0].imshow(frames[i])
        axes[i, 0].set_ylabel(row_labels[i], fontsize=6)
        for j in range(m):
            up = upsample_heatmap(maps[i, j], size)
            span = float(up.max() - up.min())
            scaled = (up - up.min()) / span if span > 0 else np.zeros_like(up)
            axes[i, j + 1].imshow(frames[i])
            axes[i, j + 1].imshow(scaled, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        for j in range(m + 1):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            box = None if boxes is None else boxes[i]
            if box is not None:
                x0, y0, x1, y1 = box
                ax.add_patch(_rectangle(x0, y0, x1, y1))
    for j, title in enumerate(["frame", *titles]):
        axes[0, j].set_title(title, fontsize=7)
    return figure_png(fig)


def _rectangle(x0, y0, x1, y1):
    from matplotlib.patches import Rectangle
    return Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=0.8)
