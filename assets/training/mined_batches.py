"""Batches that bring mined partners together (seed 000, `loss.mode: pairs`).

A mined pair only counts when both clips are in the same batch, and in a random batch of 128 out
of 100K clips a clip's top-k neighbours almost never are. So each batch is built from *anchors*
and *partners*: `anchors = round(B / (1 + partner_share))` anchors come from a seeded stream of
permutations of the training clips (each clip is an anchor equally often over a run, to within
one; a batch that straddles two permutations and meets a clip twice gives the repeat's slot to a
random clip), and each of the first `B - anchors` anchors gets one partner, drawn uniformly from its
*sources*: the entries of its top-k rows in the experiment's mined tables (a clip listed by two
tables is twice as likely), skipping clips already in the batch. When every source is taken the
slot goes to a random clip not in the batch. A batch never holds a clip twice.

An epoch has `N // B` steps, as for InfoNCE, so every row of an ablation table trains on the same
number of clip-slots; partner_share 0 gives plain random batches (anchors only).

Deterministic: epoch e's batches depend only on (seed, e), so a resumed run continues exactly.
"""

from __future__ import annotations

import numpy as np


class MinedPairBatches:
    """`epoch(e)` -> the flat (steps * B,) order of training rows of epoch e, B rows per batch."""

    def __init__(self, n: int, batch_size: int, neighbours: dict[str, np.ndarray], tables, k: int,
                 partner_share: float, seed: int):
        if not 0.0 <= partner_share <= 1.0:
            raise ValueError(f"partner_share must be in [0, 1], got {partner_share}")
        if batch_size > n:
            raise ValueError(f"batch of {batch_size} from {n} clips")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.anchors = max(1, round(batch_size / (1.0 + partner_share)))
        self.steps = n // batch_size
        self.tables = [neighbours[t] for t in tables if t != "org"]
        self.k = k

    def _anchor_stream(self, start: int, count: int) -> np.ndarray:
        """Positions [start, start + count) of the concatenated per-cycle permutations."""
        out, cycle, offset = [], start // self.n, start % self.n
        while count > 0:
            perm = np.random.default_rng((self.seed, 0x5EED, cycle)).permutation(self.n)
            take = perm[offset:offset + count]
            out.append(take)
            count -= len(take)
            cycle, offset = cycle + 1, 0
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def epoch(self, epoch: int) -> np.ndarray:
        per_epoch = self.steps * self.anchors
        stream = self._anchor_stream(epoch * per_epoch, per_epoch)
        rng = np.random.default_rng((self.seed, 0xFA1E, epoch))
        in_batch = np.zeros(self.n, dtype=bool)
        order = []
        for b in range(self.steps):
            batch: list[int] = []
            for c in stream[b * self.anchors:(b + 1) * self.anchors]:
                # a batch that straddles two permutations can meet a clip twice: the repeat's
                # slot goes to a random clip not in the batch
                batch.append(int(c) if not in_batch[c] else self._random_free(in_batch, rng))
                in_batch[batch[-1]] = True
            for anchor in batch[:self.batch_size - self.anchors]:
                batch.append(self._partner(anchor, in_batch, rng))
            order.extend(batch)
            in_batch[batch] = False
        return np.asarray(order, dtype=np.int64)

    def _partner(self, anchor: int, in_batch: np.ndarray, rng: np.random.Generator) -> int:
        candidates = np.concatenate([ids[anchor, :self.k] for ids in self.tables]) if self.tables else np.zeros(0, int)
        candidates = candidates[candidates >= 0]
        candidates = candidates[~in_batch[candidates]]
        pick = int(candidates[rng.integers(len(candidates))]) if len(candidates) else self._random_free(in_batch, rng)
        in_batch[pick] = True
        return pick

    @staticmethod
    def _random_free(in_batch: np.ndarray, rng: np.random.Generator) -> int:
        free = np.flatnonzero(~in_batch)
        return int(free[rng.integers(len(free))])
