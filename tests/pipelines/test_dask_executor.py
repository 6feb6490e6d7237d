"""The shard stages on Dask (pipelines.executors): the cache and CLIP-embedding stages of a tiny
SynthAV shard write the same bytes through `CLIPKT_EXECUTOR=dask` (a LocalCluster of 2 worker
processes, the executor's default) as through the default executor; the executor choice and the
GPU tags."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster_dask.executor import DASK_RESOURCE_REQUIREMENTS_KEY as DAGSTER_DASK_KEY, get_dask_resource_requirements

from assets.core.cache_layout import CacheLayout
from assets.core.project_dirs import REPO_ROOT
from models.teacher_weights import save_weights
from models.tiny_clip import TINY_CLIP_CONFIG, create_tiny_clip
from pipelines.definitions import build_definitions
from pipelines.executors import (DASK_RESOURCE_REQUIREMENTS_KEY, GPU_OP_TAGS, GPU_TAG, ClipktDaskExecutor,
                                 default_dask_cluster, executor_from_env, gpu_op_tags)
from tests.conftest import write_configs

DAGSTER = Path(sys.executable).parent / "dagster"
PLACES, SHARD = "synthav_places", "s00000"  # Places format: every cache stage (frames, FBANK, log-mel, waveforms)
JOBS = (f"{PLACES}_shard_job", f"{PLACES}_embedding_job")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write_teacher(cache: CacheLayout) -> None:
    """An untrained tiny CLIP teacher (seed 0): the embedding stages' input, not under test, so it is
    written directly instead of fitted (the fit reads every shard's frames)."""
    weights, config = cache.tiny_teacher_paths()
    save_weights(create_tiny_clip(0), weights)
    config.write_text(json.dumps(TINY_CLIP_CONFIG, indent=1))


def test_cache_and_embedding_stages_on_dask_write_the_default_executors_bytes(synthav_root, tmp_path, monkeypatch):
    configs = write_configs(tmp_path / "configs", synthav_root, only=("places",))
    # Both runs write to the same cache root path, one after the other: the embedding files record the
    # teacher's weights path (under the cache root) in their footer, so two roots would differ there.
    cache, home = CacheLayout(tmp_path / "cache"), tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # a persistent SQLite instance: Dask needs one
    for var in ("CLIPKT_EXECUTOR", "CLIPKT_DASK_ADDRESS", "CLIPKT_DASK_WORKERS", "CLIPKT_DASK_GPU_RESOURCES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLIPKT_DATASETS_DIR", str(configs))
    monkeypatch.setenv("CLIPKT_TEACHER", "tiny")
    monkeypatch.setenv("CLIPKT_CACHE_ROOT", str(cache.root))

    # A: the default executor (in process here; the CLI's multiprocess executor runs the same step code)
    defs = build_definitions()
    _write_teacher(cache)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert defs.resolve_job_def(f"{PLACES}_manifest_job").execute_in_process(instance=instance).success
        assert SHARD in instance.get_dynamic_partitions(f"{PLACES}_shards")
        for job in JOBS:
            assert defs.resolve_job_def(job).execute_in_process(instance=instance, partition_key=SHARD).success
        in_process = {r.run_id for r in instance.get_runs()}
    a = tmp_path / "a"
    cache.root.rename(a)
    # B starts from A's inputs: the manifest (clip_shards reads it) and the teacher
    for src in (cache.manifest_path(PLACES), *cache.tiny_teacher_paths()):
        src.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(a / src.relative_to(cache.root), src)
    inputs = _files(cache.root)

    # B: the same jobs through `dagster job execute` on Dask; the executor's default cluster: LocalCluster, 2 workers
    env = {**os.environ, "DAGSTER_HOME": str(home), "CLIPKT_EXECUTOR": "dask"}
    for job in JOBS:
        proc = subprocess.run([str(DAGSTER), "job", "execute", "-m", "pipelines.definitions", "-j", job,
                               "--tags", json.dumps({"dagster/partition": SHARD})],
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        dask_runs = [r for r in instance.get_runs() if r.run_id not in in_process]
        assert sorted(r.job_name for r in dask_runs) == sorted(JOBS)
        for run in dask_runs:
            assert run.status == dg.DagsterRunStatus.SUCCESS
            engine = [e.message for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)]
            assert any(m.startswith("Executing steps on Dask: local cluster") and "2 worker(s)" in m for m in engine), engine
            steps = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
            assert len(steps) == (5 if run.job_name == JOBS[0] else 2)  # clip_shards + 4 caches; image + text
            # the steps ran in the Dask workers, not in the process that orchestrated the run
            start = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)[0]
            assert start.dagster_event.pid not in {e.dagster_event.pid for e in steps}

    got, want = _files(cache.root), _files(a)
    stages = {"shards", "frame_cache", "fbank_cache", "logmel_cache", "waveform_cache", "clip_image_embeddings",
              "clip_text_embeddings"}
    assert {Path(p).parts[1] for p in got if p not in inputs} == stages  # every stage wrote its files on Dask
    assert sorted(got) == sorted(want)
    # byte for byte, Parquet footers and the FBANK / log-mel / waveform arrays included: no file differs
    assert [p for p in want if got[p] != want[p]] == []


# ----------------------------------------------------------------------------- executor choice and GPU tags


def test_the_default_executor_stays_unless_dask_is_chosen():
    assert executor_from_env({}) is None and executor_from_env({"CLIPKT_EXECUTOR": "multiprocess"}) is None
    dask = executor_from_env({"CLIPKT_EXECUTOR": "dask"})
    assert dask.name == "dask"
    cluster = dask.config_schema.as_field().config_type.fields["cluster"]
    assert cluster.default_value == {"local": {"n_workers": 2, "threads_per_worker": 1, "processes": True}}
    assert default_dask_cluster({"CLIPKT_DASK_ADDRESS": "tcp://head:8786"}) == {"existing": {"address": "tcp://head:8786"}}
    assert default_dask_cluster({"CLIPKT_DASK_WORKERS": "6"})["local"]["n_workers"] == 6
    with pytest.raises(ValueError, match="CLIPKT_EXECUTOR='ray'"):
        executor_from_env({"CLIPKT_EXECUTOR": "ray"})
    # dagster-dask's cluster kwargs: jobqueue clusters are named after the job; local workers single-threaded
    assert ClipktDaskExecutor("slurm", {"cores": 8}).cluster_kwargs("j") == {"name": "j", "cores": 8}
    assert ClipktDaskExecutor("local", {"n_workers": 2}).cluster_kwargs("j") == {"n_workers": 2, "threads_per_worker": 1}


def test_gpu_tags_ask_dask_for_a_gpu_only_when_the_workers_declare_one():
    assert DASK_RESOURCE_REQUIREMENTS_KEY == DAGSTER_DASK_KEY
    assert gpu_op_tags(env={}) == {GPU_TAG: "1"}  # a CPU cluster: a resource no worker has would never be scheduled
    tags = gpu_op_tags(2, env={"CLIPKT_DASK_GPU_RESOURCES": "1"})
    assert tags[GPU_TAG] == "2" and get_dask_resource_requirements(tags) == {"GPU": 2}
    assert get_dask_resource_requirements(gpu_op_tags(env={})) == {}


def test_gpu_stages_carry_the_gpu_tags_and_cpu_stages_do_not(tiny_configs, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPKT_DATASETS_DIR", str(tiny_configs))
    monkeypatch.setenv("CLIPKT_CACHE_ROOT", str(tmp_path / "cache"))
    graph = build_definitions().resolve_asset_graph()
    gpu = {k.to_user_string() for k in graph.get_all_asset_keys()
           if graph.get(k).assets_def.op.tags.get(GPU_TAG) == GPU_OP_TAGS[GPU_TAG]}
    assert {f"{PLACES}/clip_image_embeddings", f"{PLACES}/clip_text_embeddings", f"{PLACES}/neighbor_tables"} <= gpu
    assert not {f"{PLACES}/{s}" for s in ("clip_shards", "frame_cache", "fbank_cache", "logmel_cache")} & gpu


# ----------------------------------------------------------------------------- a failed step on Dask


@dg.op
def _fails():
    raise RuntimeError("upstream broke")


@dg.op
def _after(x):
    return x


@dg.op
def _independent():
    return 1


@dg.job(executor_def=executor_from_env({"CLIPKT_EXECUTOR": "dask"}))
def _failing_job():
    _after(_fails())
    _independent()


def test_a_step_whose_upstream_failed_is_not_run_on_dask(tmp_path):
    """dagster-dask would submit `_after` anyway (its task only waits for `_fails`'s); ours never runs it."""
    config = {"execution": {"config": {"cluster": {"local": {"n_workers": 1, "processes": False,
                                                             "dashboard_address": None}}}}}
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.execute_job(dg.reconstructable(_failing_job), instance=instance, run_config=config)
        assert not result.success
        started = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START}
        assert started == {"_fails", "_independent"}
        assert result.is_node_success("_independent") and result.is_node_failed("_fails")
        engine = [e.message for e in result.all_events if e.event_type == dg.DagsterEventType.ENGINE_EVENT]
        assert "_after not run: upstream step(s) ['_fails'] did not succeed" in engine
