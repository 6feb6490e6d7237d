"""Per-epoch statistics of the positives a batch holds (seed 000's "around 40% of the samples will
encounter at least one false negative at batch size 128").

For each batch, from its (B, B) positive mask (audio rows x image columns, diagonal = own pair):

- `mined_positive_share`: share of the batch's clips with at least one mined positive, i.e. an
  off-diagonal True in their row (their audio pairs with another image) or their column (their
  image with another audio);
- `mined_positives_per_row`: mean number of off-diagonal positives per audio row;

and, when the clips' ground-truth semantic keys are known (SynthAV):

- `same_key_share`: share of the batch's clips that meet another clip with their key, the false
  negatives a plain InfoNCE batch pushes away (for InfoNCE runs this is the natural rate);
- `mined_precision`: share of the off-diagonal positive pairs whose two clips share a key
  (None when the epoch had no mined pair).

Each is a mean over all rows (pairs for the precision) of the epoch's batches.
"""

from __future__ import annotations

import numpy as np


class BatchPositiveStats:
    def __init__(self) -> None:
        self.rows = self.with_positive = self.positives = 0
        self.keyed_rows = self.with_same_key = self.same_key_pairs = 0

    def add(self, mask: np.ndarray, groups: np.ndarray | None = None) -> None:
        """One batch: its (B, B) bool positive mask and, optionally, its clips' key ids (-1: unknown)."""
        off = mask & ~np.eye(len(mask), dtype=bool)
        self.rows += len(mask)
        self.with_positive += int((off.any(axis=1) | off.any(axis=0)).sum())
        self.positives += int(off.sum())
        if groups is None:
            return
        groups = np.asarray(groups)
        same = (groups[:, None] == groups[None, :]) & (groups[:, None] >= 0)
        np.fill_diagonal(same, False)
        self.keyed_rows += int((groups >= 0).sum())
        self.with_same_key += int(same.any(axis=1).sum())
        self.same_key_pairs += int((same & off).sum())

    def summary(self) -> dict:
        if not self.rows:
            return {}
        out = {"mined_positive_share": self.with_positive / self.rows,
               "mined_positives_per_row": self.positives / self.rows}
        if self.keyed_rows:
            out["same_key_share"] = self.with_same_key / self.keyed_rows
            out["mined_precision"] = self.same_key_pairs / self.positives if self.positives else None
        return out
