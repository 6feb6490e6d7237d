"""assets/caches/audio_features.py on real speech (espeak) and real containers (wav, flac, AAC mp4)."""

import wave

import av
import kaldi_native_fbank as knf
import librosa
import numpy as np
import pytest
import torch
import torchaudio.functional as ta_functional
from torchaudio.compliance.kaldi import get_mel_banks

from assets.caches import audio_features as af
from assets.caches.audio_features import (FbankParams, LogMelParams, check_audio, davenet_logmel, decode_audio,
                                          empty_mel_bins, kaldi_fbank, pad_or_cut)
from assets.core.errors import ClipError
from data.synthav.media_io import encode_mp4
from data.synthav.speech import synthesize

LOG_EPS = float(np.log(np.finfo(np.float32).eps))  # -15.942385: torchaudio's floor on mel energies


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """~5 s of espeak speech, float32 16 kHz, with espeak's digitally silent pauses."""
    return synthesize("The quick brown fox jumps over the lazy dog. Grilled cheese sandwiches are tasty.")


def write_wav(path, audio: np.ndarray, rate: int) -> np.ndarray:
    """Write (C, N) float audio as 16-bit PCM; return the int16 samples written, (C, N)."""
    pcm = np.round(np.clip(np.atleast_2d(audio), -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(pcm.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.T.tobytes())
    return pcm


def write_flac(path, pcm: np.ndarray, rate: int) -> None:
    """(C, N) int16 -> a FLAC file through PyAV (lossless, so decoding must give these samples back)."""
    layout = "mono" if pcm.shape[0] == 1 else "stereo"
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm.T.reshape(1, -1)), format="s16", layout=layout)
        frame.sample_rate = rate
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def write_video_only_mp4(path) -> None:
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=2)
        video.width, video.height, video.pix_fmt = 16, 16, "yuv420p"
        for _ in range(2):
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")))
        out.mux(video.encode(None))


def tiny_frames() -> np.ndarray:
    return np.zeros((2, 16, 16, 3), np.uint8)


# ------------------------------------------------------------------------------------ FBANK


def knf_fbank(waveform: np.ndarray, num_bins: int) -> np.ndarray:
    """kaldi-native-fbank with torchaudio.compliance.kaldi.fbank's defaults: hanning window,
    dither 0, preemphasis 0.97, remove_dc_offset, snip_edges, round_to_power_of_two, low_freq 20,
    high_freq Nyquist, no energy. Both take float samples as given (no int16 scaling): a scale s
    only shifts log energies by 2 log s, except where the epsilon floor binds."""
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hanning"
    opts.mel_opts.num_bins = num_bins
    opts.use_energy = False
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16000, (waveform - waveform.mean()).astype(np.float32))  # VIP-ANT's mean removal
    fbank.input_finished()
    return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])


@pytest.mark.parametrize("bins", [80, 126])
def test_fbank_matches_kaldi_native_fbank(speech, bins):
    ours = kaldi_fbank(speech, FbankParams(num_mel_bins=bins))
    ref = knf_fbank(speech, bins)
    assert ours.shape == ref.shape == (1 + (len(speech) - 400) // 160, bins)
    assert ours.dtype == np.float32
    diff = np.abs(ours - ref)
    # Measured on this clip: max 5.9e-4 overall, all of it in near-silent entries (log energy
    # < -14, i.e. float32 rounding noise in espeak's pauses); max 2.1e-4 where log energy > -10.
    assert diff.max() < 2e-3
    assert diff[ref > -10].max() < 5e-4


def test_128_bins_have_one_empty_bin(speech):
    assert empty_mel_bins(FbankParams()) == [3]
    feats = kaldi_fbank(speech, FbankParams())  # VIP-ANT / AST settings
    constant = np.flatnonzero(feats.std(axis=0) == 0)
    assert constant.tolist() == [3]
    assert np.all(feats[:, 3] == np.float32(LOG_EPS))
    # Kaldi-compatible tools refuse those settings; 126 is the largest clean bin count.
    for bins in (127, 128):
        opts = knf.FbankOptions()
        opts.mel_opts.num_bins = bins
        with pytest.raises(ValueError, match="num_mel_bins too large"):
            knf.OnlineFbank(opts)
    assert empty_mel_bins(FbankParams(num_mel_bins=127)) == [3]
    assert all(not empty_mel_bins(FbankParams(num_mel_bins=n)) for n in range(4, 127))


@pytest.mark.parametrize("rate, padded_fft", [(16000, 512), (22050, 1024), (44100, 2048)])  # 25 ms windows
def test_empty_mel_bins_agree_with_torchaudio_filters(rate, padded_fft):
    for bins in range(23, 141):
        p = FbankParams(sample_rate=rate, num_mel_bins=bins)
        filters, _ = get_mel_banks(bins, padded_fft, float(rate), 20.0, 0.0, 100.0, -500.0, 1.0)
        assert empty_mel_bins(p) == torch.nonzero(filters.sum(dim=1) == 0).flatten().tolist(), (rate, bins)


def test_fbank_shorter_than_one_window_is_empty():
    assert kaldi_fbank(np.zeros(399, np.float32), FbankParams()).shape == (0, 128)


def test_pad_or_cut():
    short = np.arange(6, dtype=np.float32).reshape(3, 2) + 1
    padded, n = pad_or_cut(short, 5)
    assert n == 3 and padded.shape == (5, 2) and padded.dtype == np.float32
    np.testing.assert_array_equal(padded[:3], short)
    np.testing.assert_array_equal(padded[3:], 0)
    long = np.arange(20, dtype=np.float32).reshape(10, 2)
    cut, n = pad_or_cut(long, 4)
    assert n == 4
    np.testing.assert_array_equal(cut, long[:4])
    same, n = pad_or_cut(long, 10)
    assert n == 10
    np.testing.assert_array_equal(same, long)


# ------------------------------------------------------------------------------------ DAVEnet


def reference_logmel(y: np.ndarray, n_mels=40, sr=16000, n_fft=400, hop=160) -> np.ndarray:
    """DAVEnet's log-mel written out with numpy: DC removal, preemphasis, reflect padding of
    n_fft // 2 (librosa < 0.10's centring), symmetric Hamming frames, float64 FFT, librosa's mel
    filters, 10 log10 relative to the maximum with an 80 dB floor. (n_mels, 1 + N // hop)."""
    y = y.astype(np.float64) - y.mean()
    y = np.concatenate([y[:1], y[1:] - 0.97 * y[:-1]])
    y = np.pad(y, n_fft // 2, mode="reflect")
    n_frames = 1 + (len(y) - n_fft) // hop
    frames = np.stack([y[i * hop:i * hop + n_fft] for i in range(n_frames)])  # (T, n_fft)
    hamming = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(n_fft) / (n_fft - 1))  # symmetric
    power = np.abs(np.fft.rfft(frames * hamming, axis=1)) ** 2  # (T, n_fft // 2 + 1)
    mel = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=20.0).astype(np.float64) @ power.T
    db = 10 * np.log10(np.maximum(mel, 1e-10)) - 10 * np.log10(mel.max())
    return np.maximum(db, -80.0)


def test_davenet_logmel_matches_reference(speech):
    feats, n = davenet_logmel(speech, LogMelParams())
    ref = reference_logmel(speech)
    assert feats.shape == (40, 2048) and feats.dtype == np.float32
    assert n == ref.shape[1] == 1 + len(speech) // 160
    # Measured: max |diff| 2.9e-4 dB (float32 STFT vs float64) on a [-80, 0] dB range. The
    # tolerance catches the likely slips: zero instead of reflect padding (1.2 dB at the edges),
    # a periodic instead of symmetric window (0.35 dB), no mean removal (12.7 dB).
    assert np.abs(feats[:, :n] - ref).max() < 2e-3
    assert feats[:, :n].max() == 0.0 and feats[:, :n].min() >= -80.0
    np.testing.assert_array_equal(feats[:, n:], 0.0)  # padval 0, as the reference


def test_davenet_logmel_cuts_long_input():
    noise = np.random.default_rng(0).standard_normal(2100 * 160).astype(np.float32) * 0.1
    feats, n = davenet_logmel(noise, LogMelParams())
    assert feats.shape == (40, 2048) and n == 2048
    assert np.all(feats[:, -1] < 0)  # real frames up to the end, no padding


# ------------------------------------------------------------------------------------ decoding


def test_wav_round_trips_sample_exactly(tmp_path, speech):
    path = tmp_path / "speech.wav"
    pcm = write_wav(path, speech, 16000)
    audio = decode_audio(str(path))
    assert (audio.sample_rate, audio.source_rate, audio.source_channels) == (16000, 16000, 1)
    assert audio.duration_s == len(speech) / 16000
    assert audio.waveform.dtype == np.float32
    np.testing.assert_array_equal(audio.waveform, pcm[0] / np.float32(32768))


def test_wav_fast_path_equals_pyav(tmp_path, speech, monkeypatch):
    path = tmp_path / "stereo.wav"
    write_wav(path, np.stack([speech, speech[::-1]]), 16000)
    fast = decode_audio(str(path))
    monkeypatch.setattr(af, "_decode_pcm16_wav", lambda *args: None)
    slow = decode_audio(str(path))
    assert fast.source_channels == slow.source_channels == 2
    np.testing.assert_array_equal(fast.waveform, slow.waveform)


def test_stereo_flac_keeps_first_channel_exactly(tmp_path):
    """Lossless 44.1 kHz stereo: channel 0 resampled, bit for bit; the mean would differ."""
    first = synthesize("The first channel speaks.", sample_rate=44100)
    second = 0.3 * np.sin(2 * np.pi * 440 * np.arange(len(first)) / 44100)
    pcm = np.round(np.stack([first, second]) * 32767).astype(np.int16)
    write_flac(tmp_path / "stereo.flac", pcm, 44100)
    audio = decode_audio(str(tmp_path / "stereo.flac"))
    assert (audio.source_rate, audio.source_channels) == (44100, 2)
    expected = ta_functional.resample(torch.from_numpy(pcm[0] / np.float32(32768)), 44100, 16000).numpy()
    np.testing.assert_array_equal(audio.waveform, expected)


def test_stereo_aac_mp4_keeps_first_channel(tmp_path):
    first = synthesize("Stereo test with the first channel speaking clearly.", sample_rate=44100)
    second = (0.3 * np.sin(2 * np.pi * 440 * np.arange(len(first)) / 44100)).astype(np.float32)
    (tmp_path / "stereo.mp4").write_bytes(encode_mp4(tiny_frames(), 1, np.stack([first, second]), 44100))
    audio = decode_audio(str(tmp_path / "stereo.mp4"))
    assert (audio.sample_rate, audio.source_rate, audio.source_channels) == (16000, 44100, 2)
    # AAC pads the last 1024-sample frame; the container's duration cuts it off, as ffmpeg does.
    with av.open(str(tmp_path / "stereo.mp4")) as container:
        stream = container.streams.audio[0]
        assert round(audio.duration_s * 44100) == stream.duration * stream.time_base * 44100
    assert abs(round(audio.duration_s * 44100) - len(first)) < 1024
    decoded = audio.waveform

    def relative_error(target):
        ref = ta_functional.resample(torch.from_numpy(target), 44100, 16000).numpy()
        n = min(len(ref), len(decoded))
        return np.linalg.norm(decoded[:n] - ref[:n]) / np.linalg.norm(ref[:n])

    # Measured: 0.099 against channel 0 (AAC at 32 kb/s per channel, time-aligned: the
    # decoder drops the encoder's priming samples), 0.996 against the mean of the channels.
    assert relative_error(first) < 0.2
    assert relative_error((first + second) / 2) > 0.8


def test_random_bytes_are_corrupt(tmp_path):
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ClipError) as err:
        decode_audio(str(path))
    assert err.value.kind == "corrupt"
    assert str(err.value).startswith(str(path))


def test_video_only_mp4_has_no_audio_stream(tmp_path):
    path = tmp_path / "silent_film.mp4"
    write_video_only_mp4(path)
    with pytest.raises(ClipError) as err:
        decode_audio(str(path))
    assert err.value.kind == "no_audio_stream"
    assert str(err.value).startswith(str(path)) and "video" in str(err.value)


@pytest.mark.parametrize("fast_path", [True, False])
def test_format_refusals(tmp_path, speech, monkeypatch, fast_path):
    if not fast_path:
        monkeypatch.setattr(af, "_decode_pcm16_wav", lambda *args: None)
    cases = [
        ("narrowband.wav", speech[::2], 8000, "odd_sample_rate"),
        ("ten_channels.wav", np.tile(speech[:1600], (10, 1)), 16000, "odd_channels"),
        ("empty.wav", np.zeros((1, 0), np.float32), 16000, "corrupt"),
    ]
    for name, audio, rate, kind in cases:
        write_wav(tmp_path / name, audio, rate)
        with pytest.raises(ClipError) as err:
            decode_audio(str(tmp_path / name))
        assert err.value.kind == kind, (name, str(err.value))
        assert str(err.value).startswith(str(tmp_path / name))


def test_check_audio(speech):
    def clip(waveform):
        return af.DecodedAudio(waveform.astype(np.float32), 16000, 16000, 1, len(waveform) / 16000)

    check_audio("ok.wav", clip(np.tile(speech, 2)), expected_seconds=10.0)  # 10.5 s of speech passes
    with pytest.raises(ClipError) as err:
        check_audio("quiet.wav", clip(np.zeros(32000)))
    assert err.value.kind == "silent" and "-inf" in str(err.value) and str(err.value).startswith("quiet.wav")
    with pytest.raises(ClipError) as err:
        check_audio("hum.wav", clip(np.full(32000, 1e-4)))  # -80 dBFS
    assert err.value.kind == "silent"
    with pytest.raises(ClipError) as err:
        check_audio("partial.mp4", clip(speech[:48000]), expected_seconds=10.0)  # 3 s of a 10 s segment
    assert err.value.kind == "too_short" and str(err.value).startswith("partial.mp4")
    with pytest.raises(ClipError) as err:
        check_audio("blip.wav", clip(speech[:8000]))  # 0.5 s < 1 s
    assert err.value.kind == "too_short"
