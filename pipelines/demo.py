"""The demo run (`make demo`): generate SynthAV if needed, then build every declared dataset.

For each dataset it runs `<name>_manifest_job` (which registers the shard partitions),
then `<name>_shard_job` once per shard (member list, frame and audio caches), exactly the
runs the dataset sensor would request, then `<name>_stats_job` (FBANK statistics). Then,
with the tiny teacher (CLIPKT_TEACHER=tiny, set by the Makefile), `tiny_teacher_job` fits
the demo's CLIP teacher on SynthAV Places; and for each dataset `<name>_embedding_job` runs
once per shard and `<name>_neighbors_job` mines the neighbour tables. Finally
`experiment_job` trains and evaluates every experiment tagged `demo` (configs/experiments/demo;
`--tag` picks another tag, e.g. `make seed000` trains seed 000's three-seed set)
and `ablation_report_job` writes the ablation table, which is printed with each experiment's
difference from the InfoNCE baseline. All runs are recorded in the Dagster instance at
$DAGSTER_HOME, so that `dagster dev -w workspace.yaml` shows them afterwards.
"""

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from assets.caches.fbank_stats import load_fbank_stats
from assets.core.cache_layout import CacheLayout
from assets.core.project_dirs import REPO_ROOT
from assets.ingest.dataset_config import load_datasets
from assets.ingest.manifest import manifest_summary
from assets.training.experiments import load_all_experiments
from data.synthav.generate import SynthAVConfig, generate, is_generated
from pipelines.definitions import defs
from pipelines.jobs import (EXPERIMENT_JOB, KEYWORD_JOB, LOCALISATION_JOB, REPORT_JOB, TEACHER_JOB, embedding_job_name,
                            manifest_job_name, neighbors_job_name, shard_job_name, stats_job_name)
from pipelines.partitions import shard_partitions
from pipelines.resources import CachePaths

DEMO_DATA = REPO_ROOT / "data" / "demo"
LOCALISATION_TAG = "localisation"  # experiments with this tag are also scored against SynthAV's boxes
KEYWORDS_TAG = "keywords"  # cascaded SpeechCLIP experiments with this tag also get their keyword report
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the UI keeps the full event log


def _run(instance: dg.DagsterInstance, job_name: str, partition_key: str | None = None) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def(job_name).execute_in_process(instance=instance, partition_key=partition_key,
                                                               run_config=QUIET)
    if not result.success:
        raise SystemExit(f"{job_name} failed" + (f" for shard {partition_key}" if partition_key else "")
                         + f" (run {result.run_id}; `make ui` shows its log)")
    return result


def _metadata(result: dg.ExecuteInProcessResult, key: list[str]) -> dict:
    """The metadata of the run's (last) materialisation of asset `key`."""
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)]
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def run_teacher(instance: dg.DagsterInstance) -> None:
    m = _metadata(_run(instance, TEACHER_JOB), ["teacher", "tiny_clip"])
    print(f"tiny CLIP teacher: fitted on {m['train_pairs']} pairs in {m['fit_seconds']:.0f} s"
          f"{' (up to date, skipped)' if m['skipped_up_to_date'] else ''}; zero-shot R@1 on "
          f"{m['eval_pairs']} held-out pairs: image->text {m['i2t_R@1']:.3f}, text->image {m['t2i_R@1']:.3f} "
          f"(chance {1 / m['eval_pairs']:.3f})")


def run_mining(instance: dg.DagsterInstance, ds) -> None:
    start = time.perf_counter()
    for key in instance.get_dynamic_partitions(shard_partitions(ds).name):
        _run(instance, embedding_job_name(ds), key)
    m = _metadata(_run(instance, neighbors_job_name(ds)), [ds.name, "neighbor_tables"])
    zero_shot = f"; teacher R@1 image->text {m['teacher_i2t_R@1']:.3f}" if "teacher_i2t_R@1" in m else ""
    print(f"    neighbours    {m['clips']} training clips, k={m['k']}, "
          f"tables {', '.join(m['tables'])}{zero_shot} ({time.perf_counter() - start:.0f} s)")
    if m.get("same_neighbour_in_batch_of_128"):
        print(f"    batch of 128  clips meeting one of their top-{m['false_negative_k']} neighbours: "
              + ", ".join(f"{t} {f:.0%}" for t, f in m["same_neighbour_in_batch_of_128"].items()))
    if m.get("same_key_in_batch_of_128") is not None:
        print(f"    same key      {m['distinct_keys']} semantic keys ({m['singleton_keys']} held by one clip); "
              f"clips meeting a same-key clip in a batch of 128: {m['same_key_in_batch_of_128']:.0%}")


def run_experiments(instance: dg.DagsterInstance, tag: str) -> None:
    names = [n for n, e in sorted(load_all_experiments().items()) if tag in e.tags]
    for name in names:
        start = time.perf_counter()
        result = _run(instance, EXPERIMENT_JOB, name)
        enc = _metadata(result, ["experiments", "audio_encoder"])
        met = _metadata(result, ["experiments", "retrieval_metrics"])
        recall = ", ".join(f"{k} {v:.1f}" for k, v in met.items() if k.endswith(("R@10", "recognition top1",
                                                                                   "recognition mAP")))
        print(f"    {name:<24} {enc['train_clips']} clips x {len(enc['seeds'])} seed(s)"
              f"{' (up to date)' if not enc['trained_now'] else ''}; R@10 % {recall}; "
              f"data wait {enc['data_wait_fraction']:.1%} ({time.perf_counter() - start:.0f} s)")
        print(f"    {'':<24} {_batch_line(enc['batch_positives'])}")
        if "head_split" in met:
            print("\n".join(f"    {'':<24} {line}" for line in met["head_split"].splitlines() if line))
        if LOCALISATION_TAG in load_all_experiments()[name].tags:
            loc = _metadata(_run(instance, LOCALISATION_JOB, name), ["localisation", "sound_localisation"])
            print(f"    {'':<24} localisation % " + ", ".join(f"{k} {v:.1f}" for k, v in loc.items()
                                                             if k.endswith(("cIoU", "AUC", "pixel_AP"))))
            print(f"    {'':<24} heatmaps: {loc['heatmaps_path']}")
        if KEYWORDS_TAG in load_all_experiments()[name].tags:
            kw = _metadata(_run(instance, KEYWORD_JOB, name), ["keywords", "keyword_report"])
            print(f"    {'':<24} keyword hit rate {kw['hit_rate']:.1f} % (random tokens {kw['random_token_rate']:.1f} %); "
                  f"keywords that are caption tokens {kw['keyword_precision']:.1f} % (random "
                  f"{kw['random_keyword_precision']:.1f} %) ({kw['path']})")
    m = _metadata(_run(instance, REPORT_JOB), ["experiments", "ablation_report"])
    print()
    print(m["table"])
    print("Against the InfoNCE random-frame baseline:")
    print(m["vs_baseline"])
    print(f"report written to {m['path']} (+ .parquet, .png)")


def _batch_line(b: dict) -> str:
    """The run's in-batch positives (assets.training.batch_stats), as one line."""
    parts = [f"clips with a mined positive in their batch {b['mined_positive_share']:.0%} "
             f"({b['mined_positives_per_row']:.2f} per row)"] if b.get("mined_positives_per_row") else []
    if "same_key_share" in b:
        parts.append(f"clips meeting a same-key clip in their batch {b['same_key_share']:.0%}")
    if b.get("mined_precision") is not None:
        parts.append(f"mined pairs with the same key {b['mined_precision']:.0%}")
    return "; ".join(parts) or "no mined positives"


def run_dataset(instance: dg.DagsterInstance, ds, cache: CacheLayout) -> dict:
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


def _cache_counts(cache: CacheLayout, dataset: str, stage: str) -> str:
    """'ok 3498, corrupt 1, silent 1, ...' over all shard files of a cache stage."""
    counts: Counter = Counter()
    for path in sorted((cache.dataset_dir(dataset) / stage).glob("*.parquet")):
        t = pq.read_table(path, columns=["status", "error_kind"])
        counts.update(k if s == "error" else "ok" for s, k in zip(t.column("status").to_pylist(),
                                                                 t.column("error_kind").to_pylist()))
    return ", ".join(f"{k} {n}" for k, n in sorted(counts.items(), key=lambda kv: (kv[0] != "ok", kv[0])))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build every declared dataset, then train and report the "
                                     "experiments with a tag (default: demo).")
    parser.add_argument("--tag", default="demo", help="train the experiments carrying this tag "
                        "(e.g. s000_places: seed 000's three-seed set on SynthAV Places)")
    args = parser.parse_args(argv)
    if not os.environ.get("DAGSTER_HOME"):
        sys.exit("Set DAGSTER_HOME (the Makefile sets it to data/dagster_home) so the demo's runs are kept.")
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    cfg = SynthAVConfig(out=DEMO_DATA)
    if not is_generated(cfg):
        start = time.perf_counter()
        generate(cfg)
        print(f"generated SynthAV in {DEMO_DATA} in {time.perf_counter() - start:.0f} s")
    instance = dg.DagsterInstance.get()
    cache = CachePaths.from_env().layout()
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
    if os.environ.get("CLIPKT_TEACHER") == "tiny":
        run_teacher(instance)
    for ds in load_datasets():
        print(ds.name)
        run_mining(instance, ds)
    print(f"experiments (configs/experiments, tag {args.tag})")
    run_experiments(instance, args.tag)
    print(f"runs recorded in {os.environ['DAGSTER_HOME']}; browse them with `make ui`")


if __name__ == "__main__":
    main()
