"""``python -m mgcda_core.study --out DIR [--rows ROW ...] [--seeds 0 1 2] [--budget short|long]``

Reproduces MGCDA's Table 3 at small scale (docs/RESULTS.md): procedural data (two source styles, a held-out target
style), every row's preset trained with the tiny model of ``config/study.yaml``, each run evaluated on the
target's validation and test splits and on RoadAnomaly (AP, FPR95, AUROC), aggregated to ``DIR/results.md``
and ``DIR/results.json`` after every run. Interrupt and re-run the same command: finished runs are skipped and
a partial training resumes from its last checkpoint. See docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from mgcda_core.config_loader import ConfigError, config_differences, to_dict
from mgcda_core.errors import OutputError
from mgcda_core.study.config import BUDGET_NAMES, ROW_NAMES, StudyConfig, load_study_config
from mgcda_core.utils.cli import user_errors

if TYPE_CHECKING:
    from mgcda_core.study.data import StudyDataPaths

STUDY_MARKER = "study.json"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mgcda_core.study", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="study folder (data, runs, results)")
    parser.add_argument("--config", type=Path, default=Path("config/study.yaml"), help="study settings")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study setting, e.g. --set budgets.short=200")
    parser.add_argument("--rows", nargs="+", default=list(ROW_NAMES), choices=ROW_NAMES, metavar="ROW",
                        help=f"Table 3 rows (default all): {', '.join(ROW_NAMES)}")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--budget", choices=BUDGET_NAMES, default="short",
                        help="training steps per run (config budgets)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no per-run training progress bar")
    parser.add_argument("--data-only", action="store_true",
                        help="only build the data (then start several processes with disjoint --rows)")
    args = parser.parse_args(argv)
    if min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct non-negative integers, got {args.seeds}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return args


def check_study_marker(out: Path, settings: dict) -> None:
    """A study folder holds one configuration: refuse to add runs made with other settings or another budget."""
    marker = out / STUDY_MARKER
    if marker.is_file():
        details = config_differences(json.loads(marker.read_text()), settings)
        if details:
            raise ConfigError(f"{out} holds a study with other settings ({details}); use another --out")
    elif out.is_dir() and any(out.iterdir()):
        raise OutputError(f"{out} is not empty and holds no study ({STUDY_MARKER}); choose another --out")
    else:
        from mgcda_core.utils.atomic import atomic_write_json

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(marker, settings)


class _PreparedData(NamedTuple):
    """The study's data and what was checked about it before any training."""

    data: StudyDataPaths
    census: dict
    anchor_warnings: list[str]
    n_anchor: int


def _prepare(study: StudyConfig, out: Path, settings: dict) -> _PreparedData:
    """Fail before hours of training (RoadAnomaly readable, the folder's study marker), then build the data and
    warn about images with too few anomaly pixels for CACL's anchors."""
    from mgcda_core.data.eval_sets import open_eval_set
    from mgcda_core.study.data import build_study_data, data_census
    from mgcda_core.study.runner import preset_path
    from mgcda_core.training.config import load_train_config

    open_eval_set("road_anomaly", study.evaluation.road_anomaly)
    check_study_marker(out, settings)
    n_anchor = load_train_config(preset_path("mgcda"), study.tiny_model, check_folders=False).cacl.n_anchor
    data, _ = build_study_data(study.data, out / "data")
    census, anchor_warnings = data_census(data, n_anchor)
    for warning in anchor_warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return _PreparedData(data, census, anchor_warnings, n_anchor)


def _run_all(study: StudyConfig, args: argparse.Namespace, prepared: _PreparedData, settings: dict,
             argv: Sequence[str] | None) -> None:
    """Train and evaluate every (row, seed) run; the report is rewritten after each one (finished runs are
    skipped by ``run_one``)."""
    from tqdm import tqdm

    from mgcda_core.study.report import write_report
    from mgcda_core.study.runner import RunSpec, evaluate_reference, machine_info, run_one

    steps = settings["steps"]
    reference = evaluate_reference(study, prepared.data, args.out)
    specs = [RunSpec(row, seed, steps) for row in args.rows for seed in args.seeds]
    header = {"budget": args.budget, "steps": steps, "study_command": shlex.join(
        ["python", "-m", "mgcda_core.study", *(argv if argv is not None else sys.argv[1:])]),
        "data_commands": list(prepared.data.commands), "census": prepared.census,
        "census_n_anchor": prepared.n_anchor, "anchor_warnings": prepared.anchor_warnings, "reference": reference,
        "config": settings["config"]}
    progress = tqdm(specs, desc="study", unit="run", file=sys.stderr)
    for spec in progress:
        progress.set_postfix_str(f"{spec.row} seed {spec.seed}")
        record = run_one(study, prepared.data, spec, args.out, show_progress=not args.no_progress)
        test = record["metrics"]["target_test"][study.evaluation.scores[0]]
        tqdm.write(f"{spec.row} seed {spec.seed}: target test AP {100 * test['AP']:.1f} "
                   f"FPR95 {100 * test['FPR95']:.1f} AUROC {100 * test['AUROC']:.1f}; "
                   f"train {record['wall_s']['train']:.0f} s, evaluate {record['wall_s']['evaluate']:.0f} s",
                   file=sys.stderr)
        write_report(args.out, {**header, "machine": machine_info()})


def _print_summary(out: Path, steps: int) -> None:
    """Where the results are and how long the full study would take at the speed measured."""
    from mgcda_core.study.report import aggregate, load_runs, wall_time_estimate

    table = aggregate(load_runs(out))
    estimate = wall_time_estimate(table, len(ROW_NAMES), 3, steps)
    print(f"results: {out / 'results.md'}, {out / 'results.json'}")
    if estimate is not None:
        print(f"estimated wall time of the full study ({len(ROW_NAMES)} rows x 3 seeds x {steps} steps, "
              f"one process at this speed): {estimate / 3600:.1f} h")


@user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    study = load_study_config(args.config, tuple(args.overrides))

    import torch

    from mgcda_core.training.step import NonFiniteLossError

    torch.set_num_threads(args.threads)
    steps = study.budgets.steps(args.budget)
    settings = json.loads(json.dumps({"config": to_dict(study), "budget": args.budget, "steps": steps}))
    try:
        prepared = _prepare(study, args.out, settings)
        if args.data_only:
            print(f"data ready under {args.out / 'data'}")
            return 0
        _run_all(study, args, prepared, settings, argv)
    except NonFiniteLossError as error:  # a diverging run: reported like the train command does
        print(f"error: {error}", file=sys.stderr)
        return 1
    _print_summary(args.out, steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
