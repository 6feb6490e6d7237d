"""Cascaded SpeechCLIP's parts (models/speechclip.py) on the tiny open_clip model: the keyword
BatchNorm's initialisation, the straight-through estimator, keyword insertion against CLIP's own
text encoding, the branches' masking, the caption vocabulary and the layer mix."""

import open_clip
import pytest
import torch

from models.speechclip import (CascadedBranch, KeywordBatchNorm, ParallelBranch, WeightedLayerSum, caption_vocabulary,
                               encode_keywords, special_ids, straight_through_one_hot, table_statistics)
from models.tiny_clip import create_tiny_clip

TOKENIZER = open_clip.SimpleTokenizer(context_length=32)


@pytest.fixture(scope="module")
def clip():
    return create_tiny_clip(seed=0).eval().requires_grad_(False)


def test_batchnorm_starts_at_the_token_tables_statistics(clip):
    table = clip.token_embedding.weight
    mean, std = table_statistics(table)
    assert torch.allclose(std, table.std(0, unbiased=True)) and torch.allclose(mean, table.mean(0))
    bn = KeywordBatchNorm(3, table.shape[1], mean, std).eval()  # running stats 0 / 1: the output is gamma x + beta
    assert torch.equal(bn.bn.weight.view(3, -1), std.expand(3, -1)) and torch.equal(bn.bn.bias.view(3, -1), mean.expand(3, -1))
    x = torch.randn(5, 3, table.shape[1])
    torch.testing.assert_close(bn(x), x / (1 + 1e-5) ** 0.5 * std + mean)


def test_reference_batchnorm_init_reproduces_the_released_tiling():
    mean, std = torch.tensor([10.0, 11.0, 12.0]), torch.tensor([1.0, 2.0, 3.0])
    bn = KeywordBatchNorm(2, 3, mean, std, init="reference")
    # the reference's feature j = d * K + k gets std[j mod D]: (k=0: d=0,1,2 -> j=0,2,4), (k=1: j=1,3,5)
    assert bn.bn.weight.view(2, 3).tolist() == [[1.0, 3.0, 2.0], [2.0, 1.0, 3.0]]
    assert bn.bn.bias.view(2, 3).tolist() == [[10.0, 12.0, 11.0], [11.0, 10.0, 12.0]]
    with pytest.raises(ValueError, match="init must be one of"):
        KeywordBatchNorm(2, 3, mean, std, init="tiled")


def test_straight_through_forwards_the_one_hot_and_backpropagates_the_softmax():
    logits = torch.tensor([[0.2, 0.9, -0.1], [0.5, 0.4, 0.45]], requires_grad=True)
    out = straight_through_one_hot(logits, 0.1, training=True)
    assert torch.equal(out.detach(), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    weights = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]])
    (out * weights).sum().backward()
    soft = torch.softmax(logits.detach() / 0.1, dim=-1)
    expected = soft * (weights - (soft * weights).sum(-1, keepdim=True)) / 0.1  # the softmax's Jacobian-vector product
    torch.testing.assert_close(logits.grad, expected)
    evaluated = straight_through_one_hot(logits, 0.1, training=False)
    assert torch.equal(evaluated, out.detach()) and not evaluated.requires_grad


VIT_B_32_TEXT = {"embed_dim": 512, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
                 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 2}}


@pytest.mark.parametrize("model", ["tiny", "vit-b-32 text shape"])
def test_keyword_insertion_equals_encoding_the_chosen_tokens_as_text(clip, model):
    """Tokenise a caption, put its word tokens' embeddings in as keywords: CLIP's own encode_text of
    the tokenised caption gives the same embedding (positions 1..K, the end token at K + 1). Also
    with ViT-B/32's text tower shape (width 512, 8 heads, 77 tokens; 2 of its 12 layers, random)."""
    if model != "tiny":
        from open_clip.model import CLIP
        torch.manual_seed(0)
        clip = CLIP(**VIT_B_32_TEXT).eval().requires_grad_(False)
    tokens = open_clip.SimpleTokenizer(context_length=clip.positional_embedding.shape[0])(
        ["a red ball in a park", "two green cubes"])
    pad, start, end = special_ids(TOKENIZER)
    for row in tokens:
        words = row[1:int((row == end).nonzero()[0])]
        keywords = clip.token_embedding.weight[words][None]
        got = encode_keywords(clip, keywords, start, end)
        expected = clip.encode_text(row[None])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    context = clip.positional_embedding.shape[0]
    with pytest.raises(ValueError, match=f"{context - 1} keywords need a context of {context + 1}"):
        encode_keywords(clip, torch.zeros(1, context - 1, clip.token_embedding.weight.shape[1]), start, end)


def test_cascaded_branch_outputs_exact_token_embeddings_and_learns_through_the_softmax(clip):
    pad, start, end = special_ids(TOKENIZER)
    vocab = caption_vocabulary(TOKENIZER, ["a red ball in a park", "two green cubes on a beach", "a blue cone"])
    torch.manual_seed(0)
    branch = CascadedBranch(clip, feat_dim=16, token_ids=vocab, excluded_ids=(pad, start, end), start_id=start,
                            end_id=end, keywords=4).train()
    frames, lengths = torch.randn(6, 9, 16), torch.tensor([9, 5, 7, 9, 3, 8])
    emb, kw = branch(frames, lengths)
    assert emb.shape == (6, clip.text_projection.shape[1]) and kw.token_ids.shape == (6, 4)
    assert set(kw.token_ids.flatten().tolist()) <= set(vocab.tolist()) - {pad, start, end}
    torch.testing.assert_close(kw.embeddings.detach(), clip.token_embedding.weight[kw.token_ids])
    emb.sum().backward()
    assert branch.proj.weight.grad.abs().sum() > 0 and branch.cls.grad.abs().sum() > 0
    assert clip.token_embedding.weight.grad is None  # the teacher stays frozen
    # padding frames are masked out of the attention
    branch.eval()
    changed = frames.clone()
    changed[1, 5:] = 100.0
    with torch.no_grad():
        a, b = branch.keyword_vectors(frames, lengths), branch.keyword_vectors(changed, lengths)
    torch.testing.assert_close(a[1], b[1])
    moved = frames.clone()
    moved[0, 5:] += 100.0  # clip 0 has 9 frames: all of them count
    with torch.no_grad():
        assert not torch.allclose(a[0], branch.keyword_vectors(moved, lengths)[0])


def test_parallel_branch_reads_its_class_token_and_ignores_padding():
    torch.manual_seed(0)
    branch = ParallelBranch(16, 12).eval()
    frames, lengths = torch.randn(2, 7, 16), torch.tensor([4, 7])
    changed = frames.clone()
    changed[0, 4:] = -50.0
    with torch.no_grad():
        out = branch(frames, lengths)
        torch.testing.assert_close(out[0], branch(changed, lengths)[0], rtol=1e-5, atol=1e-5)
    assert out.shape == (2, 12)


def test_caption_vocabulary_counts_tokens_most_frequent_first():
    vocab = caption_vocabulary(TOKENIZER, ["a red ball", "a red cube", "a dog"]).tolist()
    a, red = TOKENIZER.encode("a")[0], TOKENIZER.encode("red")[0]
    # pad (id 0) fills most of every row, then start and end (3 each) and "a" (3): ties by id, then "red" (2)
    assert vocab[:5] == [0, a, 49406, 49407, red] and len(vocab) == 5 + 3


def test_weighted_layer_sum_starts_uniform_and_can_normalise():
    states = [torch.full((1, 2, 3), float(i)) for i in range(4)]
    assert torch.allclose(WeightedLayerSum(4)(states), torch.full((1, 2, 3), 1.5))
    mix = WeightedLayerSum(4, normalize=True)
    x = [torch.randn(1, 2, 3) * 5 + 2 for _ in range(4)]
    expected = sum(torch.nn.functional.layer_norm(s, (3,)) for s in x) / 4
    torch.testing.assert_close(mix(x), expected)
    with pytest.raises(ValueError, match="expected 4 hidden states, got 3"):
        mix(x[:3])


def _speechclip(clip, mode, **kw):
    from models.davenet import DaveNet
    from models.speechclip import SpeechCLIP
    pad, start, end = special_ids(TOKENIZER)
    torch.manual_seed(0)
    return SpeechCLIP(DaveNet(128, mel_bins=40, width=0.0625), clip, mode, 128, token_ids=None,
                      excluded_ids=(pad, start, end), start_id=start, end_id=end, keywords=3, **kw)


def test_speechclip_modes_train_their_branches_and_retrieve_with_one(clip):
    audio, lengths = torch.randn(4, 40, 256), torch.tensor([256, 100, 180, 64])
    both = _speechclip(clip, "both").eval()
    with torch.no_grad():
        out = both.branches(audio, lengths)
        assert set(out) == {"cascaded", "parallel"} and out["parallel"].shape == (4, 128)
        torch.testing.assert_close(both(audio, lengths), out["parallel"])  # both: parallel retrieves by default
        kw = both.keywords(audio, lengths)
    assert kw.token_ids.shape == (4, 3) and not set(kw.token_ids.flatten().tolist()) & {0, 49406, 49407}
    assert set(_speechclip(clip, "cascaded").branches(audio, lengths)) == {"cascaded"}
    assert not any(k.startswith("clip") for k in both.state_dict())  # the teacher is not saved with it
    # a model built with the whole vocabulary takes the saved (reduced) one when its weights are loaded
    reduced = _speechclip(clip, "cascaded")
    reduced.cascaded.token_ids = torch.tensor([0, 320, 49406, 49407, 736, 1069])
    loaded = _speechclip(clip, "cascaded")
    loaded.load_state_dict(reduced.state_dict())
    assert loaded.cascaded.token_ids.tolist() == [0, 320, 49406, 49407, 736, 1069]
    with torch.no_grad():
        assert set(loaded.eval().keywords(audio, lengths).token_ids.flatten().tolist()) <= {320, 736, 1069}
    with pytest.raises(ValueError, match="a parallel model retrieves with its parallel branch"):
        _speechclip(clip, "parallel", retrieval="cascaded")
    with pytest.raises(ValueError, match="has no keywords"):
        _speechclip(clip, "parallel").keywords(audio, lengths)


def test_hubert_featurizer_loads_a_local_checkpoint_and_mixes_its_layers(tmp_path):
    from transformers import HubertConfig, HubertModel

    from models.speechclip import HubertFeaturizer
    config = HubertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                          conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    torch.manual_seed(0)
    HubertModel(config).save_pretrained(tmp_path / "hubert")
    featurizer = HubertFeaturizer(str(tmp_path / "hubert"))
    wave, lengths = torch.randn(2, 16000), torch.tensor([16000, 8000])
    frames, n = featurizer(wave, lengths)
    assert frames.shape == (2, 49, 16) and n.tolist() == [49, 25]  # round(16000 / 320) = 50, clamped to the 49 frames
    with torch.no_grad():
        states = featurizer.hubert[0](wave * (torch.arange(16000) < lengths[:, None]), output_hidden_states=True).hidden_states
    torch.testing.assert_close(frames, sum(states) / 3)  # zero-initialised weights: the plain mean of 3 states
    frames.sum().backward()
    assert featurizer.mix.weights.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in featurizer.hubert[0].parameters())
    assert list(featurizer.state_dict()) == ["mix.weights"]
