"""Sound localisation on clips whose sounding objects have ground-truth boxes (SynthAV's
`sounding_boxes.parquet`): the audio-prompted heatmap of each evaluation clip over its frame
`ceil(L/2) - 1` (the frame retrieval is scored on), against the box of what sounds at that
frame's time.

Heatmaps, on the image tower's patch grid (row 0 the top of the frame):
- DenseAV: `losses.dense_similarity.heatmaps` of the trained model (eval mode, no pooling),
  per head and combined (element-wise max over heads);
- the global baseline: the cosine of each CLIP patch embedding (`ImagePatchTokens.embed_patches`)
  with the clip's global audio embedding from an audio encoder trained with InfoNCE, the only
  map a global model can draw.

Metrics per method (`assets.localisation.metrics`), over the clips with something sounding at
the frame's time (clips without are counted, not scored): cIoU (share of clips with consensus
IoU >= 0.5 at the median threshold, the VGGSound-source protocol) and its AUC, and pixel AP (the
mean over clips of the average precision of the heatmap's pixels for the box's pixels). Maps
are upsampled bilinearly to the frame first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from assets.caches.fbank_stats import Normaliser
from assets.localisation.boxes import box_in_crop, box_mask
from assets.localisation.metrics import ciou, localisation_summary, pixel_average_precision, upsample_heatmap
from assets.training.data import BatchLoader, ClipSet
from assets.training.evaluation import encode_audio, eval_pass
from data.synthav.sounding_boxes import box_at, read_sounding_boxes
from losses.dense_similarity import heatmaps
from losses.frame_matching import eval_frame_index
from models.clip_patch_tokens import ImagePatchTokens
from models.denseav import DenseAV

Box = tuple[float, float, float, float]


def eval_frame_boxes(clips: ClipSet, frame_dir: Path, boxes_path: Path, crop_size: int) -> list[Box | None]:
    """Per clip the box (crop pixels) of what sounds at its evaluation frame's time, None when
    nothing does; a clip missing from the boxes file is an error naming the file."""
    if not boxes_path.is_file():
        raise FileNotFoundError(f"{boxes_path} missing: localisation needs ground-truth boxes (SynthAV writes them)")
    boxes = read_sounding_boxes(boxes_path)
    wanted = set(clips.clip_ids)
    times: dict[str, float] = {}
    for shard in sorted(Path(frame_dir).glob("*.parquet")):
        table = pq.read_table(shard, columns=["clip_id", "timestamps", "span_start_s"])
        for cid, stamps, start in zip(*(table.column(c).to_pylist() for c in ("clip_id", "timestamps", "span_start_s"))):
            if cid in wanted and stamps:
                times[cid] = float(start or 0.0) + float(stamps[eval_frame_index(len(stamps))])
    out = []
    for cid in clips.clip_ids:
        if cid not in boxes:
            raise KeyError(f"{boxes_path}: no boxes for clip {cid}")
        sb = boxes[cid]
        box = box_at(sb, times.get(cid, 0.0))
        out.append(None if box is None else box_in_crop(box, (sb.width, sb.height), crop_size))
    return out


def eval_frames(clips: ClipSet) -> np.ndarray:
    """(N, S, S, 3) uint8: each clip's evaluation frame, as the loaders pick it."""
    loader = BatchLoader(clips, np.arange(len(clips)), 64, _identity, drop_last=False, workers=0, frame_pick="eval")
    return np.concatenate([b.pixels.numpy() for b in loader])


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@torch.no_grad()
def dense_heatmaps(model: DenseAV, clips: ClipSet, normalise: Normaliser, device: torch.device, heads: int,
                   batch_size: int = 32) -> np.ndarray:
    """(N, K + 1, h, w): per head, then combined."""
    def step(b):
        f = model(b.audio, b.lengths, b.pixels)
        return heatmaps(f.audio.float(), f.image.float(), f.mask, heads).cpu()

    return torch.cat(eval_pass(model, clips, normalise, device, step, batch_size, frame_pick="eval")).numpy()


@torch.no_grad()
def global_heatmaps(encoder: torch.nn.Module, image: ImagePatchTokens, clips: ClipSet, normalise: Normaliser,
                    device: torch.device, batch_size: int = 32) -> np.ndarray:
    """(N, 1, h, w): cosine of each patch embedding with the clip's global audio embedding."""
    def step(b):
        audio = F.normalize(encode_audio(encoder, b.audio, b.lengths).float(), dim=-1)
        patches = F.normalize(image.embed_patches(b.pixels).float(), dim=1)
        return torch.einsum("bd,bdhw->bhw", audio, patches)[:, None].cpu()

    return torch.cat(eval_pass([encoder, image], clips, normalise, device, step, batch_size,
                               frame_pick="eval")).numpy()


def localisation_metrics(maps: np.ndarray, boxes: list[Box | None], frame_size: int) -> dict:
    """maps (N, h, w) and per clip a box or None -> {"cIoU", "AUC", "pixel_AP", "clips", "without_box"}."""
    cious, aps = [], []
    for heatmap, box in zip(maps, boxes):
        if box is None:
            continue
        mask = box_mask(box, frame_size)
        if not mask.any():
            continue
        up = upsample_heatmap(heatmap, frame_size)
        cious.append(ciou(up, mask))
        aps.append(pixel_average_precision(up, mask))
    if not cious:
        raise ValueError("no evaluation clip has a sounding object at its evaluation frame")
    return localisation_summary(cious) | {"pixel_AP": float(np.mean(aps)), "clips": len(cious),
                                          "without_box": len(boxes) - len(cious)}
