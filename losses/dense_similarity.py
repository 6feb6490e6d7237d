"""DenseAV's dense audio-image similarity (seed 004; github mhamilton723/DenseAV,
`denseav/aggregators.py`), computed as its code computes it.

Features are unnormalised (`norm_vectors: False` in the released config): audio `(B, C, F, T)`,
image `(V, C, H, W)`, C = K heads x C/K channels (head k owns channels [k C/K, (k+1) C/K)).

    s[a, v, k, h, w, f, t] = sum_c a[a, k, c, f, t] * v[v, k, c, h, w]        (fp32)

Aggregation `misa` (the config's `sim_agg_type`): max over image width, then height; mean over
frequency; mean over audio time where the mask is set (padding and silence masked;
`masked_mean`: sum / count clamped at 0.001). `mima` takes a masked max over time, `sisa`
means over the image. Heads (`head_agg`): `max_elementwise` (the config's) takes the
element-wise max over heads *before* aggregating, `sum` / `max` combine aggregated heads.

Two uses, as in the reference:
- training (`dense_similarity`, the aggregator's `forward(preds, agg_heads=True)`): the heads
  combined by `head_agg`;
- retrieval (`retrieval_similarity`, `LitAVAligner.calc_recalls`): each head aggregated on its
  own (`agg_heads=False`) and the K scores summed, whatever `head_agg` is. With K = 1 the two
  are the same; with K > 1 and `max_elementwise` the reference trains with one and ranks with
  the other, and so does this module.
The positive pairs' volume (`paired_volume`, the aggregator's `get_pairwise_sims(raw=True)`)
is multiplied by the audio mask, as there; the regularisers (`losses.denseav`) read it.
"""

from __future__ import annotations

import torch

AGGREGATIONS = {"misa": ("max", "mean"), "mima": ("max", "max"), "sisa": ("mean", "mean")}  # (image, time)
HEAD_AGGREGATIONS = ("max_elementwise", "sum", "max")
_MASKED_MAX_OFFSET = 1e7  # the reference's masked_max subtracts this where the mask is off


def split_heads(features: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, C, ...) -> (B, K, C/K, ...): head k owns channels [k C/K, (k+1) C/K)."""
    b, c = features.shape[:2]
    if c % heads:
        raise ValueError(f"{c} channels do not split into {heads} heads")
    return features.reshape(b, heads, c // heads, *features.shape[2:])


def similarity_volume(audio: torch.Tensor, image: torch.Tensor, heads: int) -> torch.Tensor:
    """(A, C, F, T) x (V, C, H, W) -> (A, V, K, H, W, F, T): every audio against every image, fp32."""
    a = split_heads(audio, heads).float()
    v = split_heads(image, heads).float()
    return torch.einsum("akcft,vkchw->avkhwft", a, v)


def paired_volume(audio: torch.Tensor, image: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, C, F, T) x (B, C, H, W), mask (B, T) -> (B, K, H, W, F, T): each clip against its own
    image, zero at masked audio times (the reference multiplies the mask in)."""
    a = split_heads(audio, heads).float()
    v = split_heads(image, heads).float()
    return torch.einsum("bkcft,bkchw,bt->bkhwft", a, v, mask.float())


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of x over `dim` where mask is set (mask broadcast against x), keepdim; an all-off
    row divides by 0.001 (the reference's clamp), giving 0."""
    mask = mask.to(x.dtype)
    return (x * mask).sum(dim, keepdim=True) / mask.sum(dim, keepdim=True).clamp_min(0.001)


def masked_max(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Max of x over `dim` where mask is set, keepdim (the reference subtracts 1e7 elsewhere)."""
    return (x - (~mask.bool()).to(x.dtype) * _MASKED_MAX_OFFSET).max(dim, keepdim=True).values


def aggregate(volume: torch.Tensor, mask: torch.Tensor, aggregation: str = "misa") -> torch.Tensor:
    """(A, V, K, H, W, F, T) or (B, K, H, W, F, T) with mask (A or B, T) -> (A, V, K) or (B, K):
    image (width then height), then frequency (mean), then masked time, as `_agg_sim`."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {sorted(AGGREGATIONS)}, got {aggregation!r}")
    image_rule, time_rule = AGGREGATIONS[aggregation]
    shape = [1] * volume.ndim
    shape[0], shape[-1] = volume.shape[0], volume.shape[-1]
    mask = mask.reshape(shape)
    x = volume
    for dim in (-3, -4):  # width, then height
        x = x.max(dim, keepdim=True).values if image_rule == "max" else x.mean(dim, keepdim=True)
    x = x.mean(-2, keepdim=True)
    x = masked_mean(x, mask, -1) if time_rule == "mean" else masked_max(x, mask, -1)
    return x.flatten(-4)[..., 0]


def _combine(volume: torch.Tensor, mask: torch.Tensor, aggregation: str, head_agg: str, head_dim: int,
             nonneg: bool) -> torch.Tensor:
    if head_agg not in HEAD_AGGREGATIONS:
        raise ValueError(f"head_agg must be one of {HEAD_AGGREGATIONS}, got {head_agg!r}")
    if nonneg:
        volume = volume.clamp_min(0)
    if head_agg == "max_elementwise":
        volume = volume.max(head_dim, keepdim=True).values
    per_head = aggregate(volume, mask, aggregation)
    return per_head.max(-1).values if head_agg == "max" else per_head.sum(-1)


def dense_similarity(audio: torch.Tensor, image: torch.Tensor, mask: torch.Tensor, heads: int,
                     aggregation: str = "misa", head_agg: str = "max_elementwise", nonneg: bool = False) -> torch.Tensor:
    """(A, C, F, T), (V, C, H, W), mask (A, T) -> (A, V): the training similarity (heads combined
    by `head_agg`; `nonneg` clamps the volume at 0 first, the config's `nonneg_sim`, off)."""
    return _combine(similarity_volume(audio, image, heads), mask, aggregation, head_agg, 2, nonneg)


def paired_similarity(audio: torch.Tensor, image: torch.Tensor, mask: torch.Tensor, heads: int,
                      aggregation: str = "misa") -> torch.Tensor:
    """(B, C, F, T), (B, C, H, W), mask (B, T) -> (B, K): each clip with its own image, per head
    (`get_pairwise_sims(agg_sim=True, agg_heads=False)`: what DenseAV's head-disentanglement
    scores read)."""
    return aggregate(paired_volume(audio, image, mask, heads), mask, aggregation)


@torch.no_grad()
def retrieval_similarity(audio: torch.Tensor, image: torch.Tensor, mask: torch.Tensor, heads: int,
                         aggregation: str = "misa", image_chunk: int = 64) -> torch.Tensor:
    """(A, V) retrieval scores: each head aggregated on its own, the K scores summed (the
    reference's `calc_recalls`), computed `image_chunk` images at a time (the full volume of
    1000 x 1000 clips does not fit)."""
    out = []
    for start in range(0, image.shape[0], image_chunk):
        volume = similarity_volume(audio, image[start:start + image_chunk], heads)
        out.append(aggregate(volume, mask, aggregation).sum(-1))
    return torch.cat(out, dim=1)


def heatmaps(audio: torch.Tensor, image: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, C, F, T), (B, C, H, W), mask (B, T) -> (B, K + 1, H, W): the audio-prompted heatmap of
    each clip over its own image, per head and combined (element-wise max over heads, as the
    training similarity combines them): the volume averaged over frequency and over the
    unmasked audio time. Row 0 is the image's top row, column 0 its left column."""
    volume = paired_volume(audio, image, mask, heads)  # (B, K, H, W, F, T)
    m = mask.reshape(mask.shape[0], 1, 1, 1, mask.shape[1])
    per_head = masked_mean(volume.mean(-2), m, -1)[..., 0]  # (B, K, H, W)
    combined = masked_mean(volume.max(1, keepdim=True).values.mean(-2), m, -1)[..., 0]
    return torch.cat([per_head, combined], dim=1)
