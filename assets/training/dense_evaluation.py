"""Retrieval evaluation of a DenseAV model (seed 004) with DenseAV's own similarity.

Every clip's dense features are computed once, the audio from its cached FBANK / log-mel and
the image from its frame `ceil(L/2) - 1` (VIP-ANT's evaluation frame, so DenseAV and the
global methods are scored on the same picture), then the (N, N) similarity is
`losses.dense_similarity.retrieval_similarity`: each head aggregated (misa: max over image
positions, mean over the masked audio time) and the heads summed, as the reference's
`calc_recalls`. Directions `A->I`, `I->A`, the protocol of `assets.core.recall`. There is no
"common" column: DenseAV has no single audio embedding to compare with a global frame one.
"""

from __future__ import annotations

import numpy as np
import torch

from assets.caches.fbank_stats import Normaliser
from assets.core.recall import recall_metrics
from assets.training.data import Batch, ClipSet
from assets.training.evaluation import eval_pass
from losses.dense_similarity import retrieval_similarity
from models.denseav import DenseAV, DenseFeatures

DENSE_SIMILARITY = "DenseAV: per head max over image patches, mean over audio time, heads summed; frame ceil(L/2)-1"


@torch.no_grad()
def dense_features(model: DenseAV, clips: ClipSet, normalise: Normaliser, device: torch.device,
                   batch_size: int = 32) -> DenseFeatures:
    """Every clip's aligned features (float32, on the CPU), in eval mode (no training-only pooling)."""
    def step(b: Batch) -> DenseFeatures:
        f = model(b.audio, b.lengths, b.pixels)
        return DenseFeatures(f.audio.float().cpu(), f.mask.cpu(), f.image.float().cpu())

    parts = eval_pass(model, clips, normalise, device, step, batch_size, frame_pick="eval")
    return DenseFeatures(*(torch.cat([getattr(p, k) for p in parts]) for k in ("audio", "mask", "image")))


def dense_similarity_matrix(features: DenseFeatures, heads: int, aggregation: str) -> np.ndarray:
    """(N audio, N images) retrieval scores."""
    return retrieval_similarity(features.audio, features.image, features.mask, heads, aggregation).numpy()


def dense_retrieval_report(features: DenseFeatures, heads: int, aggregation: str) -> dict:
    sim = dense_similarity_matrix(features, heads, aggregation)
    one = [[i] for i in range(len(sim))]
    return {"A->I": recall_metrics(sim, one), "I->A": recall_metrics(sim.T, one)}
