"""What a training or evaluation run reads: clips joined across the caches, and batches of them.

`load_clips` joins, per shard, the audio cache (fbank_cache for the audio ViT, logmel_cache
for DaveNet), the teacher's frame embeddings and caption embeddings on clip_id, keeping the
clips of the requested splits that are `ok` in every cache the run needs. Raw features stay
float16 (256 KB per 1000 x 128 clip: 2500 clips are 640 MB): copied into memory when they fit
the memory budget, else read in place from the cache's per-shard feature arrays through
memory maps (`ShardedFeatures`; AudioSet's 1.67M training clips are 430 GB, and no second
copy is written). Normalisation with `fbank_stats` happens per batch, so changed statistics
never force a cache rebuild. The teacher's embeddings are held in memory (4 x 512 float32
per clip: 13 GB for 1.67M clips).

Under DDP each rank takes its own slice of every epoch's order (`rank_slice`).

`BatchLoader` assembles batches on background threads (gather, float16 -> float32,
normalise, pin on CUDA) and keeps `prefetch` of them queued ahead of the device; it
records how long the training loop waited for data, so the run can report the fraction of
step time spent waiting.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from assets.caches.audio_cache_rows import feature_array, features_metadata
from assets.caches.fbank_stats import Normaliser
from assets.caches.video_frames import decode_jpeg
from assets.mining.embedding_store import read_embeddings
from assets.training.patch_token_cache import PatchTokens
from losses.frame_matching import eval_frame_index


class ShardedFeatures:
    """(N, *shape) features of N clips, read in place from the shards' memory-mapped feature
    arrays: `features[idx]` gathers the rows of a batch (an ndarray), nothing is copied ahead."""

    def __init__(self, arrays: list[np.ndarray], shard: np.ndarray, row: np.ndarray):
        self.arrays, self.shard, self.row = arrays, np.asarray(shard, np.int64), np.asarray(row, np.int64)
        self.shape = (len(self.row), *arrays[0].shape[1:])
        self.dtype = arrays[0].dtype

    def __len__(self) -> int:
        return len(self.row)

    def __getitem__(self, index) -> np.ndarray:
        """The rows at `index`, in that order: copied one by one straight into the batch (half
        the time of a fancy-indexed read, which copies twice), in file order for locality."""
        index = np.asarray(index, np.int64)
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        shard, row = self.shard[index], self.row[index]
        for j in np.lexsort((row, shard)):
            out[j] = self.arrays[shard[j]][row[j]]
        return out

    def take(self, index) -> "ShardedFeatures":
        index = np.asarray(index, np.int64)
        return ShardedFeatures(self.arrays, self.shard[index], self.row[index])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)


@dataclass
class ClipSet:
    """N clips, row-aligned: features (N, *shape) float16, true lengths, optional teacher embeddings."""
    clip_ids: list[str]
    splits: list[str]
    features: np.ndarray | ShardedFeatures  # in memory, or read in place from the cache
    lengths: np.ndarray
    frames: np.ndarray | None = None  # (N, L, D) float32 unit vectors, the teacher's frame embeddings
    captions: list[np.ndarray] | None = None  # per clip (count, D) float32: captions (or label prompts)
    caption_texts: list[list[str]] | None = None
    skipped: dict[str, int] = field(default_factory=dict)  # why clips of the splits were left out
    frame_jpegs: list[list[bytes]] | None = None  # per clip the frame cache's L JPEG crops (dense methods)
    patch_tokens: PatchTokens | None = None  # the teacher's tokens of those frames (DenseAV's patch-token cache)

    def __len__(self) -> int:
        return len(self.clip_ids)

    def subset(self, index: np.ndarray) -> "ClipSet":
        """The clips at `index` (copies); the set itself when index is every clip in order."""
        index = np.asarray(index, dtype=np.int64)
        if np.array_equal(index, np.arange(len(self))):
            return self
        features = self.features.take(index) if isinstance(self.features, ShardedFeatures) else self.features[index]
        return ClipSet([self.clip_ids[i] for i in index], [self.splits[i] for i in index], features,
                       self.lengths[index], None if self.frames is None else self.frames[index],
                       None if self.captions is None else [self.captions[i] for i in index],
                       None if self.caption_texts is None else [self.caption_texts[i] for i in index], dict(self.skipped),
                       None if self.frame_jpegs is None else [self.frame_jpegs[i] for i in index],
                       None if self.patch_tokens is None else self.patch_tokens.take(index))


def concat_clips(parts: list[tuple[str, ClipSet]], frame_embeddings: bool = True) -> ClipSet:
    """The clips of several datasets as one set, in the order given ([(dataset name, clips)]).

    Features must have one shape (the same cache configuration); they stay in memory when every
    part is, else each part is read in place from its own cache. `frame_embeddings`: keep the
    teacher's frame embeddings, which needs one frame count L (SynthAV Places has 1 frame per
    clip, VGGSound 4); False drops them, for methods that read pixels instead (DenseAV).
    Captions, frame JPEGs and patch tokens are kept when every part has them. `skipped` reasons are prefixed
    with the dataset's name."""
    if not parts:
        raise ValueError("concat_clips needs at least one clip set")
    if len(parts) == 1 and frame_embeddings:
        return parts[0][1]
    (first_name, first), *_ = parts
    for name, c in parts:
        if c.features.shape[1:] != first.features.shape[1:] or c.features.dtype != first.features.dtype:
            raise ValueError(f"{name}'s audio features are {c.features.shape[1:]} {c.features.dtype}, {first_name}'s "
                             f"{first.features.shape[1:]} {first.features.dtype}: build both caches with one configuration")
    if all(isinstance(c.features, np.ndarray) for _, c in parts):
        features = np.concatenate([c.features for _, c in parts])
    else:
        sharded = [c.features if isinstance(c.features, ShardedFeatures) else _in_memory_as_shard(c.features)
                   for _, c in parts]
        offsets = np.cumsum([0] + [len(s.arrays) for s in sharded[:-1]])
        features = ShardedFeatures([a for s in sharded for a in s.arrays],
                                   np.concatenate([s.shard + o for s, o in zip(sharded, offsets)]),
                                   np.concatenate([s.row for s in sharded]))
    frames = None
    if frame_embeddings and any(c.frames is not None for _, c in parts):
        shapes = {name: None if c.frames is None else c.frames.shape[1:] for name, c in parts}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"frame embeddings per clip differ between the datasets ({shapes}); a method that "
                             "reads them needs one frame count")
        frames = np.concatenate([c.frames for _, c in parts])
    every = (lambda attr: all(getattr(c, attr) is not None for _, c in parts))
    return ClipSet([i for _, c in parts for i in c.clip_ids], [s for _, c in parts for s in c.splits], features,
                   np.concatenate([c.lengths for _, c in parts]), frames,
                   [x for _, c in parts for x in c.captions] if every("captions") else None,
                   [x for _, c in parts for x in c.caption_texts] if every("caption_texts") else None,
                   {f"{name}: {reason}": n for name, c in parts for reason, n in c.skipped.items()},
                   [x for _, c in parts for x in c.frame_jpegs] if every("frame_jpegs") else None,
                   PatchTokens.concat([c.patch_tokens for _, c in parts]) if every("patch_tokens") else None)


def _in_memory_as_shard(features: np.ndarray) -> ShardedFeatures:
    return ShardedFeatures([features], np.zeros(len(features), np.int64), np.arange(len(features)))


def _audio_rows(path: Path, splits: set[str]) -> tuple[list[tuple[int, str, str, bool, int]], tuple[int, ...], str]:
    """Without reading the features: [(row, clip_id, split, ok, true length)] of the given splits,
    the feature shape and dtype."""
    table = pq.read_table(path, columns=["clip_id", "split", "status", "n_frames"])
    shape, dtype = features_metadata(path)
    cols = {c: table.column(c).to_pylist() for c in ("clip_id", "split", "status", "n_frames")}
    rows = [(i, cid, split, status == "ok", int(n or 0))
            for i, (cid, split, status, n) in enumerate(zip(cols["clip_id"], cols["split"], cols["status"], cols["n_frames"]))
            if split in splits]
    return rows, shape, dtype


def _embedding_rows(path: Path, splits: set[str]) -> dict[str, tuple[np.ndarray, list[str]]]:
    table, vectors = read_embeddings(path)
    out = {}
    for cid, split, status, texts, v in zip(table.column("clip_id").to_pylist(), table.column("split").to_pylist(),
                                           table.column("status").to_pylist(), table.column("texts").to_pylist(), vectors):
        if status == "ok" and split in splits and v is not None and len(v):
            out[cid] = (np.asarray(v, np.float32), texts or [])
    return out


@dataclass
class _Kept:
    shard: Path
    row: int
    clip_id: str
    split: str
    length: int
    frames: np.ndarray | None
    captions: np.ndarray | None
    texts: list[str] | None


@dataclass
class _Shard:
    """One audio cache shard's rows of the requested splits (no features) and the teacher's
    embeddings of the same shard, {clip_id: (vectors, texts)} of its ok rows; None where not read."""
    path: Path
    rows: list[tuple[int, str, str, bool, int]]  # (row, clip_id, split, audio ok, true length)
    shape: tuple[int, ...]
    dtype: str
    images: dict[str, tuple[np.ndarray, list[str]]] | None
    texts: dict[str, tuple[np.ndarray, list[str]]] | None


def load_clips(audio_dir: Path, splits: list[str] | tuple[str, ...], image_dir: Path | None = None,
               text_dir: Path | None = None, frames: int | None = None, subset: tuple[int | None, int] = (None, 0),
               memory_budget_bytes: int | None = None, frame_dir: Path | None = None) -> ClipSet:
    """Clips of `splits` that are ok in the audio cache and in the given embedding stores.

    Shards are the audio cache's files; embedding files of the same shard name are joined on
    clip_id. `frames`: keep clips with exactly that many frame embeddings (seed 001: L = 4);
    None takes the count of the first clip and requires it of all. `subset` = (size, seed): a
    seeded subset of the usable clips (`seeded_subset`), chosen before any feature is read.

    Two passes: the first reads ids, statuses and embeddings and decides which clips are used;
    the second reads only their features, into memory, or, when they would take more than
    `memory_budget_bytes`, not at all: batches then read them in place (`ShardedFeatures`).
    `frame_dir` (the frame cache): also keep each clip's cached JPEG frames, for methods that
    read pixels (DenseAV's image tower); about 10-40 KB per frame, held in memory."""
    wanted = set(splits)
    shard_files = sorted(Path(audio_dir).glob("*.parquet"))
    if not shard_files:
        raise FileNotFoundError(f"no audio cache shards in {audio_dir}; materialise the dataset's shard job first")
    kept: list[_Kept] = []
    skipped: dict[str, int] = {}  # reason -> clips, in the order first met
    first: _Shard | None = None
    for path in shard_files:
        shard = _read_shard(path, wanted, image_dir, text_dir, first)
        first = first or shard
        shard_kept, shard_skipped, frames = _select(shard, frames)
        kept += shard_kept
        for reason, n in shard_skipped.items():
            skipped[reason] = skipped.get(reason, 0) + n
    if not kept:
        raise ValueError(f"no usable clips of splits {sorted(wanted)} in {audio_dir} (skipped: {skipped or 'none'})")
    kept = [kept[i] for i in seeded_subset(len(kept), subset[0], subset[1])]
    features = _features(kept, first.shape, memory_budget_bytes)
    return ClipSet([k.clip_id for k in kept], [k.split for k in kept], features,
                   np.asarray([k.length for k in kept], np.int64),
                   np.stack([k.frames for k in kept]) if image_dir is not None else None,
                   [k.captions for k in kept] if text_dir is not None else None,
                   [k.texts for k in kept] if text_dir is not None else None, skipped,
                   _frame_jpegs(kept, frame_dir) if frame_dir is not None else None)


def _frame_jpegs(kept: list[_Kept], frame_dir: Path) -> list[list[bytes]]:
    """The kept clips' cached JPEG frames, read shard by shard from the frame cache."""
    out: dict[str, list[bytes]] = {}
    for shard in dict.fromkeys(k.shard for k in kept):
        path = frame_dir / shard.name
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: run the frame cache for shard {shard.stem} first")
        wanted = {k.clip_id for k in kept if k.shard == shard}
        table = pq.read_table(path, columns=["clip_id", "status", "frames"])
        for cid, status, jpegs in zip(table.column("clip_id").to_pylist(), table.column("status").to_pylist(),
                                      table.column("frames").to_pylist()):
            if cid in wanted and status == "ok":
                out[cid] = jpegs
    lost = [k.clip_id for k in kept if not out.get(k.clip_id)]
    if lost:
        raise ValueError(f"{len(lost)} clips have frame embeddings but no ok frames in {frame_dir} "
                         f"(first: {lost[0]}); rebuild the frame cache and the embeddings")
    return [out[k.clip_id] for k in kept]


def _read_shard(path: Path, wanted: set[str], image_dir: Path | None, text_dir: Path | None,
                first: _Shard | None) -> _Shard:
    """Pass 1 over one shard: its rows of the wanted splits and the embeddings of the same shard
    name. Its features must have the shape and dtype of the `first` shard's."""
    rows, shape, dtype = _audio_rows(path, wanted)
    if first is not None and (shape, dtype) != (first.shape, first.dtype):
        raise ValueError(f"{path}: features {'x'.join(map(str, shape))} {dtype}, but {first.path.name} "
                         f"has {'x'.join(map(str, first.shape))} {first.dtype}; rebuild the cache's shards with one configuration")
    for d in (image_dir, text_dir):
        if d is not None and not (d / path.name).exists():
            raise FileNotFoundError(f"{d / path.name} missing: run the embedding job for shard {path.stem} first")
    images = _embedding_rows(image_dir / path.name, wanted) if image_dir is not None else None
    texts = _embedding_rows(text_dir / path.name, wanted) if text_dir is not None else None
    return _Shard(path, rows, shape, dtype, images, texts)


def _select(shard: _Shard, frames: int | None) -> tuple[list[_Kept], dict[str, int], int | None]:
    """The shard's clips that are ok in every cache the run reads, why the others were left out
    ({reason: clips}), and the frame count required from here on (`frames`, or when None the
    count of the first clip with frame embeddings)."""
    kept, skipped = [], {}
    for row, cid, split, ok, length in shard.rows:
        image = None if shard.images is None else shard.images.get(cid)
        text = None if shard.texts is None else shard.texts.get(cid)
        if ok and image is not None and frames is None:
            frames = len(image[0])
        if not ok:
            reason = "audio not ok"
        elif shard.images is not None and image is None:
            reason = "no frame embeddings"
        elif image is not None and len(image[0]) != frames:
            reason = f"not {frames} frames"
        elif shard.texts is not None and text is None:
            reason = "no caption embeddings"
        else:
            kept.append(_Kept(shard.path, row, cid, split, length, None if image is None else image[0],
                              None if text is None else text[0], None if text is None else text[1]))
            continue
        skipped[reason] = skipped.get(reason, 0) + 1
    return kept, skipped, frames


def _features(kept: list[_Kept], shape: tuple[int, ...], budget: int | None) -> np.ndarray | ShardedFeatures:
    """The kept clips' features: read in place from the shards' arrays, copied into memory
    when they fit the budget (gathering from memory is the faster path for small sets)."""
    paths = list(dict.fromkeys(k.shard for k in kept))
    position = {p: i for i, p in enumerate(paths)}
    arrays = [feature_array(p) for p in paths]
    for p, a in zip(paths, arrays):
        if a.shape[1:] != shape:
            raise ValueError(f"{p}: features {a.shape[1:]}, expected {shape}")
    in_place = ShardedFeatures(arrays, [position[k.shard] for k in kept], [k.row for k in kept])
    n_bytes = len(kept) * int(np.prod(shape)) * in_place.dtype.itemsize
    return in_place if budget is not None and n_bytes > budget else np.asarray(in_place)


def rank_slice(order: np.ndarray, batch_size: int, rank: int, world_size: int) -> np.ndarray:
    """This rank's part of an epoch's order under DDP: every world_size-th batch of the order
    starting at `rank`, after dropping the batches that would leave the ranks unequal (every
    rank steps the same number of times; the dropped clips change from epoch to epoch with
    the order). world_size 1 is the order itself."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    if world_size == 1:
        return order
    n_batches = len(order) // batch_size // world_size * world_size
    batches = np.asarray(order[:n_batches * batch_size]).reshape(n_batches, batch_size)
    return batches[rank::world_size].reshape(-1)


def seeded_subset(n: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of `size` of range(n) (all of them when size >= n)."""
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


@dataclass
class Batch:
    index: torch.Tensor  # (B,) rows of the ClipSet
    audio: torch.Tensor  # (B, *shape) normalised float32
    lengths: torch.Tensor
    frames: torch.Tensor | None  # (B, L, D)
    captions: torch.Tensor | None  # (B, D): one caption per clip (chosen by the loader's generator)
    pixels: torch.Tensor | None = None  # (B, S, S, 3) uint8: one cached frame per clip (`frame_pick`)
    starts: torch.Tensor | None = None  # (B,) first audio frame (DenseAV's random window; None: 0)
    image_tokens: torch.Tensor | None = None  # (B, width, gh, gw): that frame's cached patch tokens, instead of pixels

    def to(self, device: torch.device) -> "Batch":
        nb = device.type == "cuda"
        move = (lambda t: None if t is None else t.to(device, non_blocking=nb))
        return Batch(self.index, move(self.audio), move(self.lengths), move(self.frames), move(self.captions),
                     move(self.pixels), move(self.starts), move(self.image_tokens))


class BatchLoader:
    """Batches of `clips` in the order given, built ahead on background threads.

    `caption_seed`: clips with several captions get one picked at random per batch (a seeded
    generator per batch, so the pick does not depend on thread timing). `frame_pick` (clips with
    `frame_jpegs`): decode one cached frame per clip into `Batch.pixels`, `random` (seeded the
    same way) or `eval` (VIP-ANT's evaluation frame, ceil(L/2) - 1); clips with `patch_tokens`
    get the same frame's cached tokens in `Batch.image_tokens` instead (no decoding)."""

    def __init__(self, clips: ClipSet, order: np.ndarray, batch_size: int, normalise: Normaliser,
                 caption_seed: int = 0, drop_last: bool = True, workers: int = 1, prefetch: int = 4,
                 pin_memory: bool = False, frame_pick: str | None = None):
        n_batches = len(order) // batch_size if drop_last else -(-len(order) // batch_size)
        self.batches = [np.asarray(order[i * batch_size:(i + 1) * batch_size]) for i in range(n_batches)]
        self.clips, self.normalise, self.caption_seed = clips, normalise, caption_seed
        self.workers, self.prefetch, self.pin = max(0, workers), max(1, prefetch), pin_memory
        self.wait_seconds = 0.0
        if frame_pick not in (None, "random", "eval"):
            raise ValueError(f"frame_pick must be random or eval, got {frame_pick!r}")
        if frame_pick is not None and clips.frame_jpegs is None:
            raise ValueError("frame_pick needs clips loaded with their frame cache (load_clips(frame_dir=...))")
        self.frame_pick = frame_pick
        # in-memory features: gathered by torch (a view, no copy); read in place: by ShardedFeatures
        self._features = torch.from_numpy(clips.features) if isinstance(clips.features, np.ndarray) else None

    def __len__(self) -> int:
        return len(self.batches)

    def build(self, b: int) -> Batch:
        idx = self.batches[b]
        c = self.clips
        raw = (self._features.index_select(0, torch.from_numpy(idx)) if self._features is not None
               else torch.from_numpy(c.features[idx]))
        audio = self.normalise(raw)
        frames = torch.from_numpy(c.frames[idx]) if c.frames is not None else None
        captions = None
        if c.captions is not None:
            rng = np.random.default_rng((self.caption_seed, b))
            captions = torch.from_numpy(np.stack([c.captions[i][rng.integers(len(c.captions[i]))] for i in idx]))
        pixels = tokens = None
        if self.frame_pick is not None:
            picks = self._frame_picks(idx, b)
            if c.patch_tokens is not None:
                tokens = torch.from_numpy(c.patch_tokens.gather(idx, picks).astype(np.float32))
            else:
                pixels = torch.from_numpy(np.stack([decode_jpeg(c.frame_jpegs[i][p]) for i, p in zip(idx, picks)]))
        batch = Batch(torch.from_numpy(idx), audio, torch.from_numpy(c.lengths[idx]), frames, captions, pixels,
                      image_tokens=tokens)
        if self.pin:
            batch = Batch(batch.index, *(None if t is None else t.pin_memory()
                                         for t in (batch.audio, batch.lengths, batch.frames, batch.captions, batch.pixels)),
                          image_tokens=None if tokens is None else tokens.pin_memory())
        return batch

    def _frame_picks(self, idx: np.ndarray, b: int) -> np.ndarray:
        """Which cached frame of each clip the batch shows: seeded per batch (`random`) or the evaluation frame."""
        jpegs = self.clips.frame_jpegs
        rng = np.random.default_rng((self.caption_seed, b, 1))
        return np.asarray([rng.integers(len(jpegs[i])) if self.frame_pick == "random" else eval_frame_index(len(jpegs[i]))
                           for i in idx], np.int64)

    def __iter__(self) -> Iterator[Batch]:
        self.wait_seconds = 0.0
        if self.workers == 0:  # built in the loop: all of the build time is waiting
            for b in range(len(self.batches)):
                start = time.perf_counter()
                batch = self.build(b)
                self.wait_seconds += time.perf_counter() - start
                yield batch
            return
        slots: list[queue.Queue] = [queue.Queue(maxsize=1) for _ in self.batches]
        ticket = threading.Semaphore(self.prefetch)
        stop = threading.Event()
        next_batch = iter(range(len(self.batches)))
        lock = threading.Lock()

        def work() -> None:
            while not stop.is_set():
                ticket.acquire()
                with lock:
                    b = next(next_batch, None)
                if b is None or stop.is_set():
                    return
                try:
                    slots[b].put(self.build(b))
                except BaseException as e:  # surfaced in the training loop
                    slots[b].put(e)
                    return

        threads = [threading.Thread(target=work, daemon=True) for _ in range(self.workers)]
        for t in threads:
            t.start()
        try:
            for b in range(len(self.batches)):
                start = time.perf_counter()
                item = slots[b].get()
                self.wait_seconds += time.perf_counter() - start
                ticket.release()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            for _ in threads:
                ticket.release()
            for t in threads:
                t.join()
