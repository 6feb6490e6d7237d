"""teacher/tiny_clip: the demo's CLIP teacher, a tiny open_clip model fitted on one dataset's
image-caption pairs (SynthAV Places: the cached pictures and their `asr_text`).

No pretrained CLIP weights can be downloaded on an offline machine, so the demo fits its own
(`models.tiny_clip.fit_tiny_clip`: deterministic, about 2-3 minutes on 2 CPU cores at demo
size) and reports its zero-shot image<->text R@1 on the held-out split. The weights (a state
dict) and the open_clip model config land in `<cache>/teacher/`, where
`ClipTeacherResource.from_env()` finds them when CLIPKT_TEACHER=tiny (the Makefile sets it).
A rerun with the same pairs and fit settings is skipped.
"""

import base64
import hashlib
import io
import json
import time
from dataclasses import asdict, fields

import dagster as dg
import numpy as np
import pyarrow.parquet as pq

from assets.atomic_io import atomic_path, read_parquet_metadata
from assets.clip_embeddings import decode_frames
from assets.dataset_config import DatasetConfig
from assets.manifest import markdown_table
from models.clip_teacher import file_sha256, save_weights
from models.tiny_clip import TINY_CLIP_CONFIG, FitConfig, fit_tiny_clip, retrieval_recall
from pipelines.resources import CachePaths

CODE_VERSION = "1"
TINY_TEACHER_KEY = dg.AssetKey(["teacher", "tiny_clip"])


class TinyTeacherConfig(dg.Config):
    train_splits: list[str] = ["train"]
    eval_splits: list[str] = ["val", "test"]  # Places audio captions: val; others: test
    eval_pairs: int = 1000  # the papers' 1000-item evaluation protocol
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    threads: int = 2
    seed: int = 0

    def fit(self) -> FitConfig:
        """The fit settings (the fields shared with models.tiny_clip.FitConfig; the rest keep its defaults)."""
        return FitConfig(**self.model_dump(include={f.name for f in fields(FitConfig)}))


def load_pairs(frame_paths: list, shard_paths: list, splits: list[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """(images (N, S, S, 3) uint8, captions, clip ids) of the clips in `splits` with a cached frame
    and a caption: the middle cached frame (Places: the picture) and the first caption."""
    images, captions, ids = [], [], []
    for frame_path, shard_path in zip(frame_paths, shard_paths):
        caption_of = {m["clip_id"]: m["captions"][0] for m in
                      pq.read_table(shard_path, columns=["clip_id", "captions"]).to_pylist() if m["captions"]}
        t = pq.read_table(frame_path, columns=["clip_id", "split", "status", "frames"])
        for clip_id, split, status, frames in zip(*(t.column(c).to_pylist() for c in t.column_names)):
            if status == "ok" and split in splits and clip_id in caption_of and frames:
                images.append(decode_frames([frames[len(frames) // 2]])[0])
                captions.append(caption_of[clip_id])
                ids.append(clip_id)
    if not images:
        return np.zeros((0, 0, 0, 3), np.uint8), [], []
    return np.stack(images), captions, ids


def _loss_plot(losses: list[float]) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 2.5), dpi=80)
    ax.plot(range(1, len(losses) + 1), losses, marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train InfoNCE")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def build_tiny_teacher_asset(ds: DatasetConfig, shards: dg.DynamicPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=TINY_TEACHER_KEY, group_name="teacher", kinds={"pytorch"}, code_version=CODE_VERSION,
        deps=[dg.AssetKey([ds.name, "frame_cache"]), dg.AssetKey([ds.name, "clip_shards"])],
        description=f"The demo's CLIP teacher: a tiny open_clip model fitted on {ds.name}'s image-caption pairs "
                    "(offline machines cannot download pretrained CLIP). Zero-shot R@1 on the held-out split.",
    )
    def tiny_clip(context: dg.AssetExecutionContext, config: TinyTeacherConfig, cache: CachePaths) -> dg.MaterializeResult:
        started = time.perf_counter()
        keys = sorted(context.instance.get_dynamic_partitions(shards.name))
        frame_paths = [cache.dataset_dir(ds.name) / "frame_cache" / f"{k}.parquet" for k in keys]
        shard_paths = [cache.shard_path(ds.name, k) for k in keys]
        missing = [str(p) for p in frame_paths if not p.exists()]
        if missing:
            raise dg.Failure(f"frame_cache missing for {len(missing)} shard(s), e.g. {missing[0]}: build {ds.name}'s shards first")
        weights, config_path = cache.tiny_teacher_paths()
        report_path = weights.with_suffix(".report.json")
        fingerprint = hashlib.sha256(json.dumps({
            "code": CODE_VERSION, "config": config.model_dump(), "model": TINY_CLIP_CONFIG,
            "frames": [read_parquet_metadata(p)["clipkt.fingerprint"] for p in frame_paths],
            "shards": [read_parquet_metadata(p)["clipkt.digest"] for p in shard_paths]}, sort_keys=True).encode()).hexdigest()[:16]
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        skipped = (report.get("fingerprint") == fingerprint and weights.exists()
                   and file_sha256(weights) == report.get("weights_sha256"))
        if not skipped:
            train_x, train_c, _ = load_pairs(frame_paths, shard_paths, config.train_splits)
            eval_x, eval_c, _ = load_pairs(frame_paths, shard_paths, config.eval_splits)
            eval_x, eval_c = eval_x[:config.eval_pairs], eval_c[:config.eval_pairs]
            if len(train_c) < 2 or len(eval_c) < 2:
                raise dg.Failure(f"{ds.name}: {len(train_c)} train / {len(eval_c)} eval image-caption pairs; "
                                 f"need at least 2 of each (splits {config.train_splits} / {config.eval_splits})")
            fit_start = time.perf_counter()
            model, losses = fit_tiny_clip(train_x, train_c, config.fit(),
                                          progress=lambda e, l: context.log.info(f"epoch {e + 1}: loss {l:.4f}"))
            fit_s = time.perf_counter() - fit_start
            recall = retrieval_recall(model, eval_x, eval_c)
            with atomic_path(config_path) as tmp:
                tmp.write_text(json.dumps(TINY_CLIP_CONFIG, indent=1))
            with atomic_path(weights) as tmp:
                sha = save_weights(model, tmp)
            report = {"fingerprint": fingerprint, "weights_sha256": sha, "train_pairs": len(train_c),
                      "eval_pairs": len(eval_c), "fit_seconds": round(fit_s, 1), "losses": losses,
                      "recall": recall, "fit": asdict(config.fit())}
            with atomic_path(report_path) as tmp:
                tmp.write_text(json.dumps(report, indent=1))
        r = report["recall"]
        table = [{"direction": d, **{f"R@{k}": round(r[f"{d}_R@{k}"], 3) for k in (1, 5, 10)},
                  "median rank": r[f"{d}_median_rank"], "chance R@1": round(1 / report["eval_pairs"], 4)}
                 for d in ("i2t", "t2i")]
        return dg.MaterializeResult(
            data_version=dg.DataVersion(report["weights_sha256"][:16]),
            metadata={"weights": dg.MetadataValue.path(str(weights)), "weights_sha256": report["weights_sha256"],
                      "model_config": dg.MetadataValue.path(str(config_path)),
                      "train_pairs": report["train_pairs"], "eval_pairs": report["eval_pairs"],
                      "i2t_R@1": round(r["i2t_R@1"], 4), "t2i_R@1": round(r["t2i_R@1"], 4),
                      "zero_shot_recall": dg.MetadataValue.md(markdown_table(table)),
                      "fit_seconds": report["fit_seconds"], "final_loss": round(report["losses"][-1], 4),
                      "loss_curve": dg.MetadataValue.md(f"![loss](data:image/png;base64,{_loss_plot(report['losses'])})"),
                      "skipped_up_to_date": skipped, "seconds": round(time.perf_counter() - started, 2)},
        )

    return tiny_clip
