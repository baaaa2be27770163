"""L_CE: ENet class weights, label pixel counts (arrays and folders), weighted cross-entropy ignoring 255."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mgcda_core.losses.segmentation import (
    SYNBOOST_CLASS_WEIGHTS,
    SYNBOOST_CLASS_WEIGHTS_WITH_VOID,
    enet_class_weights,
    label_folder_pixel_counts,
    label_pixel_counts,
    weighted_cross_entropy,
)
from mgcda_core.utils.images import write_png


def test_enet_weights_hand_computed() -> None:
    weights = enet_class_weights([900, 100])
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights, torch.tensor([1 / math.log(1.02 + 0.9), 1 / math.log(1.02 + 0.1)]))
    # Three classes, one empty: p = (0.25, 0.75, 0); an empty class gets the cap 1 / ln(1.02).
    torch.testing.assert_close(
        enet_class_weights(np.array([1, 3, 0])),
        torch.tensor([1 / math.log(1.27), 1 / math.log(1.77), 1 / math.log(1.02)]),
    )


@pytest.mark.parametrize("weights", [SYNBOOST_CLASS_WEIGHTS, SYNBOOST_CLASS_WEIGHTS_WITH_VOID])
def test_synboost_constants_are_enet_weights_of_a_distribution(weights: tuple[float, float]) -> None:
    # Inverting w = 1 / ln(1.02 + p) must give class frequencies that sum to 1.
    frequencies = [math.exp(1 / w) - 1.02 for w in weights]
    assert all(0 < p < 1 for p in frequencies)
    assert sum(frequencies) == pytest.approx(1.0, abs=2e-3)
    torch.testing.assert_close(enet_class_weights(torch.tensor(frequencies)), torch.tensor(weights, dtype=torch.float32),
                               rtol=2e-3, atol=0)


@pytest.mark.parametrize(
    ("counts", "error", "match"),
    [([], ValueError, "non-empty"), ([[1, 2]], ValueError, "1-D"), ([0, 0], ValueError, "sum to 0"),
     ([5, -1], ValueError, "non-negative"), ([1.0, float("nan")], ValueError, "finite")],
)
def test_enet_weights_reject_bad_counts(counts, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        enet_class_weights(counts)


def _labels(seed: int, shape: tuple[int, int] = (6, 9)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice(np.array([0, 1, 255], dtype=np.uint8), size=shape, p=[0.6, 0.3, 0.1])


def test_pixel_counts_from_arrays_exclude_ignore() -> None:
    arrays = [_labels(0), _labels(1), torch.from_numpy(_labels(2))]
    expected = [sum(int((np.asarray(a) == k).sum()) for a in arrays) for k in (0, 1)]
    assert label_pixel_counts(arrays).tolist() == expected
    assert label_pixel_counts(arrays[0]).tolist() == [int((arrays[0] == 0).sum()), int((arrays[0] == 1).sum())]


def test_pixel_counts_from_folder(tmp_path: Path) -> None:
    arrays = [_labels(seed) for seed in range(3)]
    for i, array in enumerate(arrays):
        write_png(tmp_path / f"frame_{i}.png", array)
    (tmp_path / "notes.txt").write_text("not a label")
    counts = label_folder_pixel_counts(tmp_path, progress=False)
    assert counts.tolist() == label_pixel_counts(arrays).tolist()


def test_pixel_counts_reject_bad_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"found \[7\]"):
        label_pixel_counts(np.array([[0, 1], [7, 255]], dtype=np.uint8))
    with pytest.raises(TypeError, match="integer"):
        label_pixel_counts(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="empty iterable"):
        label_pixel_counts([])
    with pytest.raises(ValueError, match="empty label array"):
        label_pixel_counts(np.zeros((0, 3), dtype=np.uint8))
    with pytest.raises(FileNotFoundError, match="label folder"):
        label_folder_pixel_counts(tmp_path / "missing")
    with pytest.raises(ValueError, match="no .png"):
        label_folder_pixel_counts(tmp_path)
    write_png(tmp_path / "bad.png", np.full((4, 4), 3, dtype=np.uint8))
    with pytest.raises(ValueError, match="bad.png"):
        label_folder_pixel_counts(tmp_path, progress=False)


def reference_weighted_ce(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """sum_i w_{y_i} * -log softmax(x_i)_{y_i} / sum_i w_{y_i} over labelled pixels, in float64 numpy."""
    x = np.moveaxis(logits.astype(np.float64), 1, -1).reshape(-1, logits.shape[1])
    y = labels.reshape(-1)
    keep = y != 255
    x, y = x[keep], y[keep].astype(np.int64)
    log_softmax = x - x.max(axis=1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(axis=1, keepdims=True))
    w = weights[y]
    return float((w * -log_softmax[np.arange(y.size), y]).sum() / w.sum())


def test_weighted_ce_matches_independent_computation_and_ignores_255() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 5, 7, generator=g, requires_grad=True)
    labels = torch.from_numpy(_labels(5, (2 * 5, 7)).reshape(2, 5, 7)).long()
    weights = torch.tensor(SYNBOOST_CLASS_WEIGHTS)
    loss = weighted_cross_entropy(logits, labels, weights)
    expected = reference_weighted_ce(logits.detach().numpy(), labels.numpy(), weights.double().numpy())
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    unweighted = weighted_cross_entropy(logits, labels, None).item()
    assert unweighted == pytest.approx(reference_weighted_ce(logits.detach().numpy(), labels.numpy(), np.ones(2)), rel=1e-5)
    # Logits at ignored pixels do not matter and get no gradient.
    ignored = (labels == 255).unsqueeze(1).expand_as(logits)
    changed = logits.detach().clone()
    changed[ignored] += 100.0
    assert weighted_cross_entropy(changed, labels, weights).item() == pytest.approx(loss.item(), rel=1e-6)
    loss.backward()
    assert (logits.grad[ignored] == 0).all() and (logits.grad[~ignored] != 0).any()


def test_weighted_ce_fully_ignored_batch_is_zero_with_gradient() -> None:
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    loss = weighted_cross_entropy(logits, torch.full((1, 3, 3), 255), SYNBOOST_CLASS_WEIGHTS)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize(
    ("logits", "labels", "weights", "error", "match"),
    [
        (torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 4, dtype=torch.long), None, ValueError, "labels must be B x H x W"),
        (torch.zeros(1, 2, 3, 3), torch.full((1, 3, 3), 2), None, ValueError, r"found \[2\]"),
        (torch.zeros(1, 2, 3, 3), torch.full((1, 3, 3), -1), None, ValueError, r"found \[-1\]"),
        (torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3), None, TypeError, "integer"),
        (torch.zeros(2, 3, 3), torch.zeros(2, 3, dtype=torch.long), None, ValueError, "B x K x H x W"),
        (torch.zeros(0, 2, 3, 3), torch.zeros(0, 3, 3, dtype=torch.long), None, ValueError, "empty"),
        (torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long), [1.0, 2.0, 3.0], ValueError, "one value per class"),
        (torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long), [1.0, -2.0], ValueError, "positive"),
    ],
)
def test_weighted_ce_rejects_bad_inputs(logits, labels, weights, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        weighted_cross_entropy(logits, labels, weights)
