"""Parsers for the four real distribution formats.

Each parser streams one metadata file and yields one `SourceRow` per clip, with media
paths relative to the dataset root (not yet checked on disk; see `assets.ingest.manifest`,
which turns them into Arrow batches, so a 2M-row AudioSet CSV is never held as objects).
A line that cannot be parsed becomes a row whose `problem` says why and where
(`file:line: ...`); with `strict=True` it raises `MetadataFormatError` instead.

Formats (as distributed):
- AudioSet segments CSV: three `#` header lines, then `YTID, start_seconds, end_seconds,
  "mid,mid,..."` (fields separated by `, `; the label list is quoted).
- VGGSound `vggsound.csv`: no header, `ytid,start_seconds,label,split`; labels that
  contain a comma are quoted.
- Places audio captions JSON: `{"image_base_path", "audio_base_path", "data": [{"wav",
  "image", "asr_text", "uttid", "speaker", ...}]}`.
- AudioCaps CSV: header `audiocap_id,youtube_id,start_time,caption`, one line per
  caption (train: 1 per clip; val/test: 5 per clip), grouped here into one row per clip.
"""

from __future__ import annotations

import csv
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from assets.ingest.dataset_config import DatasetConfig, MetadataFile


class MetadataFormatError(ValueError):
    """A metadata line that does not follow its format; the message names file and line."""


@dataclass
class SourceRow:
    clip_id: str
    split: str
    media_path: str  # the clip's audio source (mp4 or wav), relative to the dataset root
    source: str  # "file:line" (or "file:data[i]" for JSON) the row came from
    image_path: str = ""  # Places: the picture, relative to the dataset root
    start_s: float = float("nan")
    end_s: float = float("nan")
    labels: list[str] = field(default_factory=list)  # machine ids (AudioSet) or label text
    label_names: list[str] = field(default_factory=list)  # human-readable labels
    captions: list[str] = field(default_factory=list)
    caption_ids: list[str] = field(default_factory=list)  # AudioCaps audiocap_id per caption
    problem: str = ""  # non-empty: the line is malformed and says why


def _bad(where: str, reason: str, split: str, strict: bool) -> SourceRow:
    if strict:
        raise MetadataFormatError(f"{where}: {reason}")
    return SourceRow(clip_id=f"malformed:{where}", split=split, media_path="", source=where,
                     problem=f"{where}: {reason}")


def _media_path(ds: DatasetConfig, meta: MetadataFile, **fields) -> str:
    start, end = float(fields["start"]), float(fields["end"])
    name = ds.template.format(ytid=fields["ytid"], start=start, end=end, start_int=int(start),
                              end_int=int(end), start_ms=int(round(start * 1000)), end_ms=int(round(end * 1000)))
    return posixpath.join(ds.media_dir(meta), name) if ds.media_dir(meta) else name


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) streamed from the file; utf-8-sig: some re-saved CSVs
    carry a byte-order mark on the first line."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        for number, line in enumerate(f, start=1):
            yield number, line.rstrip("\r\n")


def _records(path: Path, skip_comments: bool = False) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line (and, with skip_comments, not starting with
    "#"), through one csv.reader for the whole file (a reader per line cost 6 us a line: 13 s of
    a 2M-row AudioSet CSV). Fields after a comma may start with spaces (AudioSet's ", ")."""
    number = 0

    def kept() -> Iterator[str]:
        nonlocal number
        for number, line in _lines(path):
            if line.strip() and not (skip_comments and line.startswith("#")):
                yield line

    for fields in csv.reader(kept(), skipinitialspace=True):
        yield number, fields


def _seconds(text: str) -> float:
    value = float(text)
    if value != value or value < 0:
        raise ValueError(f"{text!r} is not a time in seconds")
    return value


def parse_audioset(ds: DatasetConfig, meta: MetadataFile, label_names: dict[str, str],
                   strict: bool = False) -> Iterator[SourceRow]:
    path = ds.root / meta.path
    for number, f in _records(path, skip_comments=True):
        where = f"{meta.path}:{number}"
        if len(f) != 4:
            yield _bad(where, f"expected 4 fields (YTID, start_seconds, end_seconds, positive_labels), got {len(f)}",
                       meta.split, strict)
            continue
        ytid, start_text, end_text, labels_text = f
        try:
            start, end = _seconds(start_text), _seconds(end_text)
        except ValueError as err:
            yield _bad(where, f"bad start/end seconds: {err}", meta.split, strict)
            continue
        if end <= start or not ytid:
            yield _bad(where, f"empty YTID or end {end} <= start {start}", meta.split, strict)
            continue
        mids = [m.strip() for m in labels_text.split(",") if m.strip()]
        yield SourceRow(
            clip_id=f"{ytid}_{int(round(start * 1000))}", split=meta.split, source=where,
            media_path=_media_path(ds, meta, ytid=ytid, start=start, end=end),
            start_s=start, end_s=end, labels=mids, label_names=[label_names.get(m, m) for m in mids])


def parse_audioset_labels(path: Path) -> dict[str, str]:
    """class_labels_indices.csv (`index,mid,display_name`) -> {mid: display_name}."""
    names = {}
    for number, f in enumerate(csv.reader(line for _, line in _lines(path)), start=1):
        if number == 1 and f[:2] == ["index", "mid"]:
            continue
        if len(f) != 3:
            raise MetadataFormatError(f"{path}:{number}: expected 3 fields (index, mid, display_name), got {len(f)}")
        names[f[1]] = f[2]
    return names


def parse_vggsound(ds: DatasetConfig, meta: MetadataFile, strict: bool = False) -> Iterator[SourceRow]:
    path = ds.root / meta.path
    for number, f in _records(path):
        where = f"{meta.path}:{number}"
        if len(f) != 4:
            yield _bad(where, f"expected 4 fields (ytid, start_seconds, label, split), got {len(f)}", meta.split or "",
                       strict)
            continue
        ytid, start_text, label, split = f
        try:
            start = _seconds(start_text)
        except ValueError as err:
            yield _bad(where, f"bad start_seconds: {err}", split, strict)
            continue
        split = meta.split or split
        yield SourceRow(
            clip_id=f"{ytid}_{int(start):06d}", split=split, source=where,
            media_path=_media_path(ds, meta, ytid=ytid, start=start, end=start + 10.0),
            start_s=start, end_s=start + 10.0, labels=[label], label_names=[label])


def parse_audiocaps(ds: DatasetConfig, meta: MetadataFile, strict: bool = False) -> Iterator[SourceRow]:
    """Grouped by clip, so the file's clips are held until its end (AudioCaps: 50K lines)."""
    path = ds.root / meta.path
    records = _records(path)
    first = next(records, None)
    header = first[1] if first else []
    if header != ["audiocap_id", "youtube_id", "start_time", "caption"]:
        raise MetadataFormatError(f"{meta.path}:1: expected header audiocap_id,youtube_id,start_time,caption, got {header}")
    clips: dict[tuple[str, float], SourceRow] = {}
    bad = []
    for number, f in records:
        where = f"{meta.path}:{number}"
        if len(f) != 4:
            bad.append(_bad(where, f"expected 4 fields (audiocap_id, youtube_id, start_time, caption), got {len(f)}", meta.split, strict))
            continue
        cap_id, ytid, start_text, caption = f
        try:
            start = _seconds(start_text)
        except ValueError as err:
            bad.append(_bad(where, f"bad start_time: {err}", meta.split, strict))
            continue
        row = clips.get((ytid, start))
        if row is None:
            row = clips[(ytid, start)] = SourceRow(
                clip_id=f"{ytid}_{int(round(start * 1000))}", split=meta.split, source=where,
                media_path=_media_path(ds, meta, ytid=ytid, start=start, end=start + 10.0),
                start_s=start, end_s=start + 10.0)
        row.captions.append(caption)
        row.caption_ids.append(cap_id)
    yield from clips.values()
    yield from bad


def parse_places(ds: DatasetConfig, meta: MetadataFile, strict: bool = False) -> Iterator[SourceRow]:
    path = ds.root / meta.path
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise MetadataFormatError(f"{meta.path}:{err.lineno}: not valid JSON: {err.msg}") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise MetadataFormatError(f"{meta.path}: expected an object with a 'data' list")
    image_base = ds.image_base_path if ds.image_base_path is not None else doc.get("image_base_path", "")
    audio_base = ds.audio_base_path if ds.audio_base_path is not None else doc.get("audio_base_path", "")
    for i, entry in enumerate(doc["data"]):
        where = f"{meta.path}:data[{i}]"
        missing = [k for k in ("wav", "image") if not isinstance(entry, dict) or not isinstance(entry.get(k), str)]
        if missing:
            yield _bad(where, f"entry lacks {' and '.join(missing)}", meta.split, strict)
            continue
        text = entry.get("asr_text")
        yield SourceRow(
            clip_id=str(entry.get("uttid") or posixpath.splitext(posixpath.basename(entry["wav"]))[0]),
            split=meta.split, source=where,
            media_path=posixpath.join(audio_base, entry["wav"]), image_path=posixpath.join(image_base, entry["image"]),
            captions=[text] if isinstance(text, str) and text else [])


def _check_listed_file(ds: DatasetConfig, relative: str) -> None:
    """A metadata file the config names must exist (a config error, unlike a missing clip)."""
    if not (ds.root / relative).is_file():
        raise FileNotFoundError(f"{ds.source or ds.name}: metadata file {relative!r} not found under {ds.root}")


def parse_metadata(ds: DatasetConfig, strict: bool = False) -> Iterator[SourceRow]:
    """Every clip row of every metadata file of the dataset, in file order, streamed. The files
    the config names are checked before the first row."""
    for relative in [m.path for m in ds.metadata] + ([ds.label_map] if ds.label_map else []):
        _check_listed_file(ds, relative)
    label_names = parse_audioset_labels(ds.root / ds.label_map) if ds.label_map else {}
    return _rows(ds, label_names, strict)


def _rows(ds: DatasetConfig, label_names: dict[str, str], strict: bool) -> Iterator[SourceRow]:
    for meta in ds.metadata:
        if ds.format == "audioset":
            yield from parse_audioset(ds, meta, label_names, strict)
        elif ds.format == "vggsound":
            yield from parse_vggsound(ds, meta, strict)
        elif ds.format == "audiocaps":
            yield from parse_audiocaps(ds, meta, strict)
        else:
            yield from parse_places(ds, meta, strict)
