"""SynthAV semantic keys and density presets: the key file joins the manifests, `dense` clips say
their key aloud and are calibrated to seed 000's false-negative rate, `varied` data is unchanged."""

import csv
import hashlib
import itertools
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from assets.ingest.dataset_config import load_dataset_configs
from assets.ingest.manifest import build_manifest
from data.synthav.calibration import places_train_keys, same_key_share
from data.synthav.generate import KEYS_FILE, SynthAVConfig, generate, is_generated, parse_density
from data.synthav.layouts import RenderSettings, item_clip
from data.synthav.world import CLASSES, COLOURS, DENSITIES, SCENES, SIZES, describe, semantic_key


def _keys(path: Path) -> dict[str, str]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    ids = [r["clip_id"] for r in rows]
    assert len(set(ids)) == len(ids), "a clip listed twice"
    return {r["clip_id"]: r["key"] for r in rows}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_key_file_joins_every_manifest(synthav_root, tiny_configs):
    """One key per clip the manifest lists, under the manifest's own clip id; the deliberately
    malformed lines and the path escaping the root have no clip, so no key."""
    for ds in load_dataset_configs(tiny_configs):
        manifest = build_manifest(ds).select(["clip_id", "status"]).to_pylist()
        clips = {r["clip_id"] for r in manifest if r["status"] not in ("malformed", "path_escape")}
        assert len(clips) >= 8 and set(_keys(ds.root / KEYS_FILE)) == clips, ds.name


def test_dense_clips_have_one_event_and_captions_name_their_key(synthav_root):
    """Places audio is the spoken caption, so in `dense` every key attribute must be said."""
    dense = DENSITIES["dense"]
    keys = _keys(synthav_root / "places" / KEYS_FILE)
    entries = [e for split in ("train", "val")
               for e in json.loads((synthav_root / "places" / "metadata" / f"{split}.json").read_text())["data"]
               if e["uttid"] in keys]
    assert len(entries) == len(keys) > 30
    for e in entries:
        scene, event = keys[e["uttid"]].split("|")
        size, colour, noun = event.split(" ")
        words = e["asr_text"].split()
        assert scene in words and colour in words and noun in words, (keys[e["uttid"]], e["asr_text"])
        assert size in words or len(dense.sizes) == 1
    rs = RenderSettings(density="dense")
    for i in range(60):  # every phrasing, not only those the tiny dataset happened to draw
        spec, rng = item_clip("places", rs, "train", i)
        assert len(spec.events) == 1 and spec.events[0].size in dense.sizes
        event = spec.events[0]
        key_words = {SCENES[spec.scene][0], COLOURS[event.colour][0], CLASSES[event.cls].noun}
        if len(dense.sizes) > 1:
            key_words.add(SIZES[event.size][0])
        for style in range(len(dense.templates)):
            assert key_words <= set(describe(spec, rng, style=style, density=dense).split())


def test_varied_datasets_are_unchanged(synthav_root, tmp_path):
    """A dataset in `varied` is what the generator wrote before densities existed: its index
    files hash as they did then (they pin every draw's count and the captions' values), and
    its key file as it did when every media file was checked byte-identical to the old ones."""
    before = {"vggsound/vggsound.csv": "8c706ad610fd8869",
              "audioset/balanced_train_segments.csv": "2cf74001bd71e3c7",
              "audioset/eval_segments.csv": "7cd076097f497891",
              "audiocaps/train.csv": "66998c0aca424a0d", "audiocaps/val.csv": "e2397af2ebf33abf",
              "audiocaps/test.csv": "134f49ac307d035b", "vggsound/synthav_keys.csv": "068873ac56c55a49",
              "audioset/synthav_keys.csv": "d633e08478d5e5c2", "audiocaps/synthav_keys.csv": "bc4e1d3a45979339"}
    assert {name: _sha(synthav_root / name) for name in before} == before
    generate(SynthAVConfig(out=tmp_path, scale=0.004, workers=1, density={"places": "varied"}), ("places",))
    before = {"places/metadata/train.json": "10f303823e24bf74", "places/metadata/val.json": "5bc4c48d0cc827e9",
              "places/synthav_keys.csv": "18e21d7afb156413"}
    assert {name: _sha(tmp_path / name) for name in before} == before


def test_densities_are_in_the_stamp(synthav_root):
    from tests.conftest import TINY_SCALE
    assert is_generated(SynthAVConfig(out=synthav_root, scale=TINY_SCALE))
    assert not is_generated(SynthAVConfig(out=synthav_root, scale=TINY_SCALE, density={"places": "varied"}))
    assert parse_density(["places=varied", "vggsound=dense"]) == {"places": "varied", "vggsound": "dense"}
    with pytest.raises(ValueError):
        SynthAVConfig(out=synthav_root, density={"places": "sparse"})


def test_semantic_key_is_scene_and_sorted_events():
    specs = [item_clip("audioset", RenderSettings(), "eval", i)[0] for i in range(40)]
    two = next(s for s in specs if len(s.events) == 2)
    reordered = replace(two, events=two.events[::-1])
    assert semantic_key(two) == semantic_key(reordered) and "+" in semantic_key(two)
    scene, events = semantic_key(two).split("|")
    assert scene == SCENES[two.scene][0] and events.split("+") == sorted(events.split("+"))


def test_same_key_share_hand_case():
    # "a" clips: the one other clip in the batch is the other "a" with probability 1/2; "b" never.
    assert same_key_share(["a", "a", "b"], 2) == pytest.approx(1 / 3)
    assert same_key_share(["a", "a", "b", "c"], 4) == pytest.approx(1 / 2)  # the whole set: the non-singletons
    assert same_key_share(["a", "a", "a"], 1) == 0.0


def test_same_key_share_matches_brute_force():
    keys = ["a", "a", "a", "b", "b", "c", "d", "d", "e"]
    for batch in (2, 4, 7):
        fractions = []
        for members in itertools.combinations(range(len(keys)), batch):  # every batch, equally likely
            counts = Counter(keys[i] for i in members)
            fractions.append(np.mean([counts[keys[i]] > 1 for i in members]))
        assert same_key_share(keys, batch) == pytest.approx(np.mean(fractions), abs=1e-12)
    rng = np.random.default_rng(0)  # and a bigger case, by simulation
    keys = rng.zipf(1.6, size=400).tolist()
    fractions = []
    for _ in range(4000):
        batch = [keys[i] for i in rng.choice(len(keys), 48, replace=False)]
        counts = Counter(batch)
        fractions.append(np.mean([counts[k] > 1 for k in batch]))
    assert same_key_share(keys, 48) == pytest.approx(np.mean(fractions), abs=0.01)


def test_dense_places_is_calibrated_to_seed_000():
    """~40% of a batch of 128 meets a same-key clip, as seed 000 reports for false negatives."""
    dense = places_train_keys("dense")
    assert len(dense) == 2500 and all("+" not in k for k in dense)
    assert 0.37 <= same_key_share(dense, 128) <= 0.43
    assert same_key_share(places_train_keys("varied"), 128) < 0.1  # what the varied world gave
    assert {k.split("|")[1].split(" ")[1] for k in dense} == {c[0] for c in COLOURS}
    assert {k.split("|")[0] for k in dense} == {s[0] for s in SCENES}
