"""Training-free class-mean resynthesis and the SPADE-style generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgcda_core.pipeline.resynthesis import ClassMeanResynthesis, SPADEGenerator, load_spade_generator


def class_mean_reference(image: np.ndarray, semantic: np.ndarray) -> np.ndarray:
    out = np.zeros_like(image)
    for n in range(image.shape[0]):
        for c in np.unique(semantic[n]):
            mask = semantic[n] == c
            out[n][:, mask] = image[n][:, mask].mean(1, keepdims=True)
    return out


def test_class_mean_equals_reference():
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 1, size=(2, 3, 6, 8))
    semantic = rng.choice([0, 2, 13, 18], size=(2, 6, 8))
    got = ClassMeanResynthesis()(torch.from_numpy(semantic), torch.from_numpy(image).float())
    np.testing.assert_allclose(got.numpy(), class_mean_reference(image, semantic), atol=1e-6)


def test_smoothing_is_a_box_mean_ignoring_padding():
    rng = np.random.default_rng(4)
    image = rng.uniform(0, 1, size=(1, 3, 5, 6))
    semantic = rng.choice([0, 1], size=(1, 5, 6))
    flat = class_mean_reference(image, semantic)
    padded = np.pad(flat, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=np.nan)
    windows = np.stack([padded[:, :, i:i + 5, j:j + 6] for i in range(3) for j in range(3)])
    got = ClassMeanResynthesis(smooth=3)(torch.from_numpy(semantic), torch.from_numpy(image).float())
    np.testing.assert_allclose(got.numpy(), np.nanmean(windows, 0), atol=1e-6)
    with pytest.raises(ValueError, match="odd kernel"):
        ClassMeanResynthesis(smooth=2)


def test_object_predicted_as_road_is_repainted_as_road():
    image = torch.full((1, 3, 20, 20), 0.4)
    image[:, 0, 8:12, 8:12], image[:, 1:, 8:12, 8:12] = 1.0, 0.0  # a red object on grey road
    semantic = torch.zeros(1, 20, 20, dtype=torch.int64)  # all predicted road
    difference = (ClassMeanResynthesis()(semantic, image) - image).abs().mean(1)[0]
    assert difference[8:12, 8:12].min() > 5 * difference[:4].max()


def test_spade_generator_round_trip_and_refusal(tmp_path):
    torch.manual_seed(0)
    generator = SPADEGenerator(nf=4, num_up=2).eval()
    semantic = torch.randint(0, 19, (1, 16, 24))
    with torch.inference_mode():
        out = generator(semantic)
    assert out.shape == (1, 3, 16, 24) and out.min() >= 0 and out.max() <= 1
    path = tmp_path / "generator.pth"
    torch.save(generator.state_dict(), path)
    with torch.inference_mode():
        torch.testing.assert_close(load_spade_generator(path, nf=4, num_up=2)(semantic), out)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_spade_generator(path, nf=8, num_up=2)
    with pytest.raises(ValueError, match="unexpected keys: ups.2"):
        torch.save({**generator.state_dict(), "ups.2.conv_0.weight": torch.zeros(1)}, path)
        load_spade_generator(path, nf=4, num_up=2)
