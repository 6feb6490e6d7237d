"""fbank_cache (Kaldi FBANK, VIP-ANT settings), logmel_cache (DaveNet's speech input) and
waveform_cache (16 kHz samples, a HuBERT featurizer's input; datasets that ask for it), per shard.

Raw features are stored (float16 by default, `dtype`), cut or zero-padded to the target
length, with the true length; normalisation happens when features are read for training
(assets.caches.fbank_stats), so new statistics never force a recompute. The features of a
shard are one fixed-size array beside its Parquet file (`<shard>.<fingerprint>.features.npy`,
row i = Parquet row i, zeros on error rows; see assets.caches.shard_builder), which training
memory-maps and reads in place.

Note on 128 mel bins: at 16 kHz with 25 ms frames (512-point FFT, 31.25 Hz per bin) the
mel filter at index 3 (63-93 Hz) contains no FFT bin; torchaudio silently returns
log(FLT_EPSILON) = -15.94 in that column for every frame, while Kaldi-compatible tools
(kaldi-native-fbank) refuse more than 126 bins. VIP-ANT and AST use 128, so 128 is the
default; `num_mel_bins` is a config field (126 is the largest clean count).
"""

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from assets.caches.audio_features import (FbankParams, WaveformParams, check_audio, davenet_logmel, decode_audio,
                                          kaldi_fbank, pad_or_cut, rms_dbfs)
from assets.caches.clip_span import ClipSpan, clip_span, span_warnings
from assets.caches.code_versions import AUDIO_CACHE
from assets.caches.shard_builder import ArrayColumn, CacheSpec, open_array
from assets.core.atomic_io import read_parquet_metadata

AUDIO_FIELDS = [
    ("n_frames", pa.int32()),  # true length before padding (<= target)
    ("source_rate", pa.int32()), ("source_channels", pa.int32()),
    ("duration_s", pa.float32()),  # decoded seconds of the clip's span
    ("span_start_s", pa.float32()),  # where the span starts in the file (media: full), 0 for segment files
    ("file_duration_s", pa.float32()),  # the whole audio stream (null when the container does not say)
    ("rms_dbfs", pa.float32()),
    ("warnings", pa.string()),  # resampled, first of / mean of several channels, short_audio, longer_than_listed
]


def _warnings(audio, span: ClipSpan, media_mode: str, channel: str) -> str:
    notes = []
    if audio.source_rate != audio.sample_rate:
        notes.append(f"resampled {audio.source_rate}->{audio.sample_rate} Hz")
    if audio.source_channels > 1:
        notes.append(f"{'first' if channel == 'first' else 'mean'} of {audio.source_channels} channels")
    if audio.file_duration_s is not None:
        notes += span_warnings(span, "audio", audio.file_duration_s, media_mode, margin_s=0.5)
    return "; ".join(notes)


def audio_row(task: tuple) -> dict:
    """The fbank_cache / logmel_cache columns of one clip (runs in a worker process).

    task: (path, listed start_s, listed end_s, the dataset's media and channel modes, params, checks, dtype)."""
    path, start_s, end_s, media_mode, channel, params, checks, dtype = task
    span = clip_span(media_mode, start_s, end_s, path)
    audio = decode_audio(path, sample_rate=params.sample_rate, min_source_rate=checks["min_source_rate"],
                         span=span, channel=channel)
    check_audio(path, audio, min_seconds=checks["min_seconds"], expected_seconds=span.length_s,
                min_fraction=checks["min_fraction"], silence_dbfs=checks["silence_dbfs"])
    if isinstance(params, FbankParams):
        features, n_frames = pad_or_cut(kaldi_fbank(audio.waveform, params), params.target_frames)
    elif isinstance(params, WaveformParams):
        features, n_frames = pad_or_cut(np.asarray(audio.waveform, np.float32)[:, None], params.target_samples)
        features = features[:, 0]
    else:
        features, n_frames = davenet_logmel(audio.waveform, params)
    return {"features": np.ascontiguousarray(features, dtype=dtype), "n_frames": n_frames,
            "source_rate": audio.source_rate, "source_channels": audio.source_channels,
            "duration_s": audio.duration_s, "span_start_s": span.start_s, "file_duration_s": audio.file_duration_s,
            "rms_dbfs": rms_dbfs(audio.waveform), "warnings": _warnings(audio, span, media_mode, channel)}


def audio_spec(stage: str, params, checks: dict, dtype: str, media_mode: str = "segment",
               channel: str = "first") -> CacheSpec:
    if isinstance(params, FbankParams):
        shape, layout = (params.target_frames, params.num_mel_bins), "frames,bins"
    elif isinstance(params, WaveformParams):
        shape, layout = (params.target_samples,), "samples"
    else:
        shape, layout = (params.num_mel_bins, params.target_frames), "bins,frames"
    source = {"dtype": dtype, "media": media_mode, "channel": channel}
    return CacheSpec(stage, AUDIO_CACHE, asdict(params) | checks | source, AUDIO_FIELDS,
                     {"clipkt.features.dtype": dtype, "clipkt.features.shape": ",".join(map(str, shape)),
                      "clipkt.features.layout": layout}, ArrayColumn("features", shape, dtype))


def features_metadata(path: Path) -> tuple[tuple[int, ...], str]:
    """(per-clip feature shape, storage dtype) of an audio cache file, from its footer."""
    meta = read_parquet_metadata(path)
    return tuple(int(x) for x in meta["clipkt.features.shape"].split(",")), meta["clipkt.features.dtype"]


def feature_array(path: Path) -> np.ndarray:
    """(rows, *shape) features of an audio cache file in their storage dtype, memory-mapped
    read-only (row i belongs to Parquet row i; error rows are zeros)."""
    array = open_array(path)
    shape, dtype = features_metadata(path)
    if array.shape[1:] != shape or array.dtype != np.dtype(dtype):
        raise ValueError(f"{path}: feature array is {array.shape[1:]} {array.dtype}, the file says {shape} {dtype}")
    return array


def read_features(path: Path, rows: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """((n, *shape) features in their storage dtype, (n,) true lengths) of the given rows of an audio
    cache file (default: its ok rows), copied out of the feature array."""
    table = pq.read_table(path, columns=["status", "n_frames"])
    if rows is None:
        rows = [i for i, s in enumerate(table.column("status").to_pylist()) if s == "ok"]
    lengths = table.column("n_frames").to_pylist()
    return (np.array(feature_array(path)[np.asarray(rows, np.int64)]),
            np.asarray([lengths[r] or 0 for r in rows], np.int64))


def torch_threads(n: int):
    def init() -> None:
        torch.set_num_threads(n)
    return init
