"""The five neighbour tables of seed 000 for one set of clips (plus an oracle table where the
clips' semantic keys are known), written to disk, with their diagnostics.

Row i of `images` and of `texts` is clip i (its representative frame embedding and caption
embedding, both unit vectors). The tables, each (query, rank, neighbor, score) with rows
sorted by score (then a seeded random order of the neighbours) per query:

    org  the clip's own pair: one row per clip, neighbour = itself, score = cos(image_i, text_i)
         (NaN when the dataset has no images, e.g. audio-only AudioCaps)
    t2t  clip i's text  -> the k clips whose texts are nearest
    t2i  clip i's text  -> the k clips whose images are nearest
    i2t  clip i's image -> the k clips whose texts are nearest
    i2i  clip i's image -> the k clips whose images are nearest
    oracle  only with semantic keys: k clips with clip i's key, score 1.0, padded with
         (-1, 0.0) where fewer share it (`assets.mining.false_negatives.oracle_neighbours`)

Self-matches: a clip is never its own neighbour in t2t/t2i/i2t/i2i/oracle (it is `org`), so
each of those rows holds k *other* clips. Other clips with an identical text (same label
prompt, duplicated caption) or image are kept: they score 1.0 exactly, and such ties are
broken by a seeded random order of the keys drawn afresh for each query (`key_tie_seed`, one
seed per key modality; `neighbor_search.tie_keys`), not by clip row, which would make the few
lowest rows of every group of identical texts everyone's neighbours.

Diagnostics, computed while the tables stream to disk (memory: O(n x false_negative_k)):
seed 000's "average of the top-K similarity" curve, the fraction of clips that meet at least
one of their top-k neighbours in a random batch of B, recall@k of an approximate index
against exact search (with the same tie order) on a sample of queries, a few example rows,
and with semantic keys each table's false-negative recall and precision at KEY_KS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from assets.core.recall import recall_metrics
from assets.mining.false_negatives import false_negative_metrics, metrics_from_hits, oracle_neighbours, same_key_hits
from assets.mining.neighbor_search import (TABLE_SCHEMA, SearchParams, brute_force_topk, build_index, recall_at_k,
                                           same_neighbour_batch_fraction, search, top_k_similarity_curve,
                                           trailing_padding, write_table)

TABLES = ("org", "t2t", "t2i", "i2t", "i2i", "oracle")
CROSS_TABLES = {"t2t": ("text", "text"), "t2i": ("text", "image"), "i2t": ("image", "text"), "i2i": ("image", "image")}
CURVE_KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
KEY_KS = (10, 100)  # false-negative recall/precision against the semantic keys at these k (or at k, if smaller)
# Seed streams of the tie orders, one per key modality, apart from the sampling stream.
_TIE_STREAMS = {"text": 1, "image": 2}


@dataclass(frozen=True)
class MiningParams:
    search: SearchParams = SearchParams()
    false_negative_k: int = 10  # a batch-mate among a clip's top-k counts as a would-be false negative
    batch_sizes: tuple[int, ...] = (32, 64, 128, 256)
    batch_trials: int = 200
    recall_queries: int = 1000  # approximate index: queries re-run exactly to measure recall@k
    examples: int = 3  # example queries kept for the UI
    seed: int = 0


@dataclass
class TableSummary:
    name: str
    path: Path
    rows: int
    k: int
    seconds: float
    curve: dict[int, float] = field(default_factory=dict)  # K -> mean over queries of the mean top-K score
    batch_fraction: dict[int, float] = field(default_factory=dict)  # B -> fraction of clips meeting a neighbour
    recall: float | None = None  # approximate index only: recall@k against exact search
    examples: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # query row -> (ids, scores)
    key_metrics: dict[int, dict] = field(default_factory=dict)  # semantic keys only: K -> false_negative_metrics


def key_tie_seed(seed: int, modality: str) -> int:
    """The tie seed (`neighbor_search.search`'s tie_seed) of tables whose keys are "text" or
    "image" embeddings: derived from the mining seed, one stream per key modality."""
    return int(np.random.SeedSequence([seed, _TIE_STREAMS[modality]]).generate_state(1, np.uint64)[0])


def key_metric_ks(k: int) -> list[int]:
    """The k at which a table of k neighbours per clip is scored against the keys."""
    return [K for K in KEY_KS if K <= k] or [k]


class _Observer:
    """Passes search chunks through to the writer while collecting the diagnostics."""

    def __init__(self, n: int, k: int, p: MiningParams, sample: np.ndarray, examples: np.ndarray,
                 groups: np.ndarray | None):
        self.ks = [K for K in CURVE_KS if K <= k]
        self.curve_sum = np.zeros(len(self.ks))
        self.fn_k = min(p.false_negative_k, k)
        self.top = np.empty((n, self.fn_k), np.int32)
        self.sample, self.sample_ids = sample, np.empty((len(sample), k), np.int64)
        self.examples: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.example_rows = examples
        self.groups = groups
        self.hits = {} if groups is None else {K: np.zeros(n, np.int64) for K in key_metric_ks(k)}

    def watch(self, chunks):
        for lo, scores, ids in chunks:
            hi = lo + len(ids)
            for j, value in enumerate(top_k_similarity_curve(scores, self.ks).values()):
                self.curve_sum[j] += value * len(scores)  # the chunk's mean, weighted by its queries
            self.top[lo:hi] = ids[:, :self.fn_k]
            at = np.flatnonzero((self.sample >= lo) & (self.sample < hi))
            self.sample_ids[at] = ids[self.sample[at] - lo]
            for r in self.example_rows[(self.example_rows >= lo) & (self.example_rows < hi)]:
                self.examples[int(r)] = (ids[r - lo].copy(), scores[r - lo].copy())
            for K, hits in self.hits.items():
                hits[lo:hi] = same_key_hits(ids, self.groups, K, first=lo)
            yield lo, scores, ids


def _k(p: MiningParams, n: int) -> int:
    if n < 2:
        raise ValueError(f"need at least 2 clips with embeddings to mine neighbours, got {n}")
    return min(p.search.k, n - 1)


def mine_cross_table(name: str, queries: np.ndarray, keys: np.ndarray, index, path: Path,
                     p: MiningParams, groups: np.ndarray | None = None) -> TableSummary:
    """One of t2t/t2i/i2t/i2i: every clip's k nearest other clips, streamed to `path`; exact
    ties broken by the key modality's `key_tie_seed`. groups: the clips' semantic group ids
    (-1: no key), to score the table's false negatives; None without keys."""
    started = time.perf_counter()
    n = len(queries)
    k = _k(p, n)
    sp = replace(p.search, k=k)
    tie_seed = key_tie_seed(p.seed, CROSS_TABLES[name][1])
    rng = np.random.default_rng(p.seed)
    approximate = sp.index != "flat"
    sample = np.sort(rng.choice(n, size=min(n, p.recall_queries), replace=False)) if approximate else np.zeros(0, np.int64)
    examples = np.sort(rng.choice(n, size=min(n, p.examples), replace=False))
    obs = _Observer(n, k, p, sample, examples, groups)
    self_rows = np.arange(n)
    rows = write_table(path, obs.watch(search(index, queries, sp, exclude=self_rows, keys=keys, tie_seed=tie_seed)))
    summary = TableSummary(name, path, rows, k, 0.0, examples=obs.examples,
                           curve={K: float(s / n) for K, s in zip(obs.ks, obs.curve_sum)},
                           key_metrics={K: metrics_from_hits(h, groups, K) for K, h in obs.hits.items()})
    for b in p.batch_sizes:
        if b <= n:
            summary.batch_fraction[b] = same_neighbour_batch_fraction(obs.top, obs.fn_k, b, p.batch_trials, p.seed)
    if approximate:
        _, exact = brute_force_topk(queries[sample], keys, k, exclude=sample, tie_seed=tie_seed, query_rows=sample)
        summary.recall = recall_at_k(obs.sample_ids, exact)
    summary.seconds = time.perf_counter() - started
    return summary


def write_org_table(images: np.ndarray | None, texts: np.ndarray, path: Path) -> TableSummary:
    started = time.perf_counter()
    n = len(texts)
    if images is None:
        scores = np.full((n, 1), np.nan, np.float32)
    else:
        scores = np.einsum("nd,nd->n", images.astype(np.float64), texts.astype(np.float64)).astype(np.float32)[:, None]
    rows = write_table(path, [(0, scores, np.arange(n, dtype=np.int64)[:, None])])
    return TableSummary("org", path, rows, 1, time.perf_counter() - started)


def write_oracle_table(groups: np.ndarray, path: Path, p: MiningParams) -> TableSummary:
    """The ground truth's table: each clip's k neighbours among the other clips with its key
    (`oracle_neighbours`, seeded), score 1.0, padded with (-1, 0.0) where fewer share it."""
    started = time.perf_counter()
    n = len(groups)
    k = _k(p, n)
    ids = oracle_neighbours(groups, k, p.seed)
    scores = (ids >= 0).astype(np.float32)
    step = p.search.chunk_rows
    rows = write_table(path, ((lo, scores[lo:lo + step], ids[lo:lo + step]) for lo in range(0, n, step)))
    metrics = {K: false_negative_metrics(ids, groups, K) for K in key_metric_ks(k)}
    return TableSummary("oracle", path, rows, k, time.perf_counter() - started, key_metrics=metrics)


def tables_for(requested: tuple[str, ...], has_images: bool, has_keys: bool) -> list[str]:
    """The tables to write, in TABLES order: the requested ones, or every one the data allows
    when none are named. Image tables are skipped without images (audio-only data); `oracle`
    without semantic keys is skipped when not named, an error when named."""
    unknown = set(requested) - set(TABLES)
    if unknown:
        raise ValueError(f"unknown table(s) {sorted(unknown)}; choose from {list(TABLES)}")
    if "oracle" in requested and not has_keys:
        raise ValueError("table 'oracle' needs the clips' ground-truth semantic keys, and the dataset declares none "
                         "(`semantic_keys` in its YAML)")
    needs_images = {t for t, modalities in CROSS_TABLES.items() if "image" in modalities}
    allowed = [t for t in TABLES if (t != "oracle" or has_keys) and (has_images or t not in needs_images)]
    return [t for t in allowed if t in requested] if requested else allowed


def mine_tables(images: np.ndarray | None, texts: np.ndarray, out_dir: Path, p: MiningParams,
                tables: tuple[str, ...] = (), groups: np.ndarray | None = None, log=print) -> dict[str, TableSummary]:
    """Write `<out_dir>/<table>.parquet` for each table `tables_for` picks (none named: all the
    data allows). groups: the clips' semantic group ids (`assets.ingest.semantic_keys.group_ids`),
    for the oracle table and the false-negative scores; None without keys."""
    vectors = {"text": texts, "image": images}
    if images is not None and images.shape != texts.shape:
        raise ValueError(f"images {images.shape} and texts {texts.shape} must be the same (clips, dim)")
    if groups is not None and np.shape(groups) != (len(texts),):
        raise ValueError(f"groups {np.shape(groups)}: expected one group id per clip ({len(texts)},)")
    indexes: dict[str, object] = {}
    out: dict[str, TableSummary] = {}
    for name in tables_for(tables, images is not None, groups is not None):
        path = out_dir / f"{name}.parquet"
        if name == "org":
            out[name] = write_org_table(images, texts, path)
            continue
        if name == "oracle":
            out[name] = write_oracle_table(groups, path, p)
        else:
            q_mod, k_mod = CROSS_TABLES[name]
            if k_mod not in indexes:
                indexes[k_mod] = build_index(vectors[k_mod], p.search)
            out[name] = mine_cross_table(name, vectors[q_mod], vectors[k_mod], indexes[k_mod], path, p, groups)
        log(f"{name}: {out[name].rows} rows in {out[name].seconds:.1f} s")
    return out


def table_problems(path: Path, n: int, self_excluded: bool, limit: int = 10) -> dict[str, list[str]]:
    """What is wrong with a written table, streamed a row group at a time:
    "ids": neighbour ids outside [0, n), a query listed as its own neighbour (cross and oracle
    tables) or not (org), ranks not 0..k-1 or a query's rows split; "order": scores not sorted
    descending. A neighbour id -1 at a row's tail is padding ("no more neighbours": an approximate
    index that found fewer, a key shared by fewer than k clips) and fine; a -1 followed by a real
    id is reported as an id outside [0, n) (and org, never padded, as "not its own pair")."""
    ids: list[str] = []
    order: list[str] = []
    f = pq.ParquetFile(path)
    if not f.schema_arrow.equals(TABLE_SCHEMA):
        return {"ids": [f"{path}: schema {f.schema_arrow} is not the neighbour-table schema"], "order": []}
    k = None
    for g in range(f.num_row_groups):
        t = f.read_row_group(g)
        q, r = t.column("query").to_numpy(), t.column("rank").to_numpy()
        nb, s = t.column("neighbor").to_numpy(), t.column("score").to_numpy().astype(np.float32)
        starts = np.flatnonzero(r == 0)
        k = k or (len(r) // max(1, len(starts)))
        if len(starts) * k != len(r) or not np.array_equal(r, np.tile(np.arange(k, dtype=r.dtype), len(starts))):
            ids.append(f"{path}: row group {g}: ranks are not 0..{k - 1} per query")
            continue
        q2, nb2, s2 = q.reshape(-1, k), nb.reshape(-1, k), s.reshape(-1, k)
        if (q2 != q2[:, :1]).any():
            ids.append(f"{path}: row group {g}: a query's rows are not contiguous")
        bad = np.flatnonzero((((nb2 < 0) & ~trailing_padding(nb2)) | (nb2 >= n)).any(axis=1))
        ids += [f"{path}: query {q2[i, 0]}: neighbour ids outside [0, {n})" for i in bad[:limit]]
        own = (nb2 == q2).any(axis=1) if self_excluded else ~(nb2 == q2).all(axis=1)
        ids += [f"{path}: query {q2[i, 0]}: " + ("lists itself" if self_excluded else "is not its own pair")
                for i in np.flatnonzero(own)[:limit]]
        unsorted = np.flatnonzero((np.diff(s2, axis=1) > 0).any(axis=1))
        order += [f"{path}: query {q2[i, 0]}: scores not sorted descending" for i in unsorted[:limit]]
    return {"ids": ids[:limit], "order": order[:limit]}


def zero_shot_r1(images: np.ndarray, texts: np.ndarray, text_keys: list[str]) -> dict[str, float]:
    """The teacher's own image<->text R@1 over n clips (row i of both is clip i), by
    `assets.core.recall`'s rule: every clip with the query clip's text is a true match (identical
    texts count, so for label prompts this is zero-shot classification accuracy; for unique
    captions it is plain R@1), and a wrong item scoring as high as the best true one is a miss.
    `chance` is the expected hit rate of a random ranking."""
    n = len(texts)
    sim = images.astype(np.float64) @ texts.astype(np.float64).T
    _, key_ids = np.unique(np.asarray(text_keys, dtype=object), return_inverse=True)
    by_key = np.argsort(key_ids, kind="stable")
    clips_of = np.split(by_key, np.cumsum(np.bincount(key_ids))[:-1])  # key -> its clips, ascending
    same_text = [clips_of[k] for k in key_ids]  # clip i's true matches, in either direction
    i2t = recall_metrics(sim, same_text, ks=(1,))
    t2i = recall_metrics(sim.T, same_text, ks=(1,))
    return {"n": n, "i2t_R@1": i2t["R@1"], "t2i_R@1": t2i["R@1"], "chance": i2t["chance_R@1"]}
