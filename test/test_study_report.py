"""Study aggregation: mean ± sample std over seeds on constructed run records, Table 3 order, recipe choice on
the validation split, refusals, markdown/JSON report, wall-time estimate."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from mgcda_core.study.report import (
    aggregate,
    format_cell,
    load_runs,
    markdown_table,
    mean_std,
    paired_differences,
    paired_table,
    reference_table,
    select_recipe,
    wall_time_estimate,
    write_report,
)
from mgcda_core.utils.atomic import atomic_write_json

SETS = ("target_val", "target_test", "road_anomaly")
SCORES = ("dissimilarity", "ensemble")


def run_record(row: str, seed: int, rng: np.random.Generator, steps: int = 100) -> dict:
    metrics = {s: {score: {"AP": float(rng.random()), "FPR95": float(rng.random()), "AUROC": float(rng.random()),
                           "num_images": 4} for score in SCORES} for s in SETS}
    return {"row": row, "seed": seed, "steps": steps, "metrics": metrics,
            "wall_s": {"train": float(rng.uniform(10, 20)), "evaluate": float(rng.uniform(1, 2))},
            "seconds_per_step": float(rng.uniform(0.1, 0.2)), "train_resumed_from_step": 0,
            "machine": {"cpu": "test"}}


@pytest.fixture()
def runs() -> list[dict]:
    rng = np.random.default_rng(0)
    return [run_record(row, seed, rng) for row in ("mgcda", "baseline_mix") for seed in (0, 1, 2)] + \
        [run_record("oda", 0, rng)]


def test_mean_std_is_mean_and_sample_std() -> None:
    values = [0.12, 0.31, 0.25]
    stats = mean_std(values)
    assert stats["mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
    assert stats["std"] == pytest.approx(statistics.stdev(values), abs=1e-12)  # ddof = 1
    assert mean_std([0.4]) == {"mean": pytest.approx(0.4), "std": None, "n": 1}
    for bad in ([], [0.1, float("nan")]):
        with pytest.raises(ValueError, match="non-empty list of finite numbers"):
            mean_std(bad)


def test_aggregate_every_cell_against_an_independent_computation(runs: list[dict]) -> None:
    table = aggregate(runs)
    assert set(table) == {"mgcda", "baseline_mix", "oda"}
    for row in ("mgcda", "baseline_mix"):
        members = [r for r in runs if r["row"] == row]
        assert table[row]["seeds"] == [0, 1, 2]
        for s in SETS:
            for score in SCORES:
                for metric in ("AP", "FPR95", "AUROC"):
                    values = [m["metrics"][s][score][metric] for m in members]
                    cell = table[row]["metrics"][s][score][metric]
                    assert cell["mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
                    assert cell["std"] == pytest.approx(statistics.stdev(values), abs=1e-12)
                    assert cell["n"] == 3
        train = [m["wall_s"]["train"] for m in members]
        assert table[row]["wall_s"]["train"]["mean"] == pytest.approx(statistics.fmean(train))
    assert table["oda"]["metrics"]["target_test"]["dissimilarity"]["AP"]["std"] is None


def test_aggregate_refuses_mixed_budgets_and_mismatched_evaluations(runs: list[dict]) -> None:
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="different step counts"):
        aggregate(runs + [run_record("oda", 1, rng, steps=200)])
    partial = run_record("oda", 2, rng)
    del partial["metrics"]["road_anomaly"]
    with pytest.raises(ValueError, match="row oda: seed 2 was evaluated on"):
        aggregate(runs + [partial])
    with pytest.raises(ValueError, match="no finished runs"):
        aggregate([])


def test_recipe_is_chosen_on_validation_never_on_road_anomaly(runs: list[dict]) -> None:
    table = aggregate(runs)
    means = {row: entry["metrics"]["target_val"]["dissimilarity"]["AP"]["mean"] for row, entry in table.items()}
    assert select_recipe(table) == max(means, key=means.get)
    fpr = {row: entry["metrics"]["target_val"]["ensemble"]["FPR95"]["mean"] for row, entry in table.items()}
    assert select_recipe(table, ("target_val", "ensemble", "FPR95")) == min(fpr, key=fpr.get)
    with pytest.raises(ValueError, match="never on RoadAnomaly"):
        select_recipe(table, ("road_anomaly", "dissimilarity", "AP"))


def test_markdown_table_rows_in_table3_order_with_formatted_cells(runs: list[dict]) -> None:
    table = aggregate(runs)
    lines = markdown_table(table, "dissimilarity").splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| Baseline (Mix)", "| +ODA", "| MGCDA (MDAT+CACL)"]
    cell = table["mgcda"]["metrics"]["target_test"]["dissimilarity"]["AP"]
    expected = f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}"
    assert lines[-1].split(" | ")[3] == expected
    assert format_cell({"mean": 0.5, "std": None, "n": 1}) == "50.0 ± –"
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_write_report_reads_done_files(runs: list[dict], tmp_path: Path) -> None:
    for run in runs:
        atomic_write_json(tmp_path / "runs" / run["row"] / f"seed{run['seed']}" / "done.json", run)
    (tmp_path / "runs" / "mgcda" / "seed9").mkdir()  # an unfinished run has no done.json: not counted
    assert [(r["row"], r["seed"]) for r in load_runs(tmp_path)] == [  # Table 3 order, then seed
        ("baseline_mix", 0), ("baseline_mix", 1), ("baseline_mix", 2), ("oda", 0),
        ("mgcda", 0), ("mgcda", 1), ("mgcda", 2)]
    json_path, md_path = write_report(tmp_path, {"budget": "short"})
    result = json.loads(json_path.read_text())
    assert result["rows"]["mgcda"]["seeds"] == [0, 1, 2] and len(result["runs"]) == 7
    text = md_path.read_text()
    assert "## score: dissimilarity" in text and "## score: ensemble" in text
    assert f"**{result['recipe_by_validation_AP']}**" in text
    assert "### paired with Baseline (Mix), same seed, score dissimilarity" in text
    assert result["paired_vs_baseline_mix"]["mgcda"]["target_test"]["dissimilarity"]["AP"]["n"] == 3


def test_wall_time_estimate_from_measured_step_and_evaluation_times(runs: list[dict]) -> None:
    table = aggregate(runs)
    per_step = np.mean([e["seconds_per_step"]["mean"] for e in table.values()])
    evaluation = np.mean([e["wall_s"]["evaluate"]["mean"] for e in table.values()])
    assert wall_time_estimate(table, 9, 3, 600) == pytest.approx(27 * (600 * per_step + evaluation))
    assert wall_time_estimate({}, 9, 3, 600) is None


def test_reference_table_lists_each_training_free_score() -> None:
    reference = {s: {"entropy": {"AP": 0.1234, "FPR95": 0.9, "AUROC": 0.55}} for s in ("target_test", "road_anomaly")}
    lines = reference_table(reference).splitlines()
    assert lines[2] == "| entropy | 12.3 | 90.0 | 55.0 | 12.3 | 90.0 | 55.0 | – | – | – |"


def test_paired_differences_against_per_seed_subtraction(runs: list[dict]) -> None:
    paired = paired_differences(runs)
    assert set(paired) == {"mgcda", "oda"}  # every row but the reference
    by_key = {(r["row"], r["seed"]): r for r in runs}
    for metric in ("AP", "FPR95"):
        deltas = [by_key[("mgcda", k)]["metrics"]["road_anomaly"]["ensemble"][metric]
                  - by_key[("baseline_mix", k)]["metrics"]["road_anomaly"]["ensemble"][metric] for k in (0, 1, 2)]
        stats = paired["mgcda"]["road_anomaly"]["ensemble"][metric]
        assert stats["mean"] == pytest.approx(statistics.mean(deltas))
        assert stats["std"] == pytest.approx(statistics.stdev(deltas))
        better = sum(d < 0 for d in deltas) if metric == "FPR95" else sum(d > 0 for d in deltas)
        assert (stats["n"], stats["better"]) == (3, better)
    oda = paired["oda"]["target_test"]["dissimilarity"]["AUROC"]
    assert oda["n"] == 1 and oda["std"] is None  # oda has seed 0 only: paired with Mix's seed 0
    lines = paired_table(paired, "dissimilarity").splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| +ODA", "| MGCDA (MDAT+CACL)"]
    cell = paired["mgcda"]["target_test"]["dissimilarity"]["AP"]
    assert lines[-1].split(" | ")[2] == (f"{100 * cell['mean']:+.1f} ± {100 * cell['std']:.1f} "
                                         f"({cell['better']}/3)")
    assert paired_differences([r for r in runs if r["row"] != "baseline_mix"]) == {}
