"""Scores, calibration and SML statistics against independent numpy computations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mgcda_core.pipeline import scores
from mgcda_core.pipeline.calibration import DEFAULT_CALIBRATION, Calibration
from mgcda_core.pipeline.sml import SMLAccumulator, load_stats, save_stats

RNG = np.random.default_rng(0)


def np_softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.fixture()
def logits() -> np.ndarray:
    return RNG.normal(0, 4, size=(2, 19, 5, 7))


def test_msp_entropy_max_logit_energy(logits):
    p = np_softmax(logits)
    t = torch.from_numpy(logits)
    np.testing.assert_allclose(scores.msp(t).numpy(), 1 - p.max(1), atol=1e-12)
    np.testing.assert_allclose(scores.entropy(t).numpy(), -(p * np.log(p)).sum(1) / np.log(19), atol=1e-12)
    np.testing.assert_allclose(scores.max_logit(t).numpy(), -logits.max(1), atol=1e-12)
    np.testing.assert_allclose(scores.energy(t).numpy(), -np.log(np.exp(logits).sum(1)), atol=1e-9)


def test_uniform_logits_are_maximally_uncertain():
    t = torch.zeros(1, 19, 2, 2, dtype=torch.float64)
    np.testing.assert_allclose(scores.msp(t).numpy(), 1 - 1 / 19)
    np.testing.assert_allclose(scores.entropy(t).numpy(), 1.0)


def test_energy_orders_confident_pixels_as_normal():
    confident = torch.tensor([[20.0] + [0.0] * 18]).view(1, 19, 1, 1)
    unsure = torch.tensor([[2.0] + [0.0] * 18]).view(1, 19, 1, 1)
    assert scores.energy(confident).item() < scores.energy(unsure).item()
    assert scores.max_logit(confident).item() < scores.max_logit(unsure).item()


def test_sml(logits):
    mean, std = RNG.normal(5, 1, 19), RNG.uniform(0.5, 2, 19)
    c = logits.argmax(1)
    expected = -(logits.max(1) - mean[c]) / std[c]
    got = scores.sml(torch.from_numpy(logits), torch.from_numpy(mean), torch.from_numpy(std))
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)
    with pytest.raises(ValueError, match="19 entries"):
        scores.sml(torch.from_numpy(logits), torch.zeros(18), torch.ones(18))


def test_dissimilarity_and_ensemble():
    d = RNG.normal(0, 3, size=(2, 2, 4, 6))
    entropy_map = RNG.uniform(0, 1, size=(2, 4, 6))
    prob = 1 / (1 + np.exp(d[:, 0] - d[:, 1]))
    got = scores.dissimilarity(torch.from_numpy(d))
    np.testing.assert_allclose(got.numpy(), prob, atol=1e-12)
    np.testing.assert_allclose(scores.ensemble(got, torch.from_numpy(entropy_map)).numpy(),
                               0.75 * prob + 0.25 * entropy_map, atol=1e-12)


@pytest.mark.parametrize("name", sorted(DEFAULT_CALIBRATION))
def test_calibration_is_monotone_and_in_range(name):
    calibration = DEFAULT_CALIBRATION[name]
    raw = np.sort(np.concatenate([RNG.normal(0, 10, 1000), [-1e9, 1e9, 0.0, 1.0]]))
    out = calibration(raw)
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    assert out.min() >= 0 and out.max() <= 1
    assert np.all(np.diff(out) >= 0)


def test_logistic_calibration_values():
    calibration = Calibration("logistic", center=-7.0, scale=1.5)
    raw = np.array([-7.0, -5.5, -10.0])
    np.testing.assert_allclose(calibration(raw), 1 / (1 + np.exp(-(raw + 7.0) / 1.5)), rtol=1e-6)
    with pytest.raises(ValueError, match="scale must be > 0"):
        Calibration("logistic", scale=0.0)
    with pytest.raises(ValueError, match="kind must be"):
        Calibration("isotonic")


@pytest.mark.parametrize("name", sorted(DEFAULT_CALIBRATION))
def test_in_place_calibration_writes_the_callers_array_and_matches_float64(name):
    calibration = DEFAULT_CALIBRATION[name]
    raw = RNG.normal(-5.0, 6.0, (90, 160)).astype(np.float32)
    kept = raw.copy()
    copied = calibration(raw)
    np.testing.assert_array_equal(raw, kept)  # __call__ leaves its input alone
    result = calibration.in_place(raw)
    assert result is raw and result.dtype == np.float32
    np.testing.assert_array_equal(result, copied)
    x = kept.astype(np.float64)
    reference = (np.clip(x, 0, 1) if calibration.kind == "identity"
                 else 1 / (1 + np.exp(-(x - calibration.center) / calibration.scale)))
    # float32 steps (shift, scale, tanh, shift, halve) of values in [0, 1]: a few units of float32's last place
    np.testing.assert_allclose(result, reference, rtol=0, atol=8 * np.finfo(np.float32).eps)


def test_logistic_calibration_keeps_extremes_finite_and_in_place_needs_float32():
    calibration = Calibration("logistic", center=-7.0, scale=1.5)
    result = calibration.in_place(np.array([[-1e30, -100.0, 0.0, 100.0, 1e30]], np.float32))
    assert np.all(np.isfinite(result)) and result[0, 0] == 0.0 and result[0, -1] == 1.0
    with pytest.raises(ValueError, match="float32 score, got float64"):
        calibration.in_place(np.zeros((2, 2)))


def test_sml_accumulator_matches_grouped_numpy(tmp_path):
    batches = [RNG.normal(0, 3, size=(2, 19, 6, 9)) for _ in range(3)]
    batches[0][:, 4] -= 100  # class 4 is never the argmax in any batch
    for b in batches[1:]:
        b[:, 4] -= 100
    accumulator = SMLAccumulator()
    for b in batches:
        accumulator.update(torch.from_numpy(b))
    mean, std, fallback = accumulator.result()
    top = np.concatenate([b.max(1).ravel() for b in batches])
    arg = np.concatenate([b.argmax(1).ravel() for b in batches])
    for c in range(19):
        if c == 4:
            continue
        np.testing.assert_allclose(mean[c], top[arg == c].mean(), rtol=1e-9)
        np.testing.assert_allclose(std[c], top[arg == c].std(), rtol=1e-6)
    assert fallback == [4]
    np.testing.assert_allclose([mean[4], std[4]], [top.mean(), top.std()], rtol=1e-6)
    path = tmp_path / "model.sml.json"
    save_stats(path, mean, std, {"num_images": 6})
    loaded_mean, loaded_std = load_stats(path)
    np.testing.assert_allclose(loaded_mean.numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(loaded_std.numpy(), std, rtol=1e-6)


def test_bad_sml_files_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="mgcda_core.sml_stats"):
        load_stats(tmp_path / "absent.json")
    path = tmp_path / "short.json"
    path.write_text(json.dumps({"mean": [0.0] * 18, "std": [1.0] * 18}))
    with pytest.raises(ValueError, match="expected 19 finite means"):
        load_stats(path)
    path.write_text("not json")
    with pytest.raises(ValueError, match="not an SML statistics file"):
        load_stats(path)
    with pytest.raises(ValueError, match="no pixels"):
        SMLAccumulator().result()
