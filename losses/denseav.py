"""DenseAV's training loss (seed 004; github mhamilton723/DenseAV, `denseav/train.py`:
`SimilarityCalibrator`, `LitAVAligner.loss` / `contrast_loss`), computed as its code computes it.

    S = dense_similarity(audio, image)                     (B, B), losses.dense_similarity
    logits = w S - mean(w S),  w = exp(log_w) clamped to [0.01, 100], init 1
    L = symmetric cross-entropy(logits)                   (`loss_type: nce`, no label leak)
      + 0.01  nonneg_pressure    mean(min(s, 0)^2) over 250 random (clip, f, t) audio vectors x
                                 250 random (clip, h, w) image vectors, all pairs, per head
      + 0.01  silence_l1         mean |s| of every image patch against the mean over frequency of
                                 250 masked (silent / padded) audio positions; skipped, as in the
                                 reference, when the batch has fewer than 250 masked positions
      + 0.01  tv                 mean squared difference of the positive pairs' volume between
                                 consecutive audio times (the volume is 0 at masked times)
      + 0.1   cal_balance        max(log(init) - log w, 0)^2: keeps w from falling below its init
      + 0.05  specialization     mean over head pairs (i < j) of mean(|s_i| |s_j|) over the
                                 positive pairs' volume; only when K > 1 (the paper's L_Dis)

Weights are the released config's (`configs/av_align.yaml`). The slides write L_Dis as
Mean(|s[k=1] o s[k=2]|); the code averages over every head pair, which this follows. The
random samples come from the trainer's seeded generator, so a resumed run draws the same ones.
Not implemented: quad-mixup batches with their image-mixup term (`mixup_weight`) and the
spliced negative audio (`neg_audio`), both optional in the issue, and the `disentangle_weight`
term (0 in the config).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import torch
from torch import nn

from losses.contrastive import symmetric_cross_entropy
from losses.dense_similarity import dense_similarity, paired_volume, split_heads

MIN_CALIBRATION, MAX_CALIBRATION = 0.01, 100.0


class SimilarityCalibrator(nn.Module):
    """logits = w x - mean(w x), w = exp(log_w) clamped to [0.01, 100] (`subtract_mean=True`, no bias)."""

    def __init__(self, init: float = 1.0):
        super().__init__()
        self.init = float(init)
        self.log_w = nn.Parameter(torch.tensor([math.log(init)]))

    def weight(self) -> torch.Tensor:
        return self.log_w.exp().clamp(MIN_CALIBRATION, MAX_CALIBRATION)

    def forward(self, similarity: torch.Tensor) -> torch.Tensor:
        logits = self.weight() * similarity
        return logits - logits.mean()


def nonneg_pressure(audio_heads: torch.Tensor, image_heads: torch.Tensor, gen: torch.Generator,
                    samples: int = 250) -> torch.Tensor:
    """audio (B, K, c, F, T), image (B, K, c, H, W): `samples` random positions (the same random
    clips for both sides, as the reference draws them), every audio sample against every image
    sample per head; the mean squared negative part."""
    b, _, _, f, t = audio_heads.shape
    h, w = image_heads.shape[-2:]
    draw = lambda n: torch.randint(0, n, (samples,), generator=gen).to(audio_heads.device)  # noqa: E731
    rb, rt, rf, rh, rw = draw(b), draw(t), draw(f), draw(h), draw(w)
    a = audio_heads[rb, :, :, rf, rt]  # (samples, K, c)
    v = image_heads[rb, :, :, rh, rw]
    return torch.einsum("bkc,dkc->bdk", a.float(), v.float()).clamp_max(0).square().mean()


def silence_l1(audio_heads: torch.Tensor, image_heads: torch.Tensor, mask: torch.Tensor, gen: torch.Generator,
               samples: int = 250) -> torch.Tensor | None:
    """Mean |similarity| of every image patch with `samples` masked audio positions (each averaged
    over frequency); None when the batch has fewer masked positions than `samples` (the reference
    then adds nothing)."""
    masked_b, masked_t = torch.where(~mask.bool())
    if len(masked_b) < samples:
        return None
    pick = torch.randperm(len(masked_b), generator=gen)[:samples].to(masked_b.device)
    silent = audio_heads[masked_b[pick], :, :, :, masked_t[pick]].mean(-1)  # (samples, K, c)
    return torch.einsum("bkchw,dkc->bkdhw", image_heads.float(), silent.float()).abs().mean()


def total_variation(paired: torch.Tensor) -> torch.Tensor:
    """paired (B, K, H, W, F, T): mean squared difference between consecutive audio times."""
    return (paired[..., 1:] - paired[..., :-1]).square().mean()


def calibration_balance(weight: torch.Tensor, init: float) -> torch.Tensor:
    """max(log(init) - log w, 0)^2."""
    return (math.log(init) - torch.log(weight.clamp_min(1e-8))).clamp_min(0).square().mean()


def specialization(paired: torch.Tensor) -> torch.Tensor:
    """paired (B, K, ...): mean over head pairs i < j of mean(|s_i| |s_j|); 0 for one head."""
    k = paired.shape[1]
    pairs = list(combinations(range(k), 2))
    if not pairs:
        return paired.new_zeros(())
    return sum((paired[:, i].abs() * paired[:, j].abs()).mean() for i, j in pairs) / len(pairs)


@dataclass(frozen=True)
class RegulariserWeights:
    specialization: float = 0.05
    nonneg_pressure: float = 0.01
    silence_l1: float = 0.01
    tv: float = 0.01
    cal_balance: float = 0.1
    samples: int = 250  # random positions for nonneg_pressure and silence_l1


class DenseAVLoss(nn.Module):
    """The loss over a batch's dense features; `parts` (after a call) holds each term, unweighted."""

    def __init__(self, heads: int, aggregation: str = "misa", head_agg: str = "max_elementwise",
                 calibration_init: float = 1.0, weights: RegulariserWeights = RegulariserWeights()):
        super().__init__()
        self.heads, self.aggregation, self.head_agg, self.weights = heads, aggregation, head_agg, weights
        self.calibrator = SimilarityCalibrator(calibration_init)
        self.parts: dict[str, torch.Tensor] = {}

    def scale(self) -> torch.Tensor:
        """The calibration weight w (the trainer logs 1 / scale as the temperature)."""
        return self.calibrator.weight().squeeze()

    def forward(self, audio: torch.Tensor, mask: torch.Tensor, image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """audio (B, C, F, T), mask (B, T) bool, image (B, C, H, W); row i of each is one clip."""
        w = self.weights
        sims = dense_similarity(audio, image, mask, self.heads, self.aggregation, self.head_agg)
        terms = {"nce": symmetric_cross_entropy(self.calibrator(sims))}
        paired = paired_volume(audio, image, mask, self.heads)
        audio_h, image_h = split_heads(audio, self.heads), split_heads(image, self.heads)
        weighted = {"nce": 1.0}
        if w.nonneg_pressure:
            terms["nonneg_pressure"], weighted["nonneg_pressure"] = nonneg_pressure(audio_h, image_h, gen, w.samples), w.nonneg_pressure
        if w.silence_l1:
            silence = silence_l1(audio_h, image_h, mask, gen, w.samples)
            if silence is not None:
                terms["silence_l1"], weighted["silence_l1"] = silence, w.silence_l1
        if w.tv:
            terms["tv"], weighted["tv"] = total_variation(paired), w.tv
        if w.cal_balance:
            terms["cal_balance"] = calibration_balance(self.calibrator.weight(), self.calibrator.init)
            weighted["cal_balance"] = w.cal_balance
        if w.specialization and self.heads > 1:
            terms["specialization"], weighted["specialization"] = specialization(paired), w.specialization
        self.parts = {k: v.detach() for k, v in terms.items()}
        return sum(weighted[k] * v for k, v in terms.items())
