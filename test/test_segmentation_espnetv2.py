"""ESPNetv2 plug-in: exact loading of the real EdgeNets Cityscapes weights, accuracy on real Cityscapes frames,
refusal of mismatched weight files."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS
from torch.nn import functional as F

from mgcda_core.model.segmentation import DEFAULT_WEIGHTS, load_segmentation
from mgcda_core.model.segmentation.espnetv2 import (
    PYRAMID_SCALES,
    ESPNetv2,
    adaptive_avg_pool,
    adaptive_avg_pool_symbolic,
    load_espnetv2,
    parse_weights_name,
    pyramid_size,
)
from mgcda_core.pipeline.detector import to_network_input
from mgcda_core.utils.images import read_label, read_rgb

WIDTHS = (0.5, 1.0, 1.5, 2.0)
SIZES = ("1024x512", "512x256")


pytestmark = pytest.mark.usefixtures("single_thread_torch")


def colour_to_train_ids(colour: np.ndarray) -> np.ndarray:
    """gtFine colour mask → train ids with cityscapesscripts' table (255 for colours of no train class)."""
    train = np.full(colour.shape[:2], 255, np.uint8)
    for label in CITYSCAPES_LABELS:
        if 0 <= label.trainId < 19:  # pole and polegroup share a colour; both mean train id 5
            train[np.all(colour == np.array(label.color, np.uint8), axis=2)] = label.trainId
    return train


def pixel_accuracy(model: torch.nn.Module, image: np.ndarray, train_ids: np.ndarray) -> float:
    x = torch.from_numpy(to_network_input(image, (256, 512)))
    with torch.inference_mode():
        logits = model(x)
    assert logits.shape == (1, 19, 256, 512)
    pred = F.interpolate(logits, size=train_ids.shape, mode="bilinear", align_corners=False).argmax(1)[0].numpy()
    valid = train_ids != 255
    return float((pred[valid] == train_ids[valid]).mean())


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("s", WIDTHS)
def test_every_released_file_loads_exactly(shared_data, s, size):
    path = shared_data / "weights" / "espnetv2_cityscapes" / f"espnetv2_s_{s}_city_{size}.pth"
    file_state = torch.load(path, map_location="cpu", weights_only=True)
    model = load_espnetv2(path)
    assert model.s == s and parse_weights_name(path) == (s, tuple(int(v) for v in size.split("x")[::-1]))
    assert sorted(model.state_dict()) == sorted(file_state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, file_state[key]), key


def test_accuracy_on_real_cityscapes_frame(shared_data):
    folder = shared_data / "cityscapes_samples" / "frankfurt_000001_058914"
    image = read_rgb(folder / "frankfurt_000001_058914_leftImg8bit.png")
    train_ids = colour_to_train_ids(read_rgb(folder / "frankfurt_000001_058914_gtFine_color.png"))
    assert (train_ids != 255).mean() > 0.8  # the colour table matched most of the mask
    assert pixel_accuracy(load_segmentation(), image, train_ids) >= 0.90


def test_accuracy_on_small_frame_with_train_ids(shared_data):
    folder = shared_data / "cityscapes_samples" / "frankfurt_000000_000294_small"
    image = read_rgb(folder / "frankfurt_000000_000294_leftImg8bit.png")
    train_ids = read_label(folder / "frankfurt_000000_000294_gtFine_labelTrainIds.png")
    assert pixel_accuracy(load_segmentation(), image, train_ids) >= 0.90


def test_embedded_default_is_shipped_with_source_and_licence():
    assets = DEFAULT_WEIGHTS.parent
    assert DEFAULT_WEIGHTS.is_file() and (assets / "LICENSE").is_file()
    assert DEFAULT_WEIGHTS.name in (assets / "SOURCE.md").read_text()


def _tiny_file(tmp_path, shared_data, edit):
    state = torch.load(shared_data / "weights" / "espnetv2_cityscapes" / "espnetv2_s_0.5_city_512x256.pth",
                       map_location="cpu", weights_only=True)
    edit(state)
    path = tmp_path / "espnetv2_s_0.5_city_512x256.pth"
    torch.save(state, path)
    return path


def test_missing_and_unexpected_keys_are_refused_by_name(tmp_path, shared_data):
    def edit(state):
        del state["bu_dec_l4.merge_layer.3.bias"]
        state["extra.head.weight"] = torch.zeros(1)

    path = _tiny_file(tmp_path, shared_data, edit)
    with pytest.raises(ValueError) as error:
        load_espnetv2(path)
    message = str(error.value)
    assert "1 missing keys: bu_dec_l4.merge_layer.3.bias" in message
    assert "1 unexpected keys: extra.head.weight" in message
    assert str(path) in message


def test_wrong_width_is_refused_with_shapes(tmp_path, shared_data):
    path = _tiny_file(tmp_path, shared_data, lambda state: None)
    with pytest.raises(ValueError, match=r"shape mismatches: .*base_net\.level1\.conv\.weight: file \(16, 3, 3, 3\) vs model \(32, 3, 3, 3\)"):
        load_espnetv2(path, s=1.0)


def test_unknown_file_name_and_model_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot read the ESPNetv2 width"):
        parse_weights_name(tmp_path / "weights.pth")
    with pytest.raises(ValueError, match="unknown segmentation model 'segformer'"):
        load_segmentation("segformer")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_segmentation("espnetv2", tmp_path / "espnetv2_s_2.0_city_1024x512.pth")


@pytest.mark.parametrize("shape, size", [((13, 29), (5, 7)), ((13, 29), (2, 3)), ((13, 29), (13, 29)),
                                         ((13, 29), (26, 58)), ((13, 29), (40, 90)), ((24, 48), (16, 32)),
                                         ((24, 48), (12, 8)), ((33, 50), (22, 33)), ((4, 8), (5, 5))])
@pytest.mark.parametrize("pool", [adaptive_avg_pool, adaptive_avg_pool_symbolic])
def test_exportable_adaptive_pool_equals_torch(shape, size, pool):
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    torch.testing.assert_close(pool(x, size), F.adaptive_avg_pool2d(x, size))


def test_symbolic_pool_traced_at_one_size_is_exact_at_others():
    """The traced graph must recompute its bins from the input shape (a frozen one would be wrong elsewhere)."""
    def pool(x):
        return adaptive_avg_pool_symbolic(x, (x.shape[-2] // 3 + 1, pyramid_size(x.shape[-1], Fraction(1, 10))))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns about traced sizes, which is the point here
        traced = torch.jit.trace(pool, torch.randn(1, 2, 16, 32))
    for shape in ((16, 32), (13, 29), (40, 90), (7, 64)):
        x = torch.randn(1, 2, *shape)
        size = (shape[0] // 3 + 1, max(math.ceil(shape[1] * 0.1), 5))
        torch.testing.assert_close(traced(x), F.adaptive_avg_pool2d(x, size))


def test_pyramid_sizes_equal_the_reference_float_ceil():
    sides = torch.arange(1, 4097)
    for scale, reference in zip(PYRAMID_SCALES, (2.0, 1.5, 1.0, 0.5, 0.1)):
        expected = [max(math.ceil(side * reference), 5) for side in range(1, 4097)]
        assert [pyramid_size(side, scale) for side in range(1, 4097)] == expected
        assert pyramid_size(sides, scale).tolist() == expected


def test_symbolic_shapes_give_the_same_logits():
    fixed = ESPNetv2(0.5).eval()
    symbolic = ESPNetv2(0.5, symbolic_shapes=True).eval()
    symbolic.load_state_dict(fixed.state_dict())
    x = torch.rand(1, 3, 72, 136)
    with torch.inference_mode():
        torch.testing.assert_close(symbolic(x), fixed(x), rtol=1e-5, atol=1e-5)


def test_forward_returns_19_logits_at_input_size_for_non_multiple_sizes():
    model = ESPNetv2(0.5).eval()
    with torch.inference_mode():
        assert model(torch.rand(2, 3, 72, 136)).shape == (2, 19, 72, 136)
        resized = ESPNetv2(0.5, working_size=(64, 128)).eval()
        resized.load_state_dict(model.state_dict())
        assert resized(torch.rand(1, 3, 50, 70)).shape == (1, 19, 50, 70)
