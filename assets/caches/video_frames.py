"""Sample L frames of a clip and bring them to CLIP's input geometry (pure functions, no Dagster).

Frames are taken at L evenly spaced times including both ends of the clip (VIP-ANT takes
0, 3.3, 6.7 and 10 s of a 10 s clip), decoded with decord, then resized and cropped exactly
as open_clip's ViT-B/32 eval transform does (torchvision Resize(size, bicubic) on the short
side + CenterCrop(size), both on PIL images): `resize_center_crop` is bit-identical to that
transform minus ToTensor/Normalize, and the tests hold it to that.

Timestamps are seconds from the video stream's first frame: decord subtracts the stream's
start time (PyAV's `frame.time` does not), so a file whose video starts at 1.5 s still gets
0.0 for its first frame.

Errors are ClipError: "corrupt" when the decoder cannot open or decode the file (message:
path, decord's reason and, for decord's reason-less open failures, PyAV's), "no_video_stream"
when the container opens but holds no video stream, "missing" when the file is gone.
Hangs are not handled here: the caller runs these functions in worker processes under a
time bound.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from assets.core.errors import ClipError


@dataclass(frozen=True)
class FrameParams:
    num_frames: int = 4            # L, evenly spaced over the clip, both ends included
    size: int = 224                # CLIP ViT-B/32 input: Resize(size, bicubic) short side + CenterCrop(size)
    jpeg_quality: int = 95         # frames are stored as JPEG bytes
    still_threshold: float = 2.0   # mean abs diff (0-255) between consecutive sampled frames below which the clip is "still"

    def __post_init__(self):
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")


@dataclass
class DecodedFrames:
    frames: np.ndarray             # (L, size, size, 3) uint8 RGB
    timestamps: np.ndarray         # (L,) float32: presentation time (s, from the first frame) of each returned frame
    indices: np.ndarray            # (L,) int64 frame indices (-1 for a still image)
    source_size: tuple[int, int]   # (width, height)
    source_fps: float              # decord's average frame rate (0.0 for a still image)
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


def frame_indices(timestamps, fps: float, n_frames: int) -> np.ndarray:
    """Index of the frame nearest each time at a constant frame rate (ties go to the later
    frame), clamped to [0, n_frames - 1]."""
    t = np.asarray(timestamps, dtype=np.float64)
    idx = np.floor(t * float(fps) + 0.5)
    return np.clip(np.nan_to_num(idx), 0, max(int(n_frames) - 1, 0)).astype(np.int64)


def _nearest_pts_indices(targets: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Index of the frame whose start time is nearest each target (ties -> later frame);
    starts must be non-decreasing. Right for variable-frame-rate files, where index/fps is not
    the time; the same as frame_indices on constant-rate ones."""
    n = len(starts)
    right = np.clip(np.searchsorted(starts, targets, side="left"), 0, n - 1)
    left = np.clip(right - 1, 0, n - 1)
    take_left = (targets - starts[left]) < (starts[right] - targets)
    return np.where(take_left, left, right).astype(np.int64)


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

_DECORD_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+?:\d+: ")


def _decord_reason(err: BaseException) -> str:
    """decord's message without its '[hh:mm:ss] /path/file.cc:123: ' prefixes."""
    text = _DECORD_PREFIX.sub("", str(err)).strip()
    return re.sub(r"\s+", " ", text)[:500] or type(err).__name__


def _pyav_diagnosis(path: str) -> tuple[str | None, str]:
    """On the error path only: ask PyAV what the container holds. Returns (kind or None, text)."""
    try:
        import av

        with av.open(path) as container:
            kinds = [s.type for s in container.streams]
            if "video" not in kinds:
                return "no_video_stream", f"streams: {', '.join(kinds) or 'none'}"
            return None, f"streams: {', '.join(kinds)}"
    except Exception as err:  # anything PyAV says is only a diagnosis
        return None, f"pyav: {type(err).__name__}: {err}"


def _decode_error(path: str, err: BaseException) -> ClipError:
    reason = _decord_reason(err)
    if not os.path.exists(path):
        return ClipError("missing", f"{path}: no such file ({reason})")
    kind, diagnosis = _pyav_diagnosis(path)
    if kind is None and "cannot find video stream" in reason:
        kind = "no_video_stream"
    return ClipError(kind or "corrupt", f"{path}: decord: {reason}; {diagnosis}")


def decode_video_frames(path: str, p: FrameParams) -> DecodedFrames:
    """L frames at evenly spaced times over the whole clip, resized + cropped for CLIP."""
    import decord  # imported here so that image-only users need not load libdecord

    try:
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        n = len(vr)
        if n == 0:
            raise ClipError("corrupt", f"{path}: decord: the video stream has no frames")
        fps = float(vr.get_avg_fps())
        pts = np.asarray(vr.get_frame_timestamp(np.arange(n)), dtype=np.float64)  # (n, 2) start, end
        starts = pts[:, 0]
        pts_ok = bool(np.isfinite(pts).all()) and bool(np.all(np.diff(starts) >= 0))
        if pts_ok and pts[-1, 1] > 0:
            duration = float(pts[-1, 1])
        elif fps > 0 and np.isfinite(fps):
            duration = n / fps
        else:
            duration = 0.0
        targets = frame_timestamps(duration, p.num_frames)
        if pts_ok:
            indices = _nearest_pts_indices(targets, starts)
        else:
            indices = frame_indices(targets, fps if fps > 0 and np.isfinite(fps) else 0.0, n)
        batch = vr.get_batch(indices.tolist()).asnumpy()
    except ClipError:
        raise
    except (decord.DECORDError, RuntimeError, OSError, ValueError, IndexError) as err:
        raise _decode_error(path, err) from err
    if batch.ndim != 4 or batch.shape[0] != len(indices) or batch.shape[3] != 3 or batch.size == 0:
        raise ClipError("corrupt", f"{path}: decord returned frames of shape {batch.shape}")

    frames = np.empty((len(indices), p.size, p.size, 3), np.uint8)
    for i in range(len(indices)):
        frames[i] = _resize_center_crop_pil(Image.fromarray(batch[i], "RGB"), p.size)
    if pts_ok:
        timestamps = starts[indices].astype(np.float32)
    else:
        timestamps = (indices / fps if fps > 0 else np.zeros(len(indices))).astype(np.float32)
    score = still_score(frames)
    return DecodedFrames(
        frames=frames, timestamps=timestamps, indices=indices,
        source_size=(int(batch.shape[2]), int(batch.shape[1])), source_fps=fps,
        duration_s=float(duration), still_score=score, still=score < p.still_threshold,
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
        frames=frame[None], timestamps=np.zeros(1, np.float32), indices=np.full(1, -1, np.int64),
        source_size=(int(source_size[0]), int(source_size[1])), source_fps=0.0, duration_s=0.0,
        still_score=0.0, still=True,
    )
