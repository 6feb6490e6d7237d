"""SynthAV's ground truth of where the sounding objects are: the `sounding_boxes.parquet` side file.

Real VGGSound, AudioSet and Places ship no boxes (VGG-SS and Flickr-SoundNet annotate a few
thousand frames by hand); SynthAV knows where it drew every object and when, so it writes one
row per clip, next to `synthav_keys.csv`:

    clip_id  string               the id the manifest gives the clip (layouts.clip_id)
    width    int32, height int32  the source video / picture size in pixels
    times    list<float32>        seconds from the clip's start: 0, 0.1, ... (BOX_RATE_HZ) for a
                                  video, [0] for a Places picture
    boxes    list<list<float32>>  per time, [x0, y0, x1, y1] in source pixels (x1, y1 exclusive):
                                  the union bounding box of every object sounding then; [] if none

The boxes come from the renderer's own masks and shifts (render.drawn_boxes, render.picture_box):
each is exactly the bounding box of the object pixels of a frame rendered at its sample time. An
object is drawn exactly while it sounds; a still clip (spec.still) shows its objects as at their
onsets on every frame, and its events sound for the whole clip. Video frames fall between
samples unless their time is a multiple of 0.1 s (at SynthAV's 4 fps: every second frame);
`box_at` then gives the nearest sample's box, at most 0.05 s away, which can differ from the
frame by the <= 1 pixel the object drifts in that time, or by an object that starts or stops
sounding in between. Deliberately bad items have no row (layouts.write_sounding_boxes).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data.synthav import render
from data.synthav.world import ClipSpec

BOX_RATE_HZ = 10  # box samples per second of video (every frame would be heavier for real frame rates)

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1), source pixels, x1 and y1 exclusive

SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("times", pa.list_(pa.float32())), ("boxes", pa.list_(pa.list_(pa.float32()))),
])


@dataclass(frozen=True)
class SoundingBoxes:
    """One clip's sounding-object boxes over time."""

    width: int
    height: int
    times: tuple[float, ...]  # seconds from the clip's start, increasing
    boxes: tuple[Box | None, ...]  # per time; None when nothing sounds


def video_sounding_boxes(spec: ClipSpec, height: int, width: int) -> SoundingBoxes:
    """Boxes of a clip render_frames draws at height x width, sampled at BOX_RATE_HZ over its seconds."""
    times = np.arange(int(round(spec.seconds * BOX_RATE_HZ))) / BOX_RATE_HZ  # i / rate, as render_frames' i / fps
    return SoundingBoxes(width, height, tuple(times.tolist()), tuple(render.drawn_boxes(spec, times, height, width)))


def picture_sounding_boxes(spec: ClipSpec, size: int) -> SoundingBoxes:
    """The box of a size x size Places picture (render_picture draws every object; its caption names them all)."""
    return SoundingBoxes(size, size, (0.0,), (render.picture_box(spec, size, size),))


def encode_sounding_boxes(clips: list[tuple[str, SoundingBoxes]]) -> bytes:
    """Parquet bytes of (clip_id, boxes) pairs, in the given order (same input, same bytes)."""
    table = pa.table({
        "clip_id": [clip_id for clip_id, _ in clips],
        "width": [sb.width for _, sb in clips],
        "height": [sb.height for _, sb in clips],
        "times": [list(sb.times) for _, sb in clips],
        "boxes": [[list(box) if box is not None else [] for box in sb.boxes] for _, sb in clips],
    }, schema=SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def read_sounding_boxes(path: Path | str) -> dict[str, SoundingBoxes]:
    """clip_id -> SoundingBoxes of a `sounding_boxes.parquet`."""
    rows = pq.read_table(path, columns=SCHEMA.names).to_pylist()
    return {r["clip_id"]: SoundingBoxes(r["width"], r["height"], tuple(r["times"]),
                                        tuple(tuple(box) if box else None for box in r["boxes"]))
            for r in rows}


def box_at(sb: SoundingBoxes, t: float) -> Box | None:
    """The box of the sample nearest to t seconds (a tie goes to the later sample, as the frame
    decoder's nearest frame does); None when nothing sounds then."""
    distance = np.abs(np.asarray(sb.times, np.float64) - t)
    nearest = len(distance) - 1 - int(np.argmin(distance[::-1]))
    return sb.boxes[nearest]
