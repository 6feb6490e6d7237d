"""DenseAV's head split (Act.Dis, AP.Dis) on hand cases and against the reference's
`disentangle_validation`, transcribed with torch."""

import numpy as np
import pytest
import torch

from assets.core.average_precision import average_precision
from assets.training.head_split import best_assignment, head_split, head_split_markdown, summarise_head_splits


def test_head_split_by_hand():
    # head 0: [1, 3 | 0, 2] -> normalised [1/3, 1 | 0, 2/3]; head 1: [0, 2 | 4, 6] -> [0, 1/3 | 2/3, 1]
    split = head_split({"speech": np.array([[1.0, 0.0], [3.0, 2.0]]), "sound": np.array([[0.0, 4.0], [2.0, 6.0]])})
    assert split["activation"] == pytest.approx(np.array([[2 / 3, 1 / 3], [1 / 6, 5 / 6]]))
    assert split["act"] == pytest.approx(np.array([[1 / 3, 2 / 3], [5 / 6, 1 / 6]]))
    assert split["act_dis"] == pytest.approx(0.75)  # max((1/3 + 1/6) / 2, (2/3 + 5/6) / 2)
    assert split["ap"] == pytest.approx(np.array([[5 / 6, 1 / 2], [5 / 12, 1.0]]))
    assert split["ap_dis"] == pytest.approx(11 / 12)
    assert split["sources"] == ["speech", "sound"] and split["clips"] == {"speech": 2, "sound": 2}


def test_a_constant_head_is_all_zero_after_the_clamped_normalisation():
    split = head_split({"a": np.array([[2.0, 1.0], [2.0, 0.0]]), "b": np.array([[2.0, 5.0]])})
    assert split["activation"][0] == [0.0, 0.0] and split["act"][0] == [1.0, 1.0]


def _reference_disentangle(word_scores: torch.Tensor, sound_scores: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """denseav/train.py disentangle_validation, with our average precision for binary_average_precision."""
    all_scores = torch.cat([word_scores, sound_scores], dim=0)
    all_scores -= all_scores.min(dim=0, keepdim=True).values
    all_scores /= all_scores.max(dim=0, keepdim=True).values.clamp_min(.0001)
    is_words = torch.cat([torch.ones(word_scores.shape[0]), torch.zeros(sound_scores.shape[0])], dim=0).to(torch.bool)
    ap_matrix, act_matrix = torch.zeros(2, 2), torch.zeros(2, 2)
    for head in range(2):
        for dataset_num in range(2):
            labels = is_words if dataset_num == 0 else ~is_words
            ap_matrix[head, dataset_num] = average_precision(all_scores[:, head].numpy(), labels.numpy())
            act_matrix[head, dataset_num] = 1 - (all_scores[:, head][labels]).mean()
    ap_dis = max(.5 * (ap_matrix[0, 0] + ap_matrix[1, 1]), .5 * (ap_matrix[0, 1] + ap_matrix[1, 0]))
    act_dis = max(.5 * (act_matrix[0, 0] + act_matrix[1, 1]), .5 * (act_matrix[0, 1] + act_matrix[1, 0]))
    return act_matrix, float(act_dis), float(ap_dis)


def test_matches_the_reference_on_random_scores():
    gen = torch.Generator().manual_seed(0)
    words = torch.randn(37, 2, generator=gen, dtype=torch.float64) + torch.tensor([1.0, -0.5], dtype=torch.float64)
    sounds = torch.randn(23, 2, generator=gen, dtype=torch.float64)
    act, act_dis, ap_dis = _reference_disentangle(words.clone(), sounds.clone())
    split = head_split({"speech": words.numpy(), "sound": sounds.numpy()})
    assert np.allclose(split["act"], act.numpy(), atol=1e-6)
    assert split["act_dis"] == pytest.approx(act_dis, abs=1e-6) and split["ap_dis"] == pytest.approx(ap_dis, abs=1e-6)


def test_best_assignment_is_the_best_permutation_and_needs_a_square():
    m = np.array([[0.1, 0.9, 0.0], [0.8, 0.2, 0.0], [0.0, 0.0, 0.6]])
    assert best_assignment(m) == pytest.approx((0.9 + 0.8 + 0.6) / 3)
    assert best_assignment(np.ones((2, 3))) is None
    assert head_split({"a": np.ones((2, 3)), "b": np.zeros((1, 3))})["act_dis"] is None


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="two sources"):
        head_split({"a": np.ones((2, 2))})
    with pytest.raises(ValueError, match="same heads"):
        head_split({"a": np.ones((2, 2)), "b": np.ones((2, 3))})


def test_summary_over_seeds_and_markdown():
    per_seed = {0: head_split({"speech": np.array([[1.0, 0.0], [3.0, 2.0]]), "sound": np.array([[0.0, 4.0], [2.0, 6.0]])}),
                1: head_split({"speech": np.array([[1.0, 0.0], [1.0, 0.0]]), "sound": np.array([[0.0, 1.0], [0.0, 1.0]])})}
    assert per_seed[1]["act_dis"] == pytest.approx(1.0)  # each head silent on a different source
    summary = summarise_head_splits(per_seed)
    assert summary["act_dis"]["values"] == pytest.approx([0.75, 1.0])
    assert summary["act_dis"]["std"] == pytest.approx(np.std([0.75, 1.0], ddof=1))
    assert summary["activation"][0] == pytest.approx([(2 / 3 + 1) / 2, (1 / 3 + 0) / 2])
    md = head_split_markdown({"summary": summary})
    assert "| head | speech | sound |" in md and "| 0 | 0.83 | 0.17 |" in md and "Act.Dis: 87.5 ± 17.7 %" in md
