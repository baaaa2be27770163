"""CACL sampling diagnostics: fill ratios of real ``sample_pixels`` draws, the throttled shortfall warning, and
the per-frame anomaly-pixel census of a label folder."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mgcda_core.losses.cacl import sample_pixels
from mgcda_core.training.diagnostics import AnchorShortfallMonitor, anomaly_pixel_census, census_warning, set_fill

N_ANCHOR = 8


def labels_with_anomalies(counts: list[int], size: tuple[int, int] = (16, 32)) -> torch.Tensor:
    """One image per entry with that many anomaly pixels (the first ones in raster order), the rest normal."""
    labels = torch.zeros((len(counts), *size), dtype=torch.int64)
    for index, count in enumerate(counts):
        labels[index].view(-1)[:count] = 1
    return labels


def draw(counts: list[int], domain: list[int]) -> dict[str, int]:
    labels = labels_with_anomalies(counts)
    sample = sample_pixels(labels, torch.zeros_like(labels), domain, mode="pcl", n_anchor=N_ANCHOR,
                           generator=torch.Generator().manual_seed(0))
    return sample.counts


def test_fill_ratios_of_real_draws() -> None:
    # V images hold 3 and 20 anomaly pixels, A images 200 each: V takes 3 + 8 anchors of 16 wanted and
    # 0 + min(16, 20 - 8) positives of 32 wanted; A fills both sets.
    counts = draw([3, 20, 200, 200], [0, 0, 1, 1])
    assert set_fill(counts, "V", "anchors") == pytest.approx((3 + 8) / 16)
    assert set_fill(counts, "V", "positives") == pytest.approx((0 + 12) / 32)
    assert set_fill(counts, "A", "anchors") == 1.0
    assert set_fill(counts, "A", "positives") == 1.0
    assert set_fill(draw([50], [0]), "A", "anchors") is None  # no A image in the batch
    with pytest.raises(ValueError, match="'anchors' or 'positives'"):
        set_fill(counts, "V", "negatives")


def test_shortfall_warning_is_logged_and_throttled(caplog: pytest.LogCaptureFixture) -> None:
    monitor = AnchorShortfallMonitor(N_ANCHOR, report_every=10)
    short, full = draw([3, 200], [0, 1]), draw([200, 200], [0, 1])
    with caplog.at_level(logging.WARNING, logger="mgcda_core.training"):
        scalars = monitor.update(0, short)
        assert scalars == {"cacl/V/anchor_fill": 3 / 8, "cacl/V/positive_fill": 0.0,
                           "cacl/A/anchor_fill": 1.0, "cacl/A/positive_fill": 1.0}
        assert len(caplog.records) == 1 and "domain V" in caplog.records[0].getMessage()
        for step in range(1, 10):  # short again, but within report_every of the last warning
            monitor.update(step, short)
        assert len(caplog.records) == 1
        monitor.update(10, full)  # full at step 10: the 9 short steps since the report are still reported
        assert len(caplog.records) == 2 and "9 short step(s)" in caplog.records[1].getMessage()
        monitor.update(25, full)
        assert len(caplog.records) == 2  # nothing short since: silent
    with pytest.raises(ValueError, match="n_anchor and report_every"):
        AnchorShortfallMonitor(0)


def test_anomaly_pixel_census_against_numpy(tmp_path: Path) -> None:
    anomaly = [0, 5, 8, 23, 24, 100]  # N_a = 8: two below 8; 3·N_a = 24 (anchors + positives): four below
    for index, count in enumerate(anomaly):
        label = np.zeros((16, 16), np.uint8)
        label.reshape(-1)[:count] = 1
        label[-1] = 255
        Image.fromarray(label).save(tmp_path / f"f{index}.png")
    census = anomaly_pixel_census(tmp_path, N_ANCHOR)
    labelled = 16 * 15
    assert census == {"frames": 6, "frames_with_anomaly": 5, "frames_short_of_anchors": 2,
                      "frames_short_of_positives": 4, "median_anomaly_pixels": float(np.median(anomaly)),
                      "anomaly_ratio": pytest.approx(sum(anomaly) / (6 * labelled))}
    message = census_warning("V", census, N_ANCHOR)
    assert message.startswith("V: 2 of 6 frames have fewer than N_a = 8 anomaly pixels")
    assert census_warning("V", {**census, "frames_short_of_anchors": 0}, N_ANCHOR) is None
    with pytest.raises(FileNotFoundError, match="no label PNGs"):
        anomaly_pixel_census(tmp_path / "missing", N_ANCHOR)
