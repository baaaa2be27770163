"""DissimNetPrior, its encoders and SPADE: shapes, parameter counts from the layer specs, equations, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from mgcda_core.constants import IMAGENET_MEAN, IMAGENET_STD
from mgcda_core.model.dissimilarity import DissimNetPrior
from mgcda_core.model.efficientnet_lite import lite_normalise, load_efficientnet_lite0
from mgcda_core.model.encoder_weights import EncoderWeights, lite0_weights_path
from mgcda_core.model.encoders import PyramidEncoder, build_encoder
from mgcda_core.model.spade import SPADE
from mgcda_core.model.summary import summarise
from mgcda_core.utils.flops import count_flops, count_parameters

H, W = 64, 128


def _inputs(batch: int = 2, num_classes: int = 19, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, H, W, generator=g)
    synthesis = torch.randn(batch, 3, H, W, generator=g)
    labels = torch.randint(0, num_classes, (batch, H, W), generator=g)
    semantic = F.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()
    prior = torch.rand(batch, 3, H, W, generator=g)
    return image, synthesis, semantic, prior


# Channel counts from docs/MODEL.md (VGG16 64/128/256/512) and EfficientNet-Lite0's stages (16/24/40/112), x0.25.
@pytest.mark.parametrize(("name", "channels", "strides"), [
    ("vgg16", (16, 32, 64, 128), (1, 2, 4, 8)),
    ("vgg16_bn", (16, 32, 64, 128), (1, 2, 4, 8)),
    ("efficientnet_lite0", (4, 6, 10, 28), (2, 4, 8, 16)),
])
def test_encoder_levels_and_network_outputs(name: str, channels: tuple, strides: tuple) -> None:
    encoder = build_encoder(name, width=0.25)
    assert encoder.out_channels == channels and encoder.strides == strides
    features = encoder(torch.randn(2, 3, H, W))
    assert [tuple(f.shape) for f in features] == [(2, c, H // s, W // s) for c, s in zip(channels, strides)]

    model = DissimNetPrior(name, width=0.25)
    assert model.fused_channels == (16, 32, 64, 128) and model.decoder_channels == 16
    out = model(*_inputs())
    deepest = strides[-1]
    assert tuple(out.logits.shape) == (2, 2, H, W)
    assert tuple(out.fused_deepest.shape) == (2, 128, H // deepest, W // deepest)
    assert tuple(out.decoder_features.shape) == (2, 16, H, W)


@pytest.mark.parametrize(("name", "cuts"), [("vgg16", (0, 4, 9, 16, 23)), ("vgg16_bn", (0, 6, 13, 23, 33))])
def test_vgg_encoder_equals_torchvision_feature_slices(name: str, cuts: tuple) -> None:
    reference = getattr(torchvision.models, name)().features.eval()
    encoder = build_encoder(name).eval()
    ours = list(encoder.state_dict().values())
    theirs = [v for k, v in reference.state_dict().items() if int(k.split(".")[0]) < cuts[-1]]
    assert [tuple(t.shape) for t in ours] == [tuple(t.shape) for t in theirs]
    encoder.load_state_dict(dict(zip(encoder.state_dict(), theirs)))
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        features = encoder(x)
        for level, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
            x = reference[a:b](x)
            torch.testing.assert_close(features[level], x, rtol=1e-4, atol=1e-4)


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def _spade_block(c: int, labels: int = 19, hidden: int = 128) -> int:
    spade = _conv(labels, hidden, 3) + 2 * _conv(hidden, c, 3)
    return 2 * spade + _conv(c, c, 3)


def _expected_vgg16_parameters(prior: bool, corr: bool) -> int:
    """DissimNetPrior(vgg16, width 1) parameter count from docs/MODEL.md's layer specs (Synboost's code)."""
    vgg = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
           (256, 512), (512, 512), (512, 512)]
    encoder = sum(_conv(i, o, 3) for i, o in vgg)
    semantic = _conv(19, 32, 7) + _conv(32, 64, 3) + _conv(64, 128, 3) + _conv(128, 256, 3)
    prior_enc = _conv(3, 64, 7) + _conv(64, 128, 3) + _conv(128, 256, 3) + _conv(256, 512, 3)
    fusion = _conv(160, 64, 1) + _conv(320, 128, 1) + _conv(640, 256, 1) + _conv(1280, 512, 1)
    e = 1 if corr else 0
    decoder = _conv(512 + e, 256, 3)
    for cin, skip, cout in ((256, 256 + e, 256), (256, 128 + e, 128), (128, 64 + e, 64)):
        decoder += _spade_block(cin) + (cin * cin * 4 + cin) + _conv(cin + skip, cout, 3)
    decoder += _spade_block(64) + _conv(64, 2, 1)
    return encoder + semantic + (prior_enc if prior else 0) + fusion + decoder


@pytest.mark.parametrize(("prior", "corr"), [(True, True), (False, True), (True, False), (False, False)])
def test_vgg16_parameter_count_matches_layer_specs(prior: bool, corr: bool) -> None:
    model = DissimNetPrior("vgg16", use_prior=prior, use_correlation=corr)
    assert count_parameters(model) == _expected_vgg16_parameters(prior, corr)
    assert (model.prior_encoder is None) == (not prior)


def _capture_inputs(model: DissimNetPrior) -> dict[str, torch.Tensor]:
    """Inputs of the bottleneck conv and of each up-stage's post-concat conv."""
    seen: dict[str, torch.Tensor] = {}
    model.bottleneck.register_forward_pre_hook(lambda m, args: seen.__setitem__("level3", args[0]))
    for i, stage in enumerate(model.up_stages):
        stage.conv.register_forward_pre_hook(lambda m, args, lvl=2 - i: seen.__setitem__(f"level{lvl}", args[0]))
    return seen


def test_correlation_and_prior_multiplication_match_independent_computation() -> None:
    model = DissimNetPrior("vgg16", width=0.25).eval()
    image, synthesis, semantic, prior = _inputs()
    seen = _capture_inputs(model)
    with torch.no_grad():
        out = model(image, synthesis, semantic, prior)
        f_img, f_syn = model.encoder(image), model.encoder(synthesis)
        f_sem = model.semantic_encoder(semantic)
        f_pri = model.prior_encoder(prior)
    dec_in = (model.decoder_channels * 4, model.decoder_channels * 4, model.decoder_channels * 2)
    for level in range(4):
        corr = torch.einsum("bchw,bchw->bhw", f_img[level], f_syn[level])
        fused = model.fuse[level](torch.cat((f_img[level], f_syn[level], f_sem[level]), 1)) * f_pri[level]
        start = 0 if level == 3 else dec_in[2 - level]  # up-stages concat [upsampled, corr, fused]
        got = seen[f"level{level}"][:, start:]
        assert got.shape[1] == model.fused_channels[level] + 1
        torch.testing.assert_close(got[:, 0], corr, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(got[:, 1:], fused, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.fused_deepest, seen["level3"][:, 1:])


def test_zero_prior_zeroes_fused_features() -> None:
    model = DissimNetPrior("vgg16", width=0.25).eval()
    for conv in model.prior_encoder.convs:
        torch.nn.init.zeros_(conv.bias)  # so a zero prior gives zero prior features (ReLU(0) = 0)
    image, synthesis, semantic, prior = _inputs()
    with torch.no_grad():
        zero = model(image, synthesis, semantic, torch.zeros_like(prior))
        some = model(image, synthesis, semantic, prior)
    assert torch.count_nonzero(zero.fused_deepest) == 0
    assert torch.count_nonzero(some.fused_deepest) > 0
    assert torch.isfinite(zero.logits).all()


def test_gradient_reaches_both_inputs_through_one_shared_encoder() -> None:
    model = DissimNetPrior("vgg16", width=0.25)
    assert sum(isinstance(m, PyramidEncoder) for m in model.modules()) == 1
    image, synthesis, semantic, prior = _inputs()
    image.requires_grad_(True)
    synthesis.requires_grad_(True)
    model(image, synthesis, semantic, prior).logits.sum().backward()
    assert image.grad.abs().sum() > 0 and synthesis.grad.abs().sum() > 0
    first_conv = model.encoder.stages[0][0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


def test_spade_equation() -> None:
    spade = SPADE(channels=4, label_channels=3, hidden=8)
    x = torch.randn(2, 4, 8, 8)
    labels = F.one_hot(torch.randint(0, 3, (2, 4, 4)), 3).permute(0, 3, 1, 2).float()
    up = labels.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest 2x, by hand
    hidden = F.relu(F.conv2d(up, spade.mlp_shared[0].weight, spade.mlp_shared[0].bias, padding=1))
    gamma = F.conv2d(hidden, spade.mlp_gamma.weight, spade.mlp_gamma.bias, padding=1)
    beta = F.conv2d(hidden, spade.mlp_beta.weight, spade.mlp_beta.bias, padding=1)
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * (1 + gamma) + beta
    torch.testing.assert_close(spade(x, labels), expected, rtol=1e-4, atol=1e-4)


def test_efficientnet_lite0_weights_load_exactly_and_match_encoder() -> None:
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    net = load_efficientnet_lite0(None)
    result = net.load_state_dict(state, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    net.eval()
    encoder = build_encoder("efficientnet_lite0", weights=EncoderWeights.EFFICIENTNET_LITE0_IMAGENET).eval()
    rgb = torch.rand(1, 3, 32, 64)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = encoder((rgb - mean) / std)
        reference = net.features(lite_normalise(rgb), num_levels=4)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("image_name", "imagenet_class"), [("chelsea", 285), ("coffee", 967)])
def test_efficientnet_lite0_classifies_reference_images(image_name: str, imagenet_class: int) -> None:
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the reference images")
    rgb = torch.from_numpy(getattr(data, image_name)()).permute(2, 0, 1)[None].float() / 255
    rgb = F.interpolate(rgb, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    net = load_efficientnet_lite0(EncoderWeights.EFFICIENTNET_LITE0_IMAGENET).eval()
    with torch.no_grad():
        assert net(lite_normalise(rgb)).argmax(1).item() == imagenet_class


def test_bad_inputs_raise_clear_errors() -> None:
    model = DissimNetPrior("vgg16", width=0.125)
    image, synthesis, semantic, prior = _inputs(batch=1)
    with pytest.raises(ValueError, match=r"semantic must be a B x 19 x H x W tensor, got \(1, 18, 64, 128\)"):
        model(image, synthesis, semantic[:, :18], prior)
    with pytest.raises(ValueError, match="prior has batch x size 1 x 32x128, expected 1 x 64x128"):
        model(image, synthesis, semantic, prior[:, :, :32])
    with pytest.raises(ValueError, match="divisible by 8 for encoder 'vgg16', got 60x124"):
        crop = (slice(None), slice(None), slice(0, 60), slice(0, 124))
        model(image[crop], synthesis[crop], semantic[crop], prior[crop])
    with pytest.raises(ValueError, match="image must be a floating-point tensor"):
        model(image.to(torch.uint8), synthesis, semantic, prior)
    with pytest.raises(ValueError, match="image must be a B x 3 x H x W tensor"):
        model(image[0], synthesis, semantic, prior)
    with pytest.raises(ValueError, match="unknown encoder 'vgg19'"):
        build_encoder("vgg19")
    with pytest.raises(ValueError, match="only at width 1.0"):
        build_encoder("vgg16", width=0.5, weights=EncoderWeights.VGG16_IMAGENET1K_V1)
    with pytest.raises(ValueError, match="only at width 1.0"):
        DissimNetPrior("efficientnet_lite0", width=0.5, weights=EncoderWeights.EFFICIENTNET_LITE0_IMAGENET)
    lite = DissimNetPrior("efficientnet_lite0", width=0.125)
    with pytest.raises(ValueError, match="divisible by 16 for encoder 'efficientnet_lite0', got 56x128"):
        crop = (slice(None), slice(None), slice(0, 56))
        lite(image[crop], synthesis[crop], semantic[crop], prior[crop])


def test_summary_on_meta_device_equals_counts_on_a_real_model() -> None:
    row = summarise("efficientnet_lite0", 32, 64, width_multiplier=0.125)
    torch.manual_seed(0)
    model = DissimNetPrior("efficientnet_lite0", width=0.125).eval()
    image, synthesis, semantic, prior = (t[:1, :, :32, :64] for t in _inputs())
    assert row.parameters == count_parameters(model)
    assert row.encoder_parameters == count_parameters(model.encoder)
    assert row.flops == count_flops(model, image, synthesis, semantic, prior)
    assert row.encoder_flops == 2 * count_flops(model.encoder, image)


def test_frozen_encoder_keeps_its_batchnorm_statistics_in_training() -> None:
    model = DissimNetPrior("efficientnet_lite0", width=0.25, decoder_width=0.125, first_level=1, freeze_encoder=True)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    assert not model.encoder.training and model.head.training  # from construction on, not only after .train()
    x = torch.randn(2, 3, 64, 64)
    semantic = torch.zeros(2, 19, 64, 64)
    model.train()(x, x, semantic, torch.rand(2, 3, 64, 64)).logits.sum().backward()
    assert not model.encoder.training
    assert all(torch.equal(v, before[k]) for k, v in model.encoder.state_dict().items())
    assert all(p.grad is None for p in model.encoder.parameters())
