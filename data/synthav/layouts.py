"""One SynthAV item per call, in each real dataset's on-disk layout.

Each `make_*` function renders one item from its own random stream, writes its
media files under the dataset directory and returns the metadata row(s) the
dataset's index file will hold. The `write_*` functions write those index files in
the exact formats the real datasets ship, and SynthAV's own files of semantic keys and
of sounding-object boxes.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.synthav import media_io, render
from data.synthav.sounding_boxes import encode_sounding_boxes, picture_sounding_boxes, video_sounding_boxes
from data.synthav.world import (CLASSES, DENSITIES, SCENES, ClipSpec, clip_rng, describe, sample_clip, semantic_key,
                                youtube_id)

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class RenderSettings:
    seed: int = 0
    fps: int = 4  # enough for 4 frames ~3.3 s apart; keeps generation within budget
    height: int = 120  # 4:3 frames, so the teacher's centre crop has work to do
    width: int = 160
    image_size: int = 256  # Places images are 256x256
    density: str = "varied"  # world.DENSITIES preset; the generator sets it per dataset


# Per dataset: the prefix of its items' random streams and how many events its clips hold.
CLIP_DRAWS: dict[str, tuple[str, dict]] = {
    "vggsound": ("vgg", {"max_events": 1, "p_still": 0.03}),
    "audioset": ("aus", {"max_events": 2, "p_second": 0.4}),
    "audiocaps": ("acp", {"max_events": 2, "p_second": 0.3}),
    "places": ("plc", {"max_events": 2, "p_second": 0.5}),
}


def item_clip(dataset: str, rs: RenderSettings, split: str, index: int,
              defect: str = "") -> tuple[ClipSpec, np.random.Generator]:
    """An item's clip spec, and its random stream positioned after it (the maker draws the
    rest of the item from it). Sampling specs alone is cheap, so the calibration measures
    the generated data's semantic keys through here without rendering anything."""
    prefix, draws = CLIP_DRAWS[dataset]
    rng = clip_rng(rs.seed, f"{prefix}{split}{defect}", index)
    return sample_clip(rng, density=DENSITIES[rs.density], **draws), rng


# --------------------------------------------------------------------------- video datasets

def _clip_bytes(spec, rs: RenderSettings, seconds: float | None = None,
                sample_rate: int = SAMPLE_RATE, channels: int = 1, silent: bool = False) -> bytes:
    frames = render.render_frames(spec, rs.fps, rs.height, rs.width, seconds)
    audio = render.render_audio(spec, sample_rate, seconds)
    if silent:
        audio = np.zeros_like(audio)
    if channels == 2:  # a second channel that differs, so "first channel" is observable
        audio = np.stack([audio, 0.5 * audio])
    return media_io.encode_mp4(frames, rs.fps, audio, sample_rate)


def make_vggsound(root: Path, rs: RenderSettings, split: str, index: int, defect: str = "") -> dict:
    """A VGGSound row (ytid, start_seconds, label, split) and video/{ytid}_{start:06d}.mp4."""
    spec, rng = item_clip("vggsound", rs, split, index, defect)
    ytid, start = youtube_id(rng), int(rng.integers(0, 300))
    path = root / "video" / f"{ytid}_{start:06d}.mp4"
    _write_media(path, spec, rs, defect, rng)
    return {"ytid": ytid, "start": start, "label": CLASSES[spec.events[0].cls].label, "split": split,
            "still": spec.still, "defect": defect, "key": semantic_key(spec),
            "sounding": None if defect else video_sounding_boxes(spec, rs.height, rs.width)}


def make_audioset(root: Path, rs: RenderSettings, split: str, index: int, defect: str = "") -> dict:
    """An AudioSet segment row and {split}/Y{ytid}.mp4; one or two labelled events."""
    spec, rng = item_clip("audioset", rs, split, index, defect)
    ytid, start = youtube_id(rng), float(rng.integers(0, 30)) * 10.0
    # About 10% of AudioSet rows have no video any more (18% in the real release).
    if not defect and rng.random() < 0.1:
        defect = "missing"
    _write_media(root / split / f"Y{ytid}.mp4", spec, rs, defect, rng)
    return {"ytid": ytid, "start": start, "end": start + 10.0,
            "mids": [CLASSES[c].mid for c in spec.classes], "split": split, "defect": defect,
            "key": semantic_key(spec), "sounding": None if defect else video_sounding_boxes(spec, rs.height, rs.width)}


def _write_media(path: Path, spec, rs: RenderSettings, defect: str, rng: np.random.Generator) -> None:
    """Write the clip, or the deliberately bad variant `defect` names."""
    variants = {"": {}, "silent": {"silent": True}, "short": {"seconds": 3.0},
                "stereo44k": {"sample_rate": 44100, "channels": 2}}
    if defect in ("missing", "malformed"):
        return
    if defect == "corrupt":
        data = rng.bytes(50_000)
    elif defect == "truncated":  # a download cut short: header intact, the rest gone
        data = _clip_bytes(spec, rs)[:20_000]
    elif defect in variants:
        data = _clip_bytes(spec, rs, **variants[defect])
    else:
        raise ValueError(f"unknown defect {defect!r}")
    media_io.write_bytes(path, data)


# --------------------------------------------------------------------------- audio-only / speech datasets

def make_audiocaps(root: Path, rs: RenderSettings, split: str, index: int, defect: str = "") -> dict:
    """AudioCaps rows (one caption per train clip, five per val/test clip) and audio/{split}/Y{ytid}.wav."""
    spec, rng = item_clip("audiocaps", rs, split, index, defect)
    density = DENSITIES[rs.density]
    ytid, start = youtube_id(rng), int(rng.integers(0, 30)) * 10
    n_captions = 1 if split == "train" else 5
    first_style = int(rng.integers(len(density.templates)))
    captions = [describe(spec, rng, style=first_style + k, density=density) for k in range(n_captions)]
    path = root / "audio" / split / f"Y{ytid}.wav"
    if defect == "short":
        media_io.write_wav(path, render.render_audio(spec, SAMPLE_RATE, seconds=3.0), SAMPLE_RATE)
    elif defect not in ("missing", "malformed"):
        media_io.write_wav(path, render.render_audio(spec, SAMPLE_RATE), SAMPLE_RATE)
    return {"ytid": ytid, "start": start, "captions": captions, "split": split, "defect": defect,
            "key": semantic_key(spec)}


def make_places(root: Path, rs: RenderSettings, split: str, index: int, defect: str = "") -> dict:
    """A Places-audio-captions entry: a 256x256 jpg and a spoken caption wav (espeak-ng)."""
    from data.synthav.speech import synthesize  # loads libespeak-ng; only Places needs it

    spec, rng = item_clip("places", rs, split, index, defect)
    density = DENSITIES[rs.density]
    text = describe(spec, rng, style=int(rng.integers(len(density.templates))), density=density)
    speaker = f"A{int(rng.integers(16)):02d}SPK"
    scene = SCENES[spec.scene][0]
    token = rng.bytes(6).hex().upper()
    image = f"{scene[0]}/{scene}/gsun_{token.lower()}.jpg"
    number = split_offset(split) + index + (8_000_000 if defect else 0)  # defects get numbers of their own
    wav = f"wavs/{number // 1000}/utterance_{number}.wav"
    if defect == "escape":
        wav = "../../outside/utterance_0.wav"
    if defect not in ("missing", "escape", "malformed"):
        variant = ("m1", "m3", "f2", "f4", "m7", "f1")[int(speaker[1:3]) % 6]
        voice = {"voice": f"en-us+{variant}", "rate_wpm": int(150 + 5 * (int(speaker[1:3]) % 5)),
                 "pitch": int(40 + 3 * (int(speaker[1:3]) % 7))}
        if defect == "silent":
            speech = np.zeros(3 * SAMPLE_RATE, np.float32)
        else:
            speech = synthesize(text, **voice)
        media_io.write_wav(root / "audio" / wav, speech, SAMPLE_RATE)
    if defect == "corrupt":
        media_io.write_bytes(root / "images" / image, rng.bytes(4000))
    else:
        picture = render.render_picture(spec, rs.image_size, rs.image_size)
        media_io.write_jpg(root / "images" / image, picture)
    entry = {"uttid": f"{speaker}-GSUN_{token}", "speaker": speaker, "asr_text": text, "wav": wav, "image": image}
    if defect == "malformed":
        del entry["wav"]
    return {"entry": entry, "split": split, "defect": defect, "key": semantic_key(spec),
            "sounding": None if defect else picture_sounding_boxes(spec, rs.image_size)}


def split_offset(split: str) -> int:
    """Keeps utterance numbers of different splits apart (they share one wavs/ tree)."""
    return {"train": 0, "val": 5_000_000}.get(split, 9_000_000)


# --------------------------------------------------------------------------- index files

def write_vggsound_csv(path: Path, rows: list[dict]) -> None:
    """Headerless `ytid,start_seconds,label,split`; labels with commas are quoted."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for r in rows:
        if r["defect"] == "malformed":
            buffer.write(f"{r['ytid']},{r['start']}\n")  # a truncated line, as a bad download leaves
        else:
            writer.writerow([r["ytid"], r["start"], r["label"], r["split"]])
    media_io.write_bytes(path, buffer.getvalue().encode())


def write_audioset_csv(path: Path, rows: list[dict]) -> None:
    """The segments CSV with its three `#` header lines and `, `-separated fields."""
    labels = sorted({m for r in rows for m in r["mids"]})
    n_positive = sum(len(r["mids"]) for r in rows)
    lines = [
        "# Segments csv created Sun Mar  5 10:54:31 2017",
        f"# num_ytids={len(rows)}, num_segs={len(rows)}, num_unique_labels={len(labels)}, "
        f"num_positive_labels={n_positive}",
        "# YTID, start_seconds, end_seconds, positive_labels",
    ]
    for r in rows:
        if r["defect"] == "malformed":
            lines.append(f"{r['ytid']}, thirty, {r['end']:.3f}, \"{','.join(r['mids'])}\"")
        else:
            lines.append(f"{r['ytid']}, {r['start']:.3f}, {r['end']:.3f}, \"{','.join(r['mids'])}\"")
    media_io.write_bytes(path, ("\n".join(lines) + "\n").encode())


def write_audioset_labels(path: Path) -> None:
    """class_labels_indices.csv: `index,mid,display_name`, names with commas quoted."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "mid", "display_name"])
    for i, c in enumerate(CLASSES):
        writer.writerow([i, c.mid, c.display_name])
    media_io.write_bytes(path, buffer.getvalue().encode())


def write_audiocaps_csv(path: Path, rows: list[dict], first_id: int) -> None:
    """`audiocap_id,youtube_id,start_time,caption`, one line per caption."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
    next_id = first_id
    for r in rows:
        for caption in r["captions"]:
            if r["defect"] == "malformed":
                buffer.write(f"{next_id},{r['ytid']}\n")
            else:
                writer.writerow([next_id, r["ytid"], r["start"], caption])
            next_id += 1
    media_io.write_bytes(path, buffer.getvalue().encode())


def write_places_json(path: Path, rows: list[dict]) -> None:
    """{"image_base_path", "audio_base_path", "data": [...]}, bases relative to the dataset root."""
    doc = {"image_base_path": "images", "audio_base_path": "audio", "data": [r["entry"] for r in rows]}
    media_io.write_bytes(path, json.dumps(doc, indent=1).encode())


def clip_id(dataset: str, row: dict) -> str:
    """The id assets.ingest.dataset_formats gives the clip of a maker's row."""
    if dataset == "places":
        return row["entry"]["uttid"]
    if dataset == "vggsound":
        return f"{row['ytid']}_{int(row['start']):06d}"
    return f"{row['ytid']}_{int(round(row['start'] * 1000))}"  # audioset, audiocaps


def write_keys_csv(path: Path, dataset: str, rows: list[dict]) -> None:
    """`clip_id,key`: each item's world.semantic_key under the clip id the manifest gives it.

    Not a real dataset file: ground truth the pipeline joins on clip_id (an oracle of
    which clips are about the same thing). Items whose metadata line is deliberately
    malformed or whose path escapes the root have no clip to join, so no row.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["clip_id", "key"])
    for r in rows:
        if r["defect"] not in ("malformed", "escape"):
            writer.writerow([clip_id(dataset, r), r["key"]])
    media_io.write_bytes(path, buffer.getvalue().encode())


def write_sounding_boxes(path: Path, dataset: str, rows: list[dict]) -> None:
    """sounding_boxes.parquet (data.synthav.sounding_boxes): each clip's sounding-object boxes
    under the clip id the manifest gives it.

    Not a real dataset file: ground truth for localisation. Every deliberately bad item is left
    out (a missing, corrupt, truncated, silent, short or resampled clip, a broken metadata line;
    on AudioSet also the ~10% whose video is "missing"): its media are not what its spec renders,
    or there are none; so the file lists a subset of synthav_keys.csv.
    """
    clips = [(clip_id(dataset, r), r["sounding"]) for r in rows if not r["defect"]]
    media_io.write_bytes(path, encode_sounding_boxes(clips))
