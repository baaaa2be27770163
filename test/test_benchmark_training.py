"""``python -m mgcda_core.benchmark training``: the rows' FLOP ratios (exact, load-free) and the bar columns."""

from __future__ import annotations

import pytest

from mgcda_core.benchmark.training import CACL_ALONE, FULL, FULL_STEP_BAR, run

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread_torch")]


def test_quick_run_rows_flop_ratios_and_bars() -> None:
    rows = {row["variant"]: row for row in run(quick=True)}
    assert list(rows) == ["baseline", "+MDAT", FULL, "MGCDA, D_o stride 2 (opt-in)", CACL_ALONE, "CACL as full - MDAT"]
    assert rows["baseline"]["x_baseline"] == 1.0 and rows["baseline"]["x_baseline_flops"] == 1.0
    # MDAT's classifiers add work; CACL adds a little more; the strided D_o costs far less than the per-pixel one.
    full, mdat, strided = (rows[name]["x_baseline_flops"] for name in (FULL, "+MDAT", "MGCDA, D_o stride 2 (opt-in)"))
    assert 1.0 < strided < mdat < full
    # CACL alone projects only the sampled pixels (as the training step does): a small fraction of the step's FLOPs,
    # and no more than what it adds to the step.
    cacl_gflop = rows[CACL_ALONE]["GFLOP"]
    assert cacl_gflop < 0.05 * rows[FULL]["GFLOP"]
    assert cacl_gflop <= 1.05 * (rows[FULL]["GFLOP"] - rows["+MDAT"]["GFLOP"])
    verdict = "ok" if rows[FULL]["x_baseline"] <= FULL_STEP_BAR else "MISSED"
    assert rows[FULL]["bar"] == f"<= {FULL_STEP_BAR}x {verdict}"
    assert "bar" not in rows["+MDAT"]
    assert rows[CACL_ALONE]["bar"].startswith("<= 10% ")
