"""Detector and InferenceGraph on the embedded defaults (real weights), at a small network size."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from mgcda_core.model.checkpoint import save_model
from mgcda_core.model.dissimilarity import DissimNetPrior
from mgcda_core.model.segmentation import DEFAULT_WEIGHTS
from mgcda_core.model.shipped import SHIPPED_DISSIMILARITY
from mgcda_core.pipeline import Detector, InferenceGraph, scores
from mgcda_core.pipeline.detector import weights_info
from mgcda_core.pipeline.uncertainty import entropy_and_softmax_distance, normalise_entropy
from mgcda_core.sml_stats import main as sml_stats_main
from mgcda_core.utils.images import write_png

SIZE = (64, 128)
RNG = np.random.default_rng(7)


pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector.default(score="max_logit", input_size=SIZE)


@pytest.fixture(scope="module")
def dissim_detector(tmp_path_factory) -> Detector:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_model(path, DissimNetPrior(encoder="vgg16", width=0.125))
    return Detector.from_checkpoint(path, score="dissimilarity", input_size=SIZE)


@pytest.mark.parametrize("shape", [(37, 55, 3), (64, 128, 3), (201, 99, 3), (2, 2, 3)])
def test_output_is_input_sized_finite_and_calibrated(detector, shape):
    image = RNG.integers(0, 256, shape, dtype=np.uint8)
    raw, calibrated = detector.raw_score(image), detector(image)
    assert raw.shape == calibrated.shape == shape[:2]
    assert raw.dtype == calibrated.dtype == np.float32
    assert np.all(np.isfinite(raw)) and calibrated.min() >= 0 and calibrated.max() <= 1
    np.testing.assert_array_equal(calibrated, detector.calibration(raw))


def test_grey_and_rgba_inputs_are_converted(detector):
    grey = RNG.integers(0, 256, (41, 77), dtype=np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    expected = detector.raw_score(rgb)
    np.testing.assert_array_equal(detector.raw_score(grey), expected)
    np.testing.assert_array_equal(detector.raw_score(grey[:, :, None]), expected)
    rgba = np.concatenate([rgb, RNG.integers(0, 256, (41, 77, 1), dtype=np.uint8)], axis=2)
    np.testing.assert_array_equal(detector.raw_score(rgba), expected)


def test_postprocess_writes_into_the_callers_buffer_or_refuses_it(detector):
    score = RNG.random((1, 1, *SIZE)).astype(np.float32)
    expected = detector.postprocess(score, (30, 50))
    out = np.full((30, 50), np.nan, np.float32)
    assert detector.postprocess(score, (30, 50), out=out) is out
    np.testing.assert_array_equal(out, expected)
    for bad in (np.zeros((30, 51), np.float32), np.zeros((30, 50), np.float64),
                np.zeros((30, 100), np.float32)[:, ::2], np.zeros((30, 50, 1), np.float32)):
        with pytest.raises(ValueError, match=r"out must be a C-contiguous float32 array of shape \(30, 50\)"):
            detector.postprocess(score, (30, 50), out=bad)


@pytest.mark.parametrize("shape, size", [((0, 0, 3), "0x0"), ((1, 1, 3), "1x1"), ((1, 40), "40x1")])
def test_empty_and_one_pixel_images_refused(detector, shape, size):
    with pytest.raises(ValueError, match=f"image of size {size} is too small"):
        detector(np.zeros(shape, np.uint8))


def test_raw_score_equals_score_of_segmentation_logits(detector):
    image = RNG.integers(0, 256, (*SIZE, 3), dtype=np.uint8)  # network size: no resizing involved
    x = torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    with torch.inference_mode():
        logits = detector.runtime.graph.stages.segmentation(x)
    np.testing.assert_allclose(detector.raw_score(image), -logits.amax(1)[0].numpy(), atol=1e-4)


def test_default_loads_and_runs_without_network(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://10.255.255.1:9")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    detector = Detector.default(score="entropy", input_size=SIZE)
    out = detector(RNG.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    assert out.shape == (30, 50) and np.all(np.isfinite(out))
    assert not (tmp_path / "torch_home").exists()  # nothing was downloaded or cached
    assert "EfficientNet-Lite0 ImageNet" in detector.info["perceptual"]
    assert detector.info["segmentation"] == "espnetv2_s_2.0_city_1024x512.pth"


def test_from_checkpoint_dissimilarity_and_ensemble(dissim_detector):
    image = RNG.integers(0, 256, (50, 90, 3), dtype=np.uint8)
    dissim = dissim_detector
    prob = dissim(image)
    assert prob.shape == (50, 90) and prob.min() >= 0 and prob.max() <= 1
    graph = dissim.runtime.graph
    x = torch.from_numpy(dissim.preprocess(image))
    with torch.inference_mode():
        p = graph(x)[:, 0]
        out = graph.stages(x)
        ens = InferenceGraph(graph.stages, "ensemble", graph.dissimilarity).eval()(x)[:, 0]
    torch.testing.assert_close(ens, 0.75 * p + 0.25 * normalise_entropy(entropy_and_softmax_distance(out.logits)[0]))
    assert dissim.info["dissimilarity"] == "tiny.pt"


def test_graph_prefix_outputs(dissim_detector):
    graph = dissim_detector.runtime.graph
    x = torch.rand(1, 3, *SIZE)
    expected = {"logits": (1, 19, *SIZE), "uncertainty": (1, 3, *SIZE), "synthesis": (1, 3, *SIZE), "score": (1, 1, *SIZE)}
    with torch.inference_mode():
        stage_out = graph.stages(x)
        for output, shape in expected.items():
            result = InferenceGraph(graph.stages, "dissimilarity", graph.dissimilarity, output=output).eval()(x)
            assert result.shape == shape, output
            if output != "score":
                torch.testing.assert_close(result, getattr(stage_out, output))
    assert stage_out.semantic.dtype == torch.int64
    torch.testing.assert_close(stage_out.semantic, stage_out.logits.argmax(1))


def test_invalid_configurations_refused(detector, tmp_path):
    stages = detector.runtime.graph.stages
    with pytest.raises(ValueError, match="needs a trained dissimilarity network"):
        InferenceGraph(stages, "ensemble")
    with pytest.raises(ValueError, match="unknown score 'odin'"):
        InferenceGraph(stages, "odin")
    with pytest.raises(ValueError, match="output must be one of"):
        InferenceGraph(stages, "msp", output="features")
    with pytest.raises(FileNotFoundError, match="SML statistics not found"):
        Detector.default(score="sml", input_size=SIZE, sml_stats=tmp_path / "none.json")
    with pytest.raises(ValueError, match="multiples of 32"):
        Detector(detector.runtime, "max_logit", input_size=(100, 128))
    with pytest.raises(TypeError, match="must implement"):
        Detector(object(), "max_logit")


def test_sml_statistics_cli_feeds_the_sml_score(tmp_path):
    images = [RNG.integers(0, 256, (64, 128, 3), dtype=np.uint8) for _ in range(2)]
    for i, image in enumerate(images):
        write_png(tmp_path / "imgs" / f"{i}.png", image)
    out = tmp_path / "stats.sml.json"
    assert sml_stats_main(["--images", str(tmp_path / "imgs"), "--out", str(out), "--input-size", "64", "128"]) == 0
    detector = Detector.default(score="sml", input_size=SIZE, sml_stats=out)
    graph = detector.runtime.graph
    x = torch.from_numpy(detector.preprocess(images[0]))
    with torch.inference_mode():
        logits = graph.stages.segmentation(x)
    # images at the network size: the raw score is the SML of the logits with the stored statistics
    expected = scores.sml(logits, graph.sml_mean, graph.sml_std)[0].numpy()
    np.testing.assert_allclose(detector.raw_score(images[0]), expected, atol=1e-4)
    # standardised over the two images: per predicted class the scores have mean ~0
    pooled = np.concatenate([detector.raw_score(im).ravel() for im in images])
    assert abs(pooled.mean()) < 1.0


def test_weights_info_is_what_every_detector_records(detector, dissim_detector):
    """One description of the weights in use (``weights_info``) serves Detector.default, from_checkpoint and the
    ROS node's model loading."""
    graph = dissim_detector.runtime.graph
    expected = {"segmentation": DEFAULT_WEIGHTS.name, "perceptual": graph.stages.perceptual_source,
                "resynthesis": type(graph.stages.resynthesis).__name__, "dissimilarity": "tiny.pt"}
    assert weights_info(graph, "runs/a/tiny.pt") == expected
    assert {key: dissim_detector.info[key] for key in expected} == expected
    # a graph holding a dissimilarity network that no file was named for runs the shipped one
    assert weights_info(graph)["dissimilarity"] == SHIPPED_DISSIMILARITY.name
    assert detector.info["dissimilarity"] is None  # a training-free score runs no dissimilarity network
    assert weights_info(detector.runtime.graph) == {key: detector.info[key] for key in expected}
