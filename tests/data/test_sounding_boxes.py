"""SynthAV's sounding-object boxes: the side file lists the clips, and its boxes are where the
objects are in the decoded video, in the renderer's frames, and over time."""

import csv
from pathlib import Path

import av
import numpy as np
import pytest

from data.synthav import layouts, render
from data.synthav.generate import (BOXED_DATASETS, BOXES_FILE, DEFECTS, KEYS_FILE, SynthAVConfig, _tasks, generate,
                                   is_generated)
from data.synthav.sounding_boxes import (SoundingBoxes, box_at, encode_sounding_boxes, read_sounding_boxes,
                                         video_sounding_boxes)
from data.synthav.world import COLOURS, ClipSpec, Event


def _key_ids(path: Path) -> set[str]:
    with path.open(newline="") as f:
        return {r["clip_id"] for r in csv.DictReader(f)}


def _vgg_specs(root: Path) -> dict[str, ClipSpec]:
    """The specs of the VGGSound items without a defect, by clip id, re-derived from the generator's seeds."""
    specs = {}
    for _, _, rs, split, i, defect in _tasks(SynthAVConfig(out=root, scale=0.01), "vggsound"):
        spec, rng = layouts.item_clip("vggsound", rs, split, i, defect)
        if not defect:
            specs[f"{layouts.youtube_id(rng)}_{int(rng.integers(0, 300)):06d}"] = spec
    return specs


def test_box_files_list_the_clips_without_defects(synthav_root):
    assert not (synthav_root / "audiocaps" / BOXES_FILE).exists()
    boxes = {d: read_sounding_boxes(synthav_root / d / BOXES_FILE) for d in BOXED_DATASETS}
    keys = {d: _key_ids(synthav_root / d / KEYS_FILE) for d in BOXED_DATASETS}
    assert set(boxes["vggsound"]) == set(_vgg_specs(synthav_root))
    keyed_defects = {d: len(set(DEFECTS[d]) - {"malformed", "escape"}) for d in BOXED_DATASETS}
    assert len(keys["vggsound"]) - len(boxes["vggsound"]) == keyed_defects["vggsound"]
    assert len(keys["places"]) - len(boxes["places"]) == keyed_defects["places"]
    assert set(boxes["audioset"]) < keys["audioset"]  # less the defects and the ~10% "missing" videos
    for sb in boxes["places"].values():
        assert (sb.width, sb.height, sb.times) == (256, 256, (0.0,)) and sb.boxes[0] is not None
    for sb in boxes["vggsound"].values():
        assert (sb.width, sb.height, len(sb.times)) == (160, 120, 100)
        np.testing.assert_allclose(sb.times, np.arange(100) / 10, atol=1e-6)


def test_boxes_match_the_objects_in_the_decoded_video(synthav_root):
    """Every second frame (4 fps) falls on a box sample: its object pixels, as PyAV decodes them,
    have the sample's box to within 2 pixels (H.264 at crf 26 and 4:2:0 chroma blur the edges)."""
    boxes = read_sounding_boxes(synthav_root / "vggsound" / BOXES_FILE)
    fps, shown = layouts.RenderSettings().fps, 0
    for clip_id, spec in _vgg_specs(synthav_root).items():
        with av.open(str(synthav_root / "vggsound" / "video" / f"{clip_id}.mp4")) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        background = render.background(spec.scene, 120, 160).astype(np.float64)
        contrast = np.asarray(COLOURS[spec.events[0].colour][1], np.float64) - background
        for i in range(0, len(frames), 2):
            share = ((frames[i] - background) * contrast).sum(axis=2) / (contrast**2).sum(axis=2)
            ys, xs = np.nonzero(share > 0.5)  # pixels at least half the object's colour
            box = box_at(boxes[clip_id], i / fps)
            if box is None:
                assert len(xs) < 5, (clip_id, i)
                continue
            shown += 1
            assert np.abs(np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) - box).max() <= 2, (clip_id, i)
    assert shown > 100


def _pixel_box(frame: np.ndarray, background: np.ndarray):
    ys, xs = np.nonzero((frame != background).any(axis=2))
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else None


@pytest.mark.parametrize("still", [False, True])
def test_boxes_are_the_bounding_boxes_of_the_rendered_pixels(still):
    """At every sample, the box is exactly the bounding box of what render_frames draws then: two
    objects, one drifting out past the left edge, one starting later; a still clip shows both
    throughout, as at their onsets (the generator's still clips sound for their whole length)."""
    events = (Event(6, colour=0, size=1, onset=0.5, duration=5.5, x=0.26, drift=-0.04),
              Event(2, colour=4, size=0, onset=4.25, duration=4.0, x=0.7, drift=0.03))
    spec = ClipSpec(scene=3, events=events, still=still)
    sb = video_sounding_boxes(spec, 120, 160)
    frames = render.render_frames(spec, 10, 120, 160)  # one frame per box sample
    background = render.background(spec.scene, 120, 160)
    assert len(frames) == len(sb.times) == 100
    assert [_pixel_box(f, background) for f in frames] == list(sb.boxes)
    assert (sb.boxes[0] is None, sb.boxes[99] is None) == (not still, not still)  # before and after both sound
    assert (sb.boxes[30] == sb.boxes[50]) == still  # the ring drifts unless the clip is still


def test_file_round_trip_and_nearest_sample(tmp_path):
    clips = [("a_000001", SoundingBoxes(160, 120, (0.0, 0.5, 1.0, 1.5), (None, (1, 2, 3, 4), (5, 6, 7, 8), None))),
             ("b_000002", SoundingBoxes(256, 256, (0.0,), ((0, 0, 9, 9),)))]
    data = encode_sounding_boxes(clips)
    assert data == encode_sounding_boxes(clips)
    (tmp_path / BOXES_FILE).write_bytes(data)
    read = read_sounding_boxes(tmp_path / BOXES_FILE)
    assert read == dict(clips)
    a = read["a_000001"]
    assert box_at(a, 0.6) == (1, 2, 3, 4) and box_at(a, 1.3) is None and box_at(a, -1.0) is None
    assert box_at(a, 0.75) == (5, 6, 7, 8)  # a tie goes to the later sample
    assert box_at(read["b_000002"], 7.5) == (0, 0, 9, 9)


def test_a_generation_without_box_files_is_not_finished(tmp_path):
    cfg = SynthAVConfig(out=tmp_path, scale=0.004, workers=1)
    generate(cfg, ("vggsound",))
    assert is_generated(cfg, ("vggsound",))
    (tmp_path / "vggsound" / BOXES_FILE).unlink()
    assert not is_generated(cfg, ("vggsound",))
