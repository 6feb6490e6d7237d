"""Contrastive losses over a (B, B) similarity matrix whose diagonal holds the true pairs.

- `SymmetricInfoNCE`: seed 001's eq. 1 (CLIP's loss): cross-entropy over rows (queries ->
  keys) and over columns (keys -> queries), averaged over the batch and the two directions,
  on cosine similarities scaled by a learnable temperature exp(logit_scale) (CLIP's init
  1/0.07, clamped at 100). Its cross-entropy part is `symmetric_cross_entropy(logits)`, for
  callers that build their own logits.
- `MultiPositiveInfoNCE`: seed 000's false-negative-aware loss. `positives` marks, per pair
  (i, j) of the batch, whether j is a mined positive of i (the diagonal always is). Each
  row's loss is the mean over its positives of -log softmax (Khosla et al.'s supervised
  contrastive form): a mined positive is pulled towards the query instead of pushed away.
  With only the diagonal marked it equals `SymmetricInfoNCE`.
- `SharedImageInfoNCE`: SpeechCLIP's `MaskedContrastiveLoss` (avssl/module/losses.py): the
  symmetric InfoNCE with the other pairs of the batch that show the same image (several spoken
  captions of one picture) left out of both denominators, neither negatives nor positives.

nn.Modules with no I/O; inputs are similarity matrices (cosine), so the frame-matching
strategies (`losses.frame_matching`) plug in unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CLIP_INIT_TEMPERATURE = 0.07
MAX_LOGIT_SCALE = 100.0


def cosine_similarity_matrix(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """(B, D) x (B', D) -> (B, B') cosine similarities."""
    return F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T


def symmetric_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(B, B) logits whose diagonal holds the true pairs -> the mean of the cross-entropy over
    rows (queries -> keys) and over columns (keys -> queries)."""
    target = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class _LearnableTemperature(nn.Module):
    def __init__(self, temperature: float = CLIP_INIT_TEMPERATURE, learnable: bool = True,
                 max_logit_scale: float = MAX_LOGIT_SCALE):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learnable)
        self.max_log = math.log(max_logit_scale)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=self.max_log).exp()


class SymmetricInfoNCE(_LearnableTemperature):
    def forward(self, similarity: torch.Tensor) -> torch.Tensor:
        """similarity: (B, B) cosine; row i's true key is column i."""
        _check_square(similarity)
        return symmetric_cross_entropy(self.scale() * similarity)


class MultiPositiveInfoNCE(_LearnableTemperature):
    def forward(self, similarity: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """similarity: (B, B) cosine; positives: (B, B) bool, positives[i, j] = j is a positive
        of query i (the diagonal is always counted). Columns use positives.T."""
        _check_square(similarity)
        if positives.shape != similarity.shape or positives.dtype != torch.bool:
            raise ValueError(f"positives must be a {tuple(similarity.shape)} bool mask, got "
                             f"{tuple(positives.shape)} {positives.dtype}")
        eye = torch.eye(len(similarity), dtype=torch.bool, device=similarity.device)
        pos = positives | eye
        logits = self.scale() * similarity
        return 0.5 * (_mean_positive_nll(logits, pos) + _mean_positive_nll(logits.T, pos.T))


class SharedImageInfoNCE(_LearnableTemperature):
    def forward(self, similarity: torch.Tensor, same_image: torch.Tensor) -> torch.Tensor:
        """similarity: (B, B) cosine, row i's true key column i; same_image: (B, B) bool, pairs
        (i, j) whose images are the same picture (the diagonal is always kept)."""
        _check_square(similarity)
        if same_image.shape != similarity.shape or same_image.dtype != torch.bool:
            raise ValueError(f"same_image must be a {tuple(similarity.shape)} bool mask, got "
                             f"{tuple(same_image.shape)} {same_image.dtype}")
        eye = torch.eye(len(similarity), dtype=torch.bool, device=similarity.device)
        logits = (self.scale() * similarity).masked_fill(same_image & ~eye, float("-inf"))
        return symmetric_cross_entropy(logits)


def _mean_positive_nll(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    per_row = -(log_prob * pos).sum(dim=1) / pos.sum(dim=1)
    return per_row.mean()


def _check_square(similarity: torch.Tensor) -> None:
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1] or similarity.shape[0] < 1:
        raise ValueError(f"need a (B, B) similarity matrix, got shape {tuple(similarity.shape)}")
