"""How a multi-head DenseAV model's heads split their activation between sources: DenseAV's
Table 3 "Act.Dis" and "AP.Dis", computed as the reference's `disentangle_validation`
(mhamilton723/DenseAV, denseav/train.py):

- per source (speech: Places; sounds: AudioSet / VGGSound), every evaluation clip's similarity
  with its own image, per head (`get_pairwise_sims(raw=False, agg_sim=True, agg_heads=False)`:
  `losses.dense_similarity.paired_similarity`);
- the scores of all sources stacked, each head min-max normalised over them (the range clamped
  at 1e-4);
- act[h, d] = 1 - the mean normalised score of head h over source d's clips; ap[h, d] = the
  average precision of head h's scores at telling source d's clips from the others;
- Act.Dis / AP.Dis = the best assignment of heads to sources of the mean matched entry. The
  reference has two heads and two sources and takes max(diagonal mean, anti-diagonal mean);
  this is the same for K = D = 2 and the best permutation for K = D in general (None otherwise).

Note the reference's `act` is 1 - activation, so a head silent on one source and fully active on
the other scores 1 on the silent one: Act.Dis is 1 for two heads that each stay silent on a
different source, 0.5 when both heads respond to both sources alike. `activation` (= 1 - act)
is reported too, as the readable "which head fires for what" table.
"""

from __future__ import annotations

from itertools import permutations

import numpy as np
import torch

from assets.core.average_precision import average_precision
from assets.core.seed_stats import mean_std
from losses.dense_similarity import paired_similarity
from models.denseav import DenseFeatures


@torch.no_grad()
def paired_head_scores(features: DenseFeatures, heads: int, aggregation: str, chunk: int = 64) -> np.ndarray:
    """(N, K): each clip's per-head similarity with its own image."""
    out = [paired_similarity(features.audio[i:i + chunk], features.image[i:i + chunk], features.mask[i:i + chunk],
                             heads, aggregation) for i in range(0, len(features.audio), chunk)]
    return torch.cat(out).float().numpy()


def best_assignment(matrix: np.ndarray) -> float | None:
    """max over one-to-one assignments of rows to columns of the mean matched entry (square only)."""
    k, d = matrix.shape
    if k != d:
        return None
    return float(max(np.mean([matrix[h, p[h]] for h in range(k)]) for p in permutations(range(d))))


def head_split(scores: dict[str, np.ndarray]) -> dict:
    """{source name: (N_d, K) paired head scores} -> the split (module docstring): `activation`,
    `act` and `ap` as K x D lists (rows heads, columns sources in the order given), `act_dis`,
    `ap_dis`, and the clips per source."""
    names = list(scores)
    if len(names) < 2:
        raise ValueError(f"a head split needs at least two sources, got {names}")
    heads = {s.shape[1] for s in scores.values()}
    if len(heads) != 1 or any(len(s) == 0 for s in scores.values()):
        raise ValueError(f"every source needs clips and the same heads: {({n: s.shape for n, s in scores.items()})}")
    k = heads.pop()
    stacked = np.concatenate([np.asarray(scores[n], np.float64) for n in names])
    stacked = stacked - stacked.min(axis=0, keepdims=True)
    stacked = stacked / np.maximum(stacked.max(axis=0, keepdims=True), 1e-4)
    source = np.concatenate([np.full(len(scores[n]), j) for j, n in enumerate(names)])
    act = np.array([[1.0 - stacked[source == j, h].mean() for j in range(len(names))] for h in range(k)])
    ap = np.array([[average_precision(stacked[:, h], source == j) for j in range(len(names))] for h in range(k)])
    return {"sources": names, "clips": {n: int(len(scores[n])) for n in names},
            "activation": (1.0 - act).tolist(), "act": act.tolist(), "ap": ap.tolist(),
            "act_dis": best_assignment(act), "ap_dis": best_assignment(ap)}


def summarise_head_splits(per_seed: dict[int, dict]) -> dict:
    """Mean ± sample std over seeds of act_dis and ap_dis, and the mean activation matrix."""
    seeds = sorted(per_seed)
    out = {"sources": per_seed[seeds[0]]["sources"],
           "activation": np.mean([per_seed[s]["activation"] for s in seeds], axis=0).tolist()}
    for key in ("act_dis", "ap_dis"):
        values = [per_seed[s][key] for s in seeds]
        if any(v is None for v in values):
            out[key] = None
            continue
        out[key] = mean_std(values)
    return out


def head_split_markdown(split: dict) -> str:
    """A metrics document's `head_split` as markdown: each head's mean normalised activation per
    source (mean over seeds), and Act.Dis / AP.Dis."""
    summary = split["summary"]
    sources = summary["sources"]
    lines = ["| head | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources)]
    for h, row in enumerate(summary["activation"]):
        lines.append(f"| {h} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    lines.append("")
    for key, label in (("act_dis", "Act.Dis"), ("ap_dis", "AP.Dis")):
        s = summary[key]
        lines.append(f"{label}: " + ("– (needs as many heads as sources)" if s is None else
                                     f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f} % over {len(s['values'])} seeds") + "  ")
    return "\n".join(lines)
