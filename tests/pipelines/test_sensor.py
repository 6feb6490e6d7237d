"""The dataset sensor: a grown dataset gets runs for its new shards only; a cache code change
gets runs for the shards built before it."""

import json

import dagster as dg
import pyarrow.parquet as pq
import pytest

from assets.core.atomic_io import read_parquet_metadata
from data.synthav.generate import SynthAVConfig, generate
from pipelines.definitions import build_definitions
from pipelines.resources import CachePaths
from pipelines.sensors import CACHE_CODE_VERSIONS, plan_tick
from tests.conftest import write_configs


def test_plan_tick_hand_cases():
    first = plan_tick({}, "fp1", "m1", {"s00000": "a", "s00001": "b"}, built={"s00000": "a"})
    assert first.run_manifest and first.shards_to_run == ["s00001"]  # s00000 is already built as "a"
    same = plan_tick(first.cursor, "fp1", "m1", None, built={})
    assert not same.run_manifest and same.shards_to_run == [] and same.cursor == first.cursor
    changed = plan_tick(first.cursor, "fp2", "m2", {"s00000": "a", "s00001": "c", "s00002": "d"}, built={})
    assert changed.run_manifest and changed.shards_to_run == ["s00001", "s00002"]
    assert changed.cursor["shards"] == {"s00000": "a", "s00001": "c", "s00002": "d"}


def _tick(defs, instance, cache, cursor):
    sensor = defs.resolve_sensor_def("synthav_vggsound_files_sensor")
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"cache": cache},
                                      definitions=defs)
    result = sensor(context)
    return result, result.cursor


def _run(defs, instance, job, partition=None):
    assert defs.resolve_job_def(job).execute_in_process(instance=instance, partition_key=partition).success


@pytest.mark.parametrize("growth", [1.1])
def test_sensor_requests_only_new_shards_after_growth(tmp_path, monkeypatch, growth):
    data = tmp_path / "data"
    base_scale = 0.04  # 100 train + 40 test VGGSound clips
    generate(SynthAVConfig(out=data, scale=base_scale, workers=2), ("vggsound",))
    configs = write_configs(tmp_path / "configs", data, shard_size=16, only=("vggsound",))
    monkeypatch.setenv("CLIPKT_DATASETS_DIR", str(configs))
    cache = CachePaths(cache_root=str(tmp_path / "cache"))
    monkeypatch.setenv("CLIPKT_CACHE_ROOT", cache.cache_root)
    defs = build_definitions()
    with dg.instance_for_test() as instance:
        # First tick: files never seen -> a manifest run; no manifest yet -> no shard runs.
        result, cursor = _tick(defs, instance, cache, None)
        assert [r.job_name for r in result.run_requests] == ["synthav_vggsound_manifest_job"]
        _run(defs, instance, "synthav_vggsound_manifest_job")
        old = instance.get_dynamic_partitions("synthav_vggsound_shards")
        # Next tick: all shards are new to the sensor -> one run each.
        result, cursor = _tick(defs, instance, cache, cursor)
        assert sorted(r.partition_key for r in result.run_requests) == old
        for key in old:
            _run(defs, instance, "synthav_vggsound_shard_job", key)
        result, cursor = _tick(defs, instance, cache, cursor)
        assert result.run_requests == []

        # A code change bumps the FBANK cache's version: the shards built before it are rebuilt.
        path = cache.layout().stage_path("synthav_vggsound", "fbank_cache", old[0])
        table = pq.read_table(path)
        # as an older version wrote it: its own version, hence other parameters and fingerprint
        meta = dict(table.schema.metadata) | {b"clipkt.code_version": b"2", b"clipkt.params": b"older",
                                               b"clipkt.fingerprint": b"older"}
        pq.write_table(table.replace_schema_metadata(meta), path)
        stale = json.loads(cursor) | {"code_versions": {"fbank_cache": "2"}}
        result, cursor = _tick(defs, instance, cache, json.dumps(stale))
        assert [(r.partition_key, ":code:" in r.run_key) for r in result.run_requests] == [(old[0], True)]
        _run(defs, instance, "synthav_vggsound_shard_job", old[0])
        assert read_parquet_metadata(path)["clipkt.code_version"] == CACHE_CODE_VERSIONS["fbank_cache"]
        result, cursor = _tick(defs, instance, cache, cursor)
        assert result.run_requests == []  # checked once per code change, and rebuilt

        # The dataset grows by 10%: existing files are left untouched, new clips and rows appear.
        generate(SynthAVConfig(out=data, scale=base_scale * growth, workers=2), ("vggsound",))
        result, cursor = _tick(defs, instance, cache, cursor)
        assert [r.job_name for r in result.run_requests] == ["synthav_vggsound_manifest_job"]
        _run(defs, instance, "synthav_vggsound_manifest_job")
        result, cursor = _tick(defs, instance, cache, cursor)
        requested = sorted(r.partition_key for r in result.run_requests)
        now = instance.get_dynamic_partitions("synthav_vggsound_shards")
        assert requested == sorted(set(now) - set(old)) and requested  # the new shards, and only them
        assert all(r.job_name == "synthav_vggsound_shard_job" for r in result.run_requests)
        assert json.loads(cursor)["shards"].keys() == set(now)
