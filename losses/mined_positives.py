"""Which (audio, image) pairs of a batch are mined positives (seed 000), from the neighbour tables.

`neighbours[table]` is an (N, k) array: row i holds clip i's top-k neighbours in that table, as
row indices of the same N clips, -1 where there are fewer. `batch` holds the rows of the batch's
clips (distinct). The result `P` is a (B, B) bool mask over the batch's similarity matrix, whose
rows are audio (the spoken caption) and whose columns are images: `P[a, b]` says that audio a and
image b are a positive pair. The row loss reads `P`, the column loss `P.T`
(`losses.contrastive.MultiPositiveInfoNCE`); the diagonal (`org`, the clip's own pair) is always
positive.

Two readings of the slides, chosen by the experiment's `loss.mode`:

pairs (the slides' "How to collect Semantically Similar Samples"; the default)
    Every clip r of the batch is an anchor. Its *image sources* are its own image (`org`) plus the
    images of its top-k `t2i` neighbours (clips whose image is near r's caption text) and `i2i`
    neighbours (near r's image); its *caption sources* are its own spoken caption plus the audio
    of its top-k `t2t` and `i2t` neighbours, as far as the experiment's tables allow. Each
    combination is a training pair, the slides' <image source, caption source>:

        P[a, b] = OR over anchors r in the batch of  a in captions(r)  and  b in images(r)

    so <org, i2t> pairs r's image with an i2t neighbour's audio, <t2i, org> a t2i neighbour's
    image with r's audio, and <t2i, i2t> (the slides' example "Two pots of soup ...") an i2t
    neighbour's audio with a t2i neighbour's image, neither being r. The mask is directional:
    `t2i`/`i2i` neighbours replace the image, `t2t`/`i2t` neighbours replace the audio; it is not
    symmetric. `oracle` (SynthAV's ground truth, clips with the same semantic key) is a source
    on both sides: a same-key clip's picture and its caption both describe the anchor.
    Pairs only meet when both clips are in the batch; `assets.training.mined_batches` samples
    mined partners into each batch so that they do.

mask (the earlier in-batch reading, kept for comparison)
    Clips i and j are positives when j is among i's top-k in any chosen table or i among j's,
    whatever the direction: one symmetric mask, applied alike to audio->image and image->audio.

With no table other than `org`, both give the identity, and the loss equals InfoNCE.
"""

from __future__ import annotations

import numpy as np
import torch

IMAGE_SOURCES = ("t2i", "i2i", "oracle")  # tables whose neighbours' images pair with the anchor's caption
CAPTION_SOURCES = ("t2t", "i2t", "oracle")  # tables whose neighbours' captions (audio) pair with the anchor's image
MINED_TABLES = ("t2t", "t2i", "i2t", "i2i", "oracle")
MODES = ("pairs", "mask")


def _check(batch: np.ndarray, neighbours: dict[str, np.ndarray], tables, k: int) -> tuple[np.ndarray, list[str]]:
    rows = np.asarray(batch, dtype=np.int64)
    mined = [t for t in tables if t != "org"]
    unknown = [t for t in mined if t not in MINED_TABLES]
    if unknown:
        raise ValueError(f"unknown neighbour table(s) {unknown}; choose from org, {', '.join(MINED_TABLES)}")
    for t in mined:
        if not 1 <= k <= neighbours[t].shape[1]:
            raise ValueError(f"k={k} but table {t} holds {neighbours[t].shape[1]} neighbours per clip")
    if len(np.unique(rows)) != len(rows):
        raise ValueError("a batch must not hold the same clip twice (it would be its own negative)")
    return rows, mined


def _membership(rows: np.ndarray, neighbours: dict[str, np.ndarray], tables: list[str], k: int) -> np.ndarray:
    """(B, B) bool: [r, c] when batch clip c is among batch clip r's top-k in any of `tables`, or c == r."""
    member = np.eye(len(rows), dtype=bool)
    for t in tables:
        top = neighbours[t][rows, :k]  # (B, k); -1 matches no row
        member |= (top[:, None, :] == rows[None, :, None]).any(axis=2)
    return member


def pair_mask(batch: np.ndarray, neighbours: dict[str, np.ndarray], tables, k: int) -> torch.Tensor:
    """The `pairs` reading: (B, B) bool, [a, b] = audio a and image b are some anchor's <image, caption> pair."""
    rows, mined = _check(batch, neighbours, tables, k)
    captions = _membership(rows, neighbours, [t for t in mined if t in CAPTION_SOURCES], k)  # [r, a]
    images = _membership(rows, neighbours, [t for t in mined if t in IMAGE_SOURCES], k)  # [r, b]
    pairs = captions.T.astype(np.int32) @ images.astype(np.int32) > 0  # [a, b] = OR_r captions[r, a] & images[r, b]
    return torch.from_numpy(pairs)


def symmetric_mask(batch: np.ndarray, neighbours: dict[str, np.ndarray], tables, k: int) -> torch.Tensor:
    """The `mask` reading: (B, B) bool, [i, j] = j among i's top-k in a chosen table, or i among j's."""
    rows, mined = _check(batch, neighbours, tables, k)
    member = _membership(rows, neighbours, mined, k)
    return torch.from_numpy(member | member.T)


def positive_mask(mode: str, batch: np.ndarray, neighbours: dict[str, np.ndarray], tables, k: int) -> torch.Tensor:
    if mode == "pairs":
        return pair_mask(batch, neighbours, tables, k)
    if mode == "mask":
        return symmetric_mask(batch, neighbours, tables, k)
    raise ValueError(f"unknown mined-positive mode {mode!r}; choose from {MODES}")
