"""The Dagster code location: loads, has the expected graph, materialises on SynthAV."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from assets.core.atomic_io import read_parquet_metadata
from assets.core.cache_layout import CacheLayout
from assets.core.project_dirs import REPO_ROOT
from pipelines.definitions import build_definitions

REPO = REPO_ROOT
DAGSTER = Path(sys.executable).parent / "dagster"


def _env(configs: Path, cache: Path, home: Path) -> dict:
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "CLIPKT_DATASETS_DIR": str(configs), "CLIPKT_CACHE_ROOT": str(cache),
            "DAGSTER_HOME": str(home)}


@pytest.fixture
def defs_for(monkeypatch, tmp_path):
    def build(configs: Path) -> tuple[dg.Definitions, CacheLayout]:
        monkeypatch.setenv("CLIPKT_DATASETS_DIR", str(configs))
        monkeypatch.setenv("CLIPKT_CACHE_ROOT", str(tmp_path / "cache"))
        return build_definitions(), CacheLayout(tmp_path / "cache")
    return build


def test_repo_definitions_graph_snapshot():
    """Catches accidental changes to the asset graph of the shipped dataset configs."""
    from pipelines.definitions import defs
    graph = defs.resolve_asset_graph()
    keys = sorted(k.to_user_string() for k in graph.get_all_asset_keys())
    names = ("synthav_audiocaps", "synthav_audioset", "synthav_places", "synthav_vggsound")
    common = ("clip_manifest", "clip_shards", "fbank_cache", "fbank_stats", "clip_text_embeddings", "neighbor_tables")
    expected = [f"{n}/{a}" for n in names for a in common] + ["teacher/tiny_clip", "synthav_places/logmel_cache"]
    expected += [f"{n}/{a}" for n in names if n != "synthav_audiocaps" for a in ("frame_cache", "clip_image_embeddings")]
    expected += ["experiments/audio_encoder", "experiments/retrieval_metrics", "experiments/ablation_report",
                 "localisation/sound_localisation", "keywords/keyword_report"]
    assert keys == sorted(expected)
    encoder = graph.get(dg.AssetKey(["experiments", "audio_encoder"]))
    assert {"demo_infonce_random", "demo_s000_places_G", "demo_nearest_match", "demo_multiframe"} <= \
        set(encoder.partitions_def.get_partition_keys())
    # the demo experiments train on SynthAV VGGSound: its statistics and tables come first
    assert {dg.AssetKey(["synthav_vggsound", "fbank_stats"]), dg.AssetKey(["synthav_vggsound", "neighbor_tables"])} <= encoder.parent_keys
    assert graph.get(dg.AssetKey(["experiments", "retrieval_metrics"])).parent_keys == {encoder.key}
    assert graph.get(dg.AssetKey(["experiments", "ablation_report"])).parent_keys == {
        dg.AssetKey(["experiments", "retrieval_metrics"])}
    localisation = graph.get(dg.AssetKey(["localisation", "sound_localisation"]))
    assert localisation.parent_keys == {encoder.key} and localisation.partitions_def == encoder.partitions_def
    assert {"denseav_vggsound_k1", "denseav_baseline_infonce"} <= set(encoder.partitions_def.get_partition_keys())
    keywords = graph.get(dg.AssetKey(["keywords", "keyword_report"]))
    assert keywords.parent_keys == {encoder.key} and keywords.partitions_def == encoder.partitions_def
    for n in names:
        node = graph.get(dg.AssetKey([n, "clip_shards"]))
        assert node.parent_keys == {dg.AssetKey([n, "clip_manifest"])}
        assert node.partitions_def == dg.DynamicPartitionsDefinition(name=f"{n}_shards")
        assert graph.get(dg.AssetKey([n, "fbank_cache"])).parent_keys == {dg.AssetKey([n, "clip_shards"])}
        assert graph.get(dg.AssetKey([n, "fbank_stats"])).parent_keys == {dg.AssetKey([n, "fbank_cache"])}
        embeddings = {dg.AssetKey([n, "clip_text_embeddings"])}
        if n != "synthav_audiocaps":
            embeddings.add(dg.AssetKey([n, "clip_image_embeddings"]))
            assert graph.get(dg.AssetKey([n, "clip_image_embeddings"])).parent_keys == {dg.AssetKey([n, "frame_cache"])}
        assert graph.get(dg.AssetKey([n, "neighbor_tables"])).parent_keys == embeddings
    assert graph.get(dg.AssetKey(["teacher", "tiny_clip"])).parent_keys == {
        dg.AssetKey(["synthav_places", "frame_cache"]), dg.AssetKey(["synthav_places", "clip_shards"])}
    assert sorted(s.name for s in defs.sensors) == sorted(f"{n}_files_sensor" for n in names)


def test_definitions_validate_cli(tiny_configs, tmp_path):
    proc = subprocess.run([str(DAGSTER), "definitions", "validate", "-m", "pipelines.definitions"], cwd=REPO,
                          env=_env(tiny_configs, tmp_path / "cache", tmp_path / "home"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Validation successful" in proc.stdout + proc.stderr


def test_manifest_and_shards_materialise_in_process(tiny_configs, defs_for):
    defs, cache = defs_for(tiny_configs)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("synthav_vggsound_manifest_job").execute_in_process(instance=instance)
        assert result.success
        meta = result.asset_materializations_for_node("synthav_vggsound__clip_manifest")[0].metadata
        manifest = pq.read_table(cache.manifest_path("synthav_vggsound"))
        assert meta["clips"].value == manifest.num_rows == 35 + 7  # 25 train + 10 test + 7 bad entries
        assert meta["by_status"].value == {"malformed": 1, "missing": 1, "ok": 39, "unreadable": 1}
        assert meta["coverage_pct"].value == round(100 * 39 / 41, 2)
        shards = instance.get_dynamic_partitions("synthav_vggsound_shards")
        assert shards == ["s00000", "s00001", "s00002", "s00003", "s00004"]  # the 39 ok clips / 8
        job = defs.resolve_job_def("synthav_vggsound_shard_job")
        members = []
        for key in shards:
            run = job.execute_in_process(instance=instance, partition_key=key)
            assert run.success
            table = pq.read_table(cache.shard_path("synthav_vggsound", key))
            assert set(table.column("shard").to_pylist()) == {key}
            assert read_parquet_metadata(cache.shard_path("synthav_vggsound", key))["clipkt.shard"] == key
            members += table.column("clip_id").to_pylist()
        sharded = [c for c, s in zip(manifest.column("clip_id").to_pylist(), manifest.column("shard").to_pylist()) if s]
        assert sorted(members) == sorted(sharded)  # every shardable clip in exactly one shard
        status = instance.get_status_by_partition(dg.AssetKey(["synthav_vggsound", "clip_shards"]), shards,
                                                  dg.DynamicPartitionsDefinition(name="synthav_vggsound_shards"))
        assert set(status.values()) == {dg.AssetPartitionStatus.MATERIALIZED}


def test_job_execute_cli_records_run(tiny_configs, tmp_path):
    """The headless path CI uses: `dagster job execute -m pipelines.definitions -j <job>`."""
    home = tmp_path / "home"
    proc = subprocess.run([str(DAGSTER), "job", "execute", "-m", "pipelines.definitions", "-j",
                           "synthav_audiocaps_manifest_job"], cwd=REPO,
                          env=_env(tiny_configs, tmp_path / "cache", home), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "cache" / "synthav_audiocaps" / "clip_manifest.parquet").exists()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert [r.job_name for r in runs] == ["synthav_audiocaps_manifest_job"]
        assert runs[0].status == dg.DagsterRunStatus.SUCCESS
        assert len(instance.get_dynamic_partitions("synthav_audiocaps_shards")) == 5  # 39 ok of 44 clips / 8
