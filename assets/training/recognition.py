"""Recognition, CCL's metric (seed 002): the student classifier's predictions on the evaluation
clips against their class labels. Single-label data (VGGSound): top-1 accuracy. Multi-label data
(AudioSet): mAP, the mean over classes with at least one positive clip of the average precision
of the class's scores (`assets.core.average_precision`)."""

from __future__ import annotations

import numpy as np
import torch

from assets.caches.fbank_stats import Normaliser
from assets.core.average_precision import average_precision
from assets.training.class_labels import ClassLabels
from assets.training.data import ClipSet
from assets.training.evaluation import eval_pass


@torch.no_grad()
def class_logits(model, clips: ClipSet, normalise: Normaliser, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """(N, C) float32 logits of `model.classify` over the clips, in eval mode."""
    out = eval_pass(model, clips, normalise, device, lambda b: model.classify(b.audio, b.lengths)[1].float().cpu(),
                    batch_size)
    return torch.cat(out).numpy()


def recognition_metrics(logits: np.ndarray, labels: ClassLabels) -> dict:
    """{"top1": accuracy} for single-label clips, {"mAP": mean average precision} for multi-label ones;
    "clips" either way."""
    if logits.shape != labels.multi_hot.shape:
        raise ValueError(f"logits {logits.shape} and labels {labels.multi_hot.shape} differ in shape")
    if labels.single_label:
        return {"top1": float((logits.argmax(1) == labels.class_ids()).mean()), "clips": len(logits)}
    aps = [average_precision(logits[:, c], labels.multi_hot[:, c]) for c in range(logits.shape[1])
           if labels.multi_hot[:, c].any()]
    return {"mAP": float(np.mean(aps)), "clips": len(logits)}
