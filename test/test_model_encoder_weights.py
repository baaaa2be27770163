"""Named encoder weights (torchvision-style enum): each entry is a model card; an absent file is an error naming
the entry and the file, never a silent random initialisation; ``model.pretrained: true`` selects the default."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from mgcda_core.config_loader import ConfigError
from mgcda_core.errors import MgcdaError, WeightsUnavailableError
from mgcda_core.model import encoder_weights
from mgcda_core.model.dissimilarity import DissimNetPrior
from mgcda_core.model.encoder_weights import EncoderWeights
from mgcda_core.model.encoders import ENCODERS, build_encoder
from mgcda_core.training.config import ModelConfig, TrainConfig
from mgcda_core.training.step import build_model


def test_every_encoder_has_a_default_entry_with_a_model_card() -> None:
    for name in ENCODERS:
        entry = EncoderWeights.default_for(name)
        assert entry.encoder == name
        assert entry.file and entry.source and entry.licence
        assert entry.metrics and all(0 < value <= 100 for value in entry.metrics.values())
    assert EncoderWeights.VGG16_IMAGENET1K_V1.file == "vgg16-397923af.pth"


def test_entry_for_another_encoder_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="EFFICIENTNET_LITE0_IMAGENET are for encoder 'efficientnet_lite0', not "
                                         "'vgg16'"):
        build_encoder("vgg16", weights=EncoderWeights.EFFICIENTNET_LITE0_IMAGENET)


def test_absent_wheel_file_is_an_error_naming_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoder_weights, "LITE0_FILE", "absent-lite0.pth")
    with pytest.raises(WeightsUnavailableError, match=r"EFFICIENTNET_LITE0_IMAGENET: .*absent-lite0\.pth are missing"):
        DissimNetPrior("efficientnet_lite0", weights=EncoderWeights.EFFICIENTNET_LITE0_IMAGENET)
    monkeypatch.setattr(encoder_weights, "LITE0_PACKAGE", "no_such_weights_package")
    with pytest.raises(WeightsUnavailableError, match="EFFICIENTNET_LITE0_IMAGENET: .*not installed"):
        EncoderWeights.EFFICIENTNET_LITE0_IMAGENET.get_state_dict()


def test_undownloadable_torchvision_file_is_an_error_naming_the_weights_and_the_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # an empty cache
    with pytest.raises(WeightsUnavailableError) as error:
        EncoderWeights.VGG16_IMAGENET1K_V1.get_state_dict()
    message = str(error.value)
    assert "VGG16_IMAGENET1K_V1" in message and "vgg16-397923af.pth" in message
    assert str(tmp_path / "hub") in message  # where to put the file
    assert isinstance(error.value, MgcdaError) and isinstance(error.value, RuntimeError)

    # through a training config: one config error naming the key
    config = TrainConfig(model=ModelConfig(encoder="vgg16", pretrained=True))
    with pytest.raises(ConfigError, match="model.pretrained: encoder weights VGG16_IMAGENET1K_V1"):
        build_model(config)


def test_config_pretrained_selects_the_default_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []

    def record(self: DissimNetPrior, *args: object, **kwargs: object) -> None:
        built.append(kwargs["weights"])
        raise ValueError("stop here")

    monkeypatch.setattr(DissimNetPrior, "__init__", record)
    for pretrained, expected in ((True, EncoderWeights.EFFICIENTNET_LITE0_IMAGENET), (False, None)):
        with pytest.raises(ConfigError, match="stop here"):
            build_model(TrainConfig(model=ModelConfig(encoder="efficientnet_lite0", pretrained=pretrained)))
        assert built.pop() is expected
