"""clip_image_embeddings and clip_text_embeddings: the frozen CLIP teacher over each shard.

Images: every cached frame of a clip (frame_cache's JPEG crops, L per clip; Places: its one
picture) -> L x D unit vectors. Texts: every caption of a clip (Places `asr_text`, AudioCaps'
captions: 5 per test clip), or for label-only data (VGGSound, AudioSet) a prompt made from
its labels, "a video of {label}" by default -> n x D unit vectors. Stored per shard by
`assets.embedding_store`; a shard whose inputs, teacher weights and parameters are unchanged
is skipped.

The pure parts (`embed_frame_lists`, `clip_texts`) take a teacher's encode function and know
nothing of Dagster; the assets read the shard, call them and write the file.
"""

import hashlib
import io
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from assets.atomic_io import read_parquet_metadata
from assets.dataset_config import DatasetConfig
from assets.embedding_store import embedding_problems, error_row, ok_row, stored_fingerprint, write_embeddings
from assets.manifest import markdown_table
from pipelines.resources import CachePaths, ClipTeacherResource

CODE_VERSION = "1"
UNIT_NORM_CHECK = "finite_unit_norm"


# ----------------------------------------------------------------------------- pure parts


def decode_frames(jpegs: list[bytes]) -> np.ndarray:
    """JPEG bytes -> (L, S, S, 3) uint8 RGB."""
    frames = []
    for b in jpegs:
        with Image.open(io.BytesIO(b)) as im:
            frames.append(np.asarray(im.convert("RGB")))
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


def _digest(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _not_finite(v: np.ndarray) -> bool:
    return not np.isfinite(v).all()


# ----------------------------------------------------------------------------- assets


class TextEmbeddingConfig(dg.Config):
    prompt: str = "a video of {label}"  # for clips with labels but no caption; {label} is replaced
    labels: str = "each"  # each: one prompt per label (AudioSet: several per clip) | joined: one for all


def _teacher_key(teacher) -> dict:
    d = teacher.describe()
    return {k: d[k] for k in ("model_name", "pretrained", "weights_sha256", "precision", "embed_dim")}


def _result(path, rows: list[dict], teacher, started: float, skipped: bool, fingerprint: str,
            extra: dict) -> dg.MaterializeResult:
    statuses = Counter(r["status"] if r["status"] == "ok" else r["error_kind"] for r in rows)
    problems = embedding_problems(path)
    errors = [{"clip_id": r["clip_id"], "kind": r["error_kind"], "error": r["error"]}
              for r in rows if r["status"] != "ok"][:10]
    seconds = time.perf_counter() - started
    return dg.MaterializeResult(
        data_version=dg.DataVersion(fingerprint),
        metadata={"path": dg.MetadataValue.path(str(path)), "bytes": path.stat().st_size, "clips": len(rows),
                  "ok": statuses.get("ok", 0), "by_status": dict(sorted(statuses.items())),
                  "dim": teacher.embed_dim, "teacher": teacher.describe(), "skipped_up_to_date": skipped,
                  "seconds": round(seconds, 2), "first_errors": dg.MetadataValue.md(markdown_table(errors))} | extra,
        check_results=[dg.AssetCheckResult(
            check_name=UNIT_NORM_CHECK, passed=not problems,
            metadata={"problems": len(problems), "first": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems[:10]))})],
    )


def _rows_from_file(path) -> list[dict]:
    return pq.read_table(path, columns=["clip_id", "status", "error_kind", "error"]).to_pylist()


def build_image_embeddings_asset(ds: DatasetConfig, shards: dg.DynamicPartitionsDefinition,
                                 teacher_asset: dg.AssetKey | None = None) -> dg.AssetsDefinition:
    key = dg.AssetKey([ds.name, "clip_image_embeddings"])

    @dg.asset(
        key=key, group_name=ds.name, kinds={"pytorch", "parquet"}, partitions_def=shards, code_version=CODE_VERSION,
        deps=[dg.AssetKey([ds.name, "frame_cache"]), *([teacher_asset] if teacher_asset else [])],
        check_specs=[dg.AssetCheckSpec(UNIT_NORM_CHECK, asset=key, description="every stored vector is finite and unit-norm")],
        description="The CLIP teacher's embedding of every cached frame: L x D unit vectors per clip.",
    )
    def clip_image_embeddings(context: dg.AssetExecutionContext, cache: CachePaths,
                              teacher: ClipTeacherResource) -> dg.MaterializeResult:
        started = time.perf_counter()
        shard = context.partition_key
        src = cache.dataset_dir(ds.name) / "frame_cache" / f"{shard}.parquet"
        if not src.exists():
            raise dg.Failure(f"{src} does not exist: materialise frame_cache for shard {shard} first")
        model = teacher.load()
        fingerprint = _digest({"code": CODE_VERSION, "frames": read_parquet_metadata(src)["clipkt.fingerprint"],
                               "teacher": _teacher_key(model)})
        path = cache.dataset_dir(ds.name) / "clip_image_embeddings" / f"{shard}.parquet"
        if stored_fingerprint(path) == fingerprint:
            return _result(path, _rows_from_file(path), model, started, True, fingerprint, {})
        frames = pq.read_table(src, columns=["clip_id", "split", "status", "error_kind", "error", "frames"])
        cols = {c: frames.column(c).to_pylist() for c in frames.column_names}
        lists = [f if s == "ok" else None for f, s in zip(cols["frames"], cols["status"])]
        encode_start = time.perf_counter()
        embedded = embed_frame_lists(lists, model.encode_images, model.spec.batch_size)
        encode_s = time.perf_counter() - encode_start
        rows = []
        for i, (clip_id, split) in enumerate(zip(cols["clip_id"], cols["split"])):
            e = embedded[i]
            if cols["status"][i] != "ok":  # frame_cache's own error, carried over
                rows.append(error_row(clip_id, split, cols["error_kind"][i], cols["error"][i]))
            elif isinstance(e, str):
                rows.append(error_row(clip_id, split, "corrupt_cache", f"{src}: {clip_id}: {e}"))
            elif _not_finite(e):
                rows.append(error_row(clip_id, split, "non_finite", f"{clip_id}: the teacher gave non-finite values"))
            else:
                rows.append(ok_row(clip_id, split, e))
        n_frames = sum(r["count"] for r in rows)
        write_embeddings(rows, path, model.embed_dim, model.describe(), {"source": "frame_cache"}, fingerprint)
        return _result(path, rows, model, started, False, fingerprint,
                       {"frames": n_frames, "frames_per_s": round(n_frames / max(encode_s, 1e-9), 1)})

    return clip_image_embeddings


def build_text_embeddings_asset(ds: DatasetConfig, shards: dg.DynamicPartitionsDefinition,
                                teacher_asset: dg.AssetKey | None = None) -> dg.AssetsDefinition:
    key = dg.AssetKey([ds.name, "clip_text_embeddings"])

    @dg.asset(
        key=key, group_name=ds.name, kinds={"pytorch", "parquet"}, partitions_def=shards, code_version=CODE_VERSION,
        deps=[dg.AssetKey([ds.name, "clip_shards"]), *([teacher_asset] if teacher_asset else [])],
        check_specs=[dg.AssetCheckSpec(UNIT_NORM_CHECK, asset=key, description="every stored vector is finite and unit-norm")],
        description="The CLIP teacher's embedding of every caption of a clip (or of a prompt made from its labels).",
    )
    def clip_text_embeddings(context: dg.AssetExecutionContext, config: TextEmbeddingConfig, cache: CachePaths,
                             teacher: ClipTeacherResource) -> dg.MaterializeResult:
        started = time.perf_counter()
        if config.labels not in ("each", "joined") or "{label}" not in config.prompt:
            raise dg.Failure(f"clip_text_embeddings config: labels={config.labels!r} (each | joined), "
                             f"prompt={config.prompt!r} (must contain {{label}})")
        shard = context.partition_key
        src = cache.shard_path(ds.name, shard)
        model = teacher.load()
        fingerprint = _digest({"code": CODE_VERSION, "shard": read_parquet_metadata(src)["clipkt.digest"],
                               "teacher": _teacher_key(model), "prompt": config.prompt, "labels": config.labels})
        path = cache.dataset_dir(ds.name) / "clip_text_embeddings" / f"{shard}.parquet"
        if stored_fingerprint(path) == fingerprint:
            return _result(path, _rows_from_file(path), model, started, True, fingerprint, {})
        members = pq.read_table(src, columns=["clip_id", "split", "status", "labels", "label_names", "captions"]).to_pylist()
        members = [m for m in members if m["status"] != "malformed"]  # malformed lines are not clips
        texts = [clip_texts(m, config.prompt, config.labels) for m in members]
        flat = [t for ts in texts for t in ts]
        emb = model.encode_texts(flat)
        rows, lo = [], 0
        for m, ts in zip(members, texts):
            v = emb[lo:lo + len(ts)]
            lo += len(ts)
            if not ts:
                rows.append(error_row(m["clip_id"], m["split"], "no_text", f"{m['clip_id']}: no caption and no label"))
            elif _not_finite(v):
                rows.append(error_row(m["clip_id"], m["split"], "non_finite", f"{m['clip_id']}: non-finite text embedding", ts))
            else:
                rows.append(ok_row(m["clip_id"], m["split"], v, ts))
        write_embeddings(rows, path, model.embed_dim, model.describe(),
                         {"prompt": config.prompt, "labels": config.labels}, fingerprint)
        examples = [{"clip_id": r["clip_id"], "texts": " / ".join(r["texts"][:5])} for r in rows[:5]]
        return _result(path, rows, model, started, False, fingerprint,
                       {"texts": len(flat), "texts_per_clip": round(len(flat) / max(1, len(rows)), 2),
                        "examples": dg.MetadataValue.md(markdown_table(examples))})

    return clip_text_embeddings
