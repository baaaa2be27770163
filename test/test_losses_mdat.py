"""MDAT: eq. 1 schedule, eq. 2 crossed least squares, classifier loss/accuracy, domain classifier layouts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mgcda_core.losses.mdat import (
    classifier_accuracy,
    classifier_loss,
    domain_labels,
    generator_adversarial_loss,
    tau_at,
)
from mgcda_core.model.domain_classifiers import FeatureDomainClassifier, OutputDomainClassifier


# ---------------------------------------------------------------- eq. 1
@pytest.mark.parametrize(
    ("step", "max_steps", "tau_b", "expected"),
    [
        (0, 100, 1.0, 1.0),  # start
        (50, 100, 1.0, 0.75),  # midway
        (100, 100, 1.0, 0.5),  # end
        (25, 100, 1.0, 0.875),
        (3, 4, 1.0, 1.0 - 0.5 * 3 / 4),
        (50, 100, 0.9, 0.9 - 0.4 * 0.5),
    ],
)
def test_tau_schedule_eq1(step: int, max_steps: int, tau_b: float, expected: float) -> None:
    assert tau_at(step, max_steps, tau_b) == pytest.approx(expected, abs=1e-12)


def test_tau_without_dynamic_label_smoothing_stays_tau_b() -> None:
    assert [tau_at(i, 10, dynamic=False) for i in (0, 5, 10)] == [1.0, 1.0, 1.0]
    assert tau_at(7, 10, tau_b=0.8, dynamic=False) == 0.8


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((-1, 10), ValueError, "step"),
        ((11, 10), ValueError, "step"),
        ((0, 0), ValueError, "max_steps"),
        ((1.5, 10), TypeError, "step"),
        ((True, 10), TypeError, "step"),
        ((0, 10, 0.4), ValueError, "tau_b"),
        ((0, 10, 1.1), ValueError, "tau_b"),
    ],
)
def test_tau_rejects_bad_arguments(args: tuple, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        tau_at(*args)


# ---------------------------------------------------------------- eq. 2 and the classifier loss
def test_labels_v_high_a_low() -> None:
    assert domain_labels(0.75) == (0.75, 0.25)
    assert domain_labels(1.0) == (1.0, 0.0)


def test_eq2_constant_maps_hand_computed() -> None:
    pred_v = torch.full((2, 1, 3, 4), 0.8)
    pred_a = torch.full((2, 1, 3, 4), 0.3)
    # tau = 0.75: Y_V = 0.75, Y_A = 0.25. Crossed: (0.8 - 0.25)^2 + (0.3 - 0.75)^2 = 0.3025 + 0.2025.
    assert generator_adversarial_loss(pred_v, pred_a, 0.75).item() == pytest.approx(0.505, abs=1e-6)
    # Own labels: (0.8 - 0.75)^2 + (0.3 - 0.25)^2.
    assert classifier_loss(pred_v, pred_a, 0.75).item() == pytest.approx(0.005, abs=1e-6)


def test_eq2_non_constant_maps_hand_computed() -> None:
    pred_v = torch.tensor([[[[0.0, 1.0], [0.5, 2.0]]]])  # 1 x 1 x 2 x 2
    pred_a = torch.tensor([[[[1.0, 0.0, 0.25]]]])  # 1 x 1 x 1 x 3: the domains need not match in size
    # tau = 1: Y_V = 1, Y_A = 0.
    # crossed: mean(P_V^2) = (0 + 1 + 0.25 + 4) / 4; mean((P_A - 1)^2) = (0 + 1 + 0.5625) / 3
    assert generator_adversarial_loss(pred_v, pred_a, 1.0).item() == pytest.approx(5.25 / 4 + 1.5625 / 3, abs=1e-6)
    # own: mean((P_V - 1)^2) = (1 + 0 + 0.25 + 1) / 4; mean(P_A^2) = (1 + 0 + 0.0625) / 3
    assert classifier_loss(pred_v, pred_a, 1.0).item() == pytest.approx(2.25 / 4 + 1.0625 / 3, abs=1e-6)
    # tau = 0.5 (end of training): both labels 0.5, crossed and uncrossed coincide.
    assert generator_adversarial_loss(pred_v, pred_a, 0.5).item() == pytest.approx(
        classifier_loss(pred_v, pred_a, 0.5).item(), abs=1e-7
    )


def test_each_domain_is_averaged_over_its_own_pixels() -> None:
    # 3 V images at 0.0 and 1 A image at 1.0 with tau = 1: own-label errors are 1 per pixel in both domains,
    # so each term is 1 whatever the batch split (a pooled mean would weigh V three times as much).
    pred_v = torch.zeros(3, 1, 2, 2)
    pred_a = torch.ones(1, 1, 2, 2)
    assert classifier_loss(pred_v, pred_a, 1.0).item() == pytest.approx(2.0)
    assert generator_adversarial_loss(pred_v, pred_a, 1.0).item() == pytest.approx(0.0)


def test_generator_loss_gradient_pushes_towards_the_other_label() -> None:
    pred_v = torch.full((1, 1, 2, 2), 0.9, requires_grad=True)
    pred_a = torch.full((1, 1, 2, 2), 0.1, requires_grad=True)
    generator_adversarial_loss(pred_v, pred_a, 1.0).backward()
    # d/dP mean((P - Y)^2) = 2 (P - Y) / N with N = 4: V moves down towards Y_A = 0, A up towards Y_V = 1.
    torch.testing.assert_close(pred_v.grad, torch.full_like(pred_v, 2 * 0.9 / 4))
    torch.testing.assert_close(pred_a.grad, torch.full_like(pred_a, 2 * (0.1 - 1.0) / 4))


def test_classifier_accuracy_per_domain() -> None:
    pred_v = torch.tensor([0.9, 0.6, 0.5, 0.1]).view(1, 1, 1, 4)  # V correct when > 0.5: 2 of 4
    pred_a = torch.tensor([0.1, 0.49, 0.5, 0.7, -1.0]).view(1, 1, 1, 5)  # A correct when < 0.5: 3 of 5
    acc_v, acc_a = classifier_accuracy(pred_v, pred_a)
    assert acc_v == pytest.approx(0.5)
    assert acc_a == pytest.approx(0.6)
    assert classifier_accuracy(torch.ones(2, 1, 3, 3), torch.zeros(1, 1, 3, 3)) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("pred_v", "pred_a", "tau", "error", "match"),
    [
        (torch.zeros(2, 3, 3), torch.zeros(2, 1, 3, 3), 1.0, ValueError, "pred_v"),  # no channel dim
        (torch.zeros(2, 1, 3, 3), torch.zeros(2, 2, 3, 3), 1.0, ValueError, "pred_a"),  # 2 channels
        (torch.zeros(2, 1, 3, 3, dtype=torch.long), torch.zeros(2, 1, 3, 3), 1.0, TypeError, "floating"),
        (torch.zeros(0, 1, 3, 3), torch.zeros(2, 1, 3, 3), 1.0, ValueError, "empty"),
        (torch.zeros(2, 1, 3, 3), torch.zeros(2, 1, 3, 3), 0.3, ValueError, "tau"),
        (torch.zeros(2, 1, 3, 3), torch.zeros(2, 1, 3, 3), 1.5, ValueError, "tau"),
        ([0.0], torch.zeros(2, 1, 3, 3), 1.0, TypeError, "pred_v"),
    ],
)
def test_losses_reject_bad_inputs(pred_v, pred_a, tau: float, error: type, match: str) -> None:
    for loss in (generator_adversarial_loss, classifier_loss):
        with pytest.raises(error, match=match):
            loss(pred_v, pred_a, tau)


# ---------------------------------------------------------------- classifiers
def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def _assert_layout(module: nn.Module, in_channels: int, widths: list[int]) -> None:
    convs = _convs(module)
    assert [c.out_channels for c in convs] == widths
    assert [c.in_channels for c in convs] == [in_channels, *widths[:-1]]
    for conv in convs:
        assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
    layers = list(module.layers)
    # ReLU between convs, nothing after the last conv.
    assert [type(m) for m in layers] == [nn.Conv2d, nn.ReLU] * (len(widths) - 1) + [nn.Conv2d]


def test_feature_classifier_layers_and_per_pixel_output() -> None:
    torch.manual_seed(0)
    classifier = FeatureDomainClassifier(64)
    _assert_layout(classifier, 64, [32, 16, 8, 1])
    _assert_layout(FeatureDomainClassifier(512), 512, [256, 128, 64, 1])
    out = classifier(torch.randn(2, 64, 7, 9))
    assert out.shape == (2, 1, 7, 9)
    with torch.no_grad():  # a negative last bias shows through: no ReLU clips the raw regression output
        _convs(classifier)[-1].bias.fill_(-10.0)
    assert (classifier(torch.randn(2, 64, 7, 9)) < -5).all()


def test_output_classifier_layers_and_per_pixel_output() -> None:
    torch.manual_seed(0)
    _assert_layout(OutputDomainClassifier(), 1, [32, 64, 128, 256, 1])
    small = OutputDomainClassifier(1, base_channels=4)
    _assert_layout(small, 1, [4, 8, 16, 32, 1])
    assert small(torch.rand(3, 1, 5, 11)).shape == (3, 1, 5, 11)


def test_classifiers_reject_bad_construction_and_inputs() -> None:
    with pytest.raises(ValueError, match="in_channels"):
        FeatureDomainClassifier(4)
    with pytest.raises(TypeError, match="in_channels"):
        FeatureDomainClassifier(64.0)
    with pytest.raises(ValueError, match="base_channels"):
        OutputDomainClassifier(1, base_channels=0)
    with pytest.raises(ValueError, match="B x 64 x H x W"):
        FeatureDomainClassifier(64)(torch.zeros(1, 32, 4, 4))
    with pytest.raises(ValueError, match="B x 1 x H x W"):
        OutputDomainClassifier()(torch.zeros(1, 2, 4, 4))


def test_shared_forward_with_restricted_backwards_equals_frozen_then_detached() -> None:
    """The trainer's step: one classifier forward, network backward restricted to the network's parameters,
    classifier backward restricted to the classifier's, gives the gradients of the textbook alternation
    (frozen classifier for the network, detached input for the classifier)."""
    torch.manual_seed(0)
    network = torch.nn.Conv2d(3, 1, 3, padding=1)
    classifier = OutputDomainClassifier(1, base_channels=4)
    images = torch.rand(4, 3, 6, 6)
    tau = 0.8

    def split(pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return pred[:2], pred[2:]

    # Textbook: frozen classifier for the network step, then a second forward on the detached input.
    for p in classifier.parameters():
        p.requires_grad_(False)
    anomaly = torch.sigmoid(network(images))
    generator_adversarial_loss(*split(classifier(anomaly)), tau).backward()
    expected_network = [p.grad.clone() for p in network.parameters()]
    for p in classifier.parameters():
        p.requires_grad_(True)
    classifier_loss(*split(classifier(anomaly.detach())), tau).backward()
    expected_classifier = [p.grad.clone() for p in classifier.parameters()]

    network.zero_grad(set_to_none=True)
    classifier.zero_grad(set_to_none=True)
    pred = classifier(torch.sigmoid(network(images)))
    generator_adversarial_loss(*split(pred), tau).backward(inputs=list(network.parameters()), retain_graph=True)
    assert all(p.grad is None for p in classifier.parameters())
    classifier_loss(*split(pred), tau).backward(inputs=list(classifier.parameters()))
    for got, want in zip([p.grad for p in network.parameters()], expected_network):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    for got, want in zip([p.grad for p in classifier.parameters()], expected_classifier):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_classifier_accuracy_on_masked_pixels_only() -> None:
    pred_v = torch.tensor([0.9, 0.6, 0.2, 0.1]).view(1, 1, 1, 4)
    pred_a = torch.tensor([0.1, 0.7, 0.8]).view(1, 1, 1, 3)
    mask_v = torch.tensor([True, False, True, True]).view(1, 1, 1, 4)  # correct: 0.9 only -> 1 of 3
    mask_a = torch.tensor([False, True, True]).view(1, 1, 1, 3)  # correct: none -> 0 of 2
    acc_v, acc_a = classifier_accuracy(pred_v, pred_a, mask_v, mask_a)
    assert acc_v == pytest.approx(1 / 3)
    assert acc_a == 0.0
    # A domain without selected pixels has no accuracy rather than a made-up 0 or 1.
    assert classifier_accuracy(pred_v, pred_a, mask_v, torch.zeros_like(mask_a)) == (pytest.approx(1 / 3), None)
    with pytest.raises(ValueError, match="mask_a must be a boolean mask of shape"):
        classifier_accuracy(pred_v, pred_a, mask_v, mask_a.float())


def test_trainer_accuracy_scalars_on_anomaly_pixels_of_a_coarse_map() -> None:
    from mgcda_core.training.step import _accuracy_scalars

    # Two images (V, A) of 4x4 pixels; the classifier map is 2x2 (a feature map at 1/2 resolution).
    label = torch.zeros(2, 4, 4, dtype=torch.int64)
    label[0, 0, 0] = 1  # V: one anomaly pixel in the top-left cell
    label[1, 2:, 2:] = 1  # A: the whole bottom-right cell
    label[1, 0, 3] = 255  # ignored pixels are not anomalies
    pred = torch.tensor([[[0.9, 0.1], [0.1, 0.1]],    # V: only the top-left cell on the V side
                         [[0.9, 0.9], [0.9, 0.2]]]).unsqueeze(1)  # A: only the bottom-right cell on the A side
    domain = torch.tensor([0, 1])
    scalars = _accuracy_scalars("f", pred, domain == 0, domain == 1, (label == 1).unsqueeze(1))
    assert scalars == pytest.approx({"mdat/acc_f_v": 0.25, "mdat/acc_f_a": 0.25,
                                     "mdat/acc_f_v_anomaly": 1.0, "mdat/acc_f_a_anomaly": 1.0,
                                     "mdat/gap_f": (1.2 / 4) - (2.9 / 4), "mdat/gap_f_anomaly": 0.9 - 0.2})
    label[0, 0, 0] = 0  # V without anomaly pixels: no V anomaly accuracy and no anomaly gap
    scalars = _accuracy_scalars("f", pred, domain == 0, domain == 1, (label == 1).unsqueeze(1))
    assert "mdat/acc_f_v_anomaly" not in scalars and "mdat/gap_f_anomaly" not in scalars
    assert scalars["mdat/acc_f_a_anomaly"] == 1.0


def test_strided_output_classifier_has_the_same_layers_on_a_16x_coarser_map() -> None:
    per_pixel, strided = OutputDomainClassifier(1, 4), OutputDomainClassifier(1, 4, stride=2)
    assert [p.shape for p in per_pixel.parameters()] == [p.shape for p in strided.parameters()]
    x = torch.rand(2, 1, 64, 128)
    assert per_pixel(x).shape == (2, 1, 64, 128)
    assert strided(x).shape == (2, 1, 4, 8)
    assert strided(torch.rand(1, 1, 50, 70)).shape == (1, 1, 4, 5)  # ceil(50 / 16), ceil(70 / 16)
    with pytest.raises(ValueError, match="stride must be 1 .* or 2"):
        OutputDomainClassifier(1, 4, stride=3)
