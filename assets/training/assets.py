"""Training and evaluation assets (thin Dagster wrappers over `assets.training.runs`):

- `experiments/audio_encoder`, partitioned by experiment (one partition per YAML file in
  configs/experiments): trains every seed of the experiment, resuming from checkpoints;
  a seed whose run with the same fingerprint finished is skipped. In the run's own process, or,
  when the experiment asks for several (`train.nproc_per_node`, `train.nnodes`), as a torchrun
  of `assets.training.launch` through Dagster Pipes (`PipesSubprocessClient`): rank 0 streams
  its log and reports the materialisation. Pool `gpu_training`: a deployment admits one at a time.
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
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from assets.core.plots import png_markdown
from assets.core.project_dirs import reports_dir
from assets.ingest.dataset_config import DatasetConfig
from assets.training.experiments import Experiment, ExperimentError, load_all_experiments
from assets.training.launch import torchrun_command
from assets.training.report import below_chance, encoder_summary, metrics_summary, write_report
from assets.training.runs import (RUN_DEFAULTS, RunOptions, current_metrics, evaluate_experiment, metrics_path,
                                  train_experiment, weights_path)
from pipelines.executors import GPU_OP_TAGS
from pipelines.resources import CachePaths, ClipTeacherResource

GROUP = "experiments"
ENCODER_KEY = dg.AssetKey([GROUP, "audio_encoder"])
METRICS_KEY = dg.AssetKey([GROUP, "retrieval_metrics"])
REPORT_KEY = dg.AssetKey([GROUP, "ablation_report"])
ABOVE_CHANCE_CHECK = "r10_at_least_5x_chance"
CODE_VERSION = "1"
GPU_TRAINING_POOL = "gpu_training"  # deploy/dagster.yaml limits it to one
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class AudioEncoderConfig(dg.Config):
    device: str = RUN_DEFAULTS.device  # auto (CUDA when present) | cpu | cuda | cuda:1
    seeds: list[int] = []  # train only these of the experiment's seeds; [] = all
    torch_threads: int = RUN_DEFAULTS.torch_threads  # CPU threads for torch; 0 = torch's default
    # training features beyond this are read in place from the audio cache's feature arrays
    max_memory_gb: float = RUN_DEFAULTS.max_memory_gb

    def options(self) -> RunOptions:
        return RunOptions(device=self.device, max_memory_gb=self.max_memory_gb, torch_threads=self.torch_threads)


class RetrievalMetricsConfig(dg.Config):
    device: str = RUN_DEFAULTS.device


class AblationReportConfig(dg.Config):
    experiments: list[str] = []  # [] = every experiment with current metrics
    tags: list[str] = []  # keep experiments with any of these tags; [] = no filter
    out_dir: str = ""  # "" = data/reports of this checkout


def _load_experiments() -> dict[str, Experiment]:
    """Every experiment file, read now (an edited file takes effect without a reload)."""
    try:
        return load_all_experiments()
    except ExperimentError as e:
        raise dg.Failure(str(e)) from e


@dataclass(frozen=True)
class PartitionExperiment:
    """An experiment partition's experiment file, its dataset, the datasets of its `train.mix`, and
    every experiment (for init_from)."""
    exp: Experiment
    dataset: DatasetConfig
    mix: tuple[DatasetConfig, ...]
    experiments: dict[str, Experiment]


def partition_experiment(context: dg.AssetExecutionContext, datasets: dict[str, DatasetConfig]) -> PartitionExperiment:
    """The partition's experiment, read now; a missing file or an undeclared dataset is a Failure."""
    experiments = _load_experiments()
    exp = experiments.get(context.partition_key)
    if exp is None:
        raise dg.Failure(f"experiment {context.partition_key!r} has no file in configs/experiments any more; "
                         "reload the code location")
    for name in (exp.dataset, *exp.train.mix):
        if name not in datasets:
            raise dg.Failure(f"{exp.path}: dataset {name!r} is not declared (declared: {sorted(datasets)}); "
                             "add configs/datasets/<name>.yaml for it")
    return PartitionExperiment(exp, datasets[exp.dataset], tuple(datasets[m] for m in exp.train.mix), experiments)


def build_experiment_assets(experiments: dict[str, Experiment], datasets: list[DatasetConfig],
                            teacher_dep: dg.AssetKey | None) -> tuple[list, dg.StaticPartitionsDefinition]:
    """audio_encoder, retrieval_metrics (partitioned by experiment) and ablation_report."""
    partitions = dg.StaticPartitionsDefinition(sorted(experiments))
    by_name = {ds.name: ds for ds in datasets}
    used = sorted({d for e in experiments.values() for d in (e.dataset, *e.train.mix)} & set(by_name))
    upstream = [dg.AssetKey([d, a]) for d in used for a in ("fbank_stats", "neighbor_tables")]
    if teacher_dep is not None:
        upstream.append(teacher_dep)
    assets = [build_audio_encoder_asset(partitions, by_name, upstream),
              build_retrieval_metrics_asset(partitions, by_name), build_ablation_report_asset()]
    return assets, partitions


def build_audio_encoder_asset(partitions: dg.PartitionsDefinition, datasets: dict[str, DatasetConfig],
                              upstream: list[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(key=ENCODER_KEY, group_name=GROUP, partitions_def=partitions, deps=upstream, kinds={"pytorch"},
              code_version=CODE_VERSION, pool=GPU_TRAINING_POOL, op_tags=GPU_OP_TAGS,
              description="A student audio encoder trained as the experiment file says (one run per seed; resumable).")
    def audio_encoder(context: dg.AssetExecutionContext, config: AudioEncoderConfig, cache: CachePaths,
                      teacher: ClipTeacherResource) -> dg.MaterializeResult:
        layout = cache.layout()
        part = partition_experiment(context, datasets)
        exp, ds = part.exp, part.dataset
        seeds = [s for s in exp.seeds if not config.seeds or s in config.seeds]
        if not seeds:
            raise dg.Failure(f"config seeds {config.seeds} are not among {exp.name}'s seeds {list(exp.seeds)}")
        started = time.perf_counter()
        if exp.train.nproc_per_node * exp.train.nnodes > 1:
            result = _train_in_processes(context, exp, seeds, config, cache, teacher)
            return dg.MaterializeResult(metadata={
                **(result.metadata or {}), "weights": dg.MetadataValue.path(str(weights_path(layout, exp, seeds[0]))),
                "processes": exp.train.nproc_per_node * exp.train.nnodes,
                "seconds": round(time.perf_counter() - started, 1)}, data_version=result.data_version)
        runs, trained = train_experiment(layout, ds, exp, seeds, teacher.load, part.experiments, config.options(),
                                         log=context.log.info, warn=context.log.warning, mix=part.mix)
        summary = encoder_summary(exp, ds.name, seeds, runs, trained)
        metadata = summary | {
            "runs": dg.MetadataValue.md(summary["runs"]), "curves": dg.MetadataValue.md(summary["curves"]),
            "weights": dg.MetadataValue.path(str(weights_path(layout, exp, seeds[0]))),
            "seconds": round(time.perf_counter() - started, 1),
        }
        version = ",".join(f"{s}:{exp.fingerprint(s)}" for s in seeds)
        return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version))

    return audio_encoder


def _train_in_processes(context: dg.AssetExecutionContext, exp: Experiment, seeds: list[int], config: AudioEncoderConfig,
                        cache: CachePaths, teacher: ClipTeacherResource) -> dg.MaterializeResult:
    """torchrun (or srun + torchrun across nodes) of assets.training.launch; its rank 0 reports back through Pipes."""
    fields = {k: getattr(teacher, k) for k in ("model_name", "pretrained", "weights_path", "model_config_path",
                                               "device", "batch_size", "precision", "cache_dir")}
    try:
        command = torchrun_command(exp, seeds, str(Path(cache.cache_root).resolve()), fields, config.device,
                                   config.max_memory_gb, config.torch_threads)
    except RuntimeError as e:
        raise dg.Failure(str(e)) from e
    if exp.train.nnodes > 1:  # rank 0 may run on another node: context in the environment, messages on the shared cache
        messages = cache.layout().experiment_dir(exp.name) / f"pipes_{context.run.run_id}.jsonl"
        messages.parent.mkdir(parents=True, exist_ok=True)
        client = dg.PipesSubprocessClient(cwd=str(PROJECT_ROOT), context_injector=dg.PipesEnvContextInjector(),
                                          message_reader=dg.PipesFileMessageReader(str(messages)))
    else:
        client = dg.PipesSubprocessClient(cwd=str(PROJECT_ROOT))
    context.log.info(f"{exp.name}: {exp.train.nproc_per_node} x {exp.train.nnodes} processes: {' '.join(command[:12])} ...")
    invocation = client.run(context=context, command=command, env={"PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))})
    return invocation.get_materialize_result()


def build_retrieval_metrics_asset(partitions: dg.PartitionsDefinition,
                                  datasets: dict[str, DatasetConfig]) -> dg.AssetsDefinition:
    @dg.asset(key=METRICS_KEY, group_name=GROUP, partitions_def=partitions, deps=[ENCODER_KEY], kinds={"json"},
              code_version=CODE_VERSION,
              check_specs=[dg.AssetCheckSpec(ABOVE_CHANCE_CHECK, asset=METRICS_KEY,
                                             description="mean R@10 in every direction is at least 5x chance (10 / eval size)")],
              description="R@1/5/10 and median rank of every seed on the fixed evaluation subset; mean ± std over seeds.")
    def retrieval_metrics(context: dg.AssetExecutionContext, config: RetrievalMetricsConfig, cache: CachePaths,
                          teacher: ClipTeacherResource) -> dg.MaterializeResult:
        layout = cache.layout()
        part = partition_experiment(context, datasets)
        exp, ds = part.exp, part.dataset
        doc, skipped = evaluate_experiment(layout, ds, exp, teacher.load, config.device, part.mix)
        summary = metrics_summary(doc, skipped, metrics_path(layout, exp))
        metadata = summary | {"table": dg.MetadataValue.md(summary["table"]),
                              "protocol": dg.MetadataValue.text(summary["protocol"]),
                              "path": dg.MetadataValue.path(summary["path"])}
        if "head_split" in summary:
            metadata["head_split"] = dg.MetadataValue.md(summary["head_split"])
        low = below_chance(doc)
        check = dg.AssetCheckResult(
            check_name=ABOVE_CHANCE_CHECK, passed=not low, severity=dg.AssetCheckSeverity.WARN,
            metadata={"below": json.dumps(low), "chance_R@10": json.dumps(doc["eval"]["chance_R@10"])})
        return dg.MaterializeResult(metadata=metadata, check_results=[check])

    return retrieval_metrics


def build_ablation_report_asset() -> dg.AssetsDefinition:
    @dg.asset(key=REPORT_KEY, group_name=GROUP, deps=[METRICS_KEY], kinds={"markdown", "parquet"}, code_version=CODE_VERSION,
              description="Seed 000-style ablation table over every experiment with metrics: markdown, Parquet and PNG, "
                          "also written to data/reports/.")
    def ablation_report(context: dg.AssetExecutionContext, config: AblationReportConfig, cache: CachePaths) -> dg.MaterializeResult:
        docs, missing = current_metrics(cache.layout(), _load_experiments(), config.experiments, config.tags)
        if not docs:
            raise dg.Failure("no experiment has current retrieval metrics; materialise retrieval_metrics first")
        report = write_report(docs, Path(config.out_dir) if config.out_dir else reports_dir())
        return dg.MaterializeResult(metadata={
            "table": dg.MetadataValue.md(report.markdown),
            "vs_baseline": dg.MetadataValue.md(report.vs_baseline or "no baseline to compare with"),
            "chart": dg.MetadataValue.md(png_markdown(report.png, "R@10 per experiment")),
            "experiments": report.experiments, "without_current_metrics": missing,
            "path": dg.MetadataValue.path(str(report.path))})

    return ablation_report
