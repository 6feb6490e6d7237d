"""The training entry point every rank of a multi-process run executes:

    torchrun --nproc_per_node 4 -m assets.training.launch --experiment vggsound_k1 --cache-root data/cache
    srun torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint $HEAD:29500 \\
        -m assets.training.launch --experiment vggsound_k1 --cache-root /shared/clipkt

It reads the experiment and dataset files as the code location does, joins torchrun's process
group (`assets.training.distributed.init_from_env`), and trains the experiment's seeds with
`assets.training.runs.train_experiment` (finished seeds skipped, checkpoints resumed). Launched
by the `experiments/audio_encoder` asset through Dagster Pipes, rank 0 streams its log lines to
the run and reports the materialisation (the same metadata as a single-process run); started by
hand or by SLURM without Pipes, it prints them. The teacher comes from `--teacher` (the asset
passes its ClipTeacherResource's fields as JSON) or, without it, from the same CLIPKT_TEACHER*
variables as the code location.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path

from assets.core.cache_layout import DEFAULT_CACHE_ROOT, TINY_TEACHER_NAME, CacheLayout
from assets.ingest.dataset_config import load_datasets
from assets.training.distributed import init_from_env, is_main
from assets.training.experiments import load_all_experiments
from assets.training.report import encoder_summary
from assets.training.runs import RunOptions, train_experiment

DATA_VERSION = "data_version"


def teacher_spec_from_env(layout: CacheLayout) -> dict:
    """The teacher the code location would load (pipelines.resources.ClipTeacherResource.from_env)."""
    env = os.environ.get
    if env("CLIPKT_TEACHER", "open_clip") == "tiny":
        weights, config = layout.tiny_teacher_paths()
        return {"model_name": TINY_TEACHER_NAME, "pretrained": "", "weights_path": str(weights),
                "model_config_path": str(config)}
    return {"model_name": env("CLIPKT_TEACHER_MODEL", "ViT-B-32"), "pretrained": env("CLIPKT_TEACHER_PRETRAINED", "openai"),
            "weights_path": env("CLIPKT_TEACHER_WEIGHTS", "")}


def teacher_loader(fields: dict, device: str):
    """A once-only loader of the CLIP teacher described by `fields` (ClipTeacherResource's), on this rank's device."""
    loaded = []

    def load():
        if not loaded:
            from models.clip_teacher import ClipTeacher, TeacherSpec

            spec_fields = {k: v for k, v in fields.items() if k != "model_config_path"}
            spec = TeacherSpec(**spec_fields)
            if spec.device == "auto":
                spec = replace(spec, device=device)
            loaded.append(ClipTeacher.from_files(spec, fields.get("model_config_path") or None))
        return loaded[0]

    return load


def torchrun_command(exp, seeds: list[int], cache_root: str, teacher: dict, device: str = "auto",
                     max_memory_gb: float = RunOptions().max_memory_gb, torch_threads: int = 0,
                     environ=os.environ) -> list[str]:
    """The command that trains `exp` on `train.nproc_per_node` processes per node: torchrun on this
    node (`--standalone`), or, with `train.nnodes` > 1, one torchrun per node through `srun` inside the
    SLURM allocation the caller runs in (rendezvous on this host: the allocation's first node)."""
    t = exp.train
    entry = ["-m", "assets.training.launch", "--experiment", exp.name, "--cache-root", str(cache_root),
             "--device", device, "--max-memory-gb", str(max_memory_gb), "--torch-threads", str(torch_threads),
             "--teacher", json.dumps(teacher), *(["--seeds", *map(str, seeds)] if seeds else [])]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(t.nproc_per_node)]
    if t.nnodes == 1:
        return [*torchrun, "--standalone", "--nnodes", "1", *entry]
    if "SLURM_JOB_ID" not in environ:
        raise RuntimeError(f"{exp.path}: train.nnodes {t.nnodes} needs a SLURM allocation of {t.nnodes} nodes around "
                           "the Dagster run worker (sbatch or salloc; see docs/distributed-training.md#several-nodes-slurm)")
    head = environ.get("MASTER_ADDR") or socket.gethostname()
    return ["srun", f"--nodes={t.nnodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1", *torchrun,
            "--nnodes", str(t.nnodes), "--rdzv_backend", "c10d", "--rdzv_endpoint", f"{head}:{environ.get('MASTER_PORT', '29500')}",
            "--rdzv_id", environ["SLURM_JOB_ID"], *entry]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m assets.training.launch", description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", required=True, help="experiment name (its file in configs/experiments)")
    p.add_argument("--seeds", type=int, nargs="*", default=[], help="train only these seeds (default: all)")
    p.add_argument("--cache-root", default=os.environ.get("CLIPKT_CACHE_ROOT", DEFAULT_CACHE_ROOT))
    p.add_argument("--device", default="auto", help="auto (cuda:LOCAL_RANK when CUDA is present) | cpu")
    p.add_argument("--max-memory-gb", type=float, default=RunOptions().max_memory_gb)
    p.add_argument("--torch-threads", type=int, default=0, help="CPU threads per rank; 0: torch's default")
    p.add_argument("--teacher", default="", help="the teacher resource's fields as JSON; default: CLIPKT_TEACHER*")
    return p.parse_args(argv)


def run(args: argparse.Namespace, log=print) -> dict | None:
    """Train; rank 0 returns the audio_encoder metadata (encoder_summary), other ranks None."""
    env, device = init_from_env(args.device)
    layout = CacheLayout(Path(args.cache_root))
    experiments = load_all_experiments()
    if args.experiment not in experiments:
        raise SystemExit(f"no experiment {args.experiment!r} in configs/experiments (have: {sorted(experiments)})")
    exp = experiments[args.experiment]
    datasets = {ds.name: ds for ds in load_datasets()}
    missing = [d for d in (exp.dataset, *exp.train.mix) if d not in datasets]
    if missing:
        raise SystemExit(f"{exp.path}: dataset(s) {missing} not declared in configs/datasets")
    seeds = [s for s in exp.seeds if not args.seeds or s in args.seeds]
    teacher = json.loads(args.teacher) if args.teacher else teacher_spec_from_env(layout)
    options = RunOptions(device=device, max_memory_gb=args.max_memory_gb, torch_threads=args.torch_threads)
    log(f"{exp.name}: rank {env.rank} of {env.world_size} on {device}")
    runs, trained = train_experiment(layout, datasets[exp.dataset], exp, seeds, teacher_loader(teacher, device),
                                     experiments, options, log=log, mix=[datasets[m] for m in exp.train.mix])
    if not is_main():
        return None
    return encoder_summary(exp, exp.dataset, seeds, runs, trained) | {
        DATA_VERSION: ",".join(f"{s}:{exp.fingerprint(s)}" for s in seeds)}  # as the single-process asset's


def pipes_metadata(key: str, value) -> dict:
    """A metadata value as Pipes carries it: the run table and curves as markdown, mappings and lists as JSON."""
    if key in ("runs", "curves"):
        return {"raw_value": value, "type": "md"}
    if isinstance(value, (dict, list, tuple)):
        return {"raw_value": value, "type": "json"}
    return {"raw_value": value, "type": "__infer__"}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

    rank = int(os.environ.get("RANK", 0))
    if rank != 0 or DAGSTER_PIPES_CONTEXT_ENV_VAR not in os.environ:  # by hand or under SLURM: print
        summary = run(args)
        if summary is not None:
            print(json.dumps({k: v for k, v in summary.items() if k not in ("runs", "curves")}, default=str))
        return
    with open_dagster_pipes() as pipes:  # rank 0 of a run launched by the audio_encoder asset
        summary = run(args, log=pipes.log.info)
        version = summary.pop(DATA_VERSION)
        pipes.report_asset_materialization(metadata={k: pipes_metadata(k, v) for k, v in summary.items()},
                                           data_version=version)


if __name__ == "__main__":
    sys.exit(main())
