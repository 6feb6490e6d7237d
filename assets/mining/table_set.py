"""A dataset's complete set of neighbour tables, built from its per-shard embedding files.

Reads every shard's clip_image_embeddings and clip_text_embeddings, keeps the clips of the
configured splits that have both (text only for audio-only datasets), pools each clip to one
image vector (middle frame or mean of frames) and one text vector (mean or first caption),
mines the tables (`assets.mining.neighbor_tables.mine_tables`) and returns the summary the UI
shows (the top-K similarity curve, the batch statistic, examples, the teacher's zero-shot R@1).
Where the dataset declares semantic keys (`assets.ingest.semantic_keys`), the set also holds the
`oracle` table and the summary scores every table's false negatives against the keys
(`assets.mining.false_negatives`); the keys are part of the fingerprint.

Layout: `<cache>/<dataset>/neighbor_tables/<fingerprint>/{clips,org,t2t,t2i,i2t,i2i,oracle}.parquet`
plus `summary.json`; `<cache>/<dataset>/neighbor_tables/current.json` names the complete
set in use and is replaced atomically only after every table is written, so an interrupted
run leaves the previous set in use. `clips.parquet` maps table row -> clip_id, split, shard
and text. Unchanged inputs and parameters: nothing is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from assets.core.atomic_io import read_parquet_metadata, write_json_atomic, write_parquet_atomic
from assets.core.markdown import markdown_table
from assets.core.plots import figure_png, png_markdown, subplots
from assets.ingest.semantic_keys import group_ids
from assets.mining.embedding_store import pool, read_embeddings
from assets.mining.false_negatives import same_key_batch_share
from assets.mining.neighbor_search import SearchParams
from assets.mining.neighbor_tables import CROSS_TABLES, MiningParams, mine_tables, tables_for, zero_shot_r1

CODE_VERSION = "2"  # 2: exact ties broken by a seeded order of the keys; oracle table and false-negative scores
SAME_KEY_BATCHES = (64, 128)  # same_key_in_batch_of_<B>: the exact share of clips meeting a same-key clip
_SEARCH, _MINING = SearchParams(), MiningParams()
CHOICES = {"image_pooling": ("middle", "mean"), "text_pooling": ("mean", "first"), "index": ("flat", "ivf", "hnsw"),
           "use_gpu": ("auto", "yes", "no")}


@dataclass(frozen=True)
class TableSetParams:
    k_max: int = _SEARCH.k  # neighbours per query (seed 000's k-ablation: 10 ... 1000); capped at clips - 1
    splits: tuple[str, ...] = ("train", "balanced_train", "unbalanced_train")  # clips mined (queries = keys)
    tables: tuple[str, ...] = ()  # none named: every table the data allows (oracle only with semantic keys)
    image_pooling: str = "middle"  # which image stands for a clip: middle (frame L // 2) | mean (of its frames)
    text_pooling: str = "mean"  # several captions: mean | first
    index: str = _SEARCH.index  # flat (exact) | ivf | hnsw (approximate; recall@k against exact is measured)
    nlist: int = _SEARCH.nlist  # ivf lists; 0 -> about 4 sqrt(n)
    nprobe: int = _SEARCH.nprobe
    hnsw_m: int = _SEARCH.hnsw_m
    ef_search: int = _SEARCH.ef_search
    use_gpu: str = "auto"  # auto (when faiss-gpu and a GPU are present) | yes | no
    chunk_rows: int = _SEARCH.chunk_rows  # queries per search call: bounds memory
    false_negative_k: int = _MINING.false_negative_k  # batch statistic: a batch-mate among the top-k
    batch_trials: int = _MINING.batch_trials
    recall_queries: int = _MINING.recall_queries
    examples: int = _MINING.examples
    zero_shot_splits: tuple[str, ...] = ("test", "eval", "val")  # the teacher's R@1 is reported on these clips
    zero_shot_clips: int = 1000
    seed: int = 0

    def validate(self) -> None:
        """Config errors before any work, each naming the field and its choices."""
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"neighbor_tables config: {name}={getattr(self, name)!r}; choose from {list(allowed)}")
        if not 1 <= self.k_max <= 32768:
            raise ValueError(f"neighbor_tables config: k_max={self.k_max}; must be in [1, 32768]")

    def mining(self) -> MiningParams:
        gpu = {"auto": None, "yes": True, "no": False}[self.use_gpu]
        return MiningParams(
            search=SearchParams(k=self.k_max, index=self.index, nlist=self.nlist, nprobe=self.nprobe,
                                hnsw_m=self.hnsw_m, ef_search=self.ef_search, chunk_rows=self.chunk_rows,
                                use_gpu=gpu, seed=self.seed),
            false_negative_k=self.false_negative_k, batch_trials=self.batch_trials,
            recall_queries=self.recall_queries, examples=self.examples, seed=self.seed)


def table_set_fingerprint(paths: list[Path], params: TableSetParams, keys: dict[str, str] | None = None) -> str:
    """What the set depends on: the code, every parameter, every input file's fingerprint and the
    semantic keys' content (a changed key file rebuilds; a reordered one does not)."""
    parts = {"code": CODE_VERSION, "config": asdict(params),
             "inputs": [read_parquet_metadata(p)["clipkt.fingerprint"] for p in paths],
             "keys": None if keys is None else hashlib.sha256(json.dumps(sorted(keys.items())).encode()).hexdigest()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


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


def build_table_set(dataset: str, text_paths: list[Path], image_paths: list[Path] | None, root: Path,
                    params: TableSetParams, log=print, keys: dict[str, str] | None = None) -> tuple[Path, bool]:
    """Build the set in `root/<fingerprint>/` and make it current, unless it already is.
    keys: the dataset's semantic keys {clip_id: key} (`load_semantic_keys`), None without.
    Returns (the set's directory, whether it was up to date). Earlier sets are removed."""
    try:  # unknown names, or oracle without keys: before any work
        tables_for(params.tables, image_paths is not None, keys is not None)
    except ValueError as e:
        raise ValueError(f"{dataset} neighbor_tables config: tables={list(params.tables)}: {e}") from e
    fingerprint = table_set_fingerprint([*text_paths, *(image_paths or [])], params, keys)
    out_dir = root / fingerprint
    current = root / "current.json"
    if (out_dir / "summary.json").exists() and current.exists() and \
            json.loads(current.read_text())["fingerprint"] == fingerprint:
        return out_dir, True
    summary = _mine(dataset, text_paths, image_paths, out_dir, params, log, keys)
    write_json_atomic(out_dir / "summary.json", summary, sort_keys=False)
    write_json_atomic(current, {"fingerprint": fingerprint}, indent=None, sort_keys=False)
    for old in root.iterdir():  # earlier sets (and leftovers of interrupted runs)
        if old.is_dir() and old.name != fingerprint:
            shutil.rmtree(old, ignore_errors=True)
    return out_dir, False


def read_summary(out_dir: Path) -> dict:
    """The summary a built set carries (clips, tables, UI metadata)."""
    return json.loads((out_dir / "summary.json").read_text())


def _mine(dataset: str, text_paths: list[Path], image_paths: list[Path] | None, out_dir: Path,
          params: TableSetParams, log, keys: dict[str, str] | None) -> dict:
    clips, images, texts, skipped = load_clip_vectors(text_paths, image_paths, params.image_pooling, params.text_pooling)
    split = np.asarray(clips.column("split").to_pylist(), dtype=object)
    mined = np.flatnonzero(np.isin(split, params.splits))
    if len(mined) < 2:
        raise ValueError(f"{dataset}: {len(mined)} clips with embeddings in splits {list(params.splits)}: nothing to mine")
    texts_of = clips.column("text").to_pylist()
    mined_ids = clips.column("clip_id").take(mined).to_pylist()
    groups = None if keys is None else group_ids(mined_ids, keys)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    write_parquet_atomic(clips.take(mined).add_column(0, "row", pa.array(np.arange(len(mined), dtype=np.int32))),
                         out_dir / "clips.parquet", {"clipkt.dataset": dataset})
    summaries = mine_tables(None if images is None else images[mined], texts[mined], out_dir, params.mining(),
                            tuple(params.tables), groups, log=log)
    meta = _summary_metadata(params, summaries, out_dir, skipped, has_images=image_paths is not None,
                             mined_texts=[texts_of[i] for i in mined], groups=groups)
    held = np.flatnonzero(np.isin(split, params.zero_shot_splits))[:params.zero_shot_clips]
    if images is not None and len(held) >= 2:
        z = zero_shot_r1(images[held], texts[held], [texts_of[i] for i in held])
        meta["zero_shot"] = markdown_table([{k: round(v, 4) if isinstance(v, float) else v for k, v in z.items()}])
        meta["teacher_i2t_R@1"] = round(z["i2t_R@1"], 4)
    return {"clips": len(mined), "tables": list(summaries), "metadata": meta}


def _summary_metadata(params: TableSetParams, summaries: dict, out_dir: Path, skipped: dict, has_images: bool,
                      mined_texts: list[str], groups: np.ndarray | None) -> dict:
    """What the UI shows of a freshly mined set (markdown and plots as strings); with semantic
    keys (groups: the mined clips' group ids) also the false-negative scores."""
    cross = [s for s in summaries.values() if s.name in CROSS_TABLES]
    meta: dict = {
        "clips": len(mined_texts), "k": max((s.k for s in cross), default=0), "splits": list(params.splits),
        "skipped_clips": skipped, "tables": {s.name: s.rows for s in summaries.values()},
        "bytes": sum((out_dir / f"{t}.parquet").stat().st_size for t in summaries),
        "index": params.index, "image_pooling": params.image_pooling if has_images else "none",
        "org_mean_score": float(np.nanmean(pq.read_table(out_dir / "org.parquet").column("score").to_numpy()))
        if "org" in summaries and has_images else None,
    }
    if cross:
        meta["similarity_curve"] = (png_markdown(_curve_plot(cross), "average of the top-K similarity") + "\n\n"
                                    + markdown_table([{"table": s.name} | {f"K={K}": round(v, 4) for K, v in s.curve.items()}
                                                      for s in cross]))
    if groups is not None:
        meta["key_false_negatives"] = _key_metrics_md([s for s in summaries.values() if s.key_metrics])
    if cross:
        meta["batch_fraction"] = (f"Fraction of clips with at least one of their top-{params.false_negative_k} "
                                  "neighbours in a random batch of B (would-be false negatives)\n\n"
                                  + markdown_table([{"table": s.name} | {f"B={b}": round(f, 3) for b, f in s.batch_fraction.items()}
                                                    for s in cross]))
        meta["examples"] = _examples_md(cross, mined_texts)
        meta["false_negative_k"] = params.false_negative_k
        meta["same_neighbour_in_batch_of_128"] = {s.name: round(s.batch_fraction[128], 4)
                                                  for s in cross if 128 in s.batch_fraction}
    if groups is not None:
        for b in sorted(SAME_KEY_BATCHES, reverse=True):
            if b <= len(groups):
                meta[f"same_key_in_batch_of_{b}"] = round(same_key_batch_share(groups, b), 4)
        sizes = np.bincount(groups[groups >= 0])
        meta["distinct_keys"], meta["singleton_keys"] = int((sizes > 0).sum()), int((sizes == 1).sum())
        meta["clips_without_key"] = int((groups < 0).sum())
    if params.index != "flat":
        meta["approx_recall"] = markdown_table([{"table": s.name, f"recall@{s.k}": round(s.recall, 4),
                                                 "queries": min(len(mined_texts), params.recall_queries)} for s in cross])
    return meta


def _key_metrics_md(summaries) -> str:
    """Each table's false-negative recall and precision with their ceilings, one row per table."""
    rows = []
    for s in summaries:
        row = {"table": s.name}
        for K, m in s.key_metrics.items():
            row |= {f"R@{K}": round(m["recall"], 4), f"R@{K} ceiling": round(m["recall_ceiling"], 4),
                    f"P@{K}": round(m["precision"], 4), f"P@{K} ceiling": round(m["precision_ceiling"], 4)}
        rows.append(row | {"queries": next(iter(s.key_metrics.values()))["queries"]})
    return ("Neighbours that share the query clip's semantic key (true false negatives): R@k = share of the "
            "clip's same-key clips among its top k, P@k = share of its top k with its key; a ceiling is the best "
            "any table can reach given the key group sizes (the oracle reaches it)\n\n" + markdown_table(rows))


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
