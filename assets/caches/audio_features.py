"""Audio decoding and the two audio front ends: Kaldi FBANK (VIP-ANT / AST) and DAVEnet's log-mel.

Pure functions, no Dagster. Only `decode_audio` touches the file system.

Public API::

    decode_audio(path, sample_rate=16000, min_source_rate=16000, max_channels=8, span=ClipSpan(), channel="first")
    check_audio(path, audio, min_seconds=1.0, expected_seconds=None, min_fraction=0.5, silence_dbfs=-60.0)
    kaldi_fbank(waveform, FbankParams()) -> (T, num_mel_bins) float32
    pad_or_cut(features, target_frames) -> ((target_frames, bins) float32, true length)
    empty_mel_bins(FbankParams()) -> indices of mel bins no FFT bin falls into
    davenet_logmel(waveform, LogMelParams()) -> ((num_mel_bins, target_frames) float32, true n_frames)

Facts these functions rely on (checked in tests/test_audio_features.py):

* At 16 kHz, 25 ms windows (400 samples, FFT padded to 512) and 128 mel bins, Kaldi's
  triangular filter 3 spans 62.96..93.01 Hz, strictly between FFT bins 2 and 3 (62.5 and
  93.75 Hz). It contains no FFT bin centre, so torchaudio's FBANK puts log(FLT_EPSILON) =
  -15.942385 in column 3 of every frame, whatever the audio. Kaldi and kaldi-native-fbank
  refuse such settings ("You may have set num_mel_bins too large"); 127 bins already have
  this empty bin, 126 is the largest count without one. The 128-bin setting is kept because
  VIP-ANT/AST use it (their checkpoints expect 128 columns). The column carries no
  information; a per-bin normalisation must not divide by its zero std.
* torchaudio's FBANK equals kaldi-native-fbank's to 6e-4 on log values for the same float
  input (2e-4 where the log energy is above -10; the rest is float32 rounding in near-silence).
"""

from __future__ import annotations

import functools
import wave
from dataclasses import dataclass

import av
import librosa
import numpy as np
import scipy.signal
import torch
import torchaudio.compliance.kaldi as ta_kaldi
import torchaudio.functional as ta_functional

from assets.caches.clip_span import INDEXED_FORMATS, ClipSpan
from assets.core.errors import ClipError
from assets.ingest.dataset_config import CHANNEL_MODES

# ---------------------------------------------------------------------------------------------
# Decoding


SEEK_MARGIN_S = 1.0  # a span starting later than this is reached by seeking to this much before it


@dataclass(frozen=True)
class DecodedAudio:
    waveform: np.ndarray  # float32 (N,): the span of channel 0 (or of the channel mean), resampled to sample_rate
    sample_rate: int
    source_rate: int
    source_channels: int
    duration_s: float  # decoded source samples of the span / source_rate
    file_duration_s: float | None = None  # the whole stream (exact for MP4-family files and wav; else the header's)
    channel_dbfs: tuple[float, ...] = ()  # RMS level of each source channel over the span


# Integer sample formats -> the divisor FFmpeg's own s16/s32 -> flt conversion uses.
_INT_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}


def _all_channels(frame: av.AudioFrame, channels: int) -> np.ndarray:
    """Every channel of one decoded frame as float32 (channels, samples), without any mixing."""
    data = frame.to_ndarray()  # planar: (channels, samples); packed: (1, samples * channels)
    data = data if frame.format.is_planar else data.reshape(-1, channels).T
    if data.dtype == np.uint8:  # u8 is offset binary
        return (data.astype(np.float32) - 128.0) / 128.0
    if data.dtype in _INT_SCALE:
        return (data.astype(np.float64) / _INT_SCALE[data.dtype]).astype(np.float32)
    return data.astype(np.float32)


def _resample(x: np.ndarray, source_rate: int, sample_rate: int) -> np.ndarray:
    """Band-limited sinc resampling with torchaudio's defaults (Hann-windowed sinc,
    lowpass_filter_width=6, rolloff=0.99): a fixed polyphase filter applied as a convolution,
    so the same input gives the same output. Output length ceil(N * sample_rate / source_rate)."""
    if source_rate == sample_rate:
        return x
    return ta_functional.resample(torch.from_numpy(x), source_rate, sample_rate).numpy()


def _check_format(path: str, rate: int, channels: int, min_source_rate: int, max_channels: int) -> None:
    if rate < min_source_rate:
        raise ClipError("odd_sample_rate", f"{path}: sample rate {rate} Hz is below {min_source_rate} Hz "
                        "(upsampling would leave the top band empty and shift the features)")
    if not 1 <= channels <= max_channels:
        raise ClipError("odd_channels", f"{path}: {channels} audio channels (accepted: 1..{max_channels})")


@dataclass(frozen=True)
class _Samples:
    data: np.ndarray  # float32 (channels, n): source samples from `first` on
    first: int  # sample index (from the stream's first sample) of data[:, 0]
    rate: int
    channels: int
    total: int | None  # the stream's exact sample count, when the container states it
    header_s: float | None = None  # the stream's (or container's) duration as its header estimates it


def _decode_pcm16_wav(path: str, min_source_rate: int, max_channels: int) -> _Samples | None:
    """Fast path for 16-bit PCM wav (AudioCaps, Places): the `wave` module reads a 10 s clip in
    ~0.1 ms where PyAV takes ~6 ms, with the same samples. None for anything else (float or
    extensible wav, other widths, unreadable headers): PyAV then decodes or reports it."""
    if not path.lower().endswith(".wav"):
        return None
    try:
        reader = wave.open(path, "rb")
    except (wave.Error, EOFError, OSError):
        return None
    with reader:
        if reader.getsampwidth() != 2:
            return None
        rate, channels = reader.getframerate(), reader.getnchannels()
        _check_format(path, rate, channels, min_source_rate, max_channels)
        data = reader.readframes(reader.getnframes())
    whole = len(data) // (2 * channels) * (2 * channels)  # a truncated file may end mid-frame
    pcm = np.frombuffer(data[:whole], "<i2").reshape(-1, channels).T  # interleaved (N, C) -> (C, N)
    return _Samples(pcm.astype(np.float32) / np.float32(32768.0), 0, rate, channels, pcm.shape[1])


def _decode_stream(path: str, span: ClipSpan, min_source_rate: int, max_channels: int) -> _Samples:
    """Decode the first audio stream from (about) the span's start to its end; av errors propagate.

    Samples are placed by the first decoded frame's timestamp, so a seek lands where it says and
    an encoder's priming that the decoder did not skip (negative timestamps) falls before 0.
    The trailing padding an AAC encoder adds to fill its last 1024-sample frame is cut at the
    stream's duration when the container states it exactly (MP4 family: the edit list / sample
    table), which is what ffmpeg does (160000 samples for a 10 s 16 kHz clip, not 160768).
    """
    with av.open(path) as container:
        if not container.streams.audio:
            kinds = ", ".join(s.type for s in container.streams) or "none"
            raise ClipError("no_audio_stream", f"{path}: no audio stream (streams: {kinds})")
        stream = container.streams.audio[0]
        rate, channels = stream.codec_context.sample_rate, stream.codec_context.channels
        _check_format(path, rate, channels, min_source_rate, max_channels)
        tb, origin = stream.time_base, stream.start_time or 0
        total = None
        if stream.duration and container.format.name in INDEXED_FORMATS:
            total = int(round(stream.duration * tb * rate))
        stop = None if span.end_s is None else int(round(span.end_s * rate))
        if span.start_s > SEEK_MARGIN_S:
            container.seek(origin + int((span.start_s - SEEK_MARGIN_S) / tb), stream=stream, backward=True)
        header_s = (float(stream.duration * tb) if stream.duration else
                    container.duration / av.time_base if container.duration else None)
        chunks, first, decoded = [], None, 0
        for frame in container.decode(stream):
            if frame.sample_rate != rate:  # concatenating would stretch part of the clip
                raise ClipError("corrupt", f"{path}: sample rate changes mid-stream ({rate} -> {frame.sample_rate} Hz)")
            if first is None:
                first = 0 if frame.pts is None else int(round((frame.pts - origin) * tb * rate))
            chunks.append(_all_channels(frame, frame.layout.nb_channels))
            decoded += chunks[-1].shape[1]
            if stop is not None and first + decoded >= stop:
                break
    data = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    if data.shape[0] != channels:
        raise ClipError("corrupt", f"{path}: frames hold {data.shape[0]} channels, the stream says {channels}")
    return _Samples(data, first or 0, rate, channels, total, header_s)


def decode_audio(path: str, sample_rate: int = 16000, min_source_rate: int = 16000, max_channels: int = 8,
                 span: ClipSpan = ClipSpan(), channel: str = "first") -> DecodedAudio:
    """Decode the span of the first audio stream of any FFmpeg-readable file, take channel 0
    (`first`, as VIP-ANT: "the first audio channel is always used") or the mean of all channels
    (`mix`), and resample it.

    Raises ClipError: corrupt (cannot open/decode, or no samples), no_audio_stream,
    odd_sample_rate (source below min_source_rate), odd_channels (0 or > max_channels),
    too_short (the stream ends before the span starts).
    """
    if channel not in CHANNEL_MODES:
        raise ValueError(f"channel must be one of {CHANNEL_MODES}, got {channel!r}")
    try:
        s = _decode_pcm16_wav(path, min_source_rate, max_channels) or _decode_stream(path, span, min_source_rate,
                                                                                   max_channels)
    except av.FFmpegError as err:  # also FileNotFoundError/PermissionError, which PyAV subclasses
        raise ClipError("corrupt", f"{path}: cannot decode audio: {err}") from err
    if s.data.shape[1] == 0:
        raise ClipError("corrupt", f"{path}: the audio stream decodes to no samples")
    end = s.first + s.data.shape[1] if s.total is None else min(s.first + s.data.shape[1], s.total)
    lo = max(int(round(span.start_s * s.rate)), s.first)
    hi = end if span.end_s is None else min(end, int(round(span.end_s * s.rate)))
    if hi <= lo:
        raise ClipError("too_short", f"{path}: the audio stream ends at {end / s.rate:.2f} s, "
                        f"before the clip's span starts ({span.start_s:.2f} s)")
    part = s.data[:, lo - s.first:hi - s.first]
    levels = tuple(rms_dbfs(c) for c in part)
    mono = part[0] if channel == "first" else part.mean(axis=0, dtype=np.float64).astype(np.float32)
    file_s = s.total / s.rate if s.total is not None else s.header_s
    return DecodedAudio(_resample(np.ascontiguousarray(mono), s.rate, sample_rate), sample_rate, s.rate, s.channels,
                        part.shape[1] / s.rate, file_s, levels)


@dataclass(frozen=True)
class AudioChecks:
    """What a stage refuses, per clip (each refusal is an error record, never a failed shard)."""
    min_seconds: float = 1.0  # shorter decoded audio is `too_short`
    min_fraction: float = 0.5  # ... and so is audio shorter than this fraction of its listed segment (10 s)
    silence_dbfs: float = -60.0  # whole-clip RMS below this is `silent`
    min_source_rate: int = 16000  # lower rates are refused (`odd_sample_rate`): upsampling leaves the top band empty


def rms_dbfs(waveform: np.ndarray) -> float:
    """RMS level in dB relative to a full-scale (1.0) constant: a full-scale sine is -3.01 dBFS,
    digital silence -inf."""
    rms = float(np.sqrt(np.mean(np.square(waveform, dtype=np.float64))))
    with np.errstate(divide="ignore"):
        return float(20.0 * np.log10(rms))


def check_audio(path: str, audio: DecodedAudio, min_seconds: float = AudioChecks.min_seconds,
                expected_seconds: float | None = None, min_fraction: float = AudioChecks.min_fraction,
                silence_dbfs: float = AudioChecks.silence_dbfs) -> None:
    """Raise ClipError too_short / silent for a clip a stage should not use.

    too_short: duration < min_seconds, or < min_fraction * expected_seconds (e.g. a 3 s
    download of a 10 s AudioSet segment). silent: RMS of the whole clip (channel 0, after
    resampling) below silence_dbfs.
    """
    if audio.duration_s < min_seconds:
        raise ClipError("too_short", f"{path}: {audio.duration_s:.3f} s of audio, minimum {min_seconds} s")
    if expected_seconds is not None and audio.duration_s < min_fraction * expected_seconds:
        raise ClipError("too_short", f"{path}: {audio.duration_s:.3f} s of audio, less than "
                        f"{min_fraction:g} of the expected {expected_seconds} s")
    level = rms_dbfs(audio.waveform)
    if level < silence_dbfs:
        loud = [(i, db) for i, db in enumerate(audio.channel_dbfs) if i > 0 and db >= silence_dbfs]
        other = ""
        if loud and audio.source_channels > 1:
            listed = ", ".join(f"{i} ({db:.1f} dBFS)" for i, db in loud)
            other = (f"; channel 0 is silent but channel(s) {listed} carry sound: `channel: mix` in the dataset "
                     "YAML uses them")
        raise ClipError("silent", f"{path}: RMS level {level:.1f} dBFS is below {silence_dbfs} dBFS{other}")


# ---------------------------------------------------------------------------------------------
# Kaldi FBANK (VIP-ANT / AST front end)


@dataclass(frozen=True)
class FbankParams:
    sample_rate: int = 16000
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    window_type: str = "hanning"
    htk_compat: bool = True
    use_energy: bool = False
    dither: float = 0.0  # keep 0: torchaudio dithers with unseeded torch.randn
    remove_mean: bool = True  # subtract the waveform mean before FBANK (VIP-ANT / AST)
    target_frames: int = 1000  # cut or zero-pad to this many frames (pad_or_cut)


def _window_samples(p: FbankParams) -> int:
    return int(p.sample_rate * p.frame_length_ms * 0.001)  # as torchaudio computes it


def kaldi_fbank(waveform: np.ndarray, p: FbankParams) -> np.ndarray:
    """Log mel filterbank (T, num_mel_bins [+1 with use_energy]) float32, unpadded.

    The AST/VIP-ANT call: torchaudio.compliance.kaldi.fbank on the (1, N) float waveform in
    [-1, 1] (not int16-scaled), the rest at torchaudio's defaults: preemphasis 0.97, per-frame
    DC removal, FFT padded to a power of two, mel bins from 20 Hz to Nyquist, power spectrum,
    log floored at FLT_EPSILON, snip_edges (T = 1 + (N - 400) // 160 at 16 kHz). "hanning" is
    Kaldi's symmetric Hann window. A waveform shorter than one window gives (0, bins) where
    torchaudio would assert.
    """
    x = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32)).unsqueeze(0)  # (1, N)
    bins = p.num_mel_bins + int(p.use_energy)
    if x.shape[1] < _window_samples(p):
        return np.zeros((0, bins), np.float32)
    if p.remove_mean:
        x = x - x.mean()
    feats = ta_kaldi.fbank(
        x, sample_frequency=float(p.sample_rate), num_mel_bins=p.num_mel_bins, frame_length=p.frame_length_ms,
        frame_shift=p.frame_shift_ms, window_type=p.window_type, htk_compat=p.htk_compat,
        use_energy=p.use_energy, dither=p.dither,
    )
    return feats.numpy().astype(np.float32, copy=False)


@dataclass(frozen=True)
class WaveformParams:
    """The decoded waveform itself, for featurizers that take samples (HuBERT): 16 kHz, cut or
    zero-padded to `target_samples` (10 s)."""
    sample_rate: int = 16000
    target_samples: int = 160000


def pad_or_cut(features: np.ndarray, target_frames: int) -> tuple[np.ndarray, int]:
    """(T, bins) -> ((target_frames, bins) with zero rows appended or trailing rows dropped,
    true length min(T, target_frames))."""
    n = min(features.shape[0], target_frames)
    out = np.zeros((target_frames,) + features.shape[1:], np.float32)
    out[:n] = features[:n]
    return out, n


def empty_mel_bins(p: FbankParams) -> list[int]:
    """Indices of Kaldi mel bins whose triangle contains no FFT bin centre (all-zero filters).

    Kaldi's construction: FFT size = window rounded up to a power of two; FFT bins
    0..n_fft/2 - 1 (the Nyquist bin is dropped); num_mel_bins + 2 points equally spaced on
    mel = 1127 ln(1 + f/700) between low_freq = 20 Hz and high_freq = Nyquist; bin b spans
    the open interval (point b, point b + 2). Computed in float64; torchaudio's float32 copy
    agrees for the usual settings (the test checks 16 kHz, 23..140 bins).
    """
    window = _window_samples(p)
    n_fft = 1 << (window - 1).bit_length()

    def mel(f):
        return 1127.0 * np.log1p(np.asarray(f, np.float64) / 700.0)

    low, high = mel(20.0), mel(p.sample_rate / 2)
    delta = (high - low) / (p.num_mel_bins + 1)
    fft_mel = mel(np.arange(n_fft // 2) * p.sample_rate / n_fft)  # (n_fft/2,)
    left = low + np.arange(p.num_mel_bins) * delta  # (bins,)
    inside = (fft_mel[None, :] > left[:, None]) & (fft_mel[None, :] < left[:, None] + 2 * delta)
    return np.flatnonzero(~inside.any(axis=1)).tolist()


# ---------------------------------------------------------------------------------------------
# DAVEnet log-mel (Harwath et al., DAVEnet-pytorch dataloaders/image_caption_dataset.py)


@dataclass(frozen=True)
class LogMelParams:
    sample_rate: int = 16000
    num_mel_bins: int = 40
    window_ms: float = 25.0
    shift_ms: float = 10.0
    window_type: str = "hamming"  # hamming | hann | blackman | bartlett, symmetric as in the reference
    preemphasis: float = 0.97
    fmin: float = 20.0
    target_frames: int = 2048
    remove_mean: bool = True  # the reference subtracts the waveform mean before preemphasis


@functools.lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float) -> np.ndarray:
    # (n_mels, n_fft // 2 + 1) float32, Slaney scale and area normalisation (librosa defaults)
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin)


def davenet_logmel(waveform: np.ndarray, p: LogMelParams) -> tuple[np.ndarray, int]:
    """DAVEnet's input: ((num_mel_bins, target_frames) float32 dB, true n_frames).

    Follows the reference step by step, in float32 as it does (librosa.load returns float32):
    y -= mean; y = [y0, y[1:] - c y[:-1]]; |STFT|^2 with n_fft = win = int(sr * window),
    hop = int(sr * shift) and a *symmetric* window (the reference passes the function
    scipy.signal.hamming, which librosa calls as hamming(win), sym=True); Slaney mel
    filters from fmin to Nyquist; power_to_db(ref=max, amin=1e-10, top_db=80), so values
    lie in [-80, 0]. librosa centres frames (center=True): n_frames = 1 + N // hop.
    The reference ran on librosa < 0.10, whose stft padded the ends by reflection; librosa
    0.10 changed the default pad_mode to "constant" (zeros), so reflect is passed explicitly.
    Padding uses 0 as the reference does (padval=0), which is the loudest dB value.
    """
    if p.window_type not in ("hamming", "hann", "blackman", "bartlett"):
        raise ValueError(f"davenet_logmel: unknown window_type {p.window_type!r}")
    y = np.asarray(waveform, np.float32)
    if p.remove_mean:
        y = y - y.mean()
    y = np.append(y[0], y[1:] - np.float32(p.preemphasis) * y[:-1])  # (N,) float32
    win = int(p.sample_rate * (p.window_ms / 1000.0))
    hop = int(p.sample_rate * (p.shift_ms / 1000.0))
    window = getattr(scipy.signal.windows, p.window_type)(win, sym=True)
    stft = librosa.stft(y, n_fft=win, hop_length=hop, win_length=win, window=window,
                        center=True, pad_mode="reflect")  # (win // 2 + 1, 1 + N // hop) complex64
    melspec = _mel_basis(p.sample_rate, win, p.num_mel_bins, float(p.fmin)) @ (np.abs(stft) ** 2)
    logspec = librosa.power_to_db(melspec, ref=np.max)  # (num_mel_bins, frames)
    n = min(logspec.shape[1], p.target_frames)
    out = np.zeros((p.num_mel_bins, p.target_frames), np.float32)
    out[:, :n] = logspec[:, :n]
    return out, n
