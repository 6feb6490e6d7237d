"""Localisation metrics: hand-computed cases, and parity with sklearn and torch where they are installed."""

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from assets.localisation.metrics import (best_threshold_iou, ciou, localisation_summary, mean_best_iou, mean_pixel_ap,
                                         pixel_average_precision, upsample_heatmap)

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


def _rows(*rows: int) -> np.ndarray:
    """A 4x4 ground truth covering the given rows."""
    mask = np.zeros((4, 4), bool)
    mask[list(rows)] = True
    return mask


def test_ciou_cuts_the_normalised_map_at_its_median():
    heatmap = np.arange(16.0).reshape(4, 4) * 3 - 7  # any affine map of 0..15
    # median: sorted index 8 -> the values 8..15, rows 2 and 3; gt rows 1 and 2
    # |pred & gt| = 4 (row 2), |gt| = 8, |pred \ gt| = 4 (row 3)
    assert ciou(heatmap, _rows(1, 2)) == pytest.approx(4 / 12)
    assert ciou(heatmap, _rows(3)) == pytest.approx(4 / 8)
    assert ciou(np.flipud(heatmap), _rows(1, 2)[::-1]) == pytest.approx(4 / 12)


def test_ciou_ties_at_the_median_are_predicted():
    heatmap = np.array([[0.0, 1.0], [1.0, 1.0]])  # sorted [0, 1, 1, 1]: the cut is 1, three pixels at or above
    gt = np.array([[True, False], [False, False]])
    assert ciou(heatmap, gt) == pytest.approx(0 / (1 + 3))
    assert ciou(np.ones((4, 4)), _rows(1, 2)) == pytest.approx(8 / 16)  # a flat map predicts everything


def test_ciou_fixed_threshold_and_consensus_weights():
    heatmap = np.arange(16.0).reshape(4, 4)
    # >= 0.9 of the min-max map: 14/15 and 15/15, the last two pixels of row 3
    assert ciou(heatmap, _rows(2, 3), threshold=0.9) == pytest.approx(2 / 8)
    consensus = _rows(2, 3).astype(float)
    consensus[2] = 0.5  # Flickr-SoundNet style: one annotator of two
    # median prediction rows 2 and 3: (4 * 0.5 + 4 * 1) / (6 + 0)
    assert ciou(heatmap, consensus) == pytest.approx(1.0)


def test_ciou_refuses_an_empty_ground_truth_and_a_shape_mismatch():
    with pytest.raises(ValueError, match="ground truth"):
        ciou(np.ones((4, 4)), _rows())
    with pytest.raises(ValueError, match="shape"):
        ciou(np.ones((4, 4)), np.ones((2, 8), bool))


def test_localisation_summary_by_hand():
    # success: 1 for t in 0..0.30 (7 points), 0.5 for 0.35..0.60 (6), 0 for 0.65..1
    # trapezoids of width 0.05: 6 * 1 + (1 + 0.5) / 2 + 5 * 0.5 + (0.5 + 0) / 2 = 9.5 -> 0.475
    summary = localisation_summary([0.32, 0.62])
    assert summary["cIoU"] == 0.5
    assert summary["AUC"] == pytest.approx(0.475)
    assert localisation_summary([1.0, 1.0])["AUC"] == pytest.approx(1.0)
    # the evaluators compare with 0.05 * i as computed: 0.05 * 6 = 0.30000000000000004 > 0.3
    assert localisation_summary([0.3])["AUC"] == pytest.approx(0.05 * 5 + 0.05 / 2)


@pytest.mark.skipif(not HAS_SKLEARN, reason="sklearn not installed")
def test_localisation_summary_equals_the_reference_loop():
    from sklearn.metrics import auc

    cious = np.random.default_rng(0).random(500) ** 2
    success = [np.sum(cious >= 0.05 * i) / len(cious) for i in range(21)]
    summary = localisation_summary(cious)
    assert summary["AUC"] == pytest.approx(auc([0.05 * i for i in range(21)], success), abs=1e-12)
    assert summary["cIoU"] == np.mean(cious >= 0.5)


def test_pixel_average_precision_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, 0, 1, 0, 1], bool)
    # precision at each positive: 1/1, 2/3, 3/5
    assert pixel_average_precision(scores, labels) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # tied scores enter together: thresholds 0.9 (p 0, r 0), 0.5 (p 1/3, r 1/2), 0.1 (p 1/2, r 1)
    tied = pixel_average_precision(np.array([0.9, 0.5, 0.5, 0.1]), np.array([0, 1, 0, 1], bool))
    assert tied == pytest.approx(0.5 * 1 / 3 + 0.5 * 1 / 2)
    assert pixel_average_precision(np.arange(16.0).reshape(4, 4), np.arange(16).reshape(4, 4) >= 12) == 1.0
    with pytest.raises(ValueError, match="positive"):
        pixel_average_precision(np.ones(4), np.zeros(4, bool))


@pytest.mark.skipif(not HAS_SKLEARN, reason="sklearn not installed")
def test_pixel_average_precision_equals_sklearn_with_ties():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(1)
    for _ in range(5):
        scores = np.round(rng.random((16, 16)), 1).astype(np.float32)  # ten distinct values: many ties
        labels = rng.random((16, 16)) < scores * 0.6
        assert pixel_average_precision(scores, labels) == pytest.approx(
            average_precision_score(labels.ravel(), scores.ravel()), abs=1e-12)


def test_best_threshold_iou_by_hand():
    heatmap = np.array([0.0, 1.0, 2.0, 3.0])
    # t < 1: {1,2,3} vs {0,3}: 1/4; 1 <= t < 2: {2,3}: 1/3; 2 <= t < 3: {3}: 1/2; t = 3: nothing: 0
    assert best_threshold_iou(heatmap, np.array([True, False, False, True])) == pytest.approx(0.5)
    assert best_threshold_iou(heatmap, np.array([False, False, True, True])) == pytest.approx(1.0)
    assert best_threshold_iou(heatmap, np.array([False, False, True, True]), thresholds=2) == pytest.approx(2 / 3)


def test_class_means_pool_the_pixels_of_each_class_as_denseav():
    heatmaps = [np.array([0.9, 0.1]), np.array([0.8, 0.2]), np.array([0.3, 0.7])]
    masks = [np.array([True, False]), np.array([False, True]), np.array([False, True])]
    classes = ["dog", "dog", "cat"]
    # dog pooled: 0.9 (+), 0.8 (-), 0.2 (+), 0.1 (-): AP (1 + 2/3) / 2; per image it would be 1 and 1/2
    assert mean_pixel_ap(heatmaps, masks, classes) == pytest.approx(((1 + 2 / 3) / 2 + 1.0) / 2)
    # dog pooled IoU: the best cut keeps {0.9, 0.8, 0.2} against {0.9, 0.2}: 2/3; cat: 1
    assert mean_best_iou(heatmaps, masks, classes) == pytest.approx((2 / 3 + 1.0) / 2)
    with pytest.raises(ValueError, match="classes"):
        mean_pixel_ap(heatmaps, masks, classes[:2])


def test_upsample_heatmap_by_hand_and_orientation():
    # 2 -> 4 with align_corners=False: source positions -0.25 (clamped to 0), 0.25, 0.75, 1.25 (last pixel)
    up = upsample_heatmap(np.array([[0.0, 1.0], [2.0, 3.0]]), 4)
    np.testing.assert_allclose(up[0], [0.0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(up[:, 0], [0.0, 0.5, 1.5, 2.0])
    peak = np.zeros((7, 7))
    peak[0, 6] = 1.0  # the top-right patch
    row, col = np.unravel_index(np.argmax(upsample_heatmap(peak, 224)), (224, 224))
    assert (row, col) == (0, 208)  # rows 0-15 and columns 208-223 sit on the patch's own value


@pytest.mark.parametrize("grid,size", [((7, 7), 224), ((3, 5), (10, 7)), ((16, 16), (224, 224)), ((8, 8), 3)])
def test_upsample_heatmap_equals_torch_bilinear(grid, size):
    heatmap = np.random.default_rng(sum(grid)).standard_normal(grid).astype(np.float32)
    out = size if isinstance(size, tuple) else (size, size)
    theirs = F.interpolate(torch.from_numpy(heatmap)[None, None], out, mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(upsample_heatmap(heatmap, size), theirs.numpy(), atol=1e-5)


def test_chance_levels_of_random_maps_follow_the_box_sizes():
    """Random maps score about the boxes' share of the frame in pixel AP, whatever the grid."""
    from assets.localisation.experiment_localisation import chance_levels
    half = [(0.0, 0.0, 64.0, 32.0)] * 200  # the top half of a 64 x 64 frame
    levels = chance_levels(half + [None], (4, 4), 64, draws=3)
    assert levels["pixel_AP"] == pytest.approx(0.5, abs=0.05)
    small = chance_levels([(0.0, 0.0, 16.0, 16.0)] * 200, (4, 4), 64, draws=3)
    assert small["pixel_AP"] < 0.2 and small["cIoU"] < levels["cIoU"]
