"""fbank_cache (Kaldi FBANK, VIP-ANT settings) and logmel_cache (DaveNet's speech input), per shard.

Raw features are stored (float16 by default, `dtype`), cut or zero-padded to the target
length, with the true length; normalisation happens when features are read for training
(assets.fbank_stats), so new statistics never force a recompute.

Note on 128 mel bins: at 16 kHz with 25 ms frames (512-point FFT, 31.25 Hz per bin) the
mel filter at index 3 (63-93 Hz) contains no FFT bin; torchaudio silently returns
log(FLT_EPSILON) = -15.94 in that column for every frame, while Kaldi-compatible tools
(kaldi-native-fbank) refuse more than 126 bins. VIP-ANT and AST use 128, so 128 is the
default; `num_mel_bins` is a config field (126 is the largest clean count).
"""

from dataclasses import asdict

import dagster as dg
import numpy as np
import pyarrow as pa
import torch

from assets.audio_features import (
    FbankParams, LogMelParams, check_audio, davenet_logmel, decode_audio, kaldi_fbank, pad_or_cut, rms_dbfs,
)
from assets.cache_asset import PoolConfig, member_paths, run_cache_stage
from assets.dataset_config import DatasetConfig
from assets.shard_cache import CacheSpec
from pipelines.resources import CachePaths

CODE_VERSION = "1"

AUDIO_FIELDS = [
    ("features", pa.binary()),  # (frames, bins) for FBANK, (bins, frames) for log-mel; dtype and shape in the schema metadata
    ("n_frames", pa.int32()),  # true length before padding (<= target)
    ("source_rate", pa.int32()), ("source_channels", pa.int32()),
    ("duration_s", pa.float32()), ("rms_dbfs", pa.float32()),
    ("warnings", pa.string()),  # e.g. resampled, first of several channels
]


def _warnings(audio) -> str:
    notes = []
    if audio.source_rate != audio.sample_rate:
        notes.append(f"resampled {audio.source_rate}->{audio.sample_rate} Hz")
    if audio.source_channels > 1:
        notes.append(f"first of {audio.source_channels} channels")
    return "; ".join(notes)


def audio_row(task: tuple) -> dict:
    """The fbank_cache / logmel_cache columns of one clip (runs in a worker process)."""
    path, expected_s, params, checks, dtype = task
    audio = decode_audio(path, sample_rate=params.sample_rate, min_source_rate=checks["min_source_rate"])
    check_audio(path, audio, min_seconds=checks["min_seconds"], expected_seconds=expected_s,
                min_fraction=checks["min_fraction"], silence_dbfs=checks["silence_dbfs"])
    if isinstance(params, FbankParams):
        features, n_frames = pad_or_cut(kaldi_fbank(audio.waveform, params), params.target_frames)
    else:
        features, n_frames = davenet_logmel(audio.waveform, params)
    return {"features": np.ascontiguousarray(features, dtype=dtype).tobytes(), "n_frames": n_frames,
            "source_rate": audio.source_rate, "source_channels": audio.source_channels,
            "duration_s": audio.duration_s, "rms_dbfs": rms_dbfs(audio.waveform), "warnings": _warnings(audio)}


def audio_spec(stage: str, params, checks: dict, dtype: str) -> CacheSpec:
    if isinstance(params, FbankParams):
        shape, layout = (params.target_frames, params.num_mel_bins), "frames,bins"
    else:
        shape, layout = (params.num_mel_bins, params.target_frames), "bins,frames"
    return CacheSpec(stage, CODE_VERSION, asdict(params) | checks | {"dtype": dtype}, AUDIO_FIELDS,
                     {"clipkt.features.dtype": dtype, "clipkt.features.shape": ",".join(map(str, shape)),
                      "clipkt.features.layout": layout})


def read_features(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(N, *shape) float32 features and (N,) true lengths of the ok rows of a cache table."""
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    shape = tuple(int(x) for x in meta["clipkt.features.shape"].split(","))
    ok = [i for i, s in enumerate(table.column("status").to_pylist()) if s == "ok"]
    blobs = table.column("features").take(ok).to_pylist()
    feats = np.stack([np.frombuffer(b, dtype=meta["clipkt.features.dtype"]).reshape(shape) for b in blobs]) \
        if blobs else np.zeros((0, *shape), np.float32)
    return feats.astype(np.float32), np.asarray(table.column("n_frames").take(ok).to_pylist(), np.int64)


def _expected_seconds(member: dict) -> float | None:
    span = (member["end_s"] or 0.0) - (member["start_s"] or 0.0)
    return span if span == span and span > 0 else None  # NaN for Places: no listed segment length


def _torch_threads(n: int):
    def init() -> None:
        torch.set_num_threads(n)
    return init


class AudioCheckConfig(PoolConfig):
    min_seconds: float = 1.0  # shorter decoded audio is `too_short`
    min_fraction: float = 0.5  # ... and so is audio shorter than this fraction of its listed segment (10 s)
    silence_dbfs: float = -60.0  # whole-clip RMS below this is `silent`
    min_source_rate: int = 16000  # lower rates are refused (`odd_sample_rate`): upsampling leaves the top band empty
    dtype: str = "float16"  # storage dtype of the raw features (float16 or float32)

    def checks(self) -> dict:
        return {"min_seconds": self.min_seconds, "min_fraction": self.min_fraction,
                "silence_dbfs": self.silence_dbfs, "min_source_rate": self.min_source_rate}


class FbankCacheConfig(AudioCheckConfig):
    num_mel_bins: int = 128  # VIP-ANT/AST; 126 is the largest count with no empty bin at 16 kHz / 25 ms
    target_frames: int = 1000  # cut or zero-padded to this many 10 ms frames
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0


class LogMelCacheConfig(AudioCheckConfig):
    min_seconds: float = 0.5
    num_mel_bins: int = 40
    target_frames: int = 2048  # DaveNet pads or cuts spoken captions to 2048 frames


def _audio_asset(ds: DatasetConfig, shards, stage: str, config_cls, make_params, description: str):
    @dg.asset(
        name=stage, key_prefix=[ds.name], group_name=ds.name, kinds={"parquet"}, partitions_def=shards,
        deps=[dg.AssetKey([ds.name, "clip_shards"])], code_version=CODE_VERSION, description=description,
    )
    def audio_cache(context: dg.AssetExecutionContext, config: config_cls, cache: CachePaths) -> dg.MaterializeResult:
        params, checks = make_params(config), config.checks()
        spec = audio_spec(stage, params, checks, config.dtype)
        _, result = run_cache_stage(
            context, ds, cache, stage, spec,
            lambda m: (member_paths(ds, m)[0], _expected_seconds(m), params, checks, config.dtype),
            audio_row, config, init=_torch_threads(config.torch_threads))
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
