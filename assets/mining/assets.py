"""Dagster assets of the mining stage:

- `teacher/tiny_clip`: the demo's CLIP teacher, a tiny open_clip model fitted on a Places-format
  dataset's image-caption pairs (offline machines cannot download pretrained CLIP).
- `<dataset>/clip_image_embeddings`, `<dataset>/clip_text_embeddings` (per shard): the frozen
  teacher's embedding of every cached frame, and of every caption (or label prompt).
- `<dataset>/neighbor_tables`: seed 000's org/t2t/t2i/i2t/i2i top-k tables (FAISS), plus the
  oracle table and false-negative scores where the dataset declares semantic keys.
"""

import time
from collections import Counter

import dagster as dg
import pyarrow.parquet as pq

from assets.core.atomic_io import read_parquet_metadata
from assets.core.markdown import bullets, markdown_table
from assets.core.plots import png_markdown
from assets.ingest.dataset_config import DatasetConfig
from assets.ingest.semantic_keys import load_semantic_keys
from assets.mining.embedding_store import embedding_problems, stored_fingerprint, write_embeddings
from assets.mining.neighbor_tables import table_problems
from assets.mining.table_set import CODE_VERSION as TABLES_CODE_VERSION, TableSetParams, build_table_set, read_summary
from assets.mining.teacher_embedding import (CODE_VERSION as EMBEDDING_CODE_VERSION, digest, frame_embedding_rows,
                                             teacher_key, text_embedding_rows)
from assets.mining.tiny_teacher import (CODE_VERSION as TINY_CODE_VERSION, TINY_TEACHER_FIT_FIELDS, FitConfig,
                                        TinyTeacherParams, build_tiny_teacher, loss_plot, recall_table)
from pipelines.executors import GPU_OP_TAGS
from pipelines.resources import CachePaths, ClipTeacherResource

TINY_TEACHER_KEY = dg.AssetKey(["teacher", "tiny_clip"])
UNIT_NORM_CHECK = "finite_unit_norm"
IDS_CHECK, ORDER_CHECK = "neighbor_ids_valid", "ranks_sorted_by_score"
_TINY, _TABLES = TinyTeacherParams(), TableSetParams()


# ----------------------------------------------------------------------------- teacher/tiny_clip


class TinyTeacherConfig(dg.Config):
    train_splits: list[str] = list(_TINY.train_splits)
    eval_splits: list[str] = list(_TINY.eval_splits)  # Places audio captions: val; others: test
    eval_pairs: int = _TINY.eval_pairs  # the papers' 1000-item evaluation protocol
    epochs: int = _TINY.fit.epochs
    batch_size: int = _TINY.fit.batch_size
    lr: float = _TINY.fit.lr
    weight_decay: float = _TINY.fit.weight_decay
    warmup_steps: int = _TINY.fit.warmup_steps
    threads: int = _TINY.fit.threads
    seed: int = _TINY.fit.seed

    def params(self) -> TinyTeacherParams:
        fit = {k: getattr(self, k) for k in TINY_TEACHER_FIT_FIELDS}
        return TinyTeacherParams(tuple(self.train_splits), tuple(self.eval_splits), self.eval_pairs,
                                 FitConfig(**fit))


def build_tiny_teacher_asset(ds: DatasetConfig, shards: dg.DynamicPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=TINY_TEACHER_KEY, group_name="teacher", kinds={"pytorch"}, code_version=TINY_CODE_VERSION,
        deps=[dg.AssetKey([ds.name, "frame_cache"]), dg.AssetKey([ds.name, "clip_shards"])],
        description=f"The demo's CLIP teacher: a tiny open_clip model fitted on {ds.name}'s image-caption pairs "
                    "(offline machines cannot download pretrained CLIP). Zero-shot R@1 on the held-out split.",
    )
    def tiny_clip(context: dg.AssetExecutionContext, config: TinyTeacherConfig, cache: CachePaths) -> dg.MaterializeResult:
        started, layout = time.perf_counter(), cache.layout()
        keys = sorted(context.instance.get_dynamic_partitions(shards.name))
        frame_paths = [layout.stage_path(ds.name, "frame_cache", k) for k in keys]
        missing = [str(p) for p in frame_paths if not p.exists()]
        if missing:
            raise dg.Failure(f"frame_cache missing for {len(missing)} shard(s), e.g. {missing[0]}: build {ds.name}'s shards first")
        weights, config_path = layout.tiny_teacher_paths()
        try:
            report, skipped = build_tiny_teacher(frame_paths, [layout.shard_path(ds.name, k) for k in keys], weights,
                                                 config_path, config.params(), log=context.log.info)
        except ValueError as e:
            raise dg.Failure(f"{ds.name}: {e}") from e
        r = report["recall"]
        return dg.MaterializeResult(
            data_version=dg.DataVersion(report["weights_sha256"][:16]),
            metadata={"weights": dg.MetadataValue.path(str(weights)), "weights_sha256": report["weights_sha256"],
                      "model_config": dg.MetadataValue.path(str(config_path)),
                      "train_pairs": report["train_pairs"], "eval_pairs": report["eval_pairs"],
                      "i2t_R@1": round(r["i2t_R@1"], 4), "t2i_R@1": round(r["t2i_R@1"], 4),
                      "zero_shot_recall": dg.MetadataValue.md(markdown_table(recall_table(report))),
                      "fit_seconds": report["fit_seconds"], "final_loss": round(report["losses"][-1], 4),
                      "loss_curve": dg.MetadataValue.md(png_markdown(loss_plot(report["losses"]), "loss")),
                      "skipped_up_to_date": skipped, "seconds": round(time.perf_counter() - started, 2)},
        )

    return tiny_clip


# ----------------------------------------------------------------------------- embeddings


class TextEmbeddingConfig(dg.Config):
    prompt: str = "a video of {label}"  # for clips with labels but no caption; {label} is replaced
    labels: str = "each"  # each: one prompt per label (AudioSet: several per clip) | joined: one for all


def _embedding_result(path, rows: list[dict], teacher, started: float, skipped: bool, fingerprint: str,
                      extra: dict) -> dg.MaterializeResult:
    statuses = Counter(r["status"] if r["status"] == "ok" else r["error_kind"] for r in rows)
    problems = embedding_problems(path)
    errors = [{"clip_id": r["clip_id"], "kind": r["error_kind"], "error": r["error"]}
              for r in rows if r["status"] != "ok"][:10]
    return dg.MaterializeResult(
        data_version=dg.DataVersion(fingerprint),
        metadata={"path": dg.MetadataValue.path(str(path)), "bytes": path.stat().st_size, "clips": len(rows),
                  "ok": statuses.get("ok", 0), "by_status": dict(sorted(statuses.items())),
                  "dim": teacher.embed_dim, "teacher": teacher.describe(), "skipped_up_to_date": skipped,
                  "seconds": round(time.perf_counter() - started, 2),
                  "first_errors": dg.MetadataValue.md(markdown_table(errors))} | extra,
        check_results=[dg.AssetCheckResult(check_name=UNIT_NORM_CHECK, passed=not problems,
                                           metadata={"problems": len(problems), "first": dg.MetadataValue.md(bullets(problems))})],
    )


def _stored_rows(path) -> list[dict]:
    return pq.read_table(path, columns=["clip_id", "status", "error_kind", "error"]).to_pylist()


def _embedding_asset(ds: DatasetConfig, shards, name: str, source: str, teacher_asset, description: str, **kwargs):
    key = dg.AssetKey([ds.name, name])
    return dg.asset(
        key=key, group_name=ds.name, kinds={"pytorch", "parquet"}, partitions_def=shards,
        code_version=EMBEDDING_CODE_VERSION, deps=[dg.AssetKey([ds.name, source]), *([teacher_asset] if teacher_asset else [])],
        check_specs=[dg.AssetCheckSpec(UNIT_NORM_CHECK, asset=key, description="every stored vector is finite and unit-norm")],
        op_tags=GPU_OP_TAGS, description=description, **kwargs)


def build_image_embeddings_asset(ds: DatasetConfig, shards: dg.DynamicPartitionsDefinition,
                                 teacher_asset: dg.AssetKey | None = None) -> dg.AssetsDefinition:
    @_embedding_asset(ds, shards, "clip_image_embeddings", "frame_cache", teacher_asset,
                      "The CLIP teacher's embedding of every cached frame: L x D unit vectors per clip.")
    def clip_image_embeddings(context: dg.AssetExecutionContext, cache: CachePaths,
                              teacher: ClipTeacherResource) -> dg.MaterializeResult:
        started, shard, layout = time.perf_counter(), context.partition_key, cache.layout()
        src = layout.stage_path(ds.name, "frame_cache", shard)
        if not src.exists():
            raise dg.Failure(f"{src} does not exist: materialise frame_cache for shard {shard} first")
        model = teacher.load()
        fingerprint = digest({"code": EMBEDDING_CODE_VERSION, "frames": read_parquet_metadata(src)["clipkt.fingerprint"],
                              "teacher": teacher_key(model)})
        path = layout.stage_path(ds.name, "clip_image_embeddings", shard)
        if stored_fingerprint(path) == fingerprint:
            return _embedding_result(path, _stored_rows(path), model, started, True, fingerprint, {})
        frames = pq.read_table(src, columns=["clip_id", "split", "status", "error_kind", "error", "frames"])
        encode_start = time.perf_counter()
        rows = frame_embedding_rows(frames, model.encode_images, model.spec.batch_size, str(src))
        encode_s = time.perf_counter() - encode_start
        n_frames = sum(r["count"] for r in rows)
        write_embeddings(rows, path, model.embed_dim, model.describe(), {"source": "frame_cache"}, fingerprint)
        return _embedding_result(path, rows, model, started, False, fingerprint,
                                 {"frames": n_frames, "frames_per_s": round(n_frames / max(encode_s, 1e-9), 1)})

    return clip_image_embeddings


def build_text_embeddings_asset(ds: DatasetConfig, shards: dg.DynamicPartitionsDefinition,
                                teacher_asset: dg.AssetKey | None = None) -> dg.AssetsDefinition:
    @_embedding_asset(ds, shards, "clip_text_embeddings", "clip_shards", teacher_asset,
                      "The CLIP teacher's embedding of every caption of a clip (or of a prompt made from its labels).")
    def clip_text_embeddings(context: dg.AssetExecutionContext, config: TextEmbeddingConfig, cache: CachePaths,
                             teacher: ClipTeacherResource) -> dg.MaterializeResult:
        started, shard, layout = time.perf_counter(), context.partition_key, cache.layout()
        if config.labels not in ("each", "joined") or "{label}" not in config.prompt:
            raise dg.Failure(f"clip_text_embeddings config: labels={config.labels!r} (each | joined), "
                             f"prompt={config.prompt!r} (must contain {{label}})")
        src = layout.shard_path(ds.name, shard)
        model = teacher.load()
        fingerprint = digest({"code": EMBEDDING_CODE_VERSION, "shard": read_parquet_metadata(src)["clipkt.digest"],
                              "teacher": teacher_key(model), "prompt": config.prompt, "labels": config.labels})
        path = layout.stage_path(ds.name, "clip_text_embeddings", shard)
        if stored_fingerprint(path) == fingerprint:
            return _embedding_result(path, _stored_rows(path), model, started, True, fingerprint, {})
        members = pq.read_table(src, columns=["clip_id", "split", "status", "labels", "label_names", "captions"]).to_pylist()
        rows, n_texts = text_embedding_rows(members, model.encode_texts, config.prompt, config.labels)
        write_embeddings(rows, path, model.embed_dim, model.describe(),
                         {"prompt": config.prompt, "labels": config.labels}, fingerprint)
        examples = [{"clip_id": r["clip_id"], "texts": " / ".join(r["texts"][:5])} for r in rows[:5]]
        return _embedding_result(path, rows, model, started, False, fingerprint,
                                 {"texts": n_texts, "texts_per_clip": round(n_texts / max(1, len(rows)), 2),
                                  "examples": dg.MetadataValue.md(markdown_table(examples))})

    return clip_text_embeddings


# ----------------------------------------------------------------------------- neighbor_tables


class NeighborTablesConfig(dg.Config):
    k_max: int = _TABLES.k_max  # neighbours per query (seed 000's k-ablation: 10 ... 1000); capped at clips - 1
    splits: list[str] = list(_TABLES.splits)  # clips mined (queries = keys)
    tables: list[str] = list(_TABLES.tables)  # empty: every table the data allows (oracle with semantic keys)
    image_pooling: str = _TABLES.image_pooling  # middle (frame L // 2) | mean (of its frames)
    text_pooling: str = _TABLES.text_pooling  # several captions: mean | first
    index: str = _TABLES.index  # flat (exact) | ivf | hnsw (approximate; recall@k against exact is measured)
    nlist: int = _TABLES.nlist  # ivf lists; 0 -> about 4 sqrt(n)
    nprobe: int = _TABLES.nprobe
    hnsw_m: int = _TABLES.hnsw_m
    ef_search: int = _TABLES.ef_search
    use_gpu: str = _TABLES.use_gpu  # auto (when faiss-gpu and a GPU are present) | yes | no
    chunk_rows: int = _TABLES.chunk_rows  # queries per search call: bounds memory
    false_negative_k: int = _TABLES.false_negative_k  # batch statistic: a batch-mate among the top-k
    batch_trials: int = _TABLES.batch_trials
    recall_queries: int = _TABLES.recall_queries
    examples: int = _TABLES.examples
    zero_shot_splits: list[str] = list(_TABLES.zero_shot_splits)  # the teacher's R@1 is reported on these clips
    zero_shot_clips: int = _TABLES.zero_shot_clips
    seed: int = _TABLES.seed

    def params(self) -> TableSetParams:
        return TableSetParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.model_dump().items()})


def build_neighbor_tables_asset(ds: DatasetConfig, shards: dg.DynamicPartitionsDefinition) -> dg.AssetsDefinition:
    has_images = ds.format != "audiocaps"
    key = dg.AssetKey([ds.name, "neighbor_tables"])
    inputs = ["clip_text_embeddings", *(["clip_image_embeddings"] if has_images else [])]

    @dg.asset(
        key=key, group_name=ds.name, kinds={"faiss", "parquet"}, code_version=TABLES_CODE_VERSION,
        deps=[dg.AssetKey([ds.name, i]) for i in inputs], op_tags=GPU_OP_TAGS,  # faiss: every GPU the worker sees
        check_specs=[dg.AssetCheckSpec(IDS_CHECK, asset=key, description="neighbour ids are clip rows (-1 only as padding "
                                                                      "at a row's tail); no self-matches outside org"),
                     dg.AssetCheckSpec(ORDER_CHECK, asset=key, description="every query's neighbours are sorted by score")],
        description="Seed 000's CLIP-mined neighbours: org, t2t, t2i, i2t, i2i top-k tables (FAISS inner product)"
                    + ("" if has_images else "; audio-only data: org and t2t")
                    + ("; oracle from the semantic keys, and every table's false negatives against them."
                       if ds.semantic_keys else "."),
    )
    def neighbor_tables(context: dg.AssetExecutionContext, config: NeighborTablesConfig,
                        cache: CachePaths) -> dg.MaterializeResult:
        started, layout, params = time.perf_counter(), cache.layout(), config.params()
        keys = sorted(context.instance.get_dynamic_partitions(shards.name))
        paths = {i: [layout.stage_path(ds.name, i, k) for k in keys] for i in inputs}
        missing = [str(p) for ps in paths.values() for p in ps if not p.exists()]
        if missing:
            raise dg.Failure(f"{len(missing)} embedding shard file(s) missing, e.g. {missing[0]}: "
                             "materialise the embedding job for every shard first")
        try:
            params.validate()
            out_dir, skipped = build_table_set(ds.name, paths["clip_text_embeddings"], paths.get("clip_image_embeddings"),
                                               layout.neighbor_tables_root(ds.name), params, log=context.log.info,
                                               keys=load_semantic_keys(ds))
        except ValueError as e:
            raise dg.Failure(str(e)) from e
        summary = read_summary(out_dir)
        problems = [table_problems(out_dir / f"{t}.parquet", summary["clips"], t != "org") for t in summary["tables"]]
        ids_bad, order_bad = [p for t in problems for p in t["ids"]], [p for t in problems for p in t["order"]]
        metadata = dict(summary["metadata"]) | {"path": dg.MetadataValue.path(str(out_dir)), "skipped_up_to_date": skipped,
                                                "seconds": round(time.perf_counter() - started, 2)}
        for k in ("similarity_curve", "key_false_negatives", "batch_fraction", "examples", "zero_shot", "approx_recall"):
            if k in metadata:
                metadata[k] = dg.MetadataValue.md(metadata[k])
        return dg.MaterializeResult(
            data_version=dg.DataVersion(out_dir.name), metadata=metadata,
            check_results=[dg.AssetCheckResult(check_name=IDS_CHECK, passed=not ids_bad, metadata={"first": dg.MetadataValue.md(bullets(ids_bad))}),
                           dg.AssetCheckResult(check_name=ORDER_CHECK, passed=not order_bad,
                                               metadata={"first": dg.MetadataValue.md(bullets(order_bad))})])

    return neighbor_tables
