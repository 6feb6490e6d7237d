"""The SynthAV world: sounding-object classes, instance attributes and clip specs.

Everything a clip shows and sounds like is decided here, from a per-clip random
generator, before any pixel or sample is rendered. Three properties make the
seeds' methods meaningful on this data:

- classes shared by many clips (same-class "false negatives" in a batch, seed 000);
- instance attributes that tie sound to picture beyond the class: the object's
  colour sets the pitch, its size the loudness, the scene the ambience;
- events localised in time: the object is on screen only while it sounds, so with
  4 frames ~3.3 s apart only some frames show it (seed 001).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SoundClass:
    label: str  # VGGSound-style label (may contain a comma, as real ones do)
    mid: str  # AudioSet-style machine id
    display_name: str  # AudioSet ontology display name
    noun: str  # what a caption calls the object
    verb: str  # what a caption says it does
    shape: str  # how the object is drawn (see render.draw_object)
    timbre: str  # how it sounds (see render.synth_event)
    base_hz: float  # pitch before the colour shift


CLASSES: tuple[SoundClass, ...] = (
    SoundClass("dog barking", "/m/05tny_", "Bark", "dog", "barks", "triangle", "bark", 420.0),
    SoundClass("church bell ringing", "/m/03w41f", "Church bell", "bell", "rings", "bell", "bell", 330.0),
    SoundClass("playing piano", "/m/05r5c", "Piano", "piano", "plays", "keys", "keys", 262.0),
    SoundClass("ambulance siren", "/m/012n7d", "Ambulance (siren)", "ambulance", "wails", "diamond", "siren", 700.0),
    SoundClass("bird chirping, tweeting", "/m/07pggtn", "Chirp, tweet", "bird", "chirps", "ellipse", "chirp", 2400.0),
    SoundClass("car engine idling", "/m/01h82_", "Engine knocking", "car", "rumbles", "wide_box", "engine", 55.0),
    SoundClass("playing drum kit", "/m/02hnl", "Drum kit", "drum", "beats", "ring", "drum", 110.0),
    SoundClass("helicopter", "/m/09ct_", "Helicopter", "helicopter", "whirs", "cross", "rotor", 90.0),
    SoundClass("playing flute", "/m/0l14j_", "Flute", "flute", "whistles", "bar", "flute", 880.0),
    SoundClass("telephone bell ringing", "/m/07pp8cl", "Telephone bell ringing", "telephone", "rings", "square", "phone", 440.0),
    SoundClass("cat meowing", "/m/07qrkrw", "Meow", "cat", "meows", "star", "meow", 600.0),
    SoundClass("chainsawing trees", "/m/01j4z9", "Chainsaw", "chainsaw", "buzzes", "zigzag", "saw", 160.0),
)

# Colour -> (RGB, pitch factor). Pitch steps are a minor third apart so that
# neighbouring colours stay distinguishable in a 128-bin FBANK.
COLOURS: tuple[tuple[str, tuple[int, int, int], float], ...] = (
    ("red", (220, 40, 40), 0.70),
    ("orange", (240, 140, 30), 0.84),
    ("yellow", (235, 220, 40), 1.00),
    ("green", (40, 180, 60), 1.19),
    ("blue", (40, 80, 220), 1.41),
    ("purple", (140, 50, 190), 1.68),
)

# Size -> (fraction of frame height, gain in dB).
SIZES: tuple[tuple[str, float, float], ...] = (
    ("small", 0.22, -16.0),
    ("big", 0.42, -6.0),
)

# Scene -> (top RGB, bottom RGB, ambience noise band in Hz, ambience gain dB).
SCENES: tuple[tuple[str, tuple[int, int, int], tuple[int, int, int], tuple[float, float], float], ...] = (
    ("kitchen", (235, 225, 205), (150, 120, 90), (300.0, 1200.0), -38.0),
    ("street", (150, 160, 175), (70, 70, 75), (60.0, 400.0), -30.0),
    ("forest", (120, 170, 120), (40, 80, 40), (2000.0, 6000.0), -36.0),
    ("beach", (130, 190, 240), (230, 210, 150), (150.0, 900.0), -28.0),
    ("stadium", (60, 60, 110), (50, 130, 60), (500.0, 3000.0), -32.0),
)

CLIP_SECONDS = 10.0


@dataclass(frozen=True)
class Event:
    """One sounding object: visible and audible during [onset, onset + duration)."""

    cls: int  # index into CLASSES
    colour: int  # index into COLOURS
    size: int  # index into SIZES
    onset: float  # seconds from clip start
    duration: float
    x: float  # horizontal centre, fraction of width, at onset
    drift: float  # horizontal motion, fraction of width per second


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip, deterministically."""

    scene: int
    events: tuple[Event, ...]
    seconds: float = CLIP_SECONDS
    still: bool = False  # a still picture over the audio, as some VGGSound uploads are
    noise_seed: int = 0  # seeds the ambience and timbre noise at render time

    @property
    def classes(self) -> list[int]:
        return sorted({e.cls for e in self.events})


def clip_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    """Independent generator per (seed, stream, clip index): growing a dataset
    adds clips without changing the ones already there."""
    stream_code = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, stream_code, index]))


def sample_class(rng: np.random.Generator, n_classes: int = len(CLASSES)) -> int:
    """Zipf-like class frequencies (real datasets are imbalanced)."""
    weights = 1.0 / np.arange(1, n_classes + 1) ** 0.5
    return int(rng.choice(n_classes, p=weights / weights.sum()))


def sample_event(rng: np.random.Generator, cls: int, seconds: float, whole_clip: bool = False) -> Event:
    if whole_clip:
        onset, duration = 0.0, seconds
    else:
        # Longer than the 3.3 s between sampled frames, shorter than two gaps: of 4 frames
        # evenly spaced over 10 s, one or two show the object, never none or all.
        duration = float(rng.uniform(3.5, 5.5))
        onset = float(rng.uniform(0.0, seconds - duration))
    return Event(
        cls=cls,
        colour=int(rng.integers(len(COLOURS))),
        size=int(rng.integers(len(SIZES))),
        onset=round(onset, 3),
        duration=round(duration, 3),
        x=float(rng.uniform(0.25, 0.75)),
        drift=0.0 if whole_clip else float(rng.uniform(-0.04, 0.04)),
    )


def sample_clip(rng: np.random.Generator, max_events: int = 1, p_second: float = 0.35,
                p_still: float = 0.0, seconds: float = CLIP_SECONDS) -> ClipSpec:
    """A clip of one scene with one (or, with probability p_second, two) events."""
    scene = int(rng.integers(len(SCENES)))
    still = bool(rng.random() < p_still)
    n_events = 2 if (max_events > 1 and rng.random() < p_second) else 1
    first = sample_class(rng)
    classes = [first]
    if n_events == 2:
        classes.append((first + 1 + int(rng.integers(len(CLASSES) - 1))) % len(CLASSES))
    events = tuple(sample_event(rng, c, seconds, whole_clip=still) for c in classes)
    return ClipSpec(scene=scene, events=events, seconds=seconds, still=still,
                    noise_seed=int(rng.integers(2**31)))


def youtube_id(rng: np.random.Generator) -> str:
    """An 11-character YouTube-style id (may start with '-', as real ones do)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[i] for i in rng.integers(len(alphabet), size=11))


def describe(spec: ClipSpec, rng: np.random.Generator, style: int = 0) -> str:
    """A caption naming class, colour, size and scene, in one of a few phrasings."""
    phrases = []
    for e in sorted(spec.events, key=lambda e: e.onset):
        c, colour, size = CLASSES[e.cls], COLOURS[e.colour][0], SIZES[e.size][0]
        phrases.append((c, colour, size))
    scene = SCENES[spec.scene][0]
    templates = (
        "a {size} {colour} {noun} {verb} in the {scene}",
        "in the {scene} a {colour} {noun} {verb}",
        "you can hear a {size} {noun} that {verb} near the {scene}",
        "there is a {size} {colour} {noun} in a {scene}",
        "a {noun} {verb} {loudness} in the {scene}",
    )
    parts = []
    for i, (c, colour, size) in enumerate(phrases):
        t = templates[(style + i) % len(templates)]
        loudness = "softly" if size == "small" else "loudly"
        parts.append(t.format(size=size, colour=colour, noun=c.noun, verb=c.verb, scene=scene, loudness=loudness))
    text = " and then ".join(parts)
    if rng.random() < 0.3:
        text = text + " while " + ("people talk" if spec.scene in (0, 1) else "the wind blows")
    return text
