"""The mined-positive masks on hand cases, one per table and per mode (seed 000's <image, caption> pairs)."""

import numpy as np
import pytest
import torch

from losses.contrastive import MultiPositiveInfoNCE, SymmetricInfoNCE, cosine_similarity_matrix
from losses.mined_positives import pair_mask, positive_mask, symmetric_mask

# Five clips; clip 0's top-1 neighbour differs per table, the other clips have none in these tables.
NONE = [-1]
NEIGHBOURS = {
    "t2i": np.array([[1], NONE, NONE, NONE, NONE]),  # the image of clip 1 is nearest to clip 0's caption text
    "i2t": np.array([[2], NONE, NONE, NONE, NONE]),  # the caption of clip 2 is nearest to clip 0's image
    "t2t": np.array([[3], NONE, NONE, NONE, NONE]),
    "i2i": np.array([[4], NONE, NONE, NONE, NONE]),
    "oracle": np.array([[3], NONE, NONE, [0], NONE]),  # clips 0 and 3 share a semantic key
}
BATCH = np.arange(5)


def _pairs(mask: torch.Tensor) -> set[tuple[int, int]]:
    """Off-diagonal (audio row, image column) positives."""
    return {(a, b) for a, b in zip(*np.nonzero(mask.numpy())) if a != b}


@pytest.mark.parametrize("tables, expected", [
    (["org"], set()),
    (["org", "t2i"], {(0, 1)}),  # <t2i, org>: clip 1's image with clip 0's spoken caption
    (["org", "i2i"], {(0, 4)}),  # <i2i, org>
    (["org", "i2t"], {(2, 0)}),  # <org, i2t>: clip 0's image with clip 2's spoken caption
    (["org", "t2t"], {(3, 0)}),  # <org, t2t>
    (["org", "t2i", "i2t"], {(0, 1), (2, 0), (2, 1)}),  # the slides' <t2i, i2t>: audio 2 with image 1, neither is 0
    (["org", "t2t", "i2t"], {(2, 0), (3, 0)}),  # row (G): only audio is replaced
    (["org", "t2t", "t2i", "i2t", "i2i"],  # row (I): images {0, 1, 4} x captions {0, 2, 3}
     {(a, b) for a in (0, 2, 3) for b in (0, 1, 4)} - {(0, 0)}),
    (["org", "oracle"], {(0, 3), (3, 0)}),  # a same-key clip's image and caption are both positives
])
def test_pairs_mode_per_table(tables, expected):
    mask = pair_mask(BATCH, NEIGHBOURS, tables, k=1)
    assert mask.diagonal().all()
    assert _pairs(mask) == expected


def test_pairs_mode_is_directional_and_mask_mode_symmetric():
    pairs = pair_mask(BATCH, NEIGHBOURS, ["t2i"], k=1)
    assert pairs[0, 1] and not pairs[1, 0]  # audio 0 - image 1 only
    sym = symmetric_mask(BATCH, NEIGHBOURS, ["t2i"], k=1)
    assert _pairs(sym) == {(0, 1), (1, 0)}
    both = symmetric_mask(BATCH, NEIGHBOURS, ["t2t", "i2t"], k=1)
    assert _pairs(both) == {(0, 3), (3, 0), (0, 2), (2, 0)}
    assert torch.equal(positive_mask("mask", BATCH, NEIGHBOURS, ["t2i"], 1), sym)
    assert torch.equal(positive_mask("pairs", BATCH, NEIGHBOURS, ["t2i"], 1), pairs)


def test_only_partners_inside_the_batch_and_the_first_k_count():
    neighbours = {"t2t": np.array([[5, 2], [0, 4], [-1, -1], [1, 0]])}
    batch = np.array([0, 2, 3])  # clip 5 and clip 4 are not in it
    assert _pairs(pair_mask(batch, neighbours, ["t2t"], k=1)) == set()  # 0's top-1 (5) is absent; 3's top-1 (1) too
    assert _pairs(pair_mask(batch, neighbours, ["t2t"], k=2)) == {(1, 0), (0, 2)}  # audio of 2 w/ image of 0; of 0 w/ 3
    with pytest.raises(ValueError, match="k=3"):
        pair_mask(batch, neighbours, ["t2t"], k=3)
    with pytest.raises(ValueError, match="unknown"):
        pair_mask(batch, neighbours, ["x2y"], k=1)
    with pytest.raises(ValueError, match="twice"):
        pair_mask(np.array([0, 0, 3]), neighbours, ["t2t"], k=1)
    with pytest.raises(ValueError, match="mode"):
        positive_mask("soft", batch, neighbours, ["t2t"], 1)


def test_with_only_org_the_loss_is_infonce():
    g = torch.Generator().manual_seed(0)
    sim = cosine_similarity_matrix(torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g))
    for mode in ("pairs", "mask"):
        mask = positive_mask(mode, BATCH, NEIGHBOURS, ["org"], 1)
        assert torch.equal(mask, torch.eye(5, dtype=torch.bool))
        torch.testing.assert_close(MultiPositiveInfoNCE()(sim, mask), SymmetricInfoNCE()(sim))


def test_a_directional_pair_enters_rows_and_columns_transposed():
    """Row (audio) 0 counts image 1 as a positive and column (image) 1 counts audio 0; audio 1 - image 0 stays a negative."""
    sim = torch.zeros(5, 5, requires_grad=True)  # every softmax probability 1/5
    MultiPositiveInfoNCE()(sim, pair_mask(BATCH, NEIGHBOURS, ["t2i"], k=1)).backward()
    assert sim.grad[0, 1] < 0  # pulled together: row 0 and column 1 both count it
    assert sim.grad[1, 0] > 0  # audio 1 and image 0 are still a negative pair: pushed apart
