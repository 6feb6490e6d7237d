"""Dagster assets of the cache stage, per dataset:

- `frame_cache` (per shard): L frames per clip, resized and centre-cropped for CLIP, as JPEG.
- `fbank_cache` (per shard): Kaldi FBANK with VIP-ANT's settings, raw (normalised at read time).
- `logmel_cache` (per shard, places-format datasets): DaveNet's 40-bin log-mel speech input.
- `waveform_cache` (per shard, datasets with `waveform_cache: true`): 16 kHz samples (HuBERT's input).
- `fbank_stats`: mean and std of the raw FBANK over the training split.

Each per-shard asset reads its shard's manifest rows, runs one stage function per clip on the
worker pool (`assets.caches.shard_builder.build_shard`) and writes one Parquet file per shard.
"""

from collections.abc import Callable
from dataclasses import asdict

import dagster as dg
import pyarrow.parquet as pq

from assets.caches.audio_cache_rows import audio_row, audio_spec, torch_threads
from assets.caches.audio_features import AudioChecks, FbankParams, LogMelParams, WaveformParams
from assets.caches.code_versions import AUDIO_CACHE, FRAME_CACHE
from assets.caches.fbank_stats import FbankStatsParams, bin_plot, fbank_stats as compute_fbank_stats
from assets.caches.frame_cache_rows import frame_row, frame_spec, quiet_decoders
from assets.caches.shard_builder import CacheSpec, ShardBuild, build_shard
from assets.caches.video_frames import SEEK_MODES, FrameParams
from assets.caches.worker_pool import POOL_DEFAULTS
from assets.core.atomic_io import write_json_atomic
from assets.core.markdown import markdown_table
from assets.core.plots import png_markdown
from assets.ingest.dataset_config import DatasetConfig
from assets.ingest.manifest import member_paths
from pipelines.resources import CachePaths

_FRAMES, _FBANK, _LOGMEL, _CHECKS, _STATS = FrameParams(), FbankParams(), LogMelParams(), AudioChecks(), FbankStatsParams()
_WAVEFORM = WaveformParams()


class PoolConfig(dg.Config):
    workers: int = POOL_DEFAULTS.workers  # worker processes per shard
    timeout_s: float = POOL_DEFAULTS.timeout_s  # per-clip bound; a clip over it is recorded as `timeout`
    max_worker_rss_mb: float = POOL_DEFAULTS.max_worker_rss_mb  # a worker above this after a clip is replaced
    torch_threads: int = POOL_DEFAULTS.torch_threads  # intra-op threads per worker


def run_cache_stage(context: dg.AssetExecutionContext, ds: DatasetConfig, cache: CachePaths, stage: str,
                    spec: CacheSpec, task_of: Callable, compute: Callable, pool: PoolConfig,
                    init: Callable | None = None) -> tuple[ShardBuild, dg.MaterializeResult]:
    """Build one shard's file of a per-shard cache stage; the result carries the UI metadata."""
    shard, layout = context.partition_key, cache.layout()
    members = pq.read_table(layout.shard_path(ds.name, shard))
    path = layout.stage_path(ds.name, stage, shard)
    build = build_shard(members, spec, path, task_of, compute, workers=pool.workers, timeout_s=pool.timeout_s,
                        max_rss_mb=pool.max_worker_rss_mb, init=init,
                        progress=lambda done, total: context.log.debug(f"{stage} {shard}: {done}/{total} clips"))
    metadata = {
        "path": dg.MetadataValue.path(str(path)), "bytes": build.bytes, "clips": build.rows,
        "ok": build.status_counts.get("ok", 0), "by_status": build.status_counts,
        "computed": build.computed, "reused": build.reused, "skipped_up_to_date": build.skipped,
        "seconds": round(build.seconds, 2), "params": spec.params,
        "first_errors": dg.MetadataValue.md(markdown_table(build.first_errors)),
    }
    if build.pool is not None and build.computed:
        metadata |= {"clips_per_s": round(build.computed / max(build.seconds, 1e-9), 2),
                     "worker_peak_rss_mb": build.pool.per_worker_peak_mb, "timeouts": build.pool.timeouts,
                     "worker_restarts": build.pool.worker_restarts}
    return build, dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(build.fingerprint))


# ----------------------------------------------------------------------------- frame_cache


class FrameCacheConfig(PoolConfig):
    num_frames: int = _FRAMES.num_frames  # L frames evenly spaced over the clip, both ends included (seed 001: 4)
    size: int = _FRAMES.size  # the CLIP teacher's input size (ViT-B/32: 224)
    jpeg_quality: int = _FRAMES.jpeg_quality
    still_threshold: float = _FRAMES.still_threshold  # mean abs frame difference (0-255) below which a clip is still
    frame_seek: str = _FRAMES.seek  # exact: the frame nearest each time | keyframe: the nearest keyframe (offset recorded)
    coverage_margin_s: float = _FRAMES.coverage_margin_s  # a video ending more than this before the span is `short_video`


def build_frame_cache_asset(ds: DatasetConfig, shards: dg.DynamicPartitionsDefinition) -> dg.AssetsDefinition:
    picture_only = ds.format == "places"

    @dg.asset(
        key=[ds.name, "frame_cache"], group_name=ds.name, kinds={"parquet"}, partitions_def=shards,
        deps=[dg.AssetKey([ds.name, "clip_shards"])], code_version=FRAME_CACHE,
        description=("One picture per item, resized and centre-cropped for CLIP (JPEG)." if picture_only else
                     "L frames per clip, evenly spaced, resized and centre-cropped for CLIP (JPEG), with timestamps "
                     "and a still-video flag."),
    )
    def frame_cache(context: dg.AssetExecutionContext, config: FrameCacheConfig, cache: CachePaths) -> dg.MaterializeResult:
        if config.frame_seek not in SEEK_MODES:
            raise dg.Failure(f"frame_seek must be one of {SEEK_MODES}, got {config.frame_seek!r}")
        p = FrameParams(num_frames=1 if picture_only else config.num_frames, size=config.size,
                        jpeg_quality=config.jpeg_quality, still_threshold=config.still_threshold,
                        seek=config.frame_seek, coverage_margin_s=config.coverage_margin_s)
        build, result = run_cache_stage(
            context, ds, cache, "frame_cache", frame_spec(p, picture_only, ds.media),
            # Places rows have an image path, video rows do not
            lambda m: (*member_paths(ds.root, m), m["start_s"], m["end_s"], ds.media, p),
            frame_row, config, init=quiet_decoders)
        rows = pq.read_table(build.path, columns=["still", "warnings"]).to_pydict()
        result.metadata["still_clips"] = dg.MetadataValue.int(sum(1 for x in rows["still"] if x) if not picture_only else 0)
        result.metadata["short_video_clips"] = dg.MetadataValue.int(sum(1 for w in rows["warnings"] if w and "short_video" in w))
        return result

    return frame_cache


# ----------------------------------------------------------------------------- fbank_cache, logmel_cache


class AudioCheckConfig(PoolConfig):
    min_seconds: float = _CHECKS.min_seconds  # shorter decoded audio is `too_short`
    min_fraction: float = _CHECKS.min_fraction  # ... and so is audio under this fraction of its listed segment
    silence_dbfs: float = _CHECKS.silence_dbfs  # whole-clip RMS below this is `silent`
    min_source_rate: int = _CHECKS.min_source_rate  # lower rates are refused (`odd_sample_rate`)
    dtype: str = "float16"  # storage dtype of the raw features (float16 or float32)

    def checks(self) -> dict:
        return asdict(AudioChecks(self.min_seconds, self.min_fraction, self.silence_dbfs, self.min_source_rate))


class FbankCacheConfig(AudioCheckConfig):
    num_mel_bins: int = _FBANK.num_mel_bins  # VIP-ANT/AST; 126 is the largest count with no empty bin at 16 kHz / 25 ms
    target_frames: int = _FBANK.target_frames  # cut or zero-padded to this many 10 ms frames
    frame_length_ms: float = _FBANK.frame_length_ms
    frame_shift_ms: float = _FBANK.frame_shift_ms


class LogMelCacheConfig(AudioCheckConfig):
    min_seconds: float = 0.5  # spoken captions are short
    num_mel_bins: int = _LOGMEL.num_mel_bins
    target_frames: int = _LOGMEL.target_frames  # DaveNet pads or cuts spoken captions to 2048 frames


def _audio_asset(ds: DatasetConfig, shards, stage: str, config_cls, make_params, description: str):
    @dg.asset(
        name=stage, key_prefix=[ds.name], group_name=ds.name, kinds={"parquet"}, partitions_def=shards,
        deps=[dg.AssetKey([ds.name, "clip_shards"])], code_version=AUDIO_CACHE, description=description,
    )
    def audio_cache(context: dg.AssetExecutionContext, config: config_cls, cache: CachePaths) -> dg.MaterializeResult:
        params, checks = make_params(config), config.checks()
        _, result = run_cache_stage(
            context, ds, cache, stage, audio_spec(stage, params, checks, config.dtype, ds.media, ds.channel),
            lambda m: (member_paths(ds.root, m)[0], m["start_s"], m["end_s"], ds.media, ds.channel, params, checks,
                       config.dtype),
            audio_row, config, init=torch_threads(config.torch_threads))
        return result

    return audio_cache


def build_fbank_cache_asset(ds: DatasetConfig, shards: dg.DynamicPartitionsDefinition) -> dg.AssetsDefinition:
    return _audio_asset(
        ds, shards, "fbank_cache", FbankCacheConfig,
        lambda c: FbankParams(num_mel_bins=c.num_mel_bins, target_frames=c.target_frames,
                              frame_length_ms=c.frame_length_ms, frame_shift_ms=c.frame_shift_ms),
        "Kaldi FBANK per clip (torchaudio.compliance.kaldi, VIP-ANT settings: 16 kHz first channel, mean removed, "
        "Hanning 25/10 ms, 128 bins, htk_compat, no energy, no dither), cut or padded to 1000 frames; raw, "
        "normalised at read time with fbank_stats.")


def build_logmel_cache_asset(ds: DatasetConfig, shards: dg.DynamicPartitionsDefinition) -> dg.AssetsDefinition:
    return _audio_asset(
        ds, shards, "logmel_cache", LogMelCacheConfig,
        lambda c: LogMelParams(num_mel_bins=c.num_mel_bins, target_frames=c.target_frames),
        "DaveNet's spoken-caption input: 40-bin log-mel (25 ms Hamming, 10 ms shift, pre-emphasis 0.97), "
        "padded or cut to 2048 frames.")


class WaveformCacheConfig(AudioCheckConfig):
    min_seconds: float = 0.5  # spoken captions are short
    target_samples: int = _WAVEFORM.target_samples  # cut or zero-padded to this many 16 kHz samples


def build_waveform_cache_asset(ds: DatasetConfig, shards: dg.DynamicPartitionsDefinition) -> dg.AssetsDefinition:
    return _audio_asset(
        ds, shards, "waveform_cache", WaveformCacheConfig,
        lambda c: WaveformParams(target_samples=c.target_samples),
        "16 kHz waveforms (first channel), cut or padded to 10 s, for featurizers that take samples (a frozen HuBERT "
        "in SpeechCLIP); built for datasets that set waveform_cache: true.")


# ----------------------------------------------------------------------------- fbank_stats


class FbankStatsConfig(dg.Config):
    splits: list[str] = list(_STATS.splits)  # the training split names to use
    per_bin: bool = _STATS.per_bin  # scalar statistics as AST / VIP-ANT; True adds a mean and std per mel bin
    include_padding: bool = _STATS.include_padding  # count the zero-padded frames too (AST's get_norm_stats does)


def build_fbank_stats_asset(ds: DatasetConfig, shards: dg.DynamicPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=[ds.name, "fbank_stats"], group_name=ds.name, kinds={"json"},
        deps=[dg.AssetKey([ds.name, "fbank_cache"])],
        description="Mean and std of the raw FBANK over the training split, streamed from fbank_cache; "
                    "applied when features are read for training.",
    )
    def fbank_stats(context: dg.AssetExecutionContext, config: FbankStatsConfig, cache: CachePaths) -> dg.MaterializeResult:
        layout = cache.layout()
        keys = sorted(context.instance.get_dynamic_partitions(shards.name))
        paths = [layout.stage_path(ds.name, "fbank_cache", k) for k in keys]
        missing = [k for k, p in zip(keys, paths) if not p.exists()]
        if missing:
            raise dg.Failure(f"fbank_cache is not built for shard(s) {missing}: materialise them first")
        try:
            stats, moments = compute_fbank_stats(paths, keys, FbankStatsParams(tuple(config.splits), config.per_bin,
                                                                                 config.include_padding))
        except ValueError as e:
            raise dg.Failure(str(e)) from e
        out = layout.fbank_stats_path(ds.name)
        write_json_atomic(out, stats, indent=1, sort_keys=False)
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(out)), "mean": round(stats["mean"], 4), "std": round(stats["std"], 4),
            "clips": stats["clips"], "frames": stats["frames"], "splits": config.splits,
            "constant_bins": stats["constant_bins"],
            "per_bin_mean_std": dg.MetadataValue.md(png_markdown(bin_plot(moments), "per-bin mean and std")),
        })

    return fbank_stats
