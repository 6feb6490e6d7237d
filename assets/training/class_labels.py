"""Class labels of clips, from the manifest, for methods that train a classifier (CCL, seed 002).

The manifest's `labels` column holds each clip's labels as strings (VGGSound's class name,
AudioSet's /m/ ids). `class_labels` maps the clips of a run to a fixed class vocabulary: every
label the dataset's manifest lists, in sorted order (so training and evaluation clips of any
split share one index), and returns a multi-hot (N, C) matrix; `single_label` tells a
single-label dataset (every clip exactly one label: class ids and top-1 accuracy) from a
multi-label one (AudioSet: "same class" means sharing a label, and recognition is mAP). A
dataset whose clips carry no labels (Places, AudioCaps) is refused with its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


@dataclass(frozen=True)
class ClassLabels:
    classes: tuple[str, ...]  # the vocabulary, sorted
    multi_hot: np.ndarray  # (N, C) uint8, row i = clip i of the clip ids given

    @cached_property  # read at every training step (losses.ccl's label form): computed once
    def single_label(self) -> bool:
        return bool(len(self.multi_hot)) and bool((self.multi_hot.sum(1) == 1).all())

    def class_ids(self) -> np.ndarray:
        """(N,) int64 class index per clip; only for single-label data."""
        if not self.single_label:
            raise ValueError("class ids need exactly one label per clip; this data is multi-label "
                             "(use the multi-hot matrix)")
        return self.multi_hot.argmax(1).astype(np.int64)


def class_labels(manifest: Path, clip_ids: list[str]) -> ClassLabels:
    """The clips' labels over the vocabulary of every label in the manifest."""
    table = pq.read_table(manifest, columns=["clip_id", "labels"])
    labels_of = dict(zip(table.column("clip_id").to_pylist(), table.column("labels").to_pylist()))
    classes = tuple(sorted({label for labels in labels_of.values() for label in (labels or [])}))
    if not classes:
        raise ValueError(f"{manifest}: no clip has a class label; a classifier needs a labelled dataset "
                         "(VGGSound, AudioSet)")
    index = {c: i for i, c in enumerate(classes)}
    hot = np.zeros((len(clip_ids), len(classes)), np.uint8)
    missing = [c for c in clip_ids if c not in labels_of]
    if missing:
        raise ValueError(f"{manifest}: {len(missing)} clips are not in the manifest (first: {missing[0]})")
    for row, cid in enumerate(clip_ids):
        for label in labels_of[cid] or []:
            hot[row, index[label]] = 1
    return ClassLabels(classes, hot)
