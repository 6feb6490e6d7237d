"""The shared deployment's instance (deploy/dagster.yaml) on a real PostgreSQL: the pipeline records its runs,
materialisations and shard partitions there; the GPU lane's run-tag limit and pool; run monitoring frees the pool
slot of a dead run.

The server comes from CLIPKT_PG_HOST / _PORT / _USER / _PASSWORD / _DB (default 127.0.0.1:5432, user postgres,
database test). Each test gets a fresh database (or, without CREATE DATABASE rights, a fresh schema of
CLIPKT_PG_DB), dropped afterwards. Where no PostgreSQL answers, the tests are skipped with the reason printed."""

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import psycopg2
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster._daemon.monitoring.concurrency import execute_concurrency_slots_iteration
from dagster._utils.tags import TagConcurrencyLimitsCounter

from assets.core.project_dirs import REPO_ROOT

DEPLOY_YAML = REPO_ROOT / "deploy" / "dagster.yaml"
DAGSTER = Path(sys.executable).parent / "dagster"
GPU_TAG = "clipkt/gpu_training"  # the run tag deploy/dagster.yaml admits one in-progress run of
GPU_POOL = "gpu_training"  # the pool of experiments/audio_encoder (limit 1 through pools.default_limit)
DATASET = "synthav_audiocaps"  # audio only: its shard job is the cheapest
PG_DEFAULTS = {"CLIPKT_PG_HOST": "127.0.0.1", "CLIPKT_PG_PORT": "5432", "CLIPKT_PG_USER": "postgres",
               "CLIPKT_PG_PASSWORD": "", "CLIPKT_PG_DB": "test"}


def _pg_env() -> dict[str, str]:
    return {k: os.environ.get(k, v) for k, v in PG_DEFAULTS.items()}


def _connect(env: dict[str, str], db: str | None = None):
    return psycopg2.connect(host=env["CLIPKT_PG_HOST"], port=int(env["CLIPKT_PG_PORT"]), user=env["CLIPKT_PG_USER"],
                            password=env["CLIPKT_PG_PASSWORD"], dbname=db or env["CLIPKT_PG_DB"], connect_timeout=3)


@pytest.fixture
def pg(tmp_path, monkeypatch):
    """A fresh, empty place for one Dagster instance on the PostgreSQL of CLIPKT_PG_*, and a DAGSTER_HOME holding a
    copy of deploy/dagster.yaml that points at it; CLIPKT_PG_* set to match in this process.
    Yields (those variables, DAGSTER_HOME, a query function)."""
    env = _pg_env()
    where = f"{env['CLIPKT_PG_USER']}@{env['CLIPKT_PG_HOST']}:{env['CLIPKT_PG_PORT']}/{env['CLIPKT_PG_DB']}"
    try:
        admin = _connect(env)
    except psycopg2.OperationalError as exc:
        reason = f"no PostgreSQL at {where} ({str(exc).strip().splitlines()[0]}); set CLIPKT_PG_* to point at one"
        print(f"\nSKIPPED: {reason}")
        pytest.skip(reason)
    admin.autocommit = True
    name = f"clipkt_test_{uuid.uuid4().hex[:12]}"
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = yaml.safe_load(DEPLOY_YAML.read_text())
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        schema = None
        env = {**env, "CLIPKT_PG_DB": name}
        print(f"\nPostgreSQL {where}: fresh database {name}")
    except psycopg2.errors.InsufficientPrivilege:  # no CREATE DATABASE: a fresh schema of CLIPKT_PG_DB instead
        with admin.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {name}")
        schema = name
        config["storage"]["postgres"]["postgres_db"]["params"] = {"options": f"-csearch_path={name}"}
        print(f"\nPostgreSQL {where}: no CREATE DATABASE right, fresh schema {name}")
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    def query(sql: str, args: tuple = ()) -> list[tuple]:
        conn = _connect(env)
        try:
            with conn, conn.cursor() as cur:  # one transaction, committed on leaving
                if schema:
                    cur.execute(f"SET search_path TO {schema}")
                cur.execute(sql, args)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    try:
        yield env, home, query
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP SCHEMA {name} CASCADE" if schema else f"DROP DATABASE {name} WITH (FORCE)")
        admin.close()


def test_deploy_yaml_is_a_valid_instance_config(monkeypatch):
    """Checked without a server: the schema of dagster 1.13, and the settings docs/deploy.md describes."""
    for key, value in PG_DEFAULTS.items():
        monkeypatch.setenv(key, value)
    config, instance_class = dagster_instance_config(str(DEPLOY_YAML.parent))
    assert instance_class is None
    assert set(config["storage"]["postgres"]["postgres_db"]) == {
        "hostname", "port", "username", "password", "db_name", "scheme"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert {"key": GPU_TAG, "limit": 1} in config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert config["concurrency"]["pools"] == {"granularity": "op", "default_limit": 1}
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] and monitoring["free_slots_after_run_end_seconds"] > 0
    assert monitoring["max_runtime_seconds"] > 0 and monitoring["max_resume_run_attempts"] == 0


def test_the_gpu_pool_is_the_only_pool():
    """pools.default_limit (1) applies to every pool without its own limit: today that is gpu_training alone, on
    experiments/audio_encoder. A new pool meant to admit more needs `dagster instance concurrency set`
    (docs/deploy.md)."""
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    pools = {key.to_user_string(): pool for key in graph.get_all_asset_keys() for pool in graph.get(key).pools}
    assert pools == {"experiments/audio_encoder": GPU_POOL}


def test_pipeline_records_runs_and_materialisations_in_postgres(pg, tiny_configs, tmp_path):
    """`dagster job execute` on the shared instance: the manifest, then one shard; all of it lands in Postgres."""
    env, home, query = pg
    run_env = {**os.environ, **env, "DAGSTER_HOME": str(home), "CLIPKT_DATASETS_DIR": str(tiny_configs),
               "CLIPKT_CACHE_ROOT": str(tmp_path / "cache")}
    manifest_job, shard_job = f"{DATASET}_manifest_job", f"{DATASET}_shard_job"
    in_process = tmp_path / "in_process.yaml"  # one process a run (Dagster's default executor's other mode): the
    in_process.write_text("execution: {config: {in_process: {}}}\n")  # step subprocesses would re-import torch

    def execute(*args: str) -> None:
        start = time.monotonic()
        command = [str(DAGSTER), "job", "execute", "-m", "pipelines.definitions", "-c", str(in_process), *args]
        proc = subprocess.run(command, cwd=REPO_ROOT, env=run_env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        print(f"dagster job execute {' '.join(args)}: {time.monotonic() - start:.1f} s")

    execute("-j", manifest_job)
    shards = [p for (p, ) in query("SELECT partition FROM dynamic_partitions WHERE partitions_def_name = %s "
                                   "ORDER BY partition", (f"{DATASET}_shards",))]
    assert len(shards) == 5  # 39 ok clips of 44, 8 a shard
    shard = shards[0]
    execute("-j", shard_job, "--tags", json.dumps({"dagster/partition": shard}))

    # straight from the tables
    runs = query("SELECT pipeline_name, status FROM runs")
    assert sorted(runs) == [(manifest_job, "SUCCESS"), (shard_job, "SUCCESS")]
    materialised = query("SELECT asset_key, partition FROM event_logs "
                         "WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
    keys = {(tuple(json.loads(k)), p) for k, p in materialised}
    assert keys == {((DATASET, "clip_manifest"), None), ((DATASET, "clip_shards"), shard),
                    ((DATASET, "fbank_cache"), shard)}

    # and through the instance the deployment's processes use
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert {(r.job_name, r.status) for r in instance.get_runs()} == {
            (manifest_job, dg.DagsterRunStatus.SUCCESS), (shard_job, dg.DagsterRunStatus.SUCCESS)}
        assert instance.get_dynamic_partitions(f"{DATASET}_shards") == shards
        manifest = instance.fetch_materializations(dg.AssetKey([DATASET, "clip_manifest"]), limit=5).records
        assert len(manifest) == 1 and manifest[0].asset_materialization.metadata["clips"].value > 0
        status = instance.get_status_by_partition(dg.AssetKey([DATASET, "clip_shards"]), [shard],
                                                  dg.DynamicPartitionsDefinition(name=f"{DATASET}_shards"))
        assert status == {shard: dg.AssetPartitionStatus.MATERIALIZED}
    print(f"in Postgres: {len(runs)} runs SUCCESS, {len(materialised)} materialisations, "
          f"{len(shards)} shard partitions")


def test_gpu_lane_and_run_monitoring_free_a_dead_runs_slot(pg):
    """One run tagged clipkt/gpu_training in progress blocks the next in the queue; a run that died holding the
    gpu_training pool's only slot has it freed by run monitoring's concurrency pass (dagster-daemon's)."""
    _, home, query = pg
    step = "experiments__audio_encoder"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert storage.supports_global_concurrency_limits

        def run(status: dg.DagsterRunStatus = dg.DagsterRunStatus.NOT_STARTED) -> dg.DagsterRun:
            return dg.DagsterRun(job_name="experiment_job", run_id=str(uuid.uuid4()), status=status,
                                 tags={GPU_TAG: "true"})

        # the run queue's tag limit: one in progress, the next waits; an untagged run is not held back
        dead, waiting = instance.add_run(run(dg.DagsterRunStatus.STARTED)), run()
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        counter = TagConcurrencyLimitsCounter(limits, [dead])
        assert counter.is_blocked(waiting)
        assert not counter.is_blocked(dg.DagsterRun(job_name="synthav_vggsound_shard_job", run_id=str(uuid.uuid4())))

        # the pool: limit 1 from pools.default_limit, kept in Postgres; the dead run holds the slot
        storage.initialize_concurrency_limit_to_default(GPU_POOL)
        assert query('SELECT concurrency_key, "limit" FROM concurrency_limits') == [(GPU_POOL, 1)]
        assert storage.claim_concurrency_slot(GPU_POOL, dead.run_id, step).is_claimed
        assert not storage.claim_concurrency_slot(GPU_POOL, waiting.run_id, step).is_claimed
        storage.free_concurrency_slots_for_run(waiting.run_id)  # withdraw its pending claim

        # the worker died; the run is marked failed (the UI's force-terminate, or max_runtime_seconds), its slot stays
        instance.report_run_failed(dead, "worker killed")
        assert query("SELECT run_id FROM concurrency_slots WHERE run_id IS NOT NULL") == [(dead.run_id, )]
        grace = instance.run_monitoring_settings["free_slots_after_run_end_seconds"]
        list(execute_concurrency_slots_iteration(SimpleNamespace(instance=instance), logging.getLogger(__name__)))
        assert storage.get_concurrency_info(GPU_POOL).active_run_ids == {dead.run_id}  # still within the grace period
        query("UPDATE runs SET end_time = end_time - %s, "
              "update_timestamp = update_timestamp - make_interval(secs => %s) WHERE run_id = %s",
              (grace + 60, grace + 60, dead.run_id))  # the grace period has passed
        list(execute_concurrency_slots_iteration(SimpleNamespace(instance=instance), logging.getLogger(__name__)))
        assert query("SELECT run_id FROM concurrency_slots WHERE run_id IS NOT NULL") == []
        assert storage.claim_concurrency_slot(GPU_POOL, waiting.run_id, step).is_claimed
    print(f"gpu lane: tag {GPU_TAG} limit 1, pool {GPU_POOL} limit 1; dead run's slot freed after {grace} s")
