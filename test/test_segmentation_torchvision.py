"""torchvision segmentation heads: 19 classes, user checkpoints only, nothing downloaded."""

from __future__ import annotations

import pytest
import torch

from mgcda_core.model.segmentation import load_segmentation
from mgcda_core.model.segmentation.torchvision_heads import TorchvisionSegmentation


def test_user_checkpoint_round_trip(tmp_path):
    source = TorchvisionSegmentation("lraspp_mobilenet_v3_large").eval()
    path = tmp_path / "lraspp.pth"
    torch.save(source.net.state_dict(), path)  # a plain torchvision state dict, as a user would save it
    loaded = load_segmentation("lraspp_mobilenet_v3_large", path)
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        out = loaded(x)
        torch.testing.assert_close(out, source(x))
    assert out.shape == (1, 19, 64, 96)


def test_no_embedded_weights_and_mismatch_refused(tmp_path):
    with pytest.raises(ValueError, match="has no embedded weights"):
        load_segmentation("deeplabv3_mobilenet_v3_large")
    path = tmp_path / "lraspp.pth"
    torch.save(TorchvisionSegmentation("lraspp_mobilenet_v3_large").net.state_dict(), path)
    # same MobileNetV3 backbone, different head: the head's keys are listed on both sides
    with pytest.raises(ValueError, match=r"44 missing keys: net\.classifier\.0\.convs.*11 unexpected keys: net\.classifier\.cbr"):
        load_segmentation("deeplabv3_mobilenet_v3_large", path)
