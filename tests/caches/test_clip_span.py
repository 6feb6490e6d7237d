"""Audio and frames from the same seconds of a file: the clip span (media: segment | full), short
videos, AAC priming and padding, and silent first channels, checked against independent PyAV decodes."""

from __future__ import annotations

import subprocess

import av
import imageio_ffmpeg
import numpy as np
import pytest

from assets.caches.audio_cache_rows import audio_row
from assets.caches.audio_features import AudioChecks, FbankParams, decode_audio, kaldi_fbank, pad_or_cut
from assets.caches.clip_span import ClipSpan, clip_span
from assets.caches.frame_cache_rows import frame_row
from assets.caches.video_frames import FrameParams, decode_jpeg, resize_center_crop
from assets.core.errors import ClipError
from data.synthav.media_io import encode_mp4

RATE, FPS = 16000, 4
CHECKS = {k: getattr(AudioChecks(), k) for k in ("min_seconds", "min_fraction", "silence_dbfs", "min_source_rate")}


def second_level(t: float) -> int:
    """Gray level of the frames in second t of the long clip: each second has its own level."""
    return 20 + 5 * int(t)


def timecoded_clip(path, seconds: int, video_seconds: float | None = None):
    """A `seconds`-long mp4: video frames whose gray level says their second, and a tone whose
    frequency says its second (200 + 40 s Hz). Returns the audio written."""
    video_seconds = seconds if video_seconds is None else video_seconds
    n = int(round(video_seconds * FPS))
    frames = np.empty((n, 96, 128, 3), np.uint8)
    for i in range(n):
        frames[i] = second_level(i / FPS)
        frames[i, :, (7 * i) % 120:(7 * i) % 120 + 8] = 250  # a moving bar: no two frames alike
    t = np.arange(seconds * RATE) / RATE
    audio = (0.3 * np.sin(2 * np.pi * (200 + 40 * np.floor(t)) * t)).astype(np.float32)
    path.write_bytes(encode_mp4(frames, FPS, audio, RATE))
    return audio


def pyav_audio(path) -> np.ndarray:
    """The whole first audio channel, decoded independently and trimmed to the container's duration."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = np.concatenate([f.to_ndarray()[0] for f in container.decode(stream)])
        return samples[:int(round(stream.duration * stream.time_base * stream.codec_context.sample_rate))]


def pyav_video(path) -> tuple[np.ndarray, list[np.ndarray]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return (np.array([float((f.pts - stream.start_time) * stream.time_base) for f in frames]),
                [f.to_ndarray(format="rgb24") for f in frames])


def ffmpeg_sample_count(path) -> int:
    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0",
                          "-f", "f32le", "-ac", "1", "-"], capture_output=True, check=True).stdout
    return len(out) // 4


# --------------------------------------------------------------------------- the span rule

def test_clip_span_rules():
    assert clip_span("segment", 30.0, 40.0) == ClipSpan(0.0, 10.0)  # the file is the segment
    assert clip_span("full", 30.0, 40.0) == ClipSpan(30.0, 40.0)  # the file is the whole video
    assert clip_span("segment", float("nan"), float("nan")) == ClipSpan(0.0, None)  # Places: the whole file
    with pytest.raises(ClipError) as info:
        clip_span("full", None, None, "x.mp4")
    assert info.value.kind == "no_segment" and "x.mp4" in str(info.value)
    assert ClipSpan(30.0, 40.0).covered(36.7) == (30.0, 36.7)
    assert ClipSpan(0.0, None).covered(7.0) == (0.0, 7.0)


# --------------------------------------------------------------------------- a full video cut at start..end

def test_full_video_segment_gives_frames_and_fbank_of_the_same_seconds(tmp_path):
    """A 40 s download of a row listed as 30-40 s: FBANK is the FBANK of seconds 30-40 and the frames
    are at 30, 33.3, 36.7, 40 s (the last frame, 39.75 s), both checked against a PyAV decode of the
    whole file."""
    path = tmp_path / "Ylong.mp4"
    timecoded_clip(path, 40)
    fbank, frames = FbankParams(), FrameParams()
    row = audio_row((str(path), 30.0, 40.0, "full", "first", fbank, CHECKS, "float32"))
    whole = pyav_audio(path)
    # the samples of 30-40 s (the decoder seeks to 29 s; after a seek AAC decodes to within 1e-4 of
    # a decode from the start), and not those a frame earlier or later
    waveform = decode_audio(str(path), span=ClipSpan(30.0, 40.0)).waveform
    np.testing.assert_allclose(waveform, whole[30 * RATE:40 * RATE], atol=1e-4)
    for shift in (-1024, 1024):
        other = whole[30 * RATE + shift:40 * RATE + shift]
        assert np.abs(waveform[:len(other)] - other).max() > 0.1
    expected = pad_or_cut(kaldi_fbank(whole[30 * RATE:40 * RATE], fbank), fbank.target_frames)[0]
    got = np.frombuffer(row["features"], np.float32).reshape(expected.shape)
    loud = expected > -5.0  # log energies of near-silent bins magnify the 1e-5 differences
    assert loud.mean() > 0.05 and loud.any(axis=1).all()  # the tone's bins, in every frame
    np.testing.assert_allclose(got[loud], expected[loud], atol=2e-3)
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))  # the tone of each second
    assert row["n_frames"] == 998 and row["duration_s"] == pytest.approx(10.0) and row["span_start_s"] == 30.0
    assert row["file_duration_s"] == pytest.approx(40.0) and "short_" not in row["warnings"]

    video = frame_row((str(path), "", 30.0, 40.0, "full", frames))
    np.testing.assert_allclose(video["target_times"], [30, 30 + 10 / 3, 30 + 20 / 3, 40], atol=1e-4)
    np.testing.assert_allclose(video["timestamps"], [30.0, 33.25, 36.75, 39.75], atol=1e-4)
    assert (video["span_start_s"], video["span_end_s"], video["video_end_s"]) == (30.0, 40.0, 40.0)
    times, pictures = pyav_video(path)
    for jpeg, ts in zip(video["frames"], video["timestamps"]):
        k = int(np.argmin(np.abs(times - ts)))
        ours = decode_jpeg(jpeg)
        assert np.abs(ours.astype(int) - resize_center_crop(pictures[k], 224)).mean() < 3
        assert abs(float(np.median(ours)) - second_level(ts)) <= 3  # the picture of that second
    # the same file declared as a segment: the first 10 s, and a warning that it is longer than listed
    head = audio_row((str(path), 30.0, 40.0, "segment", "first", fbank, CHECKS, "float32"))
    expected_head = pad_or_cut(kaldi_fbank(pyav_audio(path)[:10 * RATE], fbank), fbank.target_frames)[0]
    np.testing.assert_allclose(np.frombuffer(head["features"], np.float32).reshape(expected.shape), expected_head,
                               atol=1e-4)
    assert "longer_than_listed" in head["warnings"]
    seg = frame_row((str(path), "", 30.0, 40.0, "segment", frames))
    np.testing.assert_allclose(seg["timestamps"], [0.0, 3.25, 6.75, 10.0], atol=1e-4)
    assert "longer_than_listed" in seg["warnings"]


def test_span_after_the_end_of_the_file_is_too_short(tmp_path):
    path = tmp_path / "Yshort.mp4"
    timecoded_clip(path, 12)
    with pytest.raises(ClipError) as info:
        audio_row((str(path), 30.0, 40.0, "full", "first", FbankParams(), CHECKS, "float32"))
    assert info.value.kind == "too_short" and str(path) in str(info.value)
    with pytest.raises(ClipError) as info:
        frame_row((str(path), "", 30.0, 40.0, "full", FrameParams()))
    assert info.value.kind == "too_short"


def test_short_video_is_recorded_with_the_span_it_covers(tmp_path):
    """6.75 s of video against 10 s of audio: frames over 0-6.75 s and a short_video warning."""
    path = tmp_path / "short_video.mp4"
    timecoded_clip(path, 10, video_seconds=6.75)
    row = frame_row((str(path), "", 0.0, 10.0, "segment", FrameParams()))
    assert row["video_end_s"] == pytest.approx(6.75) and row["span_end_s"] == 10.0
    assert "short_video" in row["warnings"] and "0.00-6.75 s" in row["warnings"]
    np.testing.assert_allclose(row["target_times"], [0, 2.25, 4.5, 6.75], atol=1e-4)
    assert row["timestamps"][-1] == pytest.approx(6.5)  # the last frame starts at 6.5 s
    audio = audio_row((str(path), 0.0, 10.0, "segment", "first", FbankParams(), CHECKS, "float16"))
    assert audio["duration_s"] == pytest.approx(10.0) and "short_audio" not in audio["warnings"]


# --------------------------------------------------------------------------- AAC priming and padding

@pytest.mark.parametrize("rate,seconds", [(16000, 10.0), (44100, 7.3)])
def test_aac_sample_count_equals_the_containers_duration(tmp_path, rate, seconds):
    """The encoder pads its last 1024-sample frame; the sample count is the container's duration
    times the rate, as ffmpeg returns it (160000 for 10 s at 16 kHz, not 160768)."""
    n = int(round(seconds * rate))
    audio = (0.2 * np.sin(2 * np.pi * 300 * np.arange(n) / rate)).astype(np.float32)
    path = tmp_path / "tone.mp4"
    path.write_bytes(encode_mp4(np.zeros((4, 32, 32, 3), np.uint8), 1, audio, rate))
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        stated = int(round(stream.duration * stream.time_base * rate))
        raw = sum(f.samples for f in container.decode(stream))
    decoded = decode_audio(str(path), sample_rate=rate)
    assert stated == n == ffmpeg_sample_count(path)
    assert raw > n  # what decoding alone returns: the padding is still there
    assert len(decoded.waveform) == n and decoded.duration_s == pytest.approx(seconds)
    assert decoded.file_duration_s == pytest.approx(seconds)


# --------------------------------------------------------------------------- multichannel

def five_one(path, centre_only: bool):
    """A 5.1 FLAC (channels FL FR FC LFE BL BR) with sound in the centre channel only."""
    n = 3 * RATE
    pcm = np.zeros((6, n), np.float32)
    pcm[2] = 0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / RATE)
    if not centre_only:
        pcm[0] = pcm[2]
    with av.open(str(path), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=RATE)
        stream.layout = "5.1"
        for start in range(0, n, 4096):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray((pcm[:, start:start + 4096] * 32767)
                                                                    .astype(np.int16)), format="s16p", layout="5.1")
            frame.sample_rate, frame.pts = RATE, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return pcm


def test_silent_first_channel_says_other_channels_carry_sound_and_mix_uses_them(tmp_path):
    path = tmp_path / "centre.flac"
    pcm = five_one(path, centre_only=True)
    with pytest.raises(ClipError) as info:
        audio_row((str(path), 0.0, 3.0, "segment", "first", FbankParams(), CHECKS, "float16"))
    message = str(info.value)
    assert info.value.kind == "silent" and "channel(s) 2 (-13.5 dBFS)" in message and "channel: mix" in message
    mixed = decode_audio(str(path), channel="mix")
    np.testing.assert_allclose(mixed.waveform, pcm.mean(axis=0), atol=2e-4)
    row = audio_row((str(path), 0.0, 3.0, "segment", "mix", FbankParams(), CHECKS, "float16"))
    assert "mean of 6 channels" in row["warnings"]
    assert len(decode_audio(str(path)).channel_dbfs) == 6


def test_waveform_cache_rows_are_the_spans_samples_padded(tmp_path):
    """waveform_cache: the decoded samples of the clip's span, zero-padded to target_samples (or cut),
    with the true count as the length."""
    from assets.caches.audio_cache_rows import audio_spec
    from assets.caches.audio_features import WaveformParams
    path = tmp_path / "Ylong.mp4"
    timecoded_clip(path, 12)
    whole = pyav_audio(path)
    row = audio_row((str(path), 2.0, 8.0, "full", "first", WaveformParams(target_samples=8 * RATE), CHECKS, "float32"))
    got = np.asarray(row["features"], np.float32).reshape(-1)
    assert got.shape == (8 * RATE,) and row["n_frames"] == 6 * RATE
    np.testing.assert_allclose(got[:6 * RATE], whole[2 * RATE:8 * RATE], atol=1e-4)
    assert not got[6 * RATE:].any()
    cut = audio_row((str(path), 0.0, 12.0, "full", "first", WaveformParams(target_samples=RATE), CHECKS, "float16"))
    assert np.asarray(cut["features"]).reshape(-1).shape == (RATE,) and cut["n_frames"] == RATE
    spec = audio_spec("waveform_cache", WaveformParams(), {}, "float16")
    assert spec.schema_metadata["clipkt.features.shape"] == "160000"
    assert spec.schema_metadata["clipkt.features.layout"] == "samples" and spec.array.shape == (160000,)
