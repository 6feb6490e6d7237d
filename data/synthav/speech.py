"""English text-to-speech with libespeak-ng, driven in-process through ctypes.

The shared library and its ``espeak-ng-data`` directory come from the
``espeakng-loader`` wheel (``get_library_path()`` / ``get_data_path()``), so
nothing depends on a system espeak, a subprocess or the network.

Public API::

    SAMPLE_RATE = 16000
    synthesize(text, voice="en-us", rate_wpm=160, pitch=50, sample_rate=SAMPLE_RATE) -> np.ndarray
    available_variants() -> list[str]

Determinism: libespeak-ng keeps hidden C ``static`` state across utterances
(the pitch-flutter phase, the gain control, the glottal cycle counter, ...)
that neither ``espeak_Terminate`` nor ``espeak_Initialize`` resets, so the same
text comes out slightly different (even in length) on every call, and it
seeds its noise generator from the clock. Each call therefore loads a fresh
copy of the library (dlopen), initialises it, seeds the noise generator with a
constant, synthesises, and unloads it again (dlclose). That costs ~3 ms per
call (mostly espeak re-scanning its voice files) and makes the output a pure
function of the arguments: bit-identical on repeated calls, in any order, and
in fresh processes (fork or spawn). A 10-word sentence takes ~7.5 ms in all.
espeak-ng leaks ~2 KB per voice load, i.e. ~10 MB per 5000 calls.

Voice names are espeak file names (case-insensitive): "en-us", "en" (British),
"en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", ... ("en-gb" is a
language code, not a name, and is rejected), each optionally "+<variant>".

The library is not thread-safe, so calls are serialised by a module-level
lock; use processes, not threads, for parallelism. This module assumes it is
the only user of libespeak-ng in the process and raises if it is not.
"""

from __future__ import annotations

import _ctypes  # for dlclose, which the public ctypes API lacks
import ctypes
import os
import threading
from pathlib import Path

import espeakng_loader
import numpy as np
import soxr

__all__ = ["SAMPLE_RATE", "synthesize", "available_variants"]

SAMPLE_RATE = 16000

# Constants from espeak-ng's speak_lib.h (stable public ABI).
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # synthesis runs inside espeak_Synth, no audio thread
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit()
_BUFFER_MS = 1000  # ms of audio per callback: fewer Python round-trips
_POS_CHARACTER = 1
_CHARS_UTF8 = 1  # espeakSSML (0x10) and espeakENDPAUSE (0x1000) are left off
_PARAM_RATE, _PARAM_PITCH = 1, 3
# Fixed seed for the noise of breathy/whispering variants: espeak's own
# generator, plus libc rand() used by the "klatt 6" (speechPlayer) variants
# such as Reed and caleb. Reseeding libc rand() affects the whole process,
# which is harmless for anything that does not rely on it.
_RAND_SEED = 0

# int SynthCallback(short *wav, int numsamples, espeak_EVENT *events)
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

# Per-process state, set up lazily on the first call. A forked child gets a
# clean copy: between calls no library is loaded, only paths and the callback.
_lock = threading.Lock()
_paths: tuple[str, bytes] | None = None  # (library path, data path)
_libc: ctypes.CDLL | None = None
_chunks: list[bytes] = []
_callback = None  # the CFUNCTYPE object must outlive every Synth call


def _reset_lock_after_fork() -> None:
    # A lock held by another thread at fork() time would stay held forever in
    # the child; give the child a fresh one.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_after_fork)


def _on_audio(wav, numsamples, _events):
    # Called by espeak with int16 chunks; wav is NULL at the end of a message.
    if wav and numsamples > 0:
        _chunks.append(ctypes.string_at(wav, numsamples * 2))
    return 0  # 0 = continue synthesis


def _check(name: str, rc: int, detail: str = "") -> None:
    # espeak_ERROR: 0 = EE_OK, -1 = internal error, 1 = buffer full, 2 = not found.
    if rc != 0:
        raise RuntimeError(f"{name} failed with return code {rc}{detail}")


def _load() -> ctypes.CDLL:
    """dlopen a pristine libespeak-ng, initialised and seeded (call with _lock held)."""
    global _paths, _callback, _libc
    if _paths is None:
        _paths = (espeakng_loader.get_library_path(), espeakng_loader.get_data_path().encode())
        _callback = _SYNTH_CALLBACK(_on_audio)
        _libc = ctypes.CDLL(None)  # the process's global symbols, incl. srand
    lib = ctypes.CDLL(_paths[0])
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
        ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, _paths[1], _INITIALIZE_DONT_EXIT)
    if rate <= 0:  # returns the native sample rate, or -1 (EE_INTERNAL_ERROR)
        _unload(lib)
        raise RuntimeError(f"espeak_Initialize failed with return code {rate} (data path {_paths[1].decode()})")
    lib.espeak_SetSynthCallback(_callback)
    lib.espeak_ng_SetRandSeed(_RAND_SEED)  # Initialize seeded it with time(NULL)
    _libc.srand(_RAND_SEED)
    return lib


def _unload(lib: ctypes.CDLL) -> None:
    """Free espeak's memory and dlclose, so the next _load starts from scratch."""
    lib.espeak_Terminate()
    _ctypes.dlclose(lib._handle)
    # If anyone else holds the library open, its statics survive dlclose and
    # determinism silently breaks; RTLD_NOLOAD only succeeds if still mapped.
    try:
        still = ctypes.CDLL(_paths[0], mode=os.RTLD_NOLOAD)
    except OSError:
        return
    _ctypes.dlclose(still._handle)
    raise RuntimeError("libespeak-ng is loaded elsewhere in this process; speech.synthesize needs sole use")


def _synth_int16(text: str, voice: str, rate_wpm: int, pitch: int) -> tuple[np.ndarray, int]:
    """Run espeak on text; returns (int16 samples, native sample rate)."""
    with _lock:
        lib = _load()
        _chunks.clear()
        try:
            _check("espeak_SetVoiceByName", lib.espeak_SetVoiceByName(voice.encode()), f" for voice {voice!r}")
            _check("espeak_SetParameter", lib.espeak_SetParameter(_PARAM_RATE, rate_wpm, 0), f" (rate {rate_wpm})")
            _check("espeak_SetParameter", lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0), f" (pitch {pitch})")
            data = text.encode("utf-8") + b"\0"
            rc = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            _check("espeak_Synth", rc, f" for text {text[:40]!r}")
            _check("espeak_Synchronize", lib.espeak_Synchronize())
            native_rate = lib.espeak_ng_GetSampleRate()
            return np.frombuffer(b"".join(_chunks), dtype=np.int16), native_rate
        finally:
            _chunks.clear()
            _unload(lib)


def synthesize(
    text: str,
    voice: str = "en-us",
    rate_wpm: int = 160,
    pitch: int = 50,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Speak ``text`` and return a float32 mono waveform in [-1, 1] at ``sample_rate``.

    ``voice`` is an espeak voice name, optionally with a variant such as
    ``"en-us+f3"`` (see :func:`available_variants`). ``rate_wpm`` is espeak's
    speed in words per minute (80..450) and ``pitch`` its base pitch (0..100).
    Audio is synthesised at espeak's native rate (22050 Hz) and resampled with
    soxr (HQ). Nothing is trimmed. Deterministic (see the module docstring).
    Raises ValueError for empty text or out-of-range parameters and
    RuntimeError if espeak reports an error (e.g. an unknown voice) or
    produces no audio.
    """
    if not text or not text.strip():
        raise ValueError("synthesize: text is empty")
    if not 80 <= rate_wpm <= 450:  # espeak would silently clamp
        raise ValueError(f"synthesize: rate_wpm must be in [80, 450], got {rate_wpm}")
    if not 0 <= pitch <= 100:
        raise ValueError(f"synthesize: pitch must be in [0, 100], got {pitch}")
    if sample_rate <= 0:
        raise ValueError(f"synthesize: sample_rate must be positive, got {sample_rate}")
    pcm, native_rate = _synth_int16(text, voice, int(rate_wpm), int(pitch))
    if pcm.size == 0:
        raise RuntimeError(f"espeak_Synth produced no audio for text {text[:40]!r} with voice {voice!r}")
    wav = pcm.astype(np.float32) / np.float32(32768.0)
    if sample_rate != native_rate:
        wav = soxr.resample(wav, native_rate, sample_rate, quality="HQ")
    # Resampling can overshoot full-scale peaks slightly.
    return np.clip(wav, -1.0, 1.0).astype(np.float32, copy=False)


def available_variants() -> list[str]:
    """Names of the voice variants shipped in espeak-ng-data (``voices/!v``).

    Each can be used as ``synthesize(text, voice="en-us+<name>")``, e.g. m1..m8
    and f1..f5. Sorted, so the order is stable across machines.
    """
    variant_dir = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    return sorted(p.name for p in variant_dir.iterdir() if p.is_file())
