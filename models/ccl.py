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


class CCLModel(nn.Module):
    """The CCL student: an audio encoder whose (B, D) embedding is the student feature, a linear
    classifier on it, and one composition head per teacher (their parameters trained with the
    student's). `forward` returns the embedding, so retrieval evaluates it as any audio encoder;
    `classify` also returns the class logits."""

    def __init__(self, encoder: nn.Module, embed_dim: int, classes: int, teachers: tuple[str, ...],
                 encoder_takes_lengths: bool):
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(embed_dim, classes)
        self.heads = nn.ModuleDict({t: CompositionHead(embed_dim, classes) for t in teachers})
        self.encoder_takes_lengths = encoder_takes_lengths
        self.takes_lengths = True

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(audio, lengths) if self.encoder_takes_lengths else self.encoder(audio)

    def classify(self, audio: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        student = self(audio, lengths)
        return student, self.classifier(student)
