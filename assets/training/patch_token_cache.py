"""A per-shard cache of the CLIP teacher's image-tower patch tokens, for DenseAV runs whose image
tower does not learn (`dense.patch_token_cache: true` with `dense.train_image: aligner | frozen`;
with LoRA the tokens change every step and cannot be cached).

Layout, under the dataset's cache directory:

    clip_patch_tokens/<key>/<shard>.npy      (frames, width, gh, gw) float16: every cached frame of
                                             the shard's clips, clip after clip
    clip_patch_tokens/<key>/<shard>.parquet  clip_id, first (its first row in the .npy), count

`key` is a digest of the teacher's description (model, pretrained tag, weights sha256, device,
precision, input size): another teacher, or the same on another device or precision, writes
its own files. Each index records the frame-cache shard file it was built from (size and
mtime); a rebuilt frame cache makes the tokens stale and they are built again. Both files are
written atomically (an interrupted build leaves nothing half-written).

What it costs: L x gh x gw x width x 2 bytes per clip: ViT-B/32 (7 x 7 x 768) with VGGSound's
4 frames, 301 KB a clip (AudioSet's 2M clips: 600 GB); the demo's tiny teacher (4 x 4 x 128),
16 KB. What it saves: the image tower's forward pass and the JPEG decode of every training
step (the warm-up phase and every epoch after it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from assets.caches.video_frames import decode_jpeg
from assets.core.atomic_io import atomic_path, read_parquet_metadata, write_parquet_atomic
from assets.core.device import autocast

TOKENS_DIR = "clip_patch_tokens"
INDEX_SCHEMA = pa.schema([("clip_id", pa.string()), ("first", pa.int64()), ("count", pa.int32())])


def teacher_key(description: dict) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]


def _source_stamp(frame_file: Path) -> str:
    st = frame_file.stat()
    return json.dumps({"file": frame_file.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns})


@dataclass
class PatchTokens:
    """(N clips) -> their cached frames' tokens: `arrays[array[i]][first[i] + p]` is clip i's frame p
    (of count[i]), (width, gh, gw) float16, read in place through memory maps."""
    arrays: list[np.ndarray]
    array: np.ndarray
    first: np.ndarray
    count: np.ndarray

    def __len__(self) -> int:
        return len(self.first)

    def gather(self, index: np.ndarray, picks: np.ndarray) -> np.ndarray:
        """(B, width, gh, gw) float16: frame picks[j] of clip index[j]."""
        return np.stack([self.arrays[self.array[i]][self.first[i] + p] for i, p in zip(index, picks)])

    def take(self, index) -> "PatchTokens":
        index = np.asarray(index, np.int64)
        return PatchTokens(self.arrays, self.array[index], self.first[index], self.count[index])

    @staticmethod
    def concat(parts: list["PatchTokens"]) -> "PatchTokens":
        offsets = np.cumsum([0] + [len(p.arrays) for p in parts[:-1]])
        return PatchTokens([a for p in parts for a in p.arrays], np.concatenate([p.array + o for p, o in zip(parts, offsets)]),
                           np.concatenate([p.first for p in parts]), np.concatenate([p.count for p in parts]))


@torch.no_grad()
def build_shard_tokens(image_tower: torch.nn.Module, frame_file: Path, out_dir: Path, device: torch.device,
                       batch_size: int = 64) -> Path:
    """Encode every ok clip's cached frames of one frame-cache shard; returns the .npy path."""
    table = pq.read_table(frame_file, columns=["clip_id", "status", "frames"])
    rows = [(cid, jpegs) for cid, status, jpegs in zip(table.column("clip_id").to_pylist(), table.column("status").to_pylist(),
                                                       table.column("frames").to_pylist()) if status == "ok" and jpegs]
    jpegs = [j for _, js in rows for j in js]
    tower = image_tower.to(device).eval()
    out = []
    for start in range(0, len(jpegs), batch_size):
        frames = torch.from_numpy(np.stack([decode_jpeg(j) for j in jpegs[start:start + batch_size]])).to(device)
        with autocast(device):
            out.append(tower(frames).float().cpu().numpy().astype(np.float16))
    tokens = np.concatenate(out) if out else np.zeros((0, tower.width, *tower.grid), np.float16)
    counts = np.asarray([len(js) for _, js in rows], np.int32)
    index = pa.table({"clip_id": [cid for cid, _ in rows], "first": np.cumsum(counts) - counts, "count": counts},
                     schema=INDEX_SCHEMA)
    out_dir.mkdir(parents=True, exist_ok=True)
    npy = out_dir / f"{frame_file.stem}.npy"
    with atomic_path(npy) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, tokens)
    write_parquet_atomic(index, out_dir / f"{frame_file.stem}.parquet", {"clipkt.source": _source_stamp(frame_file)})
    return npy


def _is_current(out_dir: Path, frame_file: Path) -> bool:
    index, npy = out_dir / f"{frame_file.stem}.parquet", out_dir / f"{frame_file.stem}.npy"
    return index.exists() and npy.exists() and read_parquet_metadata(index).get("clipkt.source") == _source_stamp(frame_file)


def load_patch_tokens(clip_ids: list[str], frame_dir: Path, tokens_root: Path, image_tower: torch.nn.Module,
                      description: dict, device: torch.device, log=print) -> PatchTokens:
    """The cached tokens of `clip_ids` (in that order), building the shards that are missing or stale.
    Every clip must have ok frames in the frame cache (as `load_clips(frame_dir=...)` requires)."""
    out_dir = tokens_root / teacher_key(description)
    wanted = set(clip_ids)
    where: dict[str, tuple[int, int, int]] = {}
    arrays: list[np.ndarray] = []
    for frame_file in sorted(Path(frame_dir).glob("*.parquet")):
        shard_ids = pq.read_table(frame_file, columns=["clip_id"]).column("clip_id").to_pylist()
        if not wanted.intersection(shard_ids):
            continue
        if not _is_current(out_dir, frame_file):
            log(f"patch tokens: encoding {frame_file.name} of {frame_dir} into {out_dir}")
            build_shard_tokens(image_tower, frame_file, out_dir, device)
        index = pq.read_table(out_dir / f"{frame_file.stem}.parquet").to_pylist()
        arrays.append(np.load(out_dir / f"{frame_file.stem}.npy", mmap_mode="r"))
        for row in index:
            if row["clip_id"] in wanted:
                where[row["clip_id"]] = (len(arrays) - 1, row["first"], row["count"])
    missing = [c for c in clip_ids if c not in where]
    if missing:
        raise ValueError(f"{len(missing)} clips have no cached frames in {frame_dir} to take patch tokens from "
                         f"(first: {missing[0]})")
    a, first, count = (np.asarray(v, np.int64) for v in zip(*(where[c] for c in clip_ids)))
    return PatchTokens(arrays, a, first, count)
