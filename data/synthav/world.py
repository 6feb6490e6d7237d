"""The SynthAV world: sounding-object classes, instance attributes and clip specs.

Everything a clip shows and sounds like is decided here, from a per-clip random
generator, before any pixel or sample is rendered. Three properties make the
seeds' methods meaningful on this data:

- classes shared by many clips (same-class "false negatives" in a batch, seed 000);
- instance attributes that tie sound to picture beyond the class: the object's
  colour sets the pitch, its size the loudness, the scene the ambience;
- events localised in time: the object is on screen only while it sounds, so with
  4 frames ~3.3 s apart only some frames show it (seed 001).

A `Density` preset sets how many distinct semantic keys (`semantic_key`) the clips of a
dataset spread over, so how often a batch holds two clips about the same thing.
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

# Caption phrasings (see describe). Some leave out the colour or the size, as people do.
VARIED_TEMPLATES: tuple[str, ...] = (
    "a {size} {colour} {noun} {verb} in the {scene}",
    "in the {scene} a {colour} {noun} {verb}",
    "you can hear a {size} {noun} that {verb} near the {scene}",
    "there is a {size} {colour} {noun} in a {scene}",
    "a {noun} {verb} {loudness} in the {scene}",
)
# Each names colour, class and scene: Places audio is the spoken caption, and a key
# attribute the caption leaves out cannot be heard.
DENSE_TEMPLATES: tuple[str, ...] = (
    "a {colour} {noun} {verb} in the {scene}",
    "in the {scene} a {colour} {noun} {verb}",
    "you can hear a {colour} {noun} in the {scene}",
    "there is a {colour} {noun} in the {scene} and it {verb}",
    "the {noun} in the {scene} is {colour} and it {verb}",
    "listen to the {colour} {noun} in the {scene}",
)


@dataclass(frozen=True)
class Density:
    """World parameters that set how many clips share a semantic key.

    Seed 000's mined positives are "semantically similar samples": two clips that show and
    sound like the same thing. How often a training batch holds such a pair (a false
    negative for plain InfoNCE) depends on how many distinct keys the clips spread over.
    """

    colours: tuple[int, ...]  # indices into COLOURS an event's colour is drawn from, uniformly
    sizes: tuple[int, ...]  # indices into SIZES, likewise
    max_events: int  # events per clip at most; a dataset's own maximum applies below it
    class_zipf: float  # class frequencies ~ 1 / rank ** class_zipf
    templates: tuple[str, ...]  # the caption phrasings describe picks from


# `varied`: the original world, many keys held by one clip (Places train: 1819 keys for
# 2500 clips, 4.6% of a batch of 128 meets a same-key clip). `dense`: one object per clip,
# always big (one size, so captions need not say it), every colour and scene, a steeper
# class Zipf, captions naming every key attribute; calibrated (data.synthav.calibration)
# so that ~40% of a batch of 128 Places training clips meets a same-key clip, the
# false-negative rate seed 000 reports.
DENSITIES: dict[str, Density] = {
    "varied": Density(colours=tuple(range(len(COLOURS))), sizes=tuple(range(len(SIZES))), max_events=2,
                      class_zipf=0.5, templates=VARIED_TEMPLATES),
    "dense": Density(colours=tuple(range(len(COLOURS))), sizes=(1,), max_events=1,
                     class_zipf=0.85, templates=DENSE_TEMPLATES),
}
VARIED = DENSITIES["varied"]


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


def semantic_key(spec: ClipSpec) -> str:
    """What a clip is about: its scene and the set of (size, colour, class) of its events.

    Written "scene|size colour noun", events sorted and joined by "+", e.g. "kitchen|big
    red dog" or "beach|big red dog+small blue cat". Two clips with the same key show and
    sound like the same thing (seed 000's semantically similar samples); when the events
    happen, where the objects stand, whether the picture is still and the noise are not part
    of it.
    """
    events = sorted({f"{SIZES[e.size][0]} {COLOURS[e.colour][0]} {CLASSES[e.cls].noun}" for e in spec.events})
    return f"{SCENES[spec.scene][0]}|{'+'.join(events)}"


def clip_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    """Independent generator per (seed, stream, clip index): growing a dataset
    adds clips without changing the ones already there."""
    stream_code = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, stream_code, index]))


def sample_class(rng: np.random.Generator, n_classes: int = len(CLASSES), zipf: float = VARIED.class_zipf) -> int:
    """Zipf-like class frequencies (real datasets are imbalanced)."""
    weights = 1.0 / np.arange(1, n_classes + 1) ** zipf
    return int(rng.choice(n_classes, p=weights / weights.sum()))


def sample_event(rng: np.random.Generator, cls: int, seconds: float, whole_clip: bool = False,
                 density: Density = VARIED) -> Event:
    if whole_clip:
        onset, duration = 0.0, seconds
    else:
        # Longer than the 3.3 s between sampled frames, shorter than two gaps: of 4 frames
        # evenly spaced over 10 s, one or two show the object, never none or all.
        duration = float(rng.uniform(3.5, 5.5))
        onset = float(rng.uniform(0.0, seconds - duration))
    return Event(
        cls=cls,
        colour=density.colours[int(rng.integers(len(density.colours)))],
        size=density.sizes[int(rng.integers(len(density.sizes)))],
        onset=round(onset, 3),
        duration=round(duration, 3),
        x=float(rng.uniform(0.25, 0.75)),
        drift=0.0 if whole_clip else float(rng.uniform(-0.04, 0.04)),
    )


def sample_clip(rng: np.random.Generator, max_events: int = 1, p_second: float = 0.35,
                p_still: float = 0.0, seconds: float = CLIP_SECONDS, density: Density = VARIED) -> ClipSpec:
    """A clip of one scene with one (or, with probability p_second, two) events."""
    scene = int(rng.integers(len(SCENES)))
    still = bool(rng.random() < p_still)
    n_events = 2 if (min(max_events, density.max_events) > 1 and rng.random() < p_second) else 1
    first = sample_class(rng, zipf=density.class_zipf)
    classes = [first]
    if n_events == 2:
        classes.append((first + 1 + int(rng.integers(len(CLASSES) - 1))) % len(CLASSES))
    events = tuple(sample_event(rng, c, seconds, whole_clip=still, density=density) for c in classes)
    return ClipSpec(scene=scene, events=events, seconds=seconds, still=still,
                    noise_seed=int(rng.integers(2**31)))


def youtube_id(rng: np.random.Generator) -> str:
    """An 11-character YouTube-style id (may start with '-', as real ones do)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[i] for i in rng.integers(len(alphabet), size=11))


def describe(spec: ClipSpec, rng: np.random.Generator, style: int = 0, density: Density = VARIED) -> str:
    """A caption naming the events' classes and the scene, with their colours and sizes as the
    density's phrasing `style` (and the next, for a second event) says them."""
    phrases = []
    for e in sorted(spec.events, key=lambda e: e.onset):
        c, colour, size = CLASSES[e.cls], COLOURS[e.colour][0], SIZES[e.size][0]
        phrases.append((c, colour, size))
    scene = SCENES[spec.scene][0]
    templates = density.templates
    parts = []
    for i, (c, colour, size) in enumerate(phrases):
        t = templates[(style + i) % len(templates)]
        loudness = "softly" if size == "small" else "loudly"
        parts.append(t.format(size=size, colour=colour, noun=c.noun, verb=c.verb, scene=scene, loudness=loudness))
    text = " and then ".join(parts)
    if rng.random() < 0.3:
        text = text + " while " + ("people talk" if spec.scene in (0, 1) else "the wind blows")
    return text
