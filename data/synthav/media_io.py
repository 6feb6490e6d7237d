"""Write rendered clips in the containers the real datasets ship: H.264/AAC mp4, PCM wav, JPEG.

Every writer goes through a temporary file and a rename, so an interrupted generation
never leaves a half-written clip that looks complete.
"""

from __future__ import annotations

import io
import os
import wave
from pathlib import Path

import av
import numpy as np
from PIL import Image

AAC_FRAME = 1024  # samples per AAC frame


def _replace_atomically(data: bytes, path: Path) -> None:
    """Write data to path via temp + rename; an identical existing file is left untouched
    (its mtime too), so regenerating a grown dataset changes only the new files."""
    if path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def encode_mp4(frames: np.ndarray, fps: int, audio: np.ndarray, sample_rate: int) -> bytes:
    """H.264 (yuv420p) + AAC mp4 bytes. frames: (T, H, W, 3) uint8; audio: (N,) or (C, N) float32.

    Single-threaded encoders and no creation time, so the same input gives the same bytes.
    """
    audio = np.atleast_2d(audio).astype(np.float32)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "26", "threads": "1"}
        sound = container.add_stream("aac", rate=sample_rate)
        sound.layout = "mono" if audio.shape[0] == 1 else "stereo"
        sound.bit_rate = 32000 * audio.shape[0]  # AAC time grows with bit rate
        sound.options = {"aac_coder": "fast"}  # the default two-loop coder is 1.5x slower
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode(None))
        for start in range(0, audio.shape[1], AAC_FRAME):
            chunk = np.ascontiguousarray(audio[:, start:start + AAC_FRAME])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=sound.layout.name)
            frame.sample_rate = sample_rate
            frame.pts = start
            container.mux(sound.encode(frame))
        container.mux(sound.encode(None))
    return buffer.getvalue()


def encode_wav(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM wav bytes; audio (N,) or (C, N) float in [-1, 1]."""
    audio = np.atleast_2d(audio)
    pcm = (np.clip(audio, -1, 1) * 32767).round().astype("<i2").T.copy()  # (N, C) interleaved
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(audio.shape[0])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buffer.getvalue()


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    _replace_atomically(encode_wav(audio, sample_rate), path)


def write_jpg(path: Path, picture: np.ndarray, quality: int = 90) -> None:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="JPEG", quality=quality)
    _replace_atomically(buffer.getvalue(), path)


def write_bytes(path: Path, data: bytes) -> None:
    _replace_atomically(data, path)
