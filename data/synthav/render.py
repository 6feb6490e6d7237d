"""Render a ClipSpec to pixels and samples (pure numpy, deterministic)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.signal import butter, sosfilt

from data.synthav.world import CLASSES, COLOURS, SCENES, SIZES, ClipSpec, Event

# --------------------------------------------------------------------------- pictures

def background(scene: int, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 vertical gradient in the scene's two colours."""
    _, top, bottom, _, _ = SCENES[scene]
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    rows = (1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32)
    return np.broadcast_to(rows, (height, width, 3)).astype(np.uint8)


def object_mask(shape: str, radius: float, cx: float, cy: float, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a class's shape of the given radius (pixels) at (cx, cy)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = (x - cx) / radius, (y - cy) / radius  # unit coordinates, v points down
    if shape == "triangle":
        return (v <= 1) & (v >= -1) & (np.abs(u) <= (v + 1) / 2)
    if shape == "bell":
        return ((u**2 + (v + 0.2) ** 2 <= 0.8) & (v <= 0.5)) | ((np.abs(u) <= 1) & (v > 0.3) & (v <= 0.7))
    if shape == "keys":
        body = (np.abs(u) <= 1) & (np.abs(v) <= 0.6)
        return body & ~((np.floor((u + 1) * 4) % 2 == 1) & (v < 0.1))
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1
    if shape == "ellipse":
        return (u / 1.0) ** 2 + (v / 0.55) ** 2 <= 1
    if shape == "wide_box":
        return (np.abs(u) <= 1) & (np.abs(v) <= 0.45)
    if shape == "ring":
        r2 = u**2 + v**2
        return (r2 <= 1) & (r2 >= 0.45)
    if shape == "cross":
        return ((np.abs(u) <= 1) & (np.abs(v) <= 0.22)) | ((np.abs(v) <= 1) & (np.abs(u) <= 0.22))
    if shape == "bar":
        return (np.abs(u) <= 1) & (np.abs(v) <= 0.16)
    if shape == "square":
        return (np.abs(u) <= 0.7) & (np.abs(v) <= 0.7)
    if shape == "star":
        angle, r = np.arctan2(v, u), np.sqrt(u**2 + v**2)
        return r <= 0.55 + 0.45 * np.cos(5 * angle) ** 2
    if shape == "zigzag":
        return (np.abs(u) <= 1) & (np.abs(v - 0.5 * np.abs(((u * 2) % 2) - 1) + 0.25) <= 0.2)
    raise ValueError(f"unknown shape {shape!r}")


def _shift_columns(mask: np.ndarray, dx: int) -> np.ndarray:
    """mask moved dx pixels right (left if negative), without wrapping around."""
    if dx == 0:
        return mask
    out = np.zeros_like(mask)
    if dx > 0:
        out[:, dx:] = mask[:, :-dx]
    else:
        out[:, :dx] = mask[:, -dx:]
    return out


def event_mask(event: Event, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of the event's object at its onset position."""
    radius = SIZES[event.size][1] * height
    return object_mask(CLASSES[event.cls].shape, radius, event.x * width, 0.55 * height, height, width)


def drawn_shift(event: Event, t: float, still: bool, width: int) -> int | None:
    """Columns the event's object is moved right at clip time t (seconds), or None when it is not
    drawn then: an object is on screen exactly while it sounds; a still clip shows it as at its onset."""
    t = event.onset if still else t
    if not event.onset <= t < event.onset + event.duration:
        return None
    return int(round(event.drift * (t - event.onset) * width))


def render_frames(spec: ClipSpec, fps: float, height: int, width: int, seconds: float | None = None) -> np.ndarray:
    """(T, H, W, 3) uint8 frames; each object appears only while it sounds, drifting sideways."""
    seconds = spec.seconds if seconds is None else seconds
    n = int(round(seconds * fps))
    frames = np.broadcast_to(background(spec.scene, height, width), (n, height, width, 3)).copy()
    for event in spec.events:
        mask = event_mask(event, height, width)
        colour = COLOURS[event.colour][1]
        for i in range(n):
            dx = drawn_shift(event, i / fps, spec.still, width)
            if dx is not None:
                frames[i][_shift_columns(mask, dx)] = colour
    return frames


def render_picture(spec: ClipSpec, height: int, width: int) -> np.ndarray:
    """One (H, W, 3) picture with every object on it (Places-style images)."""
    frame = background(spec.scene, height, width).copy()
    for event in spec.events:
        frame[event_mask(event, height, width)] = COLOURS[event.colour][1]
    return frame


# --------------------------------------------------------------------------- where the objects are

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) in pixels, x1 and y1 exclusive


def _union(boxes: list[Box]) -> Box | None:
    if not boxes:
        return None
    x0, y0, x1, y1 = zip(*boxes)
    return min(x0), min(y0), max(x1), max(y1)


class _ShiftedMaskBoxes:
    """Bounding boxes of one object's mask moved sideways as `_shift_columns` moves it (columns
    pushed past an edge are dropped, so the box can lose rows as well as columns), without
    building the moved mask: per mask column, its topmost and bottommost pixel."""

    def __init__(self, mask: np.ndarray):
        self.columns = np.flatnonzero(mask.any(axis=0))
        rows = mask[:, self.columns]
        self.tops = rows.argmax(axis=0)
        self.bottoms = mask.shape[0] - rows[::-1].argmax(axis=0)  # exclusive
        self.width = mask.shape[1]

    def box(self, dx: int) -> Box | None:
        moved = self.columns + dx
        kept = (moved >= 0) & (moved < self.width)
        if not kept.any():
            return None
        cols = moved[kept]
        return int(cols[0]), int(self.tops[kept].min()), int(cols[-1]) + 1, int(self.bottoms[kept].max())


def drawn_boxes(spec: ClipSpec, times: np.ndarray, height: int, width: int) -> list[Box | None]:
    """Per clip time, the union bounding box of the objects render_frames draws at that time (the
    objects sounding then), from the same masks and shifts; None when none is drawn."""
    objects = [(event, _ShiftedMaskBoxes(event_mask(event, height, width))) for event in spec.events]
    boxes = []
    for t in times:
        drawn = []
        for event, shifted in objects:
            dx = drawn_shift(event, float(t), spec.still, width)
            box = None if dx is None else shifted.box(dx)
            if box is not None:
                drawn.append(box)
        boxes.append(_union(drawn))
    return boxes


def picture_box(spec: ClipSpec, height: int, width: int) -> Box | None:
    """The union bounding box of every object render_picture draws."""
    boxes = [_ShiftedMaskBoxes(event_mask(event, height, width)).box(0) for event in spec.events]
    return _union([box for box in boxes if box is not None])


# --------------------------------------------------------------------------- sounds

def _db(gain_db: float) -> float:
    return float(10.0 ** (gain_db / 20.0))


def _harmonics(f0: float, t: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    return sum(w * np.sin(2 * np.pi * f0 * (k + 1) * t) for k, w in enumerate(weights))


def _pulses(t: np.ndarray, period: float, length: float) -> np.ndarray:
    """1 during the first `length` seconds of every `period`, else 0 (smoothed edges)."""
    phase = np.mod(t, period)
    return np.clip(np.minimum(phase, length - phase) / 0.01, 0.0, 1.0)


def synth_event(timbre: str, f0: float, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit-peak waveform of one sounding object over local time t (seconds from onset)."""
    noise = rng.standard_normal(t.shape, dtype=np.float32)
    if timbre == "bark":
        return _pulses(t, 0.55, 0.18) * (0.6 * _harmonics(f0, t, (1, 0.6, 0.4)) + 0.4 * noise)
    if timbre == "bell":
        decay = np.exp(-np.mod(t, 1.5) / 0.5)
        return decay * sum(w * np.sin(2 * np.pi * f0 * r * t) for r, w in ((1, 1), (2.0, 0.6), (2.76, 0.4), (5.4, 0.25)))
    if timbre == "keys":
        steps = np.array([0, 2, 4, 5, 7, 9, 11, 12])[rng.integers(8, size=int(t[-1] / 0.4) + 2)]
        f = f0 * 2.0 ** (steps[(t / 0.4).astype(int)] / 12)
        return np.exp(-np.mod(t, 0.4) / 0.25) * _harmonics(1.0, np.cumsum(f) * (t[1] - t[0]), (1, 0.5, 0.25))
    if timbre == "siren":
        f = f0 * (1 + 0.3 * np.sin(2 * np.pi * 0.5 * t))
        return np.sin(2 * np.pi * np.cumsum(f) * (t[1] - t[0]))
    if timbre == "chirp":
        local = np.mod(t, 0.25)
        f = f0 * (1 + 4 * local)
        return _pulses(t, 0.25, 0.09) * np.sin(2 * np.pi * np.cumsum(f) * (t[1] - t[0]))
    if timbre == "engine":
        saw = 2 * np.mod(f0 * t, 1.0) - 1
        return (0.6 + 0.4 * np.sin(2 * np.pi * 8 * t)) * (0.8 * saw + 0.2 * noise)
    if timbre == "drum":
        local = np.mod(t, 0.375)
        return np.exp(-local / 0.06) * (0.7 * np.sin(2 * np.pi * f0 * local) + 0.3 * noise)
    if timbre == "rotor":
        return (0.5 + 0.5 * np.sin(2 * np.pi * (f0 / 6) * t)) ** 4 * (0.5 * noise + 0.5 * np.sin(2 * np.pi * f0 * t))
    if timbre == "flute":
        f = f0 * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
        phase = 2 * np.pi * np.cumsum(f) * (t[1] - t[0])
        return np.sin(phase) + 0.15 * np.sin(2 * phase) + 0.05 * noise
    if timbre == "phone":
        return _pulses(t, 0.6, 0.4) * (np.sin(2 * np.pi * f0 * t) + np.sin(2 * np.pi * 1.09 * f0 * t)) / 2
    if timbre == "meow":
        local = np.mod(t, 1.2)
        f = f0 * (1 + 0.4 * np.sin(np.pi * np.clip(local / 0.7, 0, 1)))
        phase = 2 * np.pi * np.cumsum(f) * (t[1] - t[0])
        return _pulses(t, 1.2, 0.7) * (np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.3 * np.sin(3 * phase))
    if timbre == "saw":
        saw = 2 * np.mod(f0 * t * (1 + 0.02 * np.sin(2 * np.pi * 3 * t)), 1.0) - 1
        return 0.7 * saw + 0.3 * noise
    raise ValueError(f"unknown timbre {timbre!r}")


def band_noise(n: int, sample_rate: int, band: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise through a 2nd-order Butterworth band-pass."""
    sos = butter(2, band, btype="bandpass", fs=sample_rate, output="sos")
    out = sosfilt(sos, rng.standard_normal(n))
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


@lru_cache(maxsize=32)
def ambience_bank(scene: int, sample_rate: int, seconds: float = 30.0) -> np.ndarray:
    """30 s of the scene's ambience, made once per process; clips take random windows of it
    (filtering fresh noise for every clip was an eighth of the generation time)."""
    _, _, _, band, _ = SCENES[scene]
    rng = np.random.default_rng(1000 + scene)
    return band_noise(int(seconds * sample_rate), sample_rate, (band[0], min(band[1], sample_rate / 2 - 1)), rng)


def render_audio(spec: ClipSpec, sample_rate: int, seconds: float | None = None) -> np.ndarray:
    """(N,) float32 waveform in [-1, 1]: scene ambience plus each event while it is on."""
    seconds = spec.seconds if seconds is None else seconds
    n = int(round(seconds * sample_rate))
    rng = np.random.default_rng(spec.noise_seed)
    bank = ambience_bank(spec.scene, sample_rate)
    offset = int(rng.integers(len(bank) - n)) if len(bank) > n else 0
    audio = _db(SCENES[spec.scene][4]) * np.resize(bank[offset:offset + n], n)
    for event in spec.events:
        start = int(event.onset * sample_rate)
        stop = min(n, int((event.onset + event.duration) * sample_rate))
        if stop <= start:
            continue
        t = np.arange(stop - start, dtype=np.float64) / sample_rate
        c = CLASSES[event.cls]
        wave = synth_event(c.timbre, c.base_hz * COLOURS[event.colour][2], t, rng)
        ramp = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)  # 20 ms fades: no clicks
        audio[start:stop] += _db(SIZES[event.size][2]) * wave / (np.max(np.abs(wave)) + 1e-9) * ramp
    return np.clip(audio, -1.0, 1.0).astype(np.float32)
