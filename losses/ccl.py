"""CCL's losses (seed 002; Chen et al., compositional contrastive learning; reference code github
`yanbeic/CCL`, loss/nce_loss.py and loss/jsd_loss.py), computed as the code does, with its two
numerical faults fixed:

- `multi_class_nce(f1, f2, same, temperature)`: the cosine of every row of f1 with every row of
  f2 (the code's `1 - 0.5 |a - b|^2` of unit vectors), a softmax over each row at the
  temperature; the positives of a row are the columns of its class (`same`, the diagonal
  included), the negatives the rest; per row, the mean over positives of -log p plus the mean
  over negatives of -log(1 - p) (both with the code's 1e-10 inside the log); the mean over rows.
  The released code computes `1 - self_mask` on a bool tensor (an error in current PyTorch) and
  divides by zero for a row without negatives (every column of its class); here such a row's
  negative term is 0.
- `symmetric_nce`: NCE(a, b) + NCE(b, a), as training.py sums both directions.
- `ccl_jsd(p_logits, q_logits, weight)`: what the code calls JSD is the symmetric KL divergence,
  KL(p || q) + KL(q || p) of the two softmaxes (p log(p / q + 1e-10) summed over classes, and
  the same with p and q swapped), averaged over the batch and weighted (0.5 in the scripts); not
  the Jensen-Shannon divergence of the paper's notation. The code's form is kept.
- `same_class(labels)`: which pairs share a class: equal class ids, or for multi-label data
  (a multi-hot (B, C) matrix) at least one shared label; a clip is always its own positive.
- `ccl_objective`: the student's and the composition heads' losses of training.py, with the
  code's gradient routing (see its docstring).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPSILON = 1e-10  # the reference's EPISILON


def same_class(labels: torch.Tensor) -> torch.Tensor:
    """(B,) class ids or (B, C) multi-hot labels -> (B, B) bool: the pair shares a class (any label)."""
    if labels.ndim == 1:
        return labels[:, None] == labels[None, :]
    if labels.ndim == 2:
        hot = (labels > 0).float()
        return ((hot @ hot.T) > 0) | torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    raise ValueError(f"labels must be (B,) class ids or (B, C) multi-hot, got shape {tuple(labels.shape)}")


def multi_class_nce(f1: torch.Tensor, f2: torch.Tensor, same: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, D), (B, D), (B, B) bool positives (row i: the columns of i's class) -> scalar loss."""
    if same.shape != (f1.shape[0], f2.shape[0]) or same.dtype != torch.bool:
        raise ValueError(f"same must be a ({f1.shape[0]}, {f2.shape[0]}) bool mask, "
                         f"got {tuple(same.shape)} {same.dtype}")
    cos = F.normalize(f1, dim=1) @ F.normalize(f2, dim=1).T
    p = torch.softmax(cos / temperature, dim=1)
    pos, neg = same.float(), (~same).float()
    pos_term = (-torch.log(p + EPSILON) * pos).sum(1) / pos.sum(1).clamp(min=1)
    neg_term = (-torch.log(1 - p + EPSILON) * neg).sum(1) / neg.sum(1).clamp(min=1)  # 0 for a row without negatives
    return (pos_term + neg_term).mean()


def symmetric_nce(a: torch.Tensor, b: torch.Tensor, same: torch.Tensor, temperature: float) -> torch.Tensor:
    return multi_class_nce(a, b, same, temperature) + multi_class_nce(b, a, same.T, temperature)


def ccl_jsd(p_logits: torch.Tensor, q_logits: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """The reference's JSDLoss (softmax_sign False): weight * mean over the batch of
    sum_c p log(p / q + eps) + q log(q / p + eps), p and q the softmaxes of the logits."""
    p, q = torch.softmax(p_logits, dim=1), torch.softmax(q_logits, dim=1)
    loss = (p * torch.log(p / q + EPSILON)).sum(1) + (q * torch.log(q / p + EPSILON)).sum(1)
    return loss.mean() * weight


def ccl_objective(student: torch.Tensor, student_logits: torch.Tensor, teachers: dict[str, torch.Tensor],
                  heads: dict, labels: torch.Tensor, temperatures: dict[str, float], jsd_weight: float = 0.5,
                  teacher_weight: float = 1.0, composed_weight: float = 1.0
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CCL's training objective for one batch, as the reference's `train_epoch` (training.py):
    per teacher t (its frozen features, its composition head, its NCE temperature):

        student loss = CE(student) + sum_t [ composed_weight * sNCE(student, composed_t)
                                             + teacher_weight * sNCE(student, teacher_t)
                                             + JSD(student, composed_t) ]
        head_t loss  = CE(composed_t) + sNCE(student, composed_t) + sNCE(composed_t, teacher_t) + JSD

    (sNCE: `symmetric_nce`; CE: cross-entropy, or for multi-hot labels the mean binary
    cross-entropy). The weights default to the code's plain sum (the poster's lambdas are
    fields). Gradient routing follows the code's two optimisers: the student learns from the
    student loss only (the code zeroes the student's gradients after the head's backward), a
    head from both losses. Here that is one backward of their sum, with the head loss computed
    on a detached student (its composed features recomputed from it), so it reaches the heads
    and never the student. Returns (the sum to back-propagate, each term for the logs)."""
    same = same_class(labels)
    ce = (lambda logits: F.cross_entropy(logits, labels) if labels.ndim == 1
          else F.binary_cross_entropy_with_logits(logits, labels.float()))
    parts = {"ce": ce(student_logits)}
    student_loss, head_loss = parts["ce"], 0.0
    for name, teacher in teachers.items():
        t, head = temperatures[name], heads[name]
        teacher = teacher.detach()
        logits, composed = head(teacher, student)
        jsd = ccl_jsd(student_logits, logits, jsd_weight)
        parts[f"nce_composed_{name}"] = symmetric_nce(student, composed, same, t)
        parts[f"nce_teacher_{name}"] = symmetric_nce(student, teacher, same, t)
        parts[f"jsd_{name}"] = jsd
        student_loss = (student_loss + composed_weight * parts[f"nce_composed_{name}"]
                        + teacher_weight * parts[f"nce_teacher_{name}"] + jsd)
        fixed = student.detach()
        head_logits, head_composed = head(teacher, fixed)
        parts[f"head_{name}"] = (ce(head_logits) + symmetric_nce(fixed, head_composed, same, t)
                                 + symmetric_nce(head_composed, teacher, same, t)
                                 + ccl_jsd(student_logits.detach(), head_logits, jsd_weight))
        head_loss = head_loss + parts[f"head_{name}"]
    return student_loss + head_loss, {k: v.detach() for k, v in parts.items()}


class CCLLoss(nn.Module):
    """`ccl_objective` with an experiment's temperatures and weights; `parts` holds the last batch's
    terms, `scale()` the image teacher's inverse temperature (what the trainer logs)."""

    def __init__(self, temperatures: dict[str, float], jsd_weight: float = 0.5, teacher_weight: float = 1.0,
                 composed_weight: float = 1.0):
        super().__init__()
        self.temperatures, self.jsd_weight = dict(temperatures), jsd_weight
        self.teacher_weight, self.composed_weight = teacher_weight, composed_weight
        self.parts: dict[str, torch.Tensor] = {}

    def scale(self) -> torch.Tensor:
        return torch.tensor(1.0 / self.temperatures.get("image", 1.0))

    def forward(self, student: torch.Tensor, student_logits: torch.Tensor, teachers: dict[str, torch.Tensor],
                heads, labels: torch.Tensor) -> torch.Tensor:
        loss, self.parts = ccl_objective(student, student_logits, teachers, heads, labels, self.temperatures,
                                         self.jsd_weight, self.teacher_weight, self.composed_weight)
        return loss
