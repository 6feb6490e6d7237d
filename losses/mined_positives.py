"""Which pairs of a batch are mined positives (seed 000), from the neighbour tables.

`neighbours[table]` is the table's (clips, k_max) neighbour rows (assets.mining.neighbor_search.
read_table's ids, rows of the table set's clips.parquet). For the chosen subset of
`t2t, t2i, i2t, i2i` and a k <= k_max, clip j is a positive of clip i when j is among i's
first k neighbours in any chosen table, or i among j's (a pair is pulled together whichever
side mined it). `org`, the clip's own pair, is always a positive (the diagonal). A batch row
of -1 (a clip the tables do not cover) has no mined positives.
"""

from __future__ import annotations

import numpy as np
import torch

MINED_TABLES = ("t2t", "t2i", "i2t", "i2i")


def positive_mask(batch_rows: np.ndarray, neighbours: dict[str, np.ndarray], tables: list[str], k: int) -> torch.Tensor:
    """(B, B) bool: [a, b] is True when batch items a and b are mined positives of each other (or a == b)."""
    rows = np.asarray(batch_rows, dtype=np.int64)
    unknown = [t for t in tables if t not in MINED_TABLES and t != "org"]
    if unknown:
        raise ValueError(f"unknown neighbour table(s) {unknown}; choose from org, {', '.join(MINED_TABLES)}")
    mask = np.eye(len(rows), dtype=bool)
    covered = rows >= 0
    for t in tables:
        if t == "org":
            continue
        ids = neighbours[t]
        if not 1 <= k <= ids.shape[1]:
            raise ValueError(f"k={k} but table {t} holds {ids.shape[1]} neighbours per clip")
        top = np.where(covered[:, None], ids[np.where(covered, rows, 0), :k], -2)  # (B, k); -2 matches nothing
        mask |= (top[:, None, :] == np.where(covered, rows, -3)[None, :, None]).any(axis=2)
    return torch.from_numpy(mask | mask.T)
