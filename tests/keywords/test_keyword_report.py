"""The keyword report's parts on hand cases: nearest tokens in a hand-made table, the hit rate,
the caption token sets and the random-token rate."""

import numpy as np
import open_clip
import pytest
import torch
from torch import nn

from assets.keywords.keyword_report import caption_token_sets, hit_rates, nearest_tokens, random_token_rates, token_text

TOKENIZER = open_clip.SimpleTokenizer(context_length=32)


class _Branch:
    """What the report reads of a cascaded branch: its table, the table's ids and the excluded ids."""

    def __init__(self, table, ids, excluded):
        self._table, self.token_ids, self.excluded_ids = table, torch.tensor(ids), torch.tensor(excluded)

    def table(self):
        return self._table


class _Model(nn.Module):
    def __init__(self, table, ids, excluded):
        super().__init__()
        self.cascaded = _Branch(table, ids, excluded)


def _model():
    # ids 10..14 and the "specials" 0 and 99; 10 ~ 11 (cosine 0.8), 12 ~ 13, 14 alone, 0 next to 10
    table = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 1.0, 0.0], [0.0, 0.9, 0.1], [0.0, 0.0, 1.0],
                          [0.99, 0.0, 0.1], [0.0, 0.0, -1.0]])
    return _Model(table, [10, 11, 12, 13, 14, 0, 99], [0, 99])


def test_nearest_tokens_rank_by_cosine_and_leave_out_the_specials():
    ids, sims = nearest_tokens(_model(), np.array([[10, 14]]), top=2)
    assert ids.tolist() == [[[10, 11], [14, 13]]]  # id 0 (cosine 0.995 with 10) is a special: never a neighbour
    assert sims[0, 0].tolist() == pytest.approx([1.0, 0.8]) and sims[0, 1, 0] == pytest.approx(1.0)


def test_hit_rate_by_hand():
    neighbours = np.array([[[10, 11], [14, 13]],    # utterance 0: keyword 1 meets 13
                           [[12, 13], [12, 10]],    # utterance 1: no keyword meets {14}
                           [[11, 10], [13, 12]]])   # utterance 2: both keywords meet {10, 12, 13}
    gold = [{13, 50}, {14}, {10, 12, 13}]
    rates = hit_rates(neighbours, gold)
    assert rates["any"] == pytest.approx(2 / 3) and rates["per_keyword"] == pytest.approx([1 / 3, 2 / 3])
    assert rates["per_keyword_mean"] == pytest.approx(3 / 6)
    assert rates["precision"] == pytest.approx(1 / 6)  # of the six keywords' own tokens only 13 (utt. 2) is a caption token


def test_caption_tokens_leave_out_the_specials():
    sets = caption_token_sets(TOKENIZER, [["a red ball"], ["two dogs", "a dog"]], excluded=[0, 49406, 49407])
    assert sets[0] == set(TOKENIZER.encode("a red ball"))
    assert sets[1] == set(TOKENIZER.encode("two dogs")) | set(TOKENIZER.encode("a dog"))
    assert token_text(TOKENIZER, TOKENIZER.encode("red")[0]) == "red</w>"


def test_random_tokens_hit_as_often_as_the_gold_covers_the_table():
    """Two clusters of six tokens (near x and near y): a token's top-5 stay in its cluster, so captions
    holding every token of one cluster are hit by half the random tokens, and never by none of them."""
    a = torch.tensor([[1.0, 0.0, 0.01 * i] for i in range(6)])
    b = torch.tensor([[0.0, 1.0, 0.01 * i] for i in range(6)])
    model = _Model(torch.cat([a, b]), list(range(100, 112)), [0])
    cluster_a = set(range(100, 106))
    one = random_token_rates(model, [cluster_a] * 300, keywords=1, draws=4)
    assert one["any"] == pytest.approx(0.5, abs=0.06) and one["precision"] == pytest.approx(0.5, abs=0.06)
    assert random_token_rates(model, [{7}] * 300, keywords=1, draws=2) == {"any": 0.0, "per_keyword_mean": 0.0,
                                                                             "precision": 0.0}
    # with two keywords, an utterance is missed only when both land in the other cluster
    two = random_token_rates(model, [cluster_a] * 300, keywords=2, draws=4)
    assert two["any"] == pytest.approx(0.75, abs=0.06) and two["per_keyword_mean"] == pytest.approx(0.5, abs=0.06)
    # a caption holding one token of cluster A: a keyword is that token one time in twelve
    assert random_token_rates(model, [{100}] * 600, keywords=1, draws=4)["precision"] == pytest.approx(1 / 12, abs=0.03)
