"""What a cascaded SpeechCLIP run's keywords say (the slides' "Detokenize KW"), and how often they
name a word of the spoken caption.

For each evaluation utterance, each of the K keywords is a token of the model's table (the
straight-through selection); its top-5 nearest tokens are the table rows of highest cosine with
it, the start, end and pad tokens left out (as the reference's `validation_epoch_end`, whose
top-1 is the keyword's own token). Keyword hit rate: the share of utterances where any top-5
token of any keyword is a token of the caption (the caption's BPE ids, specials excluded; the
reference reports it per keyword slot, given here too), and the keyword precision: the share of
keywords whose own token is a word of the caption (top-1 alone). The random-token rates: the same
with each keyword replaced by a token drawn uniformly from the table (specials excluded),
averaged over `draws` draws: what a model that maps speech to nothing would score. With a small
table (SynthAV's captions use about 60 tokens) the any-keyword rate saturates for random tokens
too, and the per-keyword rate and the precision are the ones that tell models apart. "With and
without the BatchNorm" are two experiments (`loss.keyword_batchnorm`), each with its own report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from assets.caches.fbank_stats import Normaliser
from assets.training.data import ClipSet
from assets.training.evaluation import eval_pass
from models.speechclip import SpeechCLIP

TOP = 5


@torch.no_grad()
def utterance_keywords(model: SpeechCLIP, clips: ClipSet, normalise: Normaliser, device: torch.device,
                       batch_size: int = 64) -> np.ndarray:
    """(N, K) the vocabulary ids of every utterance's keywords (the model in eval mode)."""
    out = eval_pass(model, clips, normalise, device, lambda b: model.keywords(b.audio, b.lengths).token_ids.cpu(),
                    batch_size)
    return torch.cat(out).numpy()


@torch.no_grad()
def nearest_tokens(model: SpeechCLIP, token_ids: np.ndarray, top: int = TOP) -> tuple[np.ndarray, np.ndarray]:
    """(..., top) vocabulary ids and cosines of each token's nearest table rows (specials excluded)."""
    branch = model.cascaded
    table = branch.table().float()
    ids = branch.token_ids.to(table.device)
    excluded = torch.isin(ids, branch.excluded_ids.to(ids.device))
    row_of = {int(t): i for i, t in enumerate(ids.tolist())}
    rows = torch.tensor([row_of[int(t)] for t in np.asarray(token_ids).ravel()], device=table.device)
    unit = F.normalize(table, dim=-1)
    cos = (unit[rows] @ unit.T).masked_fill(excluded, float("-inf"))
    sims, idx = cos.topk(top, dim=-1)
    shape = (*np.asarray(token_ids).shape, top)
    return ids[idx].cpu().numpy().reshape(shape), sims.cpu().numpy().reshape(shape)


def caption_token_sets(tokenizer, captions: Sequence[Sequence[str]], excluded: Sequence[int]) -> list[set[int]]:
    """Per utterance the BPE ids of its caption(s), specials excluded."""
    skip = set(excluded)
    return [{t for text in texts for t in tokenizer.encode(text)} - skip for texts in captions]


def hit_rates(neighbours: np.ndarray, gold: list[set[int]]) -> dict:
    """neighbours (N, K, top) ids, column 0 the keyword's own token -> {"any": share of utterances where
    any keyword's top tokens meet the caption, "per_keyword": [share per keyword slot], "per_keyword_mean",
    "precision": share of keywords whose own token is in the caption}."""
    hits = np.array([[bool(set(neighbours[i, k].tolist()) & gold[i]) for k in range(neighbours.shape[1])]
                     for i in range(len(gold))], dtype=bool)
    own = np.array([[int(neighbours[i, k, 0]) in gold[i] for k in range(neighbours.shape[1])]
                    for i in range(len(gold))], dtype=bool)
    return {"any": float(hits.any(axis=1).mean()), "per_keyword": hits.mean(axis=0).tolist(),
            "per_keyword_mean": float(hits.mean()), "precision": float(own.mean())}


def random_token_rates(model: SpeechCLIP, gold: list[set[int]], keywords: int, draws: int = 10, seed: int = 0) -> dict:
    """`hit_rates` (any, per_keyword_mean, precision) of keywords drawn uniformly from the table
    (specials excluded), mean over draws."""
    branch = model.cascaded
    ids = branch.token_ids.cpu()
    allowed = ids[~torch.isin(ids, branch.excluded_ids.cpu())].numpy()
    rng = np.random.default_rng(seed)
    rates = []
    for _ in range(draws):
        drawn = rng.choice(allowed, size=(len(gold), keywords))
        rates.append(hit_rates(nearest_tokens(model, drawn)[0], gold))
    return {k: float(np.mean([r[k] for r in rates])) for k in ("any", "per_keyword_mean", "precision")}


def token_text(tokenizer, token_id: int) -> str:
    """The BPE string of one token as the slides print it (`child</w>`)."""
    return tokenizer.decoder.get(int(token_id), f"<{int(token_id)}>")
