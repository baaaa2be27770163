"""Aggregate the study's finished runs into Table 3 form: mean ± std over seeds per row, evaluation set, score
and metric, as JSON and markdown, with wall times, the recipe chosen on the validation split and the machine.

std is the sample standard deviation (ddof = 1) over seeds; with one seed it is undefined (null, shown as "–").
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from mgcda_core.study.config import ROWS
from mgcda_core.study.runner import DONE_MARKER, METRICS
from mgcda_core.utils.atomic import atomic_write_json, atomic_write_text

SET_LABELS = {"target_test": "procedural target (test)", "road_anomaly": "RoadAnomaly dev (20 frames)",
              "target_val": "procedural target (validation)"}
SET_ORDER = ("target_test", "road_anomaly", "target_val")  # column order of the tables
ROW_LABELS = dict(ROWS)
# Higher is better for AP and AUROC, lower for FPR95 (used to pick the recipe on the validation split).
SELECTION = ("target_val", "dissimilarity", "AP")


def mean_std(values: Sequence[float]) -> dict:
    """{"mean", "std" (ddof = 1, None for one value), "n"} of a non-empty list of finite numbers."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0 or not np.isfinite(array).all():
        raise ValueError(f"mean_std needs a non-empty list of finite numbers, got {list(values)}")
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if array.size > 1 else None,
            "n": int(array.size)}


def load_runs(study_dir: str | Path) -> list[dict]:
    """Every ``runs/<row>/seed<k>/done.json`` of a study folder, in row (Table 3) then seed order."""
    order = {name: index for index, (name, _) in enumerate(ROWS)}
    paths = sorted(Path(study_dir).glob(f"runs/*/seed*/{DONE_MARKER}"))
    runs = [json.loads(path.read_text()) for path in paths]
    return sorted(runs, key=lambda r: (order.get(r["row"], len(order)), r["row"], r["seed"]))


def aggregate(runs: Iterable[Mapping]) -> dict:
    """{row: {"seeds", "steps", "metrics": {set: {score: {metric: mean_std}}}, "wall_s": {...}}}.

    Refuses runs of one row with different step counts (two budgets mixed) and rows whose runs do not all
    have the same evaluation sets and scores.
    """
    grouped: dict[str, list[Mapping]] = {}
    for run in runs:
        grouped.setdefault(run["row"], []).append(run)
    if not grouped:
        raise ValueError("no finished runs to aggregate (no runs/<row>/seed<k>/done.json)")
    table = {}
    for row, members in grouped.items():
        steps = {m["steps"] for m in members}
        if len(steps) != 1:
            raise ValueError(f"row {row}: runs with different step counts {sorted(steps)} cannot be averaged")
        layout = {(s, score) for s, scores in members[0]["metrics"].items() for score in scores}
        for member in members[1:]:
            other = {(s, score) for s, scores in member["metrics"].items() for score in scores}
            if other != layout:
                raise ValueError(f"row {row}: seed {member['seed']} was evaluated on {sorted(other)}, "
                                 f"seed {members[0]['seed']} on {sorted(layout)}")
        metrics: dict = {}
        for set_name, score in sorted(layout):
            metrics.setdefault(set_name, {})[score] = {
                metric: mean_std([m["metrics"][set_name][score][metric] for m in members]) for metric in METRICS}
        table[row] = {
            "seeds": sorted(m["seed"] for m in members), "steps": steps.pop(), "metrics": metrics,
            "wall_s": {part: mean_std([m["wall_s"][part] for m in members]) for part in ("train", "evaluate")},
            "seconds_per_step": mean_std([m["seconds_per_step"] for m in members]),
            "partial_wall_time": any(m["train_resumed_from_step"] > 0 for m in members),
        }
    return table


def paired_differences(runs: Iterable[Mapping], reference: str = "baseline_mix") -> dict:
    """Per row, the difference row − ``reference`` of every metric over the seeds both have run.

    Runs with one seed share the network's initial weights and the data order, so the paired difference removes
    most of the seed-to-seed spread that the mean ± std table carries. Returns {row: {set: {score: {metric:
    {"mean", "std", "n", "better"}}}}} with ``better`` = seeds where the row beats the reference (higher AP and
    AUROC, lower FPR95); rows without a shared seed are left out.
    """
    by_key = {(r["row"], r["seed"]): r for r in runs}
    base = {seed: run for (row, seed), run in by_key.items() if row == reference}
    result: dict = {}
    for (row, seed), run in sorted(by_key.items()):
        if row == reference or seed not in base:
            continue
        for set_name, scores in run["metrics"].items():
            for score, metrics in scores.items():
                for metric in METRICS:
                    other = base[seed]["metrics"].get(set_name, {}).get(score)
                    if other is not None:
                        (result.setdefault(row, {}).setdefault(set_name, {}).setdefault(score, {})
                         .setdefault(metric, []).append(metrics[metric] - other[metric]))
    for sets in result.values():
        for scores in sets.values():
            for metrics in scores.values():
                for metric, deltas in metrics.items():
                    wins = sum(d < 0 if metric == "FPR95" else d > 0 for d in deltas)
                    metrics[metric] = {**mean_std(deltas), "better": int(wins)}
    return result


def paired_table(paired: Mapping, score: str, reference: str = "baseline_mix",
                 sets: Sequence[str] = SET_ORDER) -> str:
    """Markdown table of ``paired_differences`` for ``score``: "Δ mean ± std (better/seeds)" in points."""
    header = ["row", "seeds"] + [f"{SET_LABELS.get(s, s)} Δ{m}" for s in sets for m in METRICS]
    lines = []
    for row in [name for name, _ in ROWS if name in paired]:
        cells, n = [ROW_LABELS[row]], 0
        for set_name in sets:
            for metric in METRICS:
                stats = paired[row].get(set_name, {}).get(score, {}).get(metric)
                if stats is None:
                    cells.append("–")
                    continue
                n = stats["n"]
                std = f" ± {100 * stats['std']:.1f}" if stats["std"] is not None else ""
                cells.append(f"{100 * stats['mean']:+.1f}{std} ({stats['better']}/{n})")
        lines.append([cells[0], str(n), *cells[1:]])
    return _markdown(header, lines)


def select_recipe(table: Mapping, selection: tuple[str, str, str] = SELECTION) -> str | None:
    """The row with the best mean on the validation split (never RoadAnomaly); None if no row has it."""
    set_name, score, metric = selection
    if set_name == "road_anomaly":
        raise ValueError("the recipe is chosen on the procedural validation split, never on RoadAnomaly")
    candidates = {row: entry["metrics"][set_name][score][metric]["mean"] for row, entry in table.items()
                  if score in entry["metrics"].get(set_name, {})}
    if not candidates:
        return None
    best = min if metric == "FPR95" else max
    return best(candidates, key=lambda row: candidates[row])


def format_cell(stats: Mapping | None) -> str:
    """A fraction as "mean ± std" in percent with one decimal; "–" for a missing std or cell."""
    if stats is None:
        return "–"
    mean = f"{100 * stats['mean']:.1f}"
    return f"{mean} ± {100 * stats['std']:.1f}" if stats["std"] is not None else f"{mean} ± –"


def markdown_table(table: Mapping, score: str, sets: Sequence[str] = SET_ORDER) -> str:
    """One markdown table for ``score``: a line per row (Table 3 order), AP / FPR95 / AUROC per evaluation set."""
    header = ["row", "seeds", "steps"] + [f"{SET_LABELS.get(s, s)} {m}" for s in sets for m in METRICS] + \
             ["train s/run", "eval s/run"]
    lines = []
    order: list[str] = [name for name, _ in ROWS if name in table] + sorted(set(table) - set(ROW_LABELS))
    for row in order:
        entry = table[row]
        cells = [ROW_LABELS.get(row, row), str(len(entry["seeds"])), str(entry["steps"])]
        for set_name in sets:
            by_score = entry["metrics"].get(set_name, {}).get(score)
            cells += [format_cell(by_score[m] if by_score else None) for m in METRICS]
        wall = entry["wall_s"]
        mark = "†" if entry["partial_wall_time"] else ""
        cells += [f"{wall['train']['mean']:.0f}{mark}", f"{wall['evaluate']['mean']:.0f}"]
        lines.append(cells)
    return _markdown(header, lines)


def reference_table(reference: Mapping, sets: Sequence[str] = SET_ORDER) -> str:
    """Markdown table of the training-free scores ({set: {score: metrics}}), one line per score."""
    scores = sorted({score for by_score in reference.values() for score in by_score})
    header = ["training-free score"] + [f"{SET_LABELS.get(s, s)} {m}" for s in sets for m in METRICS]
    lines = [[score] + [f"{100 * reference[s][score][m]:.1f}" if score in reference.get(s, {}) else "–"
                        for s in sets for m in METRICS] for score in scores]
    return _markdown(header, lines)


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table: the header line, the separator, one line per row of cells."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"
    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def write_report(study_dir: str | Path, header: Mapping) -> tuple[Path, Path]:
    """Aggregate the finished runs of ``study_dir`` into ``results.json`` and ``results.md`` (atomically)."""
    study_dir = Path(study_dir)
    runs = load_runs(study_dir)
    table = aggregate(runs)
    scores = sorted({score for entry in table.values() for s in entry["metrics"].values() for score in s})
    recipe = select_recipe(table)
    paired = paired_differences(runs)
    result = {**header, "rows": table, "recipe_by_validation_AP": recipe, "paired_vs_baseline_mix": paired,
              "runs": [{k: r[k] for k in ("row", "seed", "steps", "metrics", "wall_s", "machine")} for r in runs]}
    json_path, md_path = study_dir / "results.json", study_dir / "results.md"
    atomic_write_json(json_path, result)
    parts = [f"# Study results ({header.get('budget', '?')} budget)", "",
             "Metrics in percent, mean ± sample std over seeds. AP/AUROC: higher is better; FPR95: lower is better. "
             "† = wall time of a resumed run (only the last attempt).", ""]
    for score in scores:
        parts += [f"## score: {score}", "", markdown_table(table, score), ""]
        if paired:
            parts += [f"### paired with Baseline (Mix), same seed, score {score}", "",
                      "Difference row − Baseline (Mix) in points, mean ± std over the shared seeds, "
                      "(seeds where the row is better / shared seeds).", "", paired_table(paired, score), ""]
    if header.get("reference"):
        parts += ["## training-free reference (embedded ESPNetv2, same sets and input size)", "",
                  reference_table(header["reference"]), ""]
    parts += [f"Recipe chosen on the procedural validation split (mean AP, dissimilarity): **{recipe}**", ""]
    atomic_write_text(md_path, "\n".join(parts))
    return json_path, md_path


def wall_time_estimate(table: Mapping, rows: int, seeds: int, steps: int) -> float | None:
    """Seconds for ``rows`` × ``seeds`` runs of ``steps`` steps from the measured seconds per step and the
    measured evaluation time (mean over the rows measured); None without measurements."""
    if not table:
        return None
    per_step = np.mean([e["seconds_per_step"]["mean"] for e in table.values()])
    evaluation = np.mean([e["wall_s"]["evaluate"]["mean"] for e in table.values()])
    value = rows * seeds * (steps * per_step + evaluation)
    return float(value) if math.isfinite(value) else None
