"""Training and evaluation assets (thin Dagster wrappers over `assets.training.runs`):

- `experiments/audio_encoder`, partitioned by experiment (one partition per YAML file in
  configs/experiments): trains every seed of the experiment, resuming from checkpoints;
  a seed whose run with the same fingerprint finished is skipped.
- `experiments/retrieval_metrics`, same partitions: R@1/5/10 and median rank of every seed on
  the experiment's evaluation subset, mean ± std over seeds.
- `experiments/ablation_report`: one table over all experiments with current metrics
  (markdown in the UI, Parquet, PNG), also written to data/reports/.

The experiment file is re-read when a run starts, so an edited file takes effect without
reloading the code location (a new file needs a reload: it adds a partition).
"""

import json
import os
import time
from pathlib import Path

import dagster as dg
import numpy as np

from assets.training.report import (baseline_deltas, deltas_markdown, markdown_report, report_plot, report_rows,
                                    report_table)
from assets.core.atomic_io import atomic_path, write_parquet_atomic
from assets.ingest.dataset_config import DatasetConfig
from assets.training.runs import (METRICS_FILE, evaluate_seed, evaluation_clips, finished_run, metrics_document,
                                    read_metrics, run_dir, train_seed, training_inputs, write_metrics)
from assets.training.experiments import Experiment, ExperimentError, load_all_experiments
from assets.core.project_dirs import reports_dir
from assets.core.plots import figure_png, png_markdown, subplots
from assets.training.trainer import FINAL_WEIGHTS
from pipelines.resources import CachePaths, ClipTeacherResource

GROUP = "experiments"
ENCODER_KEY = dg.AssetKey([GROUP, "audio_encoder"])
METRICS_KEY = dg.AssetKey([GROUP, "retrieval_metrics"])
REPORT_KEY = dg.AssetKey([GROUP, "ablation_report"])
ABOVE_CHANCE_CHECK = "r10_at_least_5x_chance"
CODE_VERSION = "1"


class AudioEncoderConfig(dg.Config):
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:1
    seeds: list[int] = []  # train only these of the experiment's seeds; [] = all
    torch_threads: int = 0  # CPU threads for torch; 0 = torch's default
    max_memory_gb: float = 16.0  # training features beyond this are memory-mapped from <cache>/<dataset>/feature_spill


class RetrievalMetricsConfig(dg.Config):
    device: str = "auto"


class AblationReportConfig(dg.Config):
    experiments: list[str] = []  # [] = every experiment with current metrics
    tags: list[str] = []  # keep experiments with any of these tags; [] = no filter
    out_dir: str = ""  # "" = data/reports of this checkout


def _experiment(context: dg.AssetExecutionContext, datasets: dict[str, DatasetConfig]) -> tuple[Experiment, DatasetConfig, dict]:
    try:
        experiments = load_all_experiments()
    except ExperimentError as e:
        raise dg.Failure(str(e)) from e
    name = context.partition_key
    if name not in experiments:
        raise dg.Failure(f"experiment {name!r} has no file in configs/experiments any more; reload the code location")
    exp = experiments[name]
    if exp.dataset not in datasets:
        raise dg.Failure(f"{exp.path}: dataset {exp.dataset!r} is not declared (declared: {sorted(datasets)}); "
                         "add configs/datasets/<name>.yaml for it")
    return exp, datasets[exp.dataset], experiments


def curves_plot(runs: dict[int, dict]) -> bytes:
    """Training loss and the per-epoch validation R@10 of every seed."""
    fig, (ax_loss, ax_val) = subplots(1, 2, figsize=(8, 3), dpi=80)
    for seed, run in sorted(runs.items()):
        h = run["history"]
        epochs = [r["epoch"] + 1 for r in h]
        ax_loss.plot(epochs, [r["loss"] for r in h], marker=".", label=f"seed {seed}")
        val = [k for k in h[0] if k.startswith("val_") and k.endswith("R@10")]
        for k in val:
            ax_val.plot(epochs, [100 * r[k] for r in h], marker=".", label=f"seed {seed} {k[4:]}")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_val.set_xlabel("epoch")
    ax_val.set_ylabel("validation R@10 (%)")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return figure_png(fig)


def _run_table(runs: dict[int, dict]) -> str:
    lines = ["| seed | epochs | final loss | temperature | steps/s | data wait | val R@10 | seconds |", "|---|---|---|---|---|---|---|---|"]
    for seed, run in sorted(runs.items()):
        h = run["history"]
        val = [v for k, v in h[-1].items() if k.startswith("val_") and k.endswith("R@10")]
        lines.append(f"| {seed} | {len(h)} | {h[-1]['loss']:.4f} | {run['temperature']:.4f} | "
                     f"{np.mean([r['steps_per_s'] for r in h]):.2f} | {np.mean([r['data_wait_fraction'] for r in h]):.1%} | "
                     f"{'–' if not val else f'{100 * val[0]:.1f}%'} | {sum(r['seconds'] for r in h):.0f} |")
    return "\n".join(lines)


def build_experiment_assets(experiments: dict[str, Experiment], datasets: list[DatasetConfig],
                            teacher_dep: dg.AssetKey | None) -> tuple[list, dg.StaticPartitionsDefinition]:
    """audio_encoder, retrieval_metrics (partitioned by experiment) and ablation_report."""
    partitions = dg.StaticPartitionsDefinition(sorted(experiments))
    by_name = {ds.name: ds for ds in datasets}
    used = sorted({e.dataset for e in experiments.values()} & set(by_name))
    upstream = [dg.AssetKey([d, a]) for d in used for a in ("fbank_stats", "neighbor_tables")]
    if teacher_dep is not None:
        upstream.append(teacher_dep)

    @dg.asset(key=ENCODER_KEY, group_name=GROUP, partitions_def=partitions, deps=upstream, kinds={"pytorch"},
              code_version=CODE_VERSION,
              description="A student audio encoder trained as the experiment file says (one run per seed; resumable).")
    def audio_encoder(context: dg.AssetExecutionContext, config: AudioEncoderConfig, cache: CachePaths,
                      teacher: ClipTeacherResource) -> dg.MaterializeResult:
        layout = cache.layout()
        exp, ds, all_experiments = _experiment(context, by_name)
        if config.torch_threads:
            import torch
            torch.set_num_threads(config.torch_threads)
        seeds = [s for s in exp.seeds if not config.seeds or s in config.seeds]
        if not seeds:
            raise dg.Failure(f"config seeds {config.seeds} are not among {exp.name}'s seeds {list(exp.seeds)}")
        started = time.perf_counter()
        runs, trained, inputs = {}, [], None
        for seed in seeds:
            runs[seed] = finished_run(layout, exp, seed)
            if runs[seed] is not None:
                continue
            if inputs is None:
                inputs = training_inputs(layout, ds, exp, config.max_memory_gb)
                context.log.info(f"{exp.name}: {len(inputs.train)} training clips of {ds.name} "
                                 f"(left out: {inputs.train.skipped or 'none'}); validation: {inputs.val_label}")
                if inputs.neighbour_shortfall and any(inputs.neighbour_shortfall.values()):
                    context.log.warning(f"{exp.name}: training clips with fewer than k={exp.loss.k} mined neighbours "
                                        f"inside the training set, per table: {inputs.neighbour_shortfall} "
                                        "(raise neighbor_tables' k_max)")
            clip_teacher = teacher.load() if exp.model.kind == "audio_vit" else None
            runs[seed] = train_seed(layout, ds, exp, seed, clip_teacher, inputs, all_experiments, config.device,
                                    log=context.log.info)
            trained.append(seed)
        h0 = runs[seeds[0]]
        metadata = {
            "experiment": exp.name, "dataset": ds.name, "description": exp.description, "stage": exp.stage,
            "model": exp.model.kind, "frames": exp.frames.strategy, "loss": exp.loss.kind,
            "tables": sorted(exp.table_set), "seeds": seeds, "trained_now": trained,
            "skipped_up_to_date": [s for s in seeds if s not in trained],
            "train_clips": h0["train_clips"], "steps_per_epoch": h0["steps_per_epoch"],
            "neighbour_shortfall": h0.get("neighbour_shortfall") or {},
            "runs": dg.MetadataValue.md(_run_table(runs)),
            "curves": dg.MetadataValue.md(png_markdown(curves_plot(runs), "loss and validation recall per epoch")),
            "data_wait_fraction": float(np.mean([r["data_wait_fraction"] for run in runs.values() for r in run["history"]])),
            "weights": dg.MetadataValue.path(str(run_dir(layout, exp, seeds[0]) / FINAL_WEIGHTS)),
            "seconds": round(time.perf_counter() - started, 1),
        }
        version = ",".join(f"{s}:{exp.fingerprint(s)}" for s in seeds)
        return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version))

    @dg.asset(key=METRICS_KEY, group_name=GROUP, partitions_def=partitions, deps=[ENCODER_KEY], kinds={"json"},
              code_version=CODE_VERSION,
              check_specs=[dg.AssetCheckSpec(ABOVE_CHANCE_CHECK, asset=METRICS_KEY,
                                             description="mean R@10 in every direction is at least 5x chance (10 / eval size)")],
              description="R@1/5/10 and median rank of every seed on the fixed evaluation subset; mean ± std over seeds.")
    def retrieval_metrics(context: dg.AssetExecutionContext, config: RetrievalMetricsConfig, cache: CachePaths,
                          teacher: ClipTeacherResource) -> dg.MaterializeResult:
        layout = cache.layout()
        exp, ds, _ = _experiment(context, by_name)
        doc = read_metrics(layout, exp)
        skipped = doc is not None and all(
            doc.get("weights_mtime_ns", {}).get(str(s)) == _mtime(run_dir(layout, exp, s) / FINAL_WEIGHTS) for s in exp.seeds)
        if not skipped:
            clips, with_text = evaluation_clips(layout, ds, exp)
            clip_teacher = teacher.load() if exp.model.kind == "audio_vit" else None
            per_seed = {s: evaluate_seed(layout, ds, exp, s, clip_teacher, clips, with_text, config.device) for s in exp.seeds}
            doc = metrics_document(exp, ds, clips, with_text, per_seed)
            doc["weights_mtime_ns"] = {str(s): _mtime(run_dir(layout, exp, s) / FINAL_WEIGHTS) for s in exp.seeds}
            write_metrics(layout, exp, doc)
        rows = report_rows([doc])
        chance = doc["eval"]["chance_R@10"]
        low = {d: s["R@10"]["mean"] for d, s in doc["summary"].items() if s["R@10"]["mean"] < 5 * chance[d]}
        metadata = {
            "table": dg.MetadataValue.md(markdown_report(rows)),
            "protocol": dg.MetadataValue.text(doc["protocol"]),
            "audio_image_similarity": doc["eval"]["audio_image_similarity"] or "–",
            "eval_clips": doc["eval"]["clips"], "eval_split": doc["eval"]["split"], "seeds": doc["seeds"],
            "skipped_up_to_date": skipped,
            "path": dg.MetadataValue.path(str(layout.experiment_dir(exp.name) / METRICS_FILE)),
        }
        for d, s in doc["summary"].items():
            for k in ("R@1", "R@5", "R@10"):
                metadata[f"{d} {k}"] = round(100 * s[k]["mean"], 2)
        check = dg.AssetCheckResult(check_name=ABOVE_CHANCE_CHECK, passed=not low, severity=dg.AssetCheckSeverity.WARN,
                                    metadata={"below": json.dumps(low), "chance_R@10": json.dumps(chance)})
        return dg.MaterializeResult(metadata=metadata, check_results=[check])

    @dg.asset(key=REPORT_KEY, group_name=GROUP, deps=[METRICS_KEY], kinds={"markdown", "parquet"}, code_version=CODE_VERSION,
              description="Seed 000-style ablation table over every experiment with metrics: markdown, Parquet and PNG, "
                          "also written to data/reports/.")
    def ablation_report(context: dg.AssetExecutionContext, config: AblationReportConfig, cache: CachePaths) -> dg.MaterializeResult:
        layout = cache.layout()
        try:
            current = load_all_experiments()
        except ExperimentError as e:
            raise dg.Failure(str(e)) from e
        wanted = [e for n, e in sorted(current.items()) if (not config.experiments or n in config.experiments)
                  and (not config.tags or set(config.tags) & set(e.tags))]
        docs = [d for d in (read_metrics(layout, e) for e in wanted) if d is not None]
        if not docs:
            raise dg.Failure("no experiment has current retrieval metrics; materialise retrieval_metrics first")
        rows = report_rows(docs)
        md, deltas = markdown_report(rows), deltas_markdown(baseline_deltas(rows))
        png = report_plot(rows)
        out = Path(config.out_dir) if config.out_dir else reports_dir()
        out.mkdir(parents=True, exist_ok=True)
        text = md + ("\n\nAgainst the InfoNCE random-frame baseline:\n" + deltas if deltas else "") + \
            f"\n\nProtocol: {docs[0]['protocol']}\n"
        with atomic_path(out / "ablation.md") as tmp:
            tmp.write_text(text)
        write_parquet_atomic(report_table(rows), out / "ablation.parquet")
        with atomic_path(out / "ablation.png") as tmp:
            tmp.write_bytes(png)
        missing = [e.name for e in wanted if read_metrics(layout, e) is None]
        return dg.MaterializeResult(metadata={
            "table": dg.MetadataValue.md(md), "vs_baseline": dg.MetadataValue.md(deltas or "no baseline to compare with"),
            "chart": dg.MetadataValue.md(png_markdown(png, "R@10 per experiment")), "experiments": len(rows),
            "without_current_metrics": missing, "path": dg.MetadataValue.path(str(out / "ablation.md"))})

    return [audio_encoder, retrieval_metrics, ablation_report], partitions


def _mtime(path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
