"""SynthAV: deterministic bytes, prefix-stable growth, the promised bad entries and data properties."""

import hashlib
import wave
from pathlib import Path

import av
import decord
import numpy as np
import pyarrow as pa

from assets.core.project_dirs import REPO_ROOT
from assets.ingest.dataset_config import load_dataset_configs
from assets.ingest.manifest import build_manifest
from data.synthav.generate import DEFECTS, SynthAVConfig, generate
from data.synthav.world import CLASSES, SCENES, clip_rng, sample_class


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _manifest_hash(configs: Path) -> str:
    """Hash of every manifest, without file mtimes and the root directory (they differ between two copies)."""
    h = hashlib.sha256()
    for ds in load_dataset_configs(configs):
        table = build_manifest(ds).drop_columns(["media_mtime_ns", "image_mtime_ns"])
        reasons = pa.array([r.replace(str(ds.root), "<root>") for r in table.column("reason").to_pylist()])
        table = table.set_column(table.schema.get_field_index("reason"), "reason", reasons)
        h.update(ds.name.encode())
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, synthav_root, tiny_configs):
    from tests.conftest import TINY_SCALE, write_configs
    again = tmp_path / "again"
    generate(SynthAVConfig(out=again, scale=TINY_SCALE, workers=1))  # other worker count too
    first, second = _tree_hashes(synthav_root), _tree_hashes(again)
    assert first == second and len(first) > 150
    assert _manifest_hash(tiny_configs) == _manifest_hash(write_configs(tmp_path / "cfg", again))
    other = tmp_path / "other"
    generate(SynthAVConfig(out=other, scale=TINY_SCALE, seed=1), ("vggsound",))
    assert _tree_hashes(other)["vggsound/vggsound.csv"] != first["vggsound/vggsound.csv"]


def test_growth_keeps_existing_items(tmp_path):
    small, big = tmp_path / "small", tmp_path / "big"
    generate(SynthAVConfig(out=small, scale=0.01, workers=1), ("audiocaps",))
    generate(SynthAVConfig(out=big, scale=0.02, workers=1), ("audiocaps",))
    a, b = _tree_hashes(small), _tree_hashes(big)
    wavs = [k for k in a if k.endswith(".wav")]
    assert wavs and all(b[k] == a[k] for k in wavs)
    assert len([k for k in b if k.endswith(".wav")]) > len(wavs)
    old_lines = (small / "audiocaps" / "test.csv").read_text().splitlines()
    assert set(old_lines) <= set((big / "audiocaps" / "test.csv").read_text().splitlines())


def _decode_audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        chunks = [f.to_ndarray() for f in c.decode(stream)]
        return np.concatenate(chunks, axis=1), stream.rate


def test_bad_entries_are_there_and_bad_in_the_promised_way(synthav_root):
    rows = {r["defect"]: r for r in _vgg_rows(synthav_root)}
    assert set(DEFECTS["vggsound"]) <= set(rows)
    video = synthav_root / "vggsound" / "video"
    path = lambda d: video / f"{rows[d]['ytid']}_{rows[d]['start']:06d}.mp4"  # noqa: E731
    assert not path("missing").exists()
    assert path("corrupt").read_bytes()[4:8] != b"ftyp"
    stereo, rate = _decode_audio(path("stereo44k"))
    assert rate == 44100 and stereo.shape[0] == 2 and not np.allclose(stereo[0], stereo[1])
    silent, _ = _decode_audio(path("silent"))
    assert np.abs(silent).max() < 1e-4
    short, rate = _decode_audio(path("short"))
    assert abs(short.shape[1] / rate - 3.0) < 0.15
    normal, rate = _decode_audio(video / f"{rows['']['ytid']}_{rows['']['start']:06d}.mp4")
    assert rate == 16000 and normal.shape[0] == 1 and abs(normal.shape[1] / rate - 10.0) < 0.15
    try:
        decord.VideoReader(str(path("truncated")))
        decodable = True
    except Exception:  # decord raises DECORDError, a RuntimeError subclass
        decodable = False
    assert not decodable


def _vgg_rows(root: Path) -> list[dict]:
    """Re-derive the generator's rows (with their defect tags) from the same seeds."""
    from data.synthav import layouts
    from data.synthav.generate import _tasks
    cfg = SynthAVConfig(out=root, scale=0.01)
    rows = []
    for _, _, rs, split, i, defect in _tasks(cfg, "vggsound"):
        spec, rng = layouts.item_clip("vggsound", rs, split, i, defect)
        rows.append({"ytid": layouts.youtube_id(rng), "start": int(rng.integers(0, 300)), "defect": defect,
                     "spec": spec})
    return rows


def test_event_is_visible_only_while_it_sounds(synthav_root):
    """Seed 001's premise: with 4 frames ~3.3 s apart, only some frames show the sounding object."""
    row = next(r for r in _vgg_rows(synthav_root) if not r["defect"] and not r["spec"].still)
    event = row["spec"].events[0]
    reader = decord.VideoReader(str(synthav_root / "vggsound" / "video" / f"{row['ytid']}_{row['start']:06d}.mp4"))
    fps = reader.get_avg_fps()
    times = [0.0, 10 / 3, 20 / 3, 10.0 - 1 / fps]
    frames = reader.get_batch([min(len(reader) - 1, int(round(t * fps))) for t in times]).asnumpy()
    for i, t in enumerate(times):
        visible = event.onset <= t < event.onset + event.duration
        # Pixels far from the scene's background colours mark the object.
        top, bottom = (np.array(SCENES[row["spec"].scene][k], np.float32) for k in (1, 2))
        ramp = np.linspace(0, 1, frames.shape[1])[:, None, None]
        expected_bg = (1 - ramp) * top + ramp * bottom
        changed = (np.abs(frames[i].astype(np.float32) - expected_bg).max(axis=2) > 60).mean()
        assert (changed > 0.01) == visible, (t, event, changed)
    shown = sum(event.onset <= t < event.onset + event.duration for t in times)
    assert 1 <= shown <= 2  # the generator's promise: some frames show the object, never none or all


def test_places_speech_is_real_and_matches_its_caption_length(synthav_root):
    wavs = sorted((synthav_root / "places" / "audio" / "wavs").rglob("*.wav"))
    durations = []
    for p in wavs[:10]:
        with wave.open(str(p)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
            x = np.frombuffer(w.readframes(w.getnframes()), np.int16)
        if np.abs(x).max() == 0:
            continue  # the deliberately silent one
        durations.append(len(x) / 16000)
        assert np.sqrt(np.mean((x / 32768.0) ** 2)) > 0.02
    assert durations and all(1.0 < d < 12.0 for d in durations)


def test_same_class_false_negatives_in_a_batch_of_128():
    """Seed 000: ~40% of a VGGSound batch of 128 meets a same-class sample; SynthAV needs >= 30%."""
    rng = np.random.default_rng(0)
    labels = np.array([sample_class(clip_rng(0, "fn", i)) for i in range(3000)])
    fractions = []
    for _ in range(50):
        batch = labels[rng.choice(len(labels), 128, replace=False)]
        counts = np.bincount(batch, minlength=len(CLASSES))
        fractions.append((counts[batch] > 1).mean())
    assert np.mean(fractions) >= 0.3


def test_generation_finishes_when_the_parent_ignores_sigterm(tmp_path):
    """Dagster maps SIGTERM to SIGINT's handler, and a background job ignores SIGINT, so a test
    process that ran Dagster in process can ignore SIGTERM; its pool workers inherit that. The
    generator must still finish: it closes and joins its pool instead of terminating it (a
    fresh `make test` launched as a background job once hung in Pool.terminate() this way)."""
    import subprocess
    import sys

    code = ("import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); from pathlib import Path; "
            "from data.synthav.generate import SynthAVConfig, generate; "
            f"print(generate(SynthAVConfig(out=Path({str(tmp_path)!r}), scale=0.004, workers=2), ('vggsound',)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'vggsound'" in proc.stdout
