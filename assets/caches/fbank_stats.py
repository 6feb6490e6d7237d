"""fbank_stats: mean and standard deviation of the raw FBANK over a dataset's training split.

AST-style code hard-codes these numbers (e.g. AudioSet's -4.27 / 4.57); a download that
differs from the one they came from silently gets wrongly normalised inputs. Here they
are data: computed from the cache, streamed shard by shard and row group by row group
(memory: one row group), shown in the UI, and applied when features are read.

Statistics use the true frames only (padding excluded unless `include_padding`); the
standard deviation is the population one (ddof=0). Scalar (AST, VIP-ANT) or per bin.
A bin that is constant (the empty 128th-bin filter, see assets.caches.audio_cache_rows) has std 0;
per-bin normalisation leaves such bins centred but unscaled (std treated as 1).
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from assets.caches.audio_cache_rows import feature_array
from assets.core.cache_layout import CacheLayout
from assets.core.plots import figure_png, subplots


@dataclass
class Moments:
    """Per-bin count, mean and sum of squared deviations; merged with Chan et al.'s formula."""

    count: np.ndarray  # (bins,) float64
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, bins: int) -> "Moments":
        return cls(np.zeros(bins), np.zeros(bins), np.zeros(bins))

    def add(self, x: np.ndarray) -> None:
        """x: (frames, bins)."""
        if len(x) == 0:
            return
        n_b, mean_b = float(len(x)), x.mean(axis=0, dtype=np.float64)
        m2_b = ((x - mean_b) ** 2).sum(axis=0, dtype=np.float64)
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / n
        self.m2 = self.m2 + m2_b + delta**2 * self.count * n_b / n
        self.count = n

    def pooled(self) -> tuple[float, float, float]:
        """(values, mean, std) over all bins together (values = frames x bins)."""
        n = self.count.sum()
        mean = float((self.count * self.mean).sum() / n)
        m2 = float((self.m2 + self.count * (self.mean - mean) ** 2).sum())
        return float(n), mean, float(np.sqrt(m2 / n))


@dataclass(frozen=True)
class FbankStatsParams:
    splits: tuple[str, ...] = ("train", "balanced_train", "unbalanced_train")  # the training split names to use
    per_bin: bool = False  # scalar statistics as AST / VIP-ANT; True adds a mean and std per mel bin
    include_padding: bool = False  # count the zero-padded frames too (AST's get_norm_stats does)


def fbank_moments(paths: list[Path], splits: tuple[str, ...], include_padding: bool = False) -> tuple[Moments, int]:
    """Moments over the ok rows of the given splits in the given fbank cache files; also the clip count."""
    moments, clips = None, 0
    for path in paths:
        table = pq.read_table(path, columns=["split", "status", "n_frames"])
        features = feature_array(path)  # memory-mapped: one clip's rows are read at a time
        moments = moments or Moments.empty(features.shape[2])
        for row, (split, status, n) in enumerate(zip(*(table.column(i).to_pylist() for i in range(3)))):
            if status != "ok" or split not in splits:
                continue
            x = np.asarray(features[row])
            moments.add(x if include_padding else x[:n])
            clips += 1
    if moments is None or clips == 0:
        raise ValueError(f"no ok clips of splits {splits} in {len(paths)} fbank cache file(s)")
    return moments, clips


def stats_from_moments(m: Moments, clips: int, per_bin: bool) -> dict:
    _, mean, std = m.pooled()
    stats = {"mean": mean, "std": std, "frames": int(m.count[0]), "clips": clips, "per_bin": per_bin,
             "constant_bins": [int(i) for i in np.flatnonzero(np.sqrt(m.m2 / m.count) < 1e-6)]}
    if per_bin:
        stats |= {"bin_mean": m.mean.tolist(), "bin_std": np.sqrt(m.m2 / m.count).tolist()}
    return stats


def fbank_stats(paths: list[Path], shards: list[str], params: FbankStatsParams) -> tuple[dict, Moments]:
    """The statistics document (fbank_stats.json) over the given fbank_cache shard files, and the
    moments behind it. Refuses shards built with different parameters: their features differ."""
    digests = {pq.read_schema(p).metadata.get(b"clipkt.params") for p in paths}
    if len(digests) > 1:
        raise ValueError(f"fbank_cache shards were built with different parameters ({len(digests)} sets): "
                         "re-materialise fbank_cache for every shard with one config")
    moments, clips = fbank_moments(paths, tuple(params.splits), params.include_padding)
    stats = stats_from_moments(moments, clips, params.per_bin) | {
        "splits": list(params.splits), "shards": shards, "include_padding": params.include_padding}
    return stats, moments


def bin_plot(m: Moments) -> bytes:
    std = np.sqrt(m.m2 / m.count)
    fig, ax = subplots(figsize=(6, 2.5), dpi=80)
    ax.plot(m.mean, label="mean")
    ax.fill_between(np.arange(len(std)), m.mean - std, m.mean + std, alpha=0.3, label="±std")
    ax.set_xlabel("mel bin")
    ax.legend(loc="lower left")
    return figure_png(fig)


class Normaliser:
    """Raw features -> the model's input: (x - mean) / (std * std_scale), per bin when the stats are
    (AST uses std_scale = 2). A constant bin (std 0) is centred but not scaled."""

    def __init__(self, stats: dict, std_scale: float = 1.0, layout: str = "frames,bins"):
        if stats.get("per_bin"):
            mean = np.asarray(stats["bin_mean"], np.float32)
            std = np.asarray(stats["bin_std"], np.float32)
            std = np.where(std < 1e-6, 1.0, std)
        else:
            mean, std = np.float32(stats["mean"]), np.float32(stats["std"])
        mean, std = torch.as_tensor(mean), torch.as_tensor(std * std_scale)
        if layout == "bins,frames" and mean.ndim:
            mean, std = mean[:, None], std[:, None]
        self.mean, self.std = mean, std

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        """A new float32 tensor, normalised in place after the one conversion copy (this runs next to
        the training step, so it must stay cheap; converting while subtracting would round in float16)."""
        return raw.to(torch.float32, copy=True).sub_(self.mean).div_(self.std)


def load_fbank_stats(layout: CacheLayout, dataset: str) -> dict:
    return json.loads(layout.fbank_stats_path(dataset).read_text())
