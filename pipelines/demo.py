"""The demo run (`make demo`): generate SynthAV if needed, then build every declared dataset.

For each dataset it runs `<name>_manifest_job` (which registers the shard partitions),
then `<name>_shard_job` once per shard (member list, frame and audio caches), exactly the
runs the dataset sensor would request, then `<name>_stats_job` (FBANK statistics). All
runs are recorded in the Dagster instance at $DAGSTER_HOME, so that `dagster dev -w
workspace.yaml` shows them afterwards.
"""

import os
import sys
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from assets.fbank_stats import load_fbank_stats
from assets.manifest import manifest_summary
from data.synthav.generate import SynthAVConfig, generate, is_generated
from pipelines.datasets import REPO_ROOT, load_datasets
from pipelines.definitions import defs
from pipelines.jobs import manifest_job_name, shard_job_name, stats_job_name
from pipelines.partitions import shard_partitions
from pipelines.resources import CachePaths

DEMO_DATA = REPO_ROOT / "data" / "demo"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the UI keeps the full event log


def run_dataset(instance: dg.DagsterInstance, ds, cache: CachePaths) -> dict:
    result = defs.resolve_job_def(manifest_job_name(ds)).execute_in_process(instance=instance, run_config=QUIET)
    if not result.success:
        raise SystemExit(f"{manifest_job_name(ds)} failed (run {result.run_id})")
    shard_job = defs.resolve_job_def(shard_job_name(ds))
    shards = instance.get_dynamic_partitions(shard_partitions(ds).name)
    for key in shards:
        if not shard_job.execute_in_process(instance=instance, partition_key=key, run_config=QUIET).success:
            raise SystemExit(f"{shard_job.name} failed for shard {key}")
    if not defs.resolve_job_def(stats_job_name(ds)).execute_in_process(instance=instance, run_config=QUIET).success:
        raise SystemExit(f"{stats_job_name(ds)} failed")
    return manifest_summary(pq.read_table(cache.manifest_path(ds.name))) | {
        "caches": {stage: _cache_counts(cache, ds.name, stage) for stage in ("frame_cache", "fbank_cache", "logmel_cache")
                   if (cache.dataset_dir(ds.name) / stage).is_dir()},
        "stats": load_fbank_stats(cache, ds.name)}


def _cache_counts(cache: CachePaths, dataset: str, stage: str) -> str:
    """'ok 3498, corrupt 1, silent 1, ...' over all shard files of a cache stage."""
    counts: Counter = Counter()
    for path in sorted((cache.dataset_dir(dataset) / stage).glob("*.parquet")):
        t = pq.read_table(path, columns=["status", "error_kind"])
        counts.update(k if s == "error" else "ok" for s, k in zip(t.column("status").to_pylist(),
                                                                 t.column("error_kind").to_pylist()))
    return ", ".join(f"{k} {n}" for k, n in sorted(counts.items(), key=lambda kv: (kv[0] != "ok", kv[0])))


def main() -> None:
    if not os.environ.get("DAGSTER_HOME"):
        sys.exit("Set DAGSTER_HOME (the Makefile sets it to data/dagster_home) so the demo's runs are kept.")
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    cfg = SynthAVConfig(out=DEMO_DATA)
    if not is_generated(cfg):
        start = time.perf_counter()
        generate(cfg)
        print(f"generated SynthAV in {DEMO_DATA} in {time.perf_counter() - start:.0f} s")
    instance = dg.DagsterInstance.get()
    cache = CachePaths.from_env()
    print(f"{'dataset':<20} {'clips':>6} {'ok':>6} {'coverage':>9} {'shards':>6}  statuses")
    for ds in load_datasets():
        start = time.perf_counter()
        s = run_dataset(instance, ds, cache)
        print(f"{ds.name:<20} {s['clips']:>6} {s['ok']:>6} {s['coverage_pct']:>8.1f}% {s['shards']:>6}  "
              f"{s['by_status']}  ({time.perf_counter() - start:.0f} s)")
        for stage, counts in s["caches"].items():
            print(f"    {stage:<13} {counts}")
        print(f"    fbank_stats   mean {s['stats']['mean']:.3f}, std {s['stats']['std']:.3f} over "
              f"{s['stats']['clips']} training clips")
    print(f"runs recorded in {os.environ['DAGSTER_HOME']}; browse them with `make ui`")


if __name__ == "__main__":
    main()
