"""neighbor_tables: the org/t2t/t2i/i2t/i2i tables of one dataset (thin Dagster wrapper).

Reads every shard's clip_image_embeddings and clip_text_embeddings, keeps the clips of the
configured splits that have both (text only for audio-only datasets), pools each clip to one
image vector (middle frame or mean of frames) and one text vector (mean or first caption),
and calls `assets.neighbor_tables.mine_tables`.

Layout: `<cache>/<dataset>/neighbor_tables/<fingerprint>/{clips,org,t2t,t2i,i2t,i2i}.parquet`
plus `summary.json`; `<cache>/<dataset>/neighbor_tables/current.json` names the complete
set in use and is replaced atomically only after every table is written, so an interrupted
run leaves the previous set in use. `clips.parquet` maps table row -> clip_id, split, shard
and text. Unchanged inputs and config: nothing is recomputed.
"""

import hashlib
import json
import shutil
import time

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from assets.atomic_io import atomic_path, read_parquet_metadata, write_parquet_atomic
from assets.dataset_config import DatasetConfig
from assets.plots import figure_png, png_markdown, subplots
from assets.embedding_store import pool, read_embeddings
from assets.manifest import markdown_table
from assets.neighbor_search import SearchParams
from assets.neighbor_tables import CROSS_TABLES, TABLES, MiningParams, mine_tables, table_problems, zero_shot_r1
from pipelines.resources import CachePaths

CODE_VERSION = "1"
IDS_CHECK, ORDER_CHECK = "neighbor_ids_valid", "ranks_sorted_by_score"


class NeighborTablesConfig(dg.Config):
    k_max: int = 100  # neighbours per query (seed 000's k-ablation: 10 ... 1000); capped at clips - 1
    splits: list[str] = ["train", "balanced_train", "unbalanced_train"]  # clips mined (queries = keys)
    tables: list[str] = list(TABLES)
    image_pooling: str = "middle"  # which image stands for a clip: middle (frame L // 2) | mean (of its frames)
    text_pooling: str = "mean"  # several captions: mean | first
    index: str = "flat"  # flat (exact) | ivf | hnsw (approximate; recall@k against exact is measured)
    nlist: int = 0  # ivf lists; 0 -> about 4 sqrt(n)
    nprobe: int = 16
    hnsw_m: int = 32
    ef_search: int = 128
    use_gpu: str = "auto"  # auto (when faiss-gpu and a GPU are present) | yes | no
    chunk_rows: int = 4096  # queries per search call: bounds memory
    false_negative_k: int = 10  # for the batch statistic: a batch-mate among the top-k is a would-be false negative
    batch_trials: int = 200
    recall_queries: int = 1000
    examples: int = 3
    zero_shot_splits: list[str] = ["test", "eval", "val"]  # the teacher's R@1 is reported on these clips
    zero_shot_clips: int = 1000
    seed: int = 0

    def mining(self) -> MiningParams:
        gpu = {"auto": None, "yes": True, "no": False}[self.use_gpu]
        return MiningParams(
            search=SearchParams(k=self.k_max, index=self.index, nlist=self.nlist, nprobe=self.nprobe,
                                hnsw_m=self.hnsw_m, ef_search=self.ef_search, chunk_rows=self.chunk_rows,
                                use_gpu=gpu, seed=self.seed),
            false_negative_k=self.false_negative_k, batch_trials=self.batch_trials,
            recall_queries=self.recall_queries, examples=self.examples, seed=self.seed)


def load_clip_vectors(paths_text: list, paths_image: list | None, image_pooling: str, text_pooling: str):
    """(clips table, image matrix or None, text matrix, skipped counts) over the shards' embedding files.

    A clip is kept when its text embedding is ok and, for datasets with images, its image embedding too."""
    rows, images, texts, skipped = [], [], [], {"no_text": 0, "no_image": 0}
    for s, text_path in enumerate(paths_text):
        t_table, t_vecs = read_embeddings(text_path)
        image_of = {}
        if paths_image is not None:
            i_table, i_vecs = read_embeddings(paths_image[s])
            image_of = {c: v for c, st, v in zip(i_table.column("clip_id").to_pylist(),
                                                 i_table.column("status").to_pylist(), i_vecs) if st == "ok"}
        shard = text_path.stem
        for clip_id, split, status, ts, v in zip(*(t_table.column(c).to_pylist() for c in
                                                   ("clip_id", "split", "status", "texts")), t_vecs):
            if status != "ok":
                skipped["no_text"] += 1
                continue
            if paths_image is not None:
                if clip_id not in image_of:
                    skipped["no_image"] += 1
                    continue
                images.append(pool(image_of[clip_id], image_pooling))
            texts.append(pool(v, text_pooling))
            rows.append({"clip_id": clip_id, "split": split, "shard": shard, "text": " | ".join(ts)})
    dim = texts[0].shape[0] if texts else 0
    clips = pa.Table.from_pylist(rows, schema=pa.schema([("clip_id", pa.string()), ("split", pa.string()),
                                                         ("shard", pa.string()), ("text", pa.string())]))
    img = np.stack(images).astype(np.float32) if paths_image is not None and images else None
    txt = np.stack(texts).astype(np.float32) if texts else np.zeros((0, dim), np.float32)
    return clips, img, txt, skipped


def _curve_plot(summaries) -> bytes:
    fig, ax = subplots(figsize=(5.5, 3.2), dpi=80)
    for s in summaries:
        ax.plot(list(s.curve), list(s.curve.values()), marker="o", label=s.name)
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("mean of the top-K similarities")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return figure_png(fig)


def _examples_md(summaries, texts: list[str], top: int = 3) -> str:
    rows = []
    for s in summaries:
        for q, (ids, scores) in sorted(s.examples.items()):
            neighbours = "<br>".join(f"{scores[j]:.3f} {texts[ids[j]][:80]}" for j in range(min(top, len(ids))))
            rows.append({"table": s.name, "query": f"{q}: {texts[q][:80]}", f"top {top}": neighbours})
    return markdown_table(rows)


def _fingerprint(paths: list, config: NeighborTablesConfig) -> str:
    parts = {"code": CODE_VERSION, "config": config.model_dump(),
             "inputs": [read_parquet_metadata(p)["clipkt.fingerprint"] for p in paths]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _validate(config: NeighborTablesConfig) -> None:
    """Config errors before any work, each naming the field and its choices."""
    choices = {"image_pooling": ("middle", "mean"), "text_pooling": ("mean", "first"), "index": ("flat", "ivf", "hnsw"),
               "use_gpu": ("auto", "yes", "no")}
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise dg.Failure(f"neighbor_tables config: {name}={getattr(config, name)!r}; choose from {list(allowed)}")
    unknown = set(config.tables) - set(TABLES)
    if unknown:
        raise dg.Failure(f"neighbor_tables config: unknown table(s) {sorted(unknown)}; choose from {list(TABLES)}")
    if not 1 <= config.k_max <= 32768:
        raise dg.Failure(f"neighbor_tables config: k_max={config.k_max}; must be in [1, 32768]")


def _bullets(problems: list[str]) -> dg.MetadataValue:
    return dg.MetadataValue.md("\n".join(f"- {p}" for p in problems[:10]))


def current_tables_dir(cache: CachePaths, dataset: str):
    """The directory of the complete table set in use (raises FileNotFoundError before the first build)."""
    root = cache.dataset_dir(dataset) / "neighbor_tables"
    return root / json.loads((root / "current.json").read_text())["fingerprint"]


def build_neighbor_tables_asset(ds: DatasetConfig, shards: dg.DynamicPartitionsDefinition) -> dg.AssetsDefinition:
    has_images = ds.format != "audiocaps"
    key = dg.AssetKey([ds.name, "neighbor_tables"])
    inputs = ["clip_text_embeddings", *(["clip_image_embeddings"] if has_images else [])]

    @dg.asset(
        key=key, group_name=ds.name, kinds={"faiss", "parquet"}, code_version=CODE_VERSION,
        deps=[dg.AssetKey([ds.name, i]) for i in inputs],
        check_specs=[dg.AssetCheckSpec(IDS_CHECK, asset=key, description="neighbour ids are clip rows; no self-matches outside org"),
                     dg.AssetCheckSpec(ORDER_CHECK, asset=key, description="every query's neighbours are sorted by score")],
        description="Seed 000's CLIP-mined neighbours: org, t2t, t2i, i2t, i2i top-k tables (FAISS inner product)"
                    + ("." if has_images else "; audio-only data: org and t2t."),
    )
    def neighbor_tables(context: dg.AssetExecutionContext, config: NeighborTablesConfig,
                        cache: CachePaths) -> dg.MaterializeResult:
        started = time.perf_counter()
        _validate(config)
        keys = sorted(context.instance.get_dynamic_partitions(shards.name))
        paths = {i: [cache.dataset_dir(ds.name) / i / f"{k}.parquet" for k in keys] for i in inputs}
        missing = [str(p) for ps in paths.values() for p in ps if not p.exists()]
        if missing:
            raise dg.Failure(f"{len(missing)} embedding shard file(s) missing, e.g. {missing[0]}: "
                             "materialise the embedding job for every shard first")
        root = cache.dataset_dir(ds.name) / "neighbor_tables"
        fingerprint = _fingerprint([p for ps in paths.values() for p in ps], config)
        out_dir = root / fingerprint
        summary_path = out_dir / "summary.json"
        skipped = summary_path.exists() and (root / "current.json").exists() and \
            json.loads((root / "current.json").read_text())["fingerprint"] == fingerprint
        if not skipped:
            summary = _build(context, ds, config, paths, out_dir, has_images)
            with atomic_path(summary_path) as tmp:
                tmp.write_text(json.dumps(summary, indent=1))
            with atomic_path(root / "current.json") as tmp:
                tmp.write_text(json.dumps({"fingerprint": fingerprint}))
            for old in root.iterdir():  # earlier sets (and leftovers of interrupted runs)
                if old.is_dir() and old.name != fingerprint:
                    shutil.rmtree(old, ignore_errors=True)
        summary = json.loads(summary_path.read_text())
        n = summary["clips"]
        problems = {t: table_problems(out_dir / f"{t}.parquet", n, t != "org") for t in summary["tables"]}
        ids_bad = [p for t in problems.values() for p in t["ids"]]
        order_bad = [p for t in problems.values() for p in t["order"]]
        metadata = dict(summary["metadata"]) | {
            "path": dg.MetadataValue.path(str(out_dir)), "skipped_up_to_date": skipped,
            "seconds": round(time.perf_counter() - started, 2)}
        for k in ("similarity_curve", "batch_fraction", "examples", "zero_shot", "approx_recall"):
            if k in metadata:
                metadata[k] = dg.MetadataValue.md(metadata[k])
        return dg.MaterializeResult(
            data_version=dg.DataVersion(fingerprint), metadata=metadata,
            check_results=[dg.AssetCheckResult(check_name=IDS_CHECK, passed=not ids_bad, metadata={"first": _bullets(ids_bad)}),
                           dg.AssetCheckResult(check_name=ORDER_CHECK, passed=not order_bad,
                                               metadata={"first": _bullets(order_bad)})])

    return neighbor_tables


def _build(context, ds: DatasetConfig, config: NeighborTablesConfig, paths: dict, out_dir, has_images: bool) -> dict:
    clips, images, texts, skipped = load_clip_vectors(
        paths["clip_text_embeddings"], paths.get("clip_image_embeddings"), config.image_pooling, config.text_pooling)
    split = np.asarray(clips.column("split").to_pylist(), dtype=object)
    mined = np.flatnonzero(np.isin(split, config.splits))
    if len(mined) < 2:
        raise dg.Failure(f"{ds.name}: {len(mined)} clips with embeddings in splits {config.splits}: nothing to mine")
    texts_of = clips.column("text").to_pylist()
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    mined_clips = clips.take(mined)
    write_parquet_atomic(mined_clips.add_column(0, "row", pa.array(np.arange(len(mined), dtype=np.int32))),
                         out_dir / "clips.parquet", {"clipkt.dataset": ds.name})
    summaries = mine_tables(None if images is None else images[mined], texts[mined], out_dir, config.mining(),
                            tuple(config.tables), log=context.log.info)
    cross = [s for s in summaries.values() if s.name in CROSS_TABLES]
    mined_texts = [texts_of[i] for i in mined]
    meta: dict = {
        "clips": len(mined), "k": max((s.k for s in cross), default=0), "splits": config.splits,
        "skipped_clips": skipped, "tables": {s.name: s.rows for s in summaries.values()},
        "bytes": sum((out_dir / f"{t}.parquet").stat().st_size for t in summaries),
        "index": config.index, "image_pooling": config.image_pooling if has_images else "none",
        "org_mean_score": float(np.nanmean(pq.read_table(out_dir / "org.parquet").column("score").to_numpy()))
        if "org" in summaries and has_images else None,
    }
    if cross:
        meta["similarity_curve"] = (png_markdown(_curve_plot(cross), "average of the top-K similarity") + "\n\n"
                                    + markdown_table([{"table": s.name} | {f"K={K}": round(v, 4) for K, v in s.curve.items()}
                                                      for s in cross]))
        meta["batch_fraction"] = (f"Fraction of clips with at least one of their top-{config.false_negative_k} "
                                  "neighbours in a random batch of B (would-be false negatives)\n\n"
                                  + markdown_table([{"table": s.name} | {f"B={b}": round(f, 3) for b, f in s.batch_fraction.items()}
                                                    for s in cross]))
        meta["examples"] = _examples_md(cross, mined_texts)
        meta["false_negative_k"] = config.false_negative_k
        meta["same_neighbour_in_batch_of_128"] = {s.name: round(s.batch_fraction[128], 4)
                                                  for s in cross if 128 in s.batch_fraction}
    if config.index != "flat":
        meta["approx_recall"] = markdown_table([{"table": s.name, f"recall@{s.k}": round(s.recall, 4),
                                                 "queries": min(len(mined), config.recall_queries)} for s in cross])
    held = np.flatnonzero(np.isin(split, config.zero_shot_splits))[:config.zero_shot_clips]
    if images is not None and len(held) >= 2:
        z = zero_shot_r1(images[held], texts[held], [texts_of[i] for i in held])
        meta["zero_shot"] = markdown_table([{k: round(v, 4) if isinstance(v, float) else v for k, v in z.items()}])
        meta["teacher_i2t_R@1"] = round(z["i2t_R@1"], 4)
    return {"clips": len(mined), "tables": list(summaries), "metadata": meta}
