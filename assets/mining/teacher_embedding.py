"""What the clip_image_embeddings and clip_text_embeddings assets compute: the frozen CLIP teacher over each shard.

Images: every cached frame of a clip (frame_cache's JPEG crops, L per clip; Places: its one
picture) -> L x D unit vectors. Texts: every caption of a clip (Places `asr_text`, AudioCaps'
captions: 5 per test clip), or for label-only data (VGGSound, AudioSet) a prompt made from
its labels, "a video of {label}" by default -> n x D unit vectors. Stored per shard by
`assets.mining.embedding_store`; a shard whose inputs, teacher weights and parameters are unchanged
is skipped.

Everything here takes a teacher's encode function and knows nothing of Dagster; the assets
(assets/mining/assets.py) read the shard, call `frame_embedding_rows` / `text_embedding_rows`
and write the file.
"""

import hashlib
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from assets.caches.video_frames import decode_jpeg
from assets.mining.embedding_store import error_row, ok_row

CODE_VERSION = "1"



def decode_frames(jpegs: list[bytes]) -> np.ndarray:
    """JPEG bytes -> (L, S, S, 3) uint8 RGB."""
    frames = [decode_jpeg(b) for b in jpegs]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"frames of different sizes {sorted(shapes)}")
    return np.stack(frames)


def _groups(counts: list[int], batch_frames: int) -> Iterator[list[int]]:
    """Consecutive clip indices whose frames add up to at most batch_frames (at least one clip)."""
    group, total = [], 0
    for i, n in enumerate(counts):
        if n == 0:
            continue
        if group and total + n > batch_frames:
            yield group
            group, total = [], 0
        group.append(i)
        total += n
    if group:
        yield group


def _decode_group(frame_lists: list, group: list[int]) -> list[tuple[int, np.ndarray | str]]:
    out = []
    for i in group:
        try:
            out.append((i, decode_frames(frame_lists[i])))
        except Exception as e:  # a corrupt cached JPEG fails its clip only
            out.append((i, f"cannot decode cached frames: {type(e).__name__}: {e}"))
    return out


def embed_frame_lists(frame_lists: list[list[bytes] | None], encode: Callable[[np.ndarray], np.ndarray],
                      batch_frames: int) -> list[np.ndarray | str | None]:
    """Per clip: its frames' embeddings (L, D), an error message, or None where there were no frames.

    Frames of several clips go through `encode` together, batch_frames at a time; the next
    batch's JPEGs are decoded in a background thread while the current one is encoded."""
    counts = [len(f) if f else 0 for f in frame_lists]
    results: list[np.ndarray | str | None] = [None] * len(frame_lists)
    groups = list(_groups(counts, batch_frames))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="jpeg-decode") as pool:
        pending = pool.submit(_decode_group, frame_lists, groups[0]) if groups else None
        for g in range(len(groups)):
            decoded = pending.result()
            pending = pool.submit(_decode_group, frame_lists, groups[g + 1]) if g + 1 < len(groups) else None
            good = [(i, f) for i, f in decoded if not isinstance(f, str)]
            for i, f in decoded:
                if isinstance(f, str):
                    results[i] = f
            if not good:
                continue
            emb = encode(np.concatenate([f for _, f in good]))
            lo = 0
            for i, f in good:
                results[i] = emb[lo:lo + len(f)]
                lo += len(f)
    return results


def clip_texts(member: dict, prompt: str, labels: str) -> list[str]:
    """The texts that stand for a clip: its captions when it has any, else prompts from its labels.

    labels="each": one prompt per label ("a video of Speech", "a video of Music");
    labels="joined": one prompt for all ("a video of Speech, Music")."""
    captions = [c.strip() for c in member.get("captions") or [] if c and c.strip()]
    if captions:
        return captions
    names = [n for n in (member.get("label_names") or member.get("labels") or []) if n]
    if not names:
        return []
    if labels == "each":
        return [prompt.format(label=n) for n in names]
    if labels == "joined":
        return [prompt.format(label=", ".join(names))]
    raise ValueError(f"labels must be 'each' or 'joined', got {labels!r}")


def digest(parts: dict) -> str:
    """16 hex digits of sha256 over the JSON of `parts` (keys sorted): a file's input fingerprint."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def teacher_key(teacher) -> dict:
    """The part of a teacher's description that changes its embeddings."""
    d = teacher.describe()
    return {k: d[k] for k in ("model_name", "pretrained", "weights_sha256", "precision", "embed_dim")}


def frame_embedding_rows(frames: pa.Table, encode: Callable[[np.ndarray], np.ndarray], batch_frames: int,
                         source: str) -> list[dict]:
    """Embedding rows for a frame_cache shard table: frame_cache's own errors carried over, frames
    that no longer decode as `corrupt_cache`, non-finite outputs as `non_finite`."""
    cols = {c: frames.column(c).to_pylist() for c in ("clip_id", "split", "status", "error_kind", "error", "frames")}
    lists = [f if s == "ok" else None for f, s in zip(cols["frames"], cols["status"])]
    embedded = embed_frame_lists(lists, encode, batch_frames)
    rows = []
    for i, (clip_id, split) in enumerate(zip(cols["clip_id"], cols["split"])):
        e = embedded[i]
        if cols["status"][i] != "ok":
            rows.append(error_row(clip_id, split, cols["error_kind"][i], cols["error"][i]))
        elif isinstance(e, str):
            rows.append(error_row(clip_id, split, "corrupt_cache", f"{source}: {clip_id}: {e}"))
        elif not np.isfinite(e).all():
            rows.append(error_row(clip_id, split, "non_finite", f"{clip_id}: the teacher gave non-finite values"))
        else:
            rows.append(ok_row(clip_id, split, e))
    return rows


def text_embedding_rows(members: list[dict], encode: Callable[[list[str]], np.ndarray], prompt: str,
                        labels: str) -> tuple[list[dict], int]:
    """Embedding rows for a shard's manifest rows (malformed lines are not clips and are dropped),
    and the number of texts embedded. A clip with no caption and no label is `no_text`."""
    members = [m for m in members if m["status"] != "malformed"]
    texts = [clip_texts(m, prompt, labels) for m in members]
    flat = [t for ts in texts for t in ts]
    emb = encode(flat)
    rows, lo = [], 0
    for m, ts in zip(members, texts):
        v = emb[lo:lo + len(ts)]
        lo += len(ts)
        if not ts:
            rows.append(error_row(m["clip_id"], m["split"], "no_text", f"{m['clip_id']}: no caption and no label"))
        elif not np.isfinite(v).all():
            rows.append(error_row(m["clip_id"], m["split"], "non_finite", f"{m['clip_id']}: non-finite text embedding", ts))
        else:
            rows.append(ok_row(m["clip_id"], m["split"], v, ts))
    return rows, len(flat)
