"""Sample L frames of a clip and bring them to CLIP's input geometry (pure functions, no Dagster).

Frames are taken at L evenly spaced times including both ends of the clip's span (VIP-ANT
takes 0, 3.3, 6.7 and 10 s of a 10 s clip; `assets.caches.clip_span` says which seconds of
the file the clip is), decoded with PyAV, then resized and cropped exactly
as open_clip's ViT-B/32 eval transform does (torchvision Resize(size, bicubic) on the short
side + CenterCrop(size), both on PIL images): `resize_center_crop` is bit-identical to that
transform minus ToTensor/Normalize, and the tests hold it to that.

Timestamps are seconds from the video stream's first frame (as decord and ffmpeg's `-ss`
count them; PyAV's `frame.time` does not subtract the stream's start), so a file whose video
starts at 1.5 s still gets 0.0 for its first frame.

Two seek modes (`FrameParams.seek`): `exact` decodes from the keyframe before each target to
the frame nearest it (what decord's get_batch and VIP-ANT's `ffmpeg -ss` return); `keyframe`
decodes only the keyframe nearest each target, and the row records its real time and the
offset. PyAV rather than decord: the same frames with less work per clip (no full frame
index, no second colour conversion), and keyframes are visible in the packets
(docs/benchmarks.md has the numbers; the tests hold exact mode to decord's frames).

Errors are ClipError: "corrupt" when the decoder cannot open or decode the file, or its frames
stop before its index says (message: path and FFmpeg's reason), "no_video_stream" when the
container opens but holds no video stream, "missing" when the file is gone, "too_short" when
the video ends before the clip's span starts.
Hangs are not handled here: the caller runs these functions in worker processes under a
time bound.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image

from assets.caches.clip_span import INDEXED_FORMATS, ClipSpan
from assets.core.errors import ClipError

SEEK_MODES = ("exact", "keyframe")


@dataclass(frozen=True)
class FrameParams:
    num_frames: int = 4            # L, evenly spaced over the clip, both ends included
    size: int = 224                # CLIP ViT-B/32 input: Resize(size, bicubic) short side + CenterCrop(size)
    jpeg_quality: int = 95         # frames are stored as JPEG bytes
    still_threshold: float = 2.0   # mean abs diff (0-255) between consecutive sampled frames below which the clip is "still"
    seek: str = "exact"            # exact: the frame nearest each time | keyframe: the keyframe nearest it (offset recorded)
    coverage_margin_s: float = 0.5  # a stream ending more than this before the span's end is "short"

    def __post_init__(self):
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.seek not in SEEK_MODES:
            raise ValueError(f"seek must be one of {SEEK_MODES}, got {self.seek!r}")


@dataclass
class DecodedFrames:
    frames: np.ndarray             # (L, size, size, 3) uint8 RGB
    timestamps: np.ndarray         # (L,) float32: start time (s from the stream's first frame) of each returned frame
    targets: np.ndarray            # (L,) float32: the times asked for (timestamps - targets: the seek offsets)
    source_size: tuple[int, int]   # (width, height)
    source_fps: float              # the stream's average frame rate (0.0 for a still image)
    duration_s: float              # end of the last frame (0.0 for a still image)
    still_score: float             # mean abs diff between consecutive sampled frames (0.0 when L == 1)
    still: bool


# --------------------------------------------------------------------------- sampling

def frame_timestamps(duration_s: float, num_frames: int) -> np.ndarray:
    """L times evenly spaced over [0, duration] including both ends; L == 1 -> the middle."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    duration_s = max(float(duration_s), 0.0)
    if num_frames == 1:
        return np.array([duration_s / 2.0])
    return np.linspace(0.0, duration_s, num_frames)


# --------------------------------------------------------------------------- geometry

def _geometry(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """(new_w, new_h, left, top) exactly as torchvision computes them: Resize(int) maps the
    short side to size and the long side to int(size * long / short); CenterCrop takes
    int(round((dim - size) / 2.0)) (Python's round: halves go to even)."""
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    left = int(round((new_w - size) / 2.0))
    top = int(round((new_h - size) / 2.0))
    return new_w, new_h, left, top


def _resize_center_crop_pil(img: Image.Image, size: int) -> Image.Image:
    """torchvision Resize(size, BICUBIC) + CenterCrop(size) on a PIL image, bit for bit.

    Landscape RGB/L images take a shortcut that is exact: Pillow resamples in two separable
    passes (horizontal over every row into a uint8 image, then vertical over every column),
    and the vertical pass treats each column on its own. So resizing horizontally only,
    cropping the columns, then resizing vertically only gives the same pixels as the full
    resize followed by the crop, with the vertical pass run on `size` columns instead of
    new_w (25% less on 4:3, 44% on 16:9). A crop *box* given to Image.resize is not exact
    (Pillow takes the box as float32, which moves the filter taps), nor is it for
    RGBA/LA (premultiplied between passes), so those go the plain way.
    """
    w, h = img.size
    new_w, new_h, left, top = _geometry(w, h, size)
    if (new_w, new_h) == (w, h):  # torchvision skips the resize
        return img.crop((left, top, left + size, top + size))
    if w > h and img.mode in ("RGB", "L"):
        wide = img.resize((new_w, h), Image.BICUBIC) if new_w != w else img
        cols = wide.crop((left, 0, left + size, h))
        return cols.resize((size, size), Image.BICUBIC) if h != size else cols
    return img.resize((new_w, new_h), Image.BICUBIC).crop((left, top, left + size, top + size))


def resize_center_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (size, size, 3) uint8: open_clip's eval Resize + CenterCrop."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
    return np.asarray(_resize_center_crop_pil(Image.fromarray(frame, "RGB"), size))


# --------------------------------------------------------------------------- jpeg

def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes (Pillow's defaults otherwise: 4:2:0 chroma, like the
    yuv420p video the frames come from)."""
    buffer = io.BytesIO()
    Image.fromarray(frame, "RGB").save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> (H, W, 3) uint8 RGB; undecodable bytes -> ClipError("corrupt")."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, EOFError, ...
        raise ClipError("corrupt", f"JPEG data ({len(data)} bytes): {type(err).__name__}: {err}") from err


# --------------------------------------------------------------------------- still detection

def still_score(frames: np.ndarray) -> float:
    """Mean absolute difference (0-255) between consecutive frames of (L, H, W, 3) uint8;
    0.0 for a single frame."""
    if len(frames) < 2:
        return 0.0
    a, b = frames[:-1], frames[1:]
    diff = np.maximum(a, b) - np.minimum(a, b)  # |a - b| without leaving uint8
    return float(diff.mean(dtype=np.float64))


# --------------------------------------------------------------------------- video

@dataclass
class _Stream:
    """What the decoder needs to know about a video stream, in seconds from its first frame."""
    container: object
    stream: object
    time_base: float
    origin: int  # the first frame's pts (time_base units)
    duration_s: float  # end of the last frame
    fps: float  # average frame rate (0.0 when unknown)

    def seconds(self, pts: int) -> float:
        return (pts - self.origin) * self.time_base

    def seek(self, t: float) -> None:
        """To the keyframe at or before t (the first one when t precedes it)."""
        self.container.seek(self.origin + max(int(t / self.time_base), 0), stream=self.stream, backward=True)


def _open_stream(path: str) -> _Stream:
    container = av.open(path)
    try:
        if not container.streams.video:
            kinds = ", ".join(s.type for s in container.streams) or "none"
            raise ClipError("no_video_stream", f"{path}: no video stream (streams: {kinds})")
        stream = container.streams.video[0]
        stream.thread_type, stream.codec_context.thread_count = "SLICE", 1  # one worker = one core
        tb = float(stream.time_base)
        fps = float(stream.average_rate) if stream.average_rate else 0.0
        origin = stream.start_time
        if stream.duration and origin is not None and container.format.name in INDEXED_FORMATS:
            duration = float(stream.duration) * tb
        else:  # no exact index (mkv, webm, ts): read the packets once, which decodes nothing
            pts = [(p.pts, p.duration or 0) for p in container.demux(stream) if p.pts is not None]
            if not pts:
                raise ClipError("corrupt", f"{path}: the video stream has no frames")
            first, (last, last_len) = min(p for p, _ in pts), max(pts)
            origin = first if origin is None else origin
            duration = (last + last_len - origin) * tb
            container.seek(0)
        return _Stream(container, stream, tb, origin or 0, max(duration, 0.0), fps)
    except BaseException:
        container.close()
        raise


def _decode_nearest(v: _Stream, t: float, path: str):
    """The decoded frame whose start time is nearest t (ties -> the later one) and its time."""
    v.seek(t)
    prev = None
    for frame in v.container.decode(v.stream):
        if frame.pts is None:
            raise ClipError("corrupt", f"{path}: a decoded frame has no timestamp")
        ft = v.seconds(frame.pts)
        if ft >= t:
            if prev is not None and (t - prev[0]) < (ft - t):
                return prev
            return ft, frame
        prev = ft, frame
    if prev is None:
        raise ClipError("corrupt", f"{path}: no frame decodes at or after {t:.3f} s")
    frame_s = 1.0 / v.fps if v.fps else 0.0
    if prev[0] < v.duration_s - frame_s - max(2 * frame_s, 0.5):  # the stream ends long before its index says
        raise ClipError("corrupt", f"{path}: frames stop at {prev[0]:.2f} s, the stream's index says "
                        f"{v.duration_s:.2f} s (truncated file?)")
    return prev


def _keyframe_times(v: _Stream, t: float, path: str) -> tuple[float, float | None]:
    """(the keyframe at or before t, the next keyframe or None), read from packets only."""
    v.seek(t)
    before = None
    for packet in v.container.demux(v.stream):
        if packet.pts is None or not packet.is_keyframe:
            continue
        kt = v.seconds(packet.pts)
        if before is None:
            before = kt
        elif kt > before:
            return before, kt
    if before is None:
        raise ClipError("corrupt", f"{path}: no keyframe at or after {t:.3f} s")
    return before, None


def _decode_keyframe(v: _Stream, t: float, path: str):
    """The keyframe nearest t (ties -> the later one), decoding that one frame only."""
    before, after = _keyframe_times(v, t, path)
    target = after if after is not None and (after - t) <= (t - before) else before
    v.seek(target)
    for packet in v.container.demux(v.stream):
        frames = packet.decode() if packet.size else []
        if not frames and packet.pts is not None and packet.is_keyframe:
            frames = v.stream.codec_context.decode(None)  # drain the decoder's reordering delay
        for frame in frames:
            if frame.pts is not None:
                return v.seconds(frame.pts), frame
    raise ClipError("corrupt", f"{path}: the keyframe at {target:.3f} s does not decode")


def _diagnose(path: str, err: BaseException) -> ClipError:
    if isinstance(err, FileNotFoundError) or not os.path.exists(path):
        return ClipError("missing", f"{path}: no such file")
    return ClipError("corrupt", f"{path}: cannot decode video: {type(err).__name__}: {err}")


def decode_video_frames(path: str, p: FrameParams, span: ClipSpan = ClipSpan()) -> DecodedFrames:
    """L frames at evenly spaced times over the clip's span (both ends included), resized and
    cropped for CLIP, decoded with PyAV.

    `exact` (VIP-ANT's frames): the frame whose start time is nearest each target, decoded
    from the keyframe before it. `keyframe`: the keyframe nearest each target, one decoded
    frame per target; its real time and the offset from the target are recorded.
    A video stream that covers less of the span spreads the frames over the part it covers
    (`clip_span.span_warnings` says so on the row).
    """
    decode = _decode_keyframe if p.seek == "keyframe" else _decode_nearest
    try:
        v = _open_stream(path)
        with v.container:
            start, end = span.covered(v.duration_s)
            if end <= start:
                raise ClipError("too_short", f"{path}: the video stream ends at {v.duration_s:.2f} s, before the "
                                f"clip's span starts ({span.start_s:.2f} s)")
            targets = start + frame_timestamps(end - start, p.num_frames)
            picked = [decode(v, float(t), path) for t in targets]
            images = [frame.to_image() for _, frame in picked]
    except ClipError:
        raise
    except (av.FFmpegError, OSError, ValueError) as err:
        raise _diagnose(path, err) from err
    frames = np.empty((len(images), p.size, p.size, 3), np.uint8)
    for i, img in enumerate(images):
        frames[i] = _resize_center_crop_pil(img, p.size)
    timestamps = np.array([ft for ft, _ in picked], np.float64)
    score = still_score(frames)
    return DecodedFrames(
        frames=frames, timestamps=timestamps.astype(np.float32), targets=targets.astype(np.float32),
        source_size=(images[0].width, images[0].height), source_fps=v.fps, duration_s=v.duration_s,
        still_score=score, still=score < p.still_threshold,
    )


# --------------------------------------------------------------------------- images

def load_image(path: str, p: FrameParams) -> DecodedFrames:
    """One picture (Places) as L = 1 frame at time 0, index -1, through the same transform
    in open_clip's order (resize + crop in the file's mode, then convert to RGB)."""
    try:
        with Image.open(path) as img:
            img.load()
            source_size = img.size
            frame = np.asarray(_resize_center_crop_pil(img, p.size).convert("RGB"))
    except FileNotFoundError as err:
        raise ClipError("missing", f"{path}: no such file") from err
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        raise ClipError("corrupt", f"{path}: {type(err).__name__}: {err}") from err
    return DecodedFrames(
        frames=frame[None], timestamps=np.zeros(1, np.float32), targets=np.zeros(1, np.float32),
        source_size=(int(source_size[0]), int(source_size[1])), source_fps=0.0, duration_s=0.0,
        still_score=0.0, still=True,
    )
