"""Frame and audio caches on SynthAV: error records per bad input, frame timestamps, stats, incremental runs."""

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from assets.caches.audio_cache_rows import read_features
from assets.caches.fbank_stats import Normaliser, fbank_moments, stats_from_moments
from assets.caches.video_frames import decode_jpeg, resize_center_crop
from assets.core.cache_layout import CacheLayout


@pytest.fixture(scope="module")
def built(built_caches):
    return built_caches


def _rows(cache: CacheLayout, dataset: str, stage: str) -> dict[str, dict]:
    files = sorted((cache.dataset_dir(dataset) / stage).glob("*.parquet"))
    cols = ["clip_id", "status", "error_kind", "error", "warnings"] if stage != "frame_cache" else \
        ["clip_id", "status", "error_kind", "error", "still", "timestamps"]
    return {r["clip_id"]: r for f in files for r in pq.read_table(f, columns=cols).to_pylist()}


def _manifest(cache, dataset):
    return {r["clip_id"]: r for r in pq.read_table(cache.manifest_path(dataset)).to_pylist()}


def _clip_of(cache, dataset, reason_part):
    return next(c for c, r in _manifest(cache, dataset).items() if reason_part in (r["reason"] or ""))


def test_each_bad_vggsound_clip_gets_its_error_record(built, synthav_root):
    _, _, cache = built
    from tests.data.test_synthav import _vgg_rows
    ids = {r["defect"]: f"{r['ytid']}_{r['start']:06d}" for r in _vgg_rows(synthav_root) if r["defect"]}
    fbank, frames = _rows(cache, "synthav_vggsound", "fbank_cache"), _rows(cache, "synthav_vggsound", "frame_cache")
    manifest = _manifest(cache, "synthav_vggsound")
    for defect, status in {"corrupt": "unreadable", "missing": "missing"}.items():
        # the manifest records them; shards are cut from clips whose files are there, so no cache row
        assert manifest[ids[defect]]["status"] == status and manifest[ids[defect]]["shard"] is None
        assert ids[defect] not in fbank and ids[defect] not in frames
    expected_fbank = {"truncated": "corrupt", "silent": "silent", "short": "too_short"}
    for defect, kind in expected_fbank.items():
        row = fbank[ids[defect]]
        assert (row["status"], row["error_kind"]) == ("error", kind), (defect, row)
        assert f"{ids[defect]}.mp4" in row["error"], row["error"]  # every error names the file
    assert frames[ids["truncated"]]["error_kind"] == "corrupt"
    assert frames[ids["silent"]]["status"] == "ok"  # nothing wrong with its pictures
    stereo = fbank[ids["stereo44k"]]
    assert stereo["status"] == "ok" and stereo["warnings"] == "resampled 44100->16000 Hz; first of 2 channels"
    ok = [r for c, r in fbank.items() if c not in ids.values()]
    assert ok and all(r["status"] == "ok" for r in ok)


def test_places_and_audiocaps_bad_items(built):
    _, _, cache = built
    places = _rows(cache, "synthav_places", "fbank_cache")
    kinds = sorted(r["error_kind"] for r in places.values() if r["status"] == "error")
    assert kinds == ["silent"]  # missing, path_escape and unreadable items stay in the manifest, unsharded
    unsharded = sorted(r["status"] for r in _manifest(cache, "synthav_places").values() if r["shard"] is None)
    assert unsharded == ["malformed", "missing", "path_escape", "unreadable"]
    frames = _rows(cache, "synthav_places", "frame_cache")
    assert all(len(r["timestamps"]) == 1 for r in frames.values() if r["status"] == "ok")
    caps = _rows(cache, "synthav_audiocaps", "fbank_cache")
    assert sorted(r["error_kind"] for r in caps.values() if r["status"] == "error") == ["too_short"]  # missing: unsharded
    logmel = next((cache.dataset_dir("synthav_places") / "logmel_cache").glob("*.parquet"))
    feats, lengths = read_features(logmel)
    assert feats.shape[1:] == (40, 2048) and (lengths > 50).all()


def test_cached_frames_match_an_independent_pyav_decode(built, synthav_root):
    _, _, cache = built
    table = pq.read_table(next((cache.dataset_dir("synthav_vggsound") / "frame_cache").glob("*.parquet")))
    row = next(r for r in table.to_pylist() if r["status"] == "ok")
    path = synthav_root / "vggsound" / _manifest(cache, "synthav_vggsound")[row["clip_id"]]["media_path"]
    with av.open(str(path)) as c:
        decoded = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    t0 = decoded[0][0]
    assert len(row["frames"]) == 4 and row["timestamps"][0] == 0.0 and row["timestamps"][-1] > 9.0
    for jpeg, ts in zip(row["frames"], row["timestamps"]):
        frame = min(decoded, key=lambda d: abs((d[0] - t0) - ts))[1]
        diff = np.abs(decode_jpeg(jpeg).astype(float) - resize_center_crop(frame, 224).astype(float)).mean()
        assert diff < 3.0, (ts, diff)


def test_fbank_stats_equal_a_direct_numpy_computation(built):
    _, _, cache = built
    paths = sorted((cache.dataset_dir("synthav_vggsound") / "fbank_cache").glob("*.parquet"))
    frames = []
    for p in paths:
        t = pq.read_table(p)
        feats, lengths = read_features(p)
        splits = [s for s, st in zip(t.column("split").to_pylist(), t.column("status").to_pylist()) if st == "ok"]
        frames += [f[:n] for f, n, s in zip(feats, lengths, splits) if s == "train"]
    direct = np.concatenate(frames).astype(np.float64)
    moments, clips = fbank_moments(paths, ("train",))
    stats = stats_from_moments(moments, clips, per_bin=True)
    assert clips == len(frames)
    assert stats["frames"] == direct.shape[0]
    assert stats["mean"] == pytest.approx(direct.mean(), abs=1e-9)
    assert stats["std"] == pytest.approx(direct.std(), rel=1e-9)
    np.testing.assert_allclose(stats["bin_std"], direct.std(axis=0), rtol=1e-9, atol=1e-12)
    assert stats["constant_bins"] == [3]  # the empty mel filter at 128 bins
    stored = __import__("json").loads((cache.dataset_dir("synthav_vggsound") / "fbank_stats.json").read_text())
    assert stored["mean"] == pytest.approx(stats["mean"]) and stored["clips"] == clips
    z = (direct - stats["mean"]) / stats["std"]
    assert abs(z.mean()) < 1e-9 and z.std() == pytest.approx(1.0)
    normalised = Normaliser(stats | {"per_bin": False})(torch.from_numpy(direct.astype(np.float32))).numpy()
    np.testing.assert_allclose(normalised, z, rtol=1e-5, atol=1e-5)


def test_unchanged_shard_is_skipped_and_a_parameter_change_recomputes(built):
    defs, instance, cache = built
    key = instance.get_dynamic_partitions("synthav_audiocaps_shards")[0]
    job = defs.resolve_job_def("synthav_audiocaps_shard_job")
    result = job.execute_in_process(instance=instance, partition_key=key)
    meta = result.asset_materializations_for_node("synthav_audiocaps__fbank_cache")[0].metadata
    assert meta["skipped_up_to_date"].value is True and meta["computed"].value == 0
    config = {"ops": {"synthav_audiocaps__fbank_cache": {"config": {"num_mel_bins": 64}}}}
    result = job.execute_in_process(instance=instance, partition_key=key, run_config=config)
    meta = result.asset_materializations_for_node("synthav_audiocaps__fbank_cache")[0].metadata
    table = pq.read_table(cache.dataset_dir("synthav_audiocaps") / "fbank_cache" / f"{key}.parquet")
    decodable = table.column("input_status").to_pylist().count("ok")
    assert meta["skipped_up_to_date"].value is False and meta["computed"].value == decodable
    assert read_features(cache.dataset_dir("synthav_audiocaps") / "fbank_cache" / f"{key}.parquet")[0].shape[1:] == (1000, 64)
    # back to the defaults, so later tests sharing this cache see one feature shape again
    assert job.execute_in_process(instance=instance, partition_key=key).success
