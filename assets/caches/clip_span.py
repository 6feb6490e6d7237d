"""Which seconds of a media file a clip is: the span both the audio and the frames are taken from.

A dataset declares what its files hold (`media` in the dataset YAML):

- `segment` (default): the file *is* the listed segment (VGGSound's `<ytid>_<start>.mp4`, the
  usual AudioSet downloaders that cut `start..end`). The clip is the file from its start, for
  the listed length (`end_s - start_s`, 10 s for AudioSet and VGGSound), or the whole file when
  the metadata lists no length (Places' spoken captions).
- `full`: the file is the whole video (a plain `yt-dlp` download of a 30 s AudioSet row with
  `start_seconds=30`). The clip is `start_s..end_s` of the file, as the metadata lists them.

Times are seconds from each stream's own first sample or frame (what ffmpeg's `-ss` and decord
use), so a video stream that starts 40 ms after the audio stream is not shifted.

A file much longer than its listed segment under `segment` gets a warning on its row
(`longer_than_listed`): it is probably a full video, and only its first seconds are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from assets.core.errors import ClipError
from assets.ingest.dataset_config import MEDIA_MODES

# Containers whose stream duration is exact (the MP4 family's edit list and sample table): the
# audio decoder trims AAC padding at it, the frame decoder takes the video's end from it.
INDEXED_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2"})
LONGER_THAN_LISTED_S = 1.0  # a `segment` file this much longer than its listed length gets a warning


@dataclass(frozen=True)
class ClipSpan:
    start_s: float = 0.0  # seconds into the file
    end_s: float | None = None  # None: to the end of the file

    def __post_init__(self):
        if not (self.start_s >= 0.0 and math.isfinite(self.start_s)):
            raise ValueError(f"span start must be a finite number >= 0, got {self.start_s}")
        if self.end_s is not None and not self.end_s > self.start_s:
            raise ValueError(f"span end {self.end_s} must be after its start {self.start_s}")

    @property
    def length_s(self) -> float | None:
        return None if self.end_s is None else self.end_s - self.start_s

    def covered(self, file_duration_s: float) -> tuple[float, float]:
        """(start, end) of the span that a stream of this duration actually holds (end <= start: none)."""
        end = file_duration_s if self.end_s is None else min(self.end_s, file_duration_s)
        return self.start_s, end


def _listed(value) -> float | None:
    return None if value is None or value != value else float(value)  # NaN (Places) -> None


def clip_span(media: str, start_s, end_s, path: str = "") -> ClipSpan:
    """The span of a manifest row's file, for the dataset's `media` mode (ClipError `no_segment`
    for a `full` row without a listed segment: one such row never fails its shard)."""
    start, end = _listed(start_s), _listed(end_s)
    length = end - start if start is not None and end is not None and end > start else None
    if media == "segment":
        return ClipSpan(0.0, length)
    if media == "full":
        if length is None or start < 0:
            raise ClipError("no_segment", f"{path}: media: full needs a listed segment, the row has "
                            f"start_s={start_s}, end_s={end_s}")
        return ClipSpan(start, end)
    raise ValueError(f"media must be one of {MEDIA_MODES}, got {media!r}")


def span_warnings(span: ClipSpan, stream: str, file_duration_s: float, media: str, margin_s: float) -> list[str]:
    """What a row should say about how much of its span a stream covers."""
    notes = []
    start, end = span.covered(file_duration_s)
    if span.end_s is not None and end < span.end_s - margin_s:
        notes.append(f"short_{stream}: the {stream} stream covers {start:.2f}-{max(end, start):.2f} s "
                     f"of the span {span.start_s:.2f}-{span.end_s:.2f} s")
    if media == "segment" and span.length_s is not None and file_duration_s > span.length_s + LONGER_THAN_LISTED_S:
        notes.append(f"longer_than_listed: the {stream} stream is {file_duration_s:.2f} s, the listed segment "
                     f"{span.length_s:.2f} s; only its first {span.length_s:.2f} s are used "
                     "(declare `media: full` if the files are whole videos)")
    return notes
