"""The trained network shipped in the package: loads strictly, is the real-time architecture, scores a real road
frame, exports to ONNX with the baseline's parameters and agrees with PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mgcda_core.model.checkpoint import load_model, read_checkpoint
from mgcda_core.model.dissimilarity import DissimNetPrior
from mgcda_core.model.encoder_weights import EncoderWeights
from mgcda_core.model.shipped import MAX_SHIPPED_BYTES, SHIPPED_DISSIMILARITY, SHIPPED_SCORE, write_shipped
from mgcda_core.pipeline.detector import Detector, build_graph
from mgcda_core.utils.images import read_rgb

pytestmark = pytest.mark.usefixtures("single_thread_torch")
FRAME = (Path(__file__).resolve().parents[1] / "mgcda_ros" / "assets" / "road_anomaly" / "frames"
         / "animals22_red_fox_on_road.jpg")


def test_shipped_file_is_float16_real_time_network_and_loads_strictly() -> None:
    assert SHIPPED_DISSIMILARITY.stat().st_size <= MAX_SHIPPED_BYTES
    payload = read_checkpoint(SHIPPED_DISSIMILARITY)
    floats = [t for t in payload["model"].values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)
    assert set(payload) == {"format", "version", "architecture", "model", "source"}  # no optimiser/training state
    model = load_model(SHIPPED_DISSIMILARITY)
    assert model.architecture == {"encoder": "efficientnet_lite0", "width": 1.0, "num_classes": 19,
                                  "use_prior": True, "use_correlation": True, "decoder_width": 0.125,
                                  "first_level": 1, "freeze_encoder": True}
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # the frozen encoder is ImageNet's, weights and statistics: stored in float16, loaded as the float32 originals
    imagenet = DissimNetPrior(**model.architecture, weights=EncoderWeights.EFFICIENTNET_LITE0_IMAGENET).encoder
    for key, value in imagenet.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value), key


def test_default_detector_runs_the_shipped_network_on_a_real_frame() -> None:
    detector = Detector.default()
    assert detector.score == SHIPPED_SCORE and detector.info["dissimilarity"] == SHIPPED_DISSIMILARITY.name
    image = read_rgb(FRAME)
    score = detector(image)
    assert score.shape == image.shape[:2] and score.dtype == np.float32
    assert np.isfinite(score).all() and score.min() >= 0 and score.max() <= 1
    assert score.std() > 1e-3  # a trained network does not answer a constant


def test_shipped_graph_exports_with_the_baseline_parameter_count_and_agrees(tmp_path: Path) -> None:
    from mgcda_core.export.onnx_export import ExportConfig, check_agreement, export_to_proto, reference_image
    from mgcda_core.export.parameters import parameter_report

    graph = build_graph(SHIPPED_SCORE)
    network = load_model(SHIPPED_DISSIMILARITY)
    # the backbone runs once for the perceptual difference and the encoder: they compute the same
    assert graph.share_features
    model = export_to_proto(graph, ExportConfig())
    report = parameter_report(model, graph)
    own = sum(p.numel() for n, p in network.named_parameters() if not n.startswith("encoder."))
    encoder = sum(p.numel() for p in network.encoder.parameters())
    assert report["exported_parameters_by_component"]["dissimilarity"] == own
    assert report["baseline_dissimnet_parameters"] == own + encoder
    assert report["shared_encoder_parameters"] == encoder
    agreement = check_agreement(model, graph, reference_image(ExportConfig()))
    assert agreement.max_abs_diff <= agreement.allowed


def test_write_shipped_refuses_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt: not a readable mgcda checkpoint"):
        write_shipped(bad, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_write_shipped_cli_reports_a_bad_checkpoint_in_one_line(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from mgcda_core.model.shipped import main

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["--checkpoint", str(bad), "--out", str(tmp_path / "out.pt")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "bad.pt" in error and error.count("\n") == 1
