"""Cascaded SpeechCLIP (seed 003; Shih et al. 2022, reference code github `atosystem/SpeechCLIP`):
speech mapped to K keywords in CLIP's token space and read through CLIP's frozen text encoder
(the cascaded branch), and a global speech embedding (the parallel branch), both matched
against CLIP's image embeddings.

As the reference computes it (avssl/model/kwClip.py, speechclip_c_modules/, clip_official.py):

- `WeightedLayerSum`: the featurizer's hidden states mixed with softmax(w), w initialised to
  zeros (a uniform mix at the start); `normalize` (the large configs) puts a non-affine
  LayerNorm on every state first (`weighted_sum.py`).
- `CascadedBranch`: K learned keyword vectors (N(0, 1)) prepended to the frames; one
  single-head self-attention with dropout 0.1 on the attention weights, residual and LayerNorm,
  no feed-forward (`MultiheadAttentionAndNorm`; the configs' n_layers / dim_feedforward are
  ignored by the reference, and so not offered here); padding frames masked, keywords and
  frames attending to each other; the first K outputs through one Linear to CLIP's token
  width; `KeywordBatchNorm`; the cosine of every keyword with every row of the token table;
  the pad, start and end tokens excluded (-inf); `straight_through_one_hot` at temperature
  0.1; the one-hot times the table, so each keyword is exactly a token embedding.
- `encode_keywords`: [start, kw_1 .. kw_K, end, pad ...] through the frozen text transformer
  (its causal mask), `ln_final`, the output at position K + 1 (the end token) through
  `text_projection` (`clip_official.encode_keywords`).
- `ParallelBranch`: a learned class token, one post-norm `nn.TransformerEncoderLayer` (8
  heads, feed-forward 4 x width, GELU, dropout 0.1) and a final LayerNorm; the class output
  through one Linear to CLIP's embedding width.

The token table is the teacher's own `token_embedding.weight`, read at every call (never
copied), restricted to `token_ids`: the reference's "reduced" table is every BPE id that occurs
in the dataset's tokenised captions, specials included, most frequent first
(`caption_vocabulary`); None uses the whole vocabulary.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.audio_vit import AudioViT
from models.davenet import DaveNet, pooled_lengths
from models.denseav import audio_token_mask

KEYWORD_TEMPERATURE = 0.1  # SimpleVectorQuantizer temp "fixed=0.1"
BN_INITS = ("per_dimension", "reference")


class WeightedLayerSum(nn.Module):
    def __init__(self, layers: int, normalize: bool = False):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(layers))
        self.normalize = normalize

    def forward(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        """`layers` tensors (B, T, C) -> (B, T, C)."""
        if len(states) != len(self.weights):
            raise ValueError(f"expected {len(self.weights)} hidden states, got {len(states)}")
        x = torch.stack(list(states), dim=0)
        if self.normalize:
            x = F.layer_norm(x, (x.shape[-1],))
        w = torch.softmax(self.weights, dim=0).to(x.dtype)
        return (w.view(-1, *[1] * (x.ndim - 1)) * x).sum(0)


class KeywordBatchNorm(nn.Module):
    """One BatchNorm1d over all K x D keyword dimensions (the reference's `eachKw`, `parallel`),
    gamma initialised to the token table's per-dimension standard deviation (unbiased) and beta
    to its mean, both learnable.

    `init`: `per_dimension` gives keyword k, dimension d gamma = std[d], beta = mean[d] (what the
    paper describes). `reference` reproduces the released code exactly: it lays the features out
    dimension-major (d * K + k) but tiles the statistics keyword-major, so (k, d) starts from
    std[(d * K + k) mod D] and mean[(d * K + k) mod D] (kw_bn.py `Kw_BatchNorm`, parallel=True)."""

    def __init__(self, keywords: int, dim: int, mean: torch.Tensor, std: torch.Tensor, init: str = "per_dimension"):
        super().__init__()
        if init not in BN_INITS:
            raise ValueError(f"init must be one of {BN_INITS}, got {init!r}")
        self.keywords, self.dim = keywords, dim
        self.bn = nn.BatchNorm1d(keywords * dim)
        gamma, beta = std.detach().float().repeat(keywords), mean.detach().float().repeat(keywords)  # index k * D + d
        if init == "reference":
            k, d = torch.meshgrid(torch.arange(keywords), torch.arange(dim), indexing="ij")
            source = ((d * keywords + k) % dim).reshape(-1)
            gamma, beta = std.detach().float()[source], mean.detach().float()[source]
        with torch.no_grad():
            self.bn.weight.copy_(gamma)
            self.bn.bias.copy_(beta)

    def forward(self, keywords: torch.Tensor) -> torch.Tensor:
        b = keywords.shape[0]
        return self.bn(keywords.reshape(b, self.keywords * self.dim)).reshape(b, self.keywords, self.dim)


def straight_through_one_hot(logits: torch.Tensor, temperature: float, training: bool) -> torch.Tensor:
    """(..., V) scores -> (..., V): forward the hard one-hot of the argmax; in training the
    gradient of softmax(logits / temperature) (`hard_x + x - x.detach()`), in evaluation none
    (SimpleVectorQuantizer, no Gumbel noise)."""
    hard = F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    if not training:
        return hard
    soft = torch.softmax(logits / temperature, dim=-1)
    return hard + soft - soft.detach()


def caption_vocabulary(tokenizer, captions: Sequence[str]) -> torch.Tensor:
    """The BPE ids of the tokenised captions (start, end and pad included, as the reference's
    `stat_textCLIP_input.py` counts them), most frequent first (ties: lower id first)."""
    counts: Counter = Counter()
    tokens = tokenizer(list(captions))
    for row in tokens.tolist():
        counts.update(row)
    return torch.tensor(sorted(counts, key=lambda t: (-counts[t], t)), dtype=torch.long)


def special_ids(tokenizer) -> tuple[int, int, int]:
    """(pad, start, end) of an open_clip tokenizer."""
    return 0, int(tokenizer.sot_token_id), int(tokenizer.eot_token_id)


@torch.no_grad()
def table_statistics(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and unbiased standard deviation of a (V, D) token table."""
    return table.float().mean(0), table.float().std(0, unbiased=True)


def encode_keywords(clip: nn.Module, keywords: torch.Tensor, start_id: int, end_id: int) -> torch.Tensor:
    """(B, K, W) token-space vectors -> (B, E) CLIP text embeddings (unnormalised): the keywords
    at positions 1..K between the start token and the end token (position K + 1), pad (id 0)
    after it, through `clip`'s text transformer; the output at the end token, projected."""
    b, k, _ = keywords.shape
    context = clip.positional_embedding.shape[0]
    if k + 2 > context:
        raise ValueError(f"{k} keywords need a context of {k + 2} tokens; the text encoder has {context}")
    text = torch.zeros(b, context, dtype=torch.long, device=keywords.device)
    text[:, 0], text[:, k + 1] = start_id, end_id
    cast = clip.transformer.get_cast_dtype() if hasattr(clip.transformer, "get_cast_dtype") else keywords.dtype
    x = clip.token_embedding(text).to(cast)
    x = torch.cat([x[:, :1], keywords.to(cast), x[:, k + 1:]], dim=1)
    x = x + clip.positional_embedding.to(cast)
    x = clip.transformer(x, attn_mask=clip.attn_mask)
    x = clip.ln_final(x)[:, k + 1]
    proj = clip.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def padding_mask(lengths: torch.Tensor, prefix: int, total: int) -> torch.Tensor:
    """(B, total) bool, True where padded: `prefix` leading tokens always valid, then lengths frames."""
    return torch.arange(total, device=lengths.device)[None, :] >= (lengths[:, None] + prefix)


@dataclass
class Keywords:
    embeddings: torch.Tensor  # (B, K, W): exactly the chosen token embeddings (straight-through in training)
    token_ids: torch.Tensor  # (B, K) the chosen tokens' vocabulary ids


class CascadedBranch(nn.Module):
    def __init__(self, clip: nn.Module, feat_dim: int, token_ids: torch.Tensor | None, excluded_ids: Sequence[int],
                 start_id: int, end_id: int, keywords: int = 8, temperature: float = KEYWORD_TEMPERATURE,
                 batchnorm: bool = True, bn_init: str = "per_dimension", attention_dropout: float = 0.1):
        super().__init__()
        self.clip = [clip]  # frozen, not a submodule: its weights are the teacher's, never saved with the branch
        width = clip.token_embedding.weight.shape[1]
        vocab = clip.token_embedding.weight.shape[0]
        ids = torch.arange(vocab) if token_ids is None else torch.as_tensor(token_ids, dtype=torch.long)
        self.register_buffer("token_ids", ids)  # saved with the weights: a loaded model uses its training vocabulary
        self.register_buffer("excluded_ids", torch.tensor(list(excluded_ids), dtype=torch.long), persistent=False)
        self.keywords, self.temperature, self.start_id, self.end_id = keywords, temperature, start_id, end_id
        self.cls = nn.Parameter(torch.randn(1, keywords, feat_dim))
        self.attention = nn.MultiheadAttention(feat_dim, 1, dropout=attention_dropout, batch_first=True)
        self.norm = nn.LayerNorm(feat_dim)
        self.proj = nn.Linear(feat_dim, width)
        mean, std = table_statistics(self.table())
        self.batchnorm = KeywordBatchNorm(keywords, width, mean, std, bn_init) if batchnorm else None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "token_ids")
        if saved is not None and saved.shape != self.token_ids.shape:  # built with another vocabulary: take the saved one
            self.token_ids = torch.empty_like(saved, device=self.token_ids.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def table(self) -> torch.Tensor:
        """(V, W) the (reduced) token table, gathered from the teacher's embedding each call."""
        weight = self.clip[0].token_embedding.weight
        return weight[self.token_ids.to(weight.device)]

    def keyword_vectors(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, C) frames, (B,) lengths -> (B, K, W) before the table lookup."""
        b, t, _ = frames.shape
        src = torch.cat([self.cls.expand(b, -1, -1).to(frames.dtype), frames], dim=1)
        mask = padding_mask(lengths.to(frames.device), self.keywords, self.keywords + t)
        out = self.norm(self.attention(src, src, src, key_padding_mask=mask, need_weights=False)[0] + src)
        kw = self.proj(out[:, :self.keywords])
        return self.batchnorm(kw) if self.batchnorm is not None else kw

    def select(self, vectors: torch.Tensor) -> Keywords:
        table = self.table().to(vectors.dtype)
        cos = F.normalize(vectors, dim=-1) @ F.normalize(table, dim=-1).T  # (B, K, V)
        cos = cos.masked_fill(torch.isin(self.token_ids, self.excluded_ids).to(cos.device), float("-inf"))
        one_hot = straight_through_one_hot(cos, self.temperature, self.training)
        return Keywords(one_hot @ table, self.token_ids.to(cos.device)[one_hot.argmax(-1)])

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, Keywords]:
        """-> ((B, E) CLIP text-space embedding, the keywords)."""
        keywords = self.select(self.keyword_vectors(frames, lengths))
        return encode_keywords(self.clip[0], keywords.embeddings, self.start_id, self.end_id), keywords


class ParallelBranch(nn.Module):
    def __init__(self, feat_dim: int, embed_dim: int, heads: int = 8, dropout: float = 0.1):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, feat_dim))
        layer = nn.TransformerEncoderLayer(feat_dim, heads, 4 * feat_dim, dropout, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, norm=nn.LayerNorm(feat_dim), enable_nested_tensor=False)
        self.proj = nn.Linear(feat_dim, embed_dim)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        b, t, _ = frames.shape
        src = torch.cat([self.cls.expand(b, -1, -1).to(frames.dtype), frames], dim=1)
        out = self.encoder(src, src_key_padding_mask=padding_mask(lengths.to(frames.device), 1, t + 1))
        return self.proj(out[:, 0])


MODES = ("parallel", "cascaded", "both")


class SpeechCLIP(nn.Module):
    """A speech featurizer and SpeechCLIP's branches over its frames. `branches` gives each
    trained branch's (B, E) embedding (both are trained in `both`); `forward` the one used for
    retrieval (`retrieval`: parallel | cascaded), so the evaluation code treats it as any audio
    encoder. The CLIP teacher (`clip`) is shared, frozen and never saved with the model; moving
    the model moves it too.

    Featurizers (`frame_features`): DaveNet's convolutional trunk on the log-mel (B, C, T / 8)
    frames; the audio ViT's patch tokens averaged over frequency, one frame per time row; or a
    `HubertFeaturizer` (frozen HuBERT, weighted layer sum) on waveforms."""

    def __init__(self, featurizer: nn.Module, clip: nn.Module, mode: str, embed_dim: int, *,
                 token_ids: torch.Tensor | None, excluded_ids: Sequence[int], start_id: int, end_id: int,
                 keywords: int = 8, temperature: float = KEYWORD_TEMPERATURE, batchnorm: bool = True,
                 bn_init: str = "per_dimension", retrieval: str | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        retrieval = retrieval or ("cascaded" if mode == "cascaded" else "parallel")
        if mode != "both" and retrieval != mode:
            raise ValueError(f"a {mode} model retrieves with its {mode} branch, not {retrieval}")
        self.featurizer, self.mode, self.retrieval = featurizer, mode, retrieval
        clip.requires_grad_(False)
        self.clip = [clip]
        dim = feature_dim(featurizer)
        self.cascaded = (CascadedBranch(clip, dim, token_ids, excluded_ids, start_id, end_id, keywords, temperature,
                                        batchnorm, bn_init) if mode in ("cascaded", "both") else None)
        self.parallel = ParallelBranch(dim, embed_dim) if mode in ("parallel", "both") else None

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.clip[0]._apply(fn)
        return self

    def frame_features(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T', C) frames and their (B,) true counts."""
        m = self.featurizer
        if isinstance(m, DaveNet):
            x = m.frames(m.trim(audio, lengths)).transpose(1, 2)
            return x, pooled_lengths(lengths.to(x.device)).clamp(1, x.shape[1])
        if isinstance(m, AudioViT):
            rows, cols = m.grid
            tokens = m.ln_post(m._tokens(audio))[:, 1:].reshape(audio.shape[0], rows, cols, -1).mean(2)
            return tokens, audio_token_mask(m, lengths.to(tokens.device), rows).sum(1)
        return m(audio, lengths)

    def branches(self, audio: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        frames, n = self.frame_features(audio, lengths)
        out = {}
        if self.cascaded is not None:
            out["cascaded"] = self.cascaded(frames, n)[0]
        if self.parallel is not None:
            out["parallel"] = self.parallel(frames, n)
        return out

    def keywords(self, audio: torch.Tensor, lengths: torch.Tensor) -> Keywords:
        if self.cascaded is None:
            raise ValueError("a parallel SpeechCLIP has no keywords")
        frames, n = self.frame_features(audio, lengths)
        return self.cascaded.select(self.cascaded.keyword_vectors(frames, n))

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        frames, n = self.frame_features(audio, lengths)
        if self.retrieval == "cascaded":
            return self.cascaded(frames, n)[0]
        return self.parallel(frames, n)


def feature_dim(featurizer: nn.Module) -> int:
    if isinstance(featurizer, DaveNet):
        return featurizer.conv5.out_channels
    if isinstance(featurizer, AudioViT):
        return featurizer.conv.out_channels
    return int(featurizer.dim)


HUBERT_HOP = 320  # samples per HuBERT frame at 16 kHz (20 ms)


class HubertFeaturizer(nn.Module):
    """SpeechCLIP's speech featurizer: a frozen HuBERT loaded from a local checkpoint directory
    (transformers `HubertModel.from_pretrained`; nothing is downloaded), every hidden state (the
    input to the transformer and each layer's output) mixed by a learned `WeightedLayerSum`;
    50 frames a second, a clip of n samples keeping round(n / 320) of them as the reference.

    HuBERT runs without gradients and stays in eval mode (the reference freezes it too, though
    Lightning's train() likely turns its dropout back on); its weights are the checkpoint's and
    are not saved with the model (only the layer weights are). Input: 16 kHz waveforms (B, S) and
    their lengths in samples. A checkpoint whose preprocessor_config.json asks for `do_normalize`
    (the large models, fairseq's `normalize`) gets each clip normalised to zero mean and unit
    variance over its true samples, as transformers' feature extractor does."""

    def __init__(self, path: str, normalize: bool = False):
        super().__init__()
        from transformers import HubertModel
        hubert = HubertModel.from_pretrained(path)
        hubert.requires_grad_(False).eval()
        self.hubert = [hubert]
        self.mix = WeightedLayerSum(hubert.config.num_hidden_layers + 1, normalize)
        self.dim = int(hubert.config.hidden_size)
        self.takes_mask = hubert.config.feat_extract_norm == "layer"  # group-norm models expect zero padding, no mask
        preprocessor = Path(path) / "preprocessor_config.json"
        self.normalize_waveform = bool(preprocessor.is_file() and json.loads(preprocessor.read_text()).get("do_normalize"))

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.hubert[0]._apply(fn)
        return self

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.arange(waveform.shape[1], device=waveform.device)[None, :] < lengths.to(waveform.device)[:, None]
        if self.normalize_waveform:
            n = mask.sum(1, keepdim=True).clamp(min=1)
            mean = (waveform * mask).sum(1, keepdim=True) / n
            var = (((waveform - mean) * mask) ** 2).sum(1, keepdim=True) / n
            waveform = (waveform - mean) / torch.sqrt(var + 1e-7)
        with torch.no_grad():
            out = self.hubert[0](waveform * mask, attention_mask=mask.long() if self.takes_mask else None,
                                 output_hidden_states=True)
        x = self.mix(out.hidden_states)
        return x, torch.round(lengths.to(x.device).float() / HUBERT_HOP).long().clamp(1, x.shape[1])
