"""``python -m mgcda_core.evaluate`` end to end on real RoadAnomaly frames with the embedded detector."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mgcda_core.evaluate import main


def _raw_labels(root: Path, count: int) -> list[np.ndarray]:
    names = json.loads((root / "frame_list.json").read_text())[:count]
    return [np.asarray(Image.open(root / "frames" / f"{Path(n).stem}.labels" / "labels_semantic.png")) for n in names]


@pytest.mark.parametrize("protocol,limit", [("fishyscapes", 2), ("smiyc", 1)])
def test_cli_writes_metrics_plots_gallery(shared_data: Path, tmp_path: Path, protocol: str, limit: int, capsys) -> None:
    root = shared_data / "road_anomaly_dev"
    out = tmp_path / "eval"
    code = main(["--dataset", "road_anomaly", "--root", str(root), "--score", "max_logit", "--out", str(out),
                 "--protocol", protocol, "--limit", str(limit), "--input-size", "128", "256", "--gallery", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "AP " in printed and "frames/s" in printed

    metrics = json.loads((out / "metrics.json").read_text())
    labels = _raw_labels(root, limit)
    assert metrics["protocol"] == protocol and metrics["num_images"] == limit
    assert metrics["num_pixels"] == sum(label.size for label in labels)
    assert metrics["num_anomaly_pixels"] == sum(int((label == 2).sum()) for label in labels)
    for key in ("AP", "FPR95", "AUROC"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["score"] == "max_logit" and metrics["model"]["segmentation"].startswith("espnetv2")
    assert metrics["frames_per_second"] > 0
    if protocol == "smiyc":
        assert metrics["components"]["track"] == "anomaly" and metrics["components"]["min_pred_size"] == 500
        assert metrics["components"]["threshold"] == pytest.approx(metrics["best_F1_threshold"])
        assert not list(out.glob(".scores.*"))  # the score cache is removed

    frames = json.loads((out / "frames.json").read_text())
    assert len(frames) == limit and all(0.0 <= f["AP"] <= 1.0 for f in frames)
    for name in ("pr_curve.png", "roc_curve.png", "gallery/gallery.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG"
    panels = sorted(p.name for p in (out / "gallery").glob("*_overlay.png"))
    assert len(panels) == limit  # one best (and one worst with two frames), never the same frame twice
    best_ap = max(f["AP"] for f in frames)
    best_name = next(f["name"] for f in frames if f["AP"] == best_ap)
    assert panels[0] == f"best_01_{best_name}_overlay.png"


def test_cli_wrong_layout_is_one_clear_error(tmp_path: Path, capsys) -> None:
    code = main(["--dataset", "smiyc_anomaly", "--root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "expected images/<fid>.jpg|.webp and labels_masks/" in capsys.readouterr().err
