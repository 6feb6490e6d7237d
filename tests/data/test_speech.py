"""Tests for data.synthav.speech (espeak-ng through ctypes). CPU only, a few seconds."""

import multiprocessing

import numpy as np
import pytest

from data.synthav.speech import SAMPLE_RATE, available_variants, synthesize

SIX_WORDS = "The quick brown fox jumps high."
# (text, voice, rate_wpm, pitch) cases used both in-process and in worker pools.
CASES = [
    (SIX_WORDS, "en-us", 160, 50),
    ("A dog runs across the green field.", "en-us+f3", 160, 70),
    ("Two birds sing in the morning.", "en-us+m3", 200, 40),
    ("Whispering quietly in the dark.", "en-us+whisper", 160, 50),
]


@pytest.fixture(scope="module")
def reference():
    return [synthesize(*case) for case in CASES]


def test_repeated_calls_are_bit_identical(reference):
    # Interleave other voices: espeak keeps hidden state between utterances,
    # which the module must not let leak into the next call.
    for case, ref in zip(reversed(CASES), reversed(reference)):
        synthesize("Something else entirely, isn't it?", voice="en-us+klatt")
        again = synthesize(*case)
        assert again.dtype == ref.dtype and again.shape == ref.shape
        assert np.array_equal(again, ref)


def test_output_is_plausible_speech(reference):
    wav = reference[0]
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert 0.5 < wav.size / SAMPLE_RATE < 6.0
    assert np.all(np.isfinite(wav))
    assert np.abs(wav).max() <= 1.0
    assert np.sqrt(np.mean(wav**2)) > 0.02


def test_voices_and_pitches_change_the_waveform():
    base = synthesize(SIX_WORDS)
    others = [
        synthesize(SIX_WORDS, voice="en-us+f3"),
        synthesize(SIX_WORDS, voice="en-gb-x-rp"),
        synthesize(SIX_WORDS, pitch=80),
        synthesize(SIX_WORDS, rate_wpm=220),
    ]
    for other in others:
        assert not np.array_equal(base, other)
    # Pitch alone keeps the timing but must still change the samples.
    n = min(base.size, others[2].size)
    assert np.abs(base[:n] - others[2][:n]).max() > 0.05


def test_longer_text_gives_longer_audio():
    short = synthesize("Hello there.")
    long = synthesize("Hello there, my friend, how are you doing on this fine sunny day?")
    assert long.size > 2 * short.size


def test_sample_rate_argument():
    at_16k = synthesize(SIX_WORDS)
    at_22k = synthesize(SIX_WORDS, sample_rate=22050)
    assert at_22k.size == pytest.approx(at_16k.size * 22050 / 16000, abs=2)


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_text_raises_value_error(text):
    with pytest.raises(ValueError):
        synthesize(text)


def test_bad_parameters_raise_value_error():
    with pytest.raises(ValueError):
        synthesize(SIX_WORDS, rate_wpm=10)
    with pytest.raises(ValueError):
        synthesize(SIX_WORDS, pitch=101)


def test_unknown_voice_raises_runtime_error():
    with pytest.raises(RuntimeError, match="no-such-voice") as info:
        synthesize(SIX_WORDS, voice="no-such-voice")
    assert "espeak_SetVoiceByName" in str(info.value)
    # The failure must not poison later calls.
    assert synthesize(SIX_WORDS).size > 0


def test_available_variants_are_usable():
    variants = available_variants()
    assert {"m1", "m7", "f1", "f5"} <= set(variants)
    assert synthesize("Hi.", voice="en-us+" + variants[0]).size > 0


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_worker_pool_matches_in_process(reference, method):
    ctx = multiprocessing.get_context(method)
    pool = ctx.Pool(2)  # closed and joined, not terminated: see test_synthav's SIGTERM test
    try:
        results = pool.starmap(synthesize, CASES)
        pool.close()
    finally:
        pool.join()
    for got, ref in zip(results, reference):
        assert np.array_equal(got, ref)
