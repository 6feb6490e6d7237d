"""CCL's composition head (seed 002; reference code github `yanbeic/CCL`,
models/composition_classifier.py `CompositionClassifier`, normalisation on): the teacher's
feature plus a residual learned from both modalities, then a classifier.

    feature = x_teacher + Linear_{2D -> D}([normalize(x_teacher), normalize(x_student)])
    logits  = Linear_{D -> classes}(feature)

The teacher feature is a frozen input (CLIP's frame or class-name embedding here): gradients
reach the head's layers and the student, never the teacher (callers pass it detached).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CompositionHead(nn.Module):
    def __init__(self, dim: int, classes: int, normalize: bool = True):
        super().__init__()
        self.mlp = nn.Linear(2 * dim, dim)
        self.fc = nn.Linear(dim, classes)
        self.normalize = normalize

    def forward(self, teacher: torch.Tensor, student: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) teacher and student features -> ((B, classes) logits, (B, D) composed feature)."""
        if teacher.shape != student.shape:
            raise ValueError(f"teacher {tuple(teacher.shape)} and student {tuple(student.shape)} features "
                             "differ in shape")
        pair = (torch.cat([F.normalize(teacher, dim=1), F.normalize(student, dim=1)], 1) if self.normalize
                else torch.cat([teacher, student], 1))
        feature = teacher + self.mlp(pair)
        return self.fc(feature), feature
