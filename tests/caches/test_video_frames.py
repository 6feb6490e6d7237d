"""Frame sampling for CLIP: timestamps, frame choice against PyAV and decord, seek modes, CLIP geometry, errors."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from assets.caches.video_frames import (FrameParams, decode_jpeg, decode_video_frames, encode_jpeg, frame_timestamps,
                                        load_image, resize_center_crop)
from assets.core.errors import ClipError
from data.synthav.media_io import encode_mp4, write_jpg

P = FrameParams()


# --------------------------------------------------------------------------- helpers

def level(i: int) -> int:
    """Gray level of frame i: consecutive frames differ by 37 or 123 levels."""
    return (i * 37) % 160 + 20


def pattern_frames(n: int, width: int, height: int, seed: int = 0, still: bool = False) -> np.ndarray:
    """(n, H, W, 3): a blocky texture on gray level(i), plus a white bar at a position set by i.
    Frame i can be told from its neighbours by its gray level alone."""
    rng = np.random.default_rng(seed)
    texture = np.kron(rng.integers(0, 30, (height // 8 + 1, width // 8 + 1)), np.ones((8, 8), np.int64))
    texture = texture[:height, :width, None]
    frames = np.empty((n, height, width, 3), np.uint8)
    bar = max(width // 20, 2)
    for i in range(n):
        k = 0 if still else i
        frame = texture + level(k)
        x = (k * 7) % (width - bar)
        frame[:, x:x + bar] = 250
        frames[i] = np.clip(frame, 0, 255)
    return frames


def write_clip(path: Path, frames: np.ndarray, fps: int) -> Path:
    audio = 0.1 * np.random.default_rng(1).standard_normal(16000 * 10).astype(np.float32)
    path.write_bytes(encode_mp4(frames, fps, audio, 16000))
    return path


def write_clip_with_pts(path: Path, frames: np.ndarray, pts_ms: list[int]) -> Path:
    """Video only, each frame at its own presentation time (ms): start offsets and variable rate."""
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=4)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "threads": "1"}
        stream.codec_context.time_base = Fraction(1, 1000)
        for frame, pts in zip(frames, pts_ms):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = pts, Fraction(1, 1000)
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))
    return path


def pyav_frames(path: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """Every frame decoded independently with PyAV: times (s, from the stream's start) and RGB."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        times, pictures = [], []
        for frame in container.decode(stream):
            times.append(float(frame.pts * frame.time_base) - start)
            pictures.append(frame.to_ndarray(format="rgb24"))
    return np.array(times), pictures


def nearest(starts, targets) -> np.ndarray:
    """Index of the start time nearest each target, ties to the later frame (decord's rule)."""
    starts = np.asarray(starts, np.float64)
    return np.array([max(np.flatnonzero(np.isclose(np.abs(starts - t), np.abs(starts - t).min()))) for t in targets])


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def assert_frames_match_pyav(path: Path, decoded) -> None:
    """The acceptance test: the frame stored for each timestamp is the frame PyAV shows at
    that time (codec tolerance), and not either neighbour."""
    times, pictures = pyav_frames(path)
    for got, ts in zip(decoded.frames, decoded.timestamps):
        k = int(np.argmin(np.abs(times - ts)))
        assert abs(times[k] - ts) < 1e-3, (ts, times[k])
        assert mad(got, resize_center_crop(pictures[k], P.size)) < 3.0
        for j in (k - 1, k + 1):  # a neighbouring frame would fail the test
            if 0 <= j < len(pictures):
                assert mad(got, resize_center_crop(pictures[j], P.size)) > 10.0


# --------------------------------------------------------------------------- sampling

def test_frame_timestamps_hand_cases():
    np.testing.assert_allclose(frame_timestamps(10, 4), [0, 10 / 3, 20 / 3, 10])
    np.testing.assert_allclose(frame_timestamps(10, 4), [0, 3.333, 6.667, 10], atol=1e-3)
    np.testing.assert_allclose(frame_timestamps(10, 1), [5])
    np.testing.assert_allclose(frame_timestamps(9, 2), [0, 9])


# --------------------------------------------------------------------------- frames vs PyAV

@pytest.mark.parametrize("width,height,fps", [(160, 120, 4), (320, 240, 25)])
def test_frames_at_stored_timestamps_match_pyav(tmp_path, width, height, fps):
    path = write_clip(tmp_path / "clip.mp4", pattern_frames(10 * fps, width, height), fps)
    d = decode_video_frames(str(path), P)
    assert d.frames.shape == (4, 224, 224, 3) and d.frames.dtype == np.uint8
    assert d.timestamps.dtype == np.float32 and d.targets.dtype == np.float32
    assert d.source_size == (width, height) and d.source_fps == pytest.approx(fps)
    assert d.duration_s == pytest.approx(10.0)
    np.testing.assert_allclose(d.targets, [0, 10 / 3, 20 / 3, 10], atol=1e-5)
    expected = nearest(np.arange(10 * fps) / fps, d.targets)  # 4 fps: 0, 13, 27, 39; 25 fps: 0, 83, 167, 249
    np.testing.assert_array_equal(expected, [0, 13, 27, 39] if fps == 4 else [0, 83, 167, 249])
    np.testing.assert_allclose(d.timestamps, expected / fps, atol=1e-4)
    assert_frames_match_pyav(path, d)
    assert not d.still and d.still_score > P.still_threshold


def test_timestamps_are_from_the_first_frame_when_the_stream_starts_late(tmp_path):
    """decord subtracts the stream's start time (PyAV's frame.time does not)."""
    frames = pattern_frames(40, 160, 120)
    path = write_clip_with_pts(tmp_path / "late.mp4", frames, [1500 + 250 * i for i in range(40)])
    with av.open(str(path)) as c:
        assert float(c.streams.video[0].start_time * c.streams.video[0].time_base) == pytest.approx(1.5)
    d = decode_video_frames(str(path), P)
    np.testing.assert_allclose(d.timestamps, [0, 3.25, 6.75, 9.75], atol=1e-4)
    assert_frames_match_pyav(path, d)


def test_variable_frame_rate_picks_frames_by_time(tmp_path):
    """Irregular presentation times: frames are chosen by their times, not by index / fps."""
    pts = [0, 100, 150, 400, 1000, 1100, 2000, 2050, 2100, 3000] + [3000 + 250 * k for k in range(1, 31)]
    path = write_clip_with_pts(tmp_path / "vfr.mp4", pattern_frames(40, 160, 120), pts)
    d = decode_video_frames(str(path), P)
    assert d.duration_s == pytest.approx(10.75)
    targets = frame_timestamps(d.duration_s, 4)
    starts = np.array(pts) / 1000
    np.testing.assert_allclose(d.timestamps, starts[nearest(starts, targets)], atol=1e-4)
    assert_frames_match_pyav(path, d)


def test_one_frame_is_the_middle_of_the_clip(tmp_path):
    path = write_clip(tmp_path / "clip.mp4", pattern_frames(40, 160, 120), 4)
    d = decode_video_frames(str(path), FrameParams(num_frames=1))
    assert d.frames.shape == (1, 224, 224, 3)
    np.testing.assert_allclose(d.timestamps, [5.0])
    assert d.still_score == 0.0


def test_exact_mode_returns_decords_frames(tmp_path):
    """Parity with the decoder the stage used before (decord 0.6.0): the same frames, pixel for pixel."""
    decord = pytest.importorskip("decord")
    path = write_clip(tmp_path / "clip.mp4", pattern_frames(250, 320, 240), 25)
    d = decode_video_frames(str(path), P)
    reader = decord.VideoReader(str(path), num_threads=1)
    starts = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0]
    theirs = reader.get_batch(nearest(starts, d.targets).tolist()).asnumpy()
    for ours, picture in zip(d.frames, theirs):
        np.testing.assert_array_equal(ours, resize_center_crop(picture, P.size))


def write_gop_clip(path: Path, frames: np.ndarray, fps: int, gop: int) -> Path:
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def keyframe_times(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return np.array(sorted(float((p.pts - stream.start_time) * stream.time_base)
                               for p in container.demux(stream) if p.pts is not None and p.is_keyframe))


def test_keyframe_mode_takes_the_nearest_keyframe_and_reports_the_offset(tmp_path):
    """Keyframes every 2.5 s (10 frames at 4 fps): 0, 2.5, 5, 7.5. Targets 0, 3.33, 6.67, 10 ->
    keyframes 0, 2.5, 7.5, 7.5 (3.33 is nearer 2.5; 6.67 nearer 7.5; 10 has only 7.5 before it)."""
    path = write_gop_clip(tmp_path / "gop.mp4", pattern_frames(40, 160, 120), 4, 10)
    np.testing.assert_allclose(keyframe_times(path), [0, 2.5, 5, 7.5])
    d = decode_video_frames(str(path), FrameParams(seek="keyframe"))
    np.testing.assert_allclose(d.targets, [0, 10 / 3, 20 / 3, 10], atol=1e-5)
    np.testing.assert_allclose(d.timestamps, [0, 2.5, 7.5, 7.5])
    assert_frames_match_pyav(path, d)
    exact = decode_video_frames(str(path), P)
    np.testing.assert_allclose(exact.timestamps, [0, 3.25, 6.75, 9.75])
    with pytest.raises(ValueError, match="seek"):
        FrameParams(seek="nearest")


# --------------------------------------------------------------------------- CLIP geometry

def clip_steps():
    from open_clip.transform import image_transform

    transform = image_transform(224, is_train=False)
    names = [type(t).__name__ for t in transform.transforms]
    assert names[:2] == ["Resize", "CenterCrop"] and names[-1] == "Normalize", names
    return transform


def test_image_transform_geometry_is_what_we_copy():
    resize, crop = clip_steps().transforms[:2]
    assert resize.size == 224 and str(resize.interpolation) == "InterpolationMode.BICUBIC"
    assert resize.max_size is None and list(crop.size) == [224, 224]


@pytest.mark.parametrize("width,height", [
    (160, 120), (480, 360), (200, 500),  # SynthAV, a 4:3 download, a tall picture
    (297, 224), (458, 448),  # crop offsets 36.5 -> 36 and 2.5 -> 2 (Python rounds halves to even)
    (224, 224), (226, 400), (1280, 720),
])
def test_resize_center_crop_equals_open_clip(width, height):
    transform = clip_steps()
    rng = np.random.default_rng(width * 1000 + height)
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    picture = np.where(rng.random((height, width, 3)) < 0.5, ramp, rng.integers(0, 256, (height, width, 3)))
    picture = picture.astype(np.uint8)
    ours = resize_center_crop(picture, 224)
    image = Image.fromarray(picture)
    theirs = image
    for step in transform.transforms[:-2]:  # Resize, CenterCrop, MaybeConvertMode
        theirs = step(theirs)
    assert ours.shape == (224, 224, 3)
    np.testing.assert_array_equal(ours, np.asarray(theirs))
    # and the whole transform: ToTensor/Normalize of ours == open_clip's tensor, bit for bit
    to_tensor_normalize = transform.transforms[-2:]
    tensor = Image.fromarray(ours)
    for step in to_tensor_normalize:
        tensor = step(tensor)
    assert (tensor == transform(image)).all()


# --------------------------------------------------------------------------- still clips

def test_still_detection(tmp_path):
    still = write_clip(tmp_path / "still.mp4", pattern_frames(40, 160, 120, still=True), 4)
    d = decode_video_frames(str(still), P)
    assert d.still and d.still_score < P.still_threshold
    moving = write_clip(tmp_path / "moving.mp4", pattern_frames(40, 160, 120), 4)
    d = decode_video_frames(str(moving), P)
    assert not d.still and d.still_score >= P.still_threshold
    assert np.isfinite(d.still_score)


# --------------------------------------------------------------------------- errors

def test_random_bytes_are_corrupt_and_name_the_path(tmp_path):
    path = tmp_path / "random.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(50_000))
    with pytest.raises(ClipError) as info:
        decode_video_frames(str(path), P)
    assert info.value.kind == "corrupt"
    assert str(path) in str(info.value)
    assert "Invalid data" in str(info.value)  # FFmpeg's reason


def test_audio_only_mp4_has_no_video_stream(tmp_path):
    """The container opens and lists only audio: no_video_stream (not corrupt), the file is fine,
    it just holds no picture."""
    import io

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        sound = container.add_stream("aac", rate=16000)
        sound.layout = "mono"
        for start in range(0, 16000 * 2, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            container.mux(sound.encode(frame))
        container.mux(sound.encode(None))
    for name in ("audio.m4a", "audio.mp4"):
        path = tmp_path / name
        path.write_bytes(buffer.getvalue())
        with pytest.raises(ClipError) as info:
            decode_video_frames(str(path), P)
        assert info.value.kind == "no_video_stream"
        assert str(path) in str(info.value) and "streams: audio" in str(info.value)


def test_truncated_mp4_is_corrupt(tmp_path):
    """encode_mp4 writes the index (moov) at the end: the first 20000 bytes have none."""
    data = encode_mp4(pattern_frames(40, 160, 120), 4,
                      0.1 * np.random.default_rng(1).standard_normal(160000).astype(np.float32), 16000)
    assert len(data) > 40_000
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[:20000])
    with pytest.raises(ClipError) as info:
        decode_video_frames(str(path), P)
    assert info.value.kind == "corrupt" and str(path) in str(info.value)


def test_truncated_faststart_mp4_is_corrupt(tmp_path):
    """With the index first, the file opens but its frames stop before the index says."""
    full = tmp_path / "full.mp4"
    with av.open(str(full), mode="w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=4)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for frame in pattern_frames(40, 160, 120):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    data = full.read_bytes()
    assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat")
    for fraction in (0.5, 0.9):
        path = tmp_path / f"cut{fraction}.mp4"
        path.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(ClipError) as info:
            decode_video_frames(str(path), P)
        assert info.value.kind == "corrupt" and str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ClipError) as info:
        decode_video_frames(str(tmp_path / "gone.mp4"), P)
    assert info.value.kind == "missing"


# --------------------------------------------------------------------------- images

def test_load_image_matches_open_clip(tmp_path):
    transform = clip_steps()
    rng = np.random.default_rng(3)
    picture = pattern_frames(1, 256, 256)[0]
    picture[100:150, 60:200] = rng.integers(0, 256, (50, 140, 3))
    path = tmp_path / "place.jpg"
    write_jpg(path, picture)
    d = load_image(str(path), P)
    assert d.frames.shape == (1, 224, 224, 3) and d.frames.dtype == np.uint8
    np.testing.assert_array_equal(d.targets, [0.0])
    np.testing.assert_array_equal(d.timestamps, [0.0])
    assert d.source_size == (256, 256) and d.still_score == 0.0
    with Image.open(path) as image:
        theirs = image
        for step in transform.transforms[:-2]:
            theirs = step(theirs)
        np.testing.assert_array_equal(d.frames[0], np.asarray(theirs))


@pytest.mark.parametrize("height,width", [(300, 200), (200, 300)])
def test_load_image_grayscale(tmp_path, height, width):
    """An L-mode jpg: open_clip resizes and crops in L, then converts to RGB; so do we."""
    transform = clip_steps()
    gray = np.random.default_rng(4).integers(0, 256, (height, width), dtype=np.uint8)
    path = tmp_path / "gray.jpg"
    Image.fromarray(gray, "L").save(path, quality=90)
    d = load_image(str(path), P)
    assert d.frames.shape == (1, 224, 224, 3) and d.source_size == (width, height)
    with Image.open(path) as image:
        assert image.mode == "L"
        theirs = image
        for step in transform.transforms[:-2]:
            theirs = step(theirs)
        np.testing.assert_array_equal(d.frames[0], np.asarray(theirs))


def test_corrupt_images(tmp_path):
    good = tmp_path / "good.jpg"
    write_jpg(good, pattern_frames(1, 256, 256)[0])
    random = tmp_path / "random.jpg"
    random.write_bytes(np.random.default_rng(0).bytes(5000))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for path in (random, cut):
        with pytest.raises(ClipError) as info:
            load_image(str(path), P)
        assert info.value.kind == "corrupt" and str(path) in str(info.value)
    with pytest.raises(ClipError) as info:
        load_image(str(tmp_path / "gone.jpg"), P)
    assert info.value.kind == "missing"


# --------------------------------------------------------------------------- jpeg

def test_jpeg_round_trip(tmp_path):
    path = write_clip(tmp_path / "clip.mp4", pattern_frames(40, 160, 120), 4)
    frames = decode_video_frames(str(path), P).frames
    for frame in frames:
        data = encode_jpeg(frame, P.jpeg_quality)
        assert data[:3] == b"\xff\xd8\xff"
        back = decode_jpeg(data)
        assert back.shape == frame.shape and back.dtype == np.uint8
        assert mad(back, frame) < 2.0
    with pytest.raises(ClipError) as info:
        decode_jpeg(b"not a jpeg")
    assert info.value.kind == "corrupt"
