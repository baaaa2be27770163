"""One study run = one Table 3 row × one seed: train the preset with the tiny-model overrides, evaluate it on the
procedural target (validation and test splits) and on RoadAnomaly, record diagnostics and wall times.

Layout under the study folder: ``runs/<row>/seed<k>/`` holding ``train/`` (the trainer's ``checkpoint.out_dir``:
checkpoints, TensorBoard events), ``train.json`` (written when training has reached its last step),
``eval/<set>/<score>/metrics.json`` (the evaluate command's output), ``curves.png`` and ``done.json``.
Resumable at every level: a run with ``done.json`` is skipped; a finished training is not repeated; a
partial one continues from ``train/checkpoints/latest.pt`` (the trainer's ``--resume``); finished
evaluations are read back.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mgcda_core import evaluate as evaluate_cli
from mgcda_core.config_loader import to_dict
from mgcda_core.data.layout import list_layout
from mgcda_core.study.config import StudyConfig
from mgcda_core.study.data import StudyDataPaths, StudyError
from mgcda_core.study.training_curves import adversarial_summary, plot_training_curves, read_scalars
from mgcda_core.training.config import TrainConfig, load_train_config
from mgcda_core.training.logging import TENSORBOARD_DIR
from mgcda_core.training.run_checkpoints import latest_path, load_training_checkpoint
from mgcda_core.training.trainer import train
from mgcda_core.utils.atomic import atomic_write_json

PRESET_DIR = Path(__file__).resolve().parents[2] / "config" / "presets"
DONE_MARKER = "done.json"
TRAIN_MARKER = "train.json"
EVAL_SETS = {"target_val": "fs_lost_and_found", "target_test": "fs_lost_and_found", "road_anomaly": "road_anomaly"}
METRICS = ("AP", "FPR95", "AUROC")


@dataclass(frozen=True)
class RunSpec:
    row: str
    seed: int
    steps: int  # training steps (the budget)

    def directory(self, study_dir: Path) -> Path:
        return study_dir / "runs" / self.row / f"seed{self.seed}"


def machine_info() -> dict:
    """What the wall times were measured on; the load average matters on a shared machine."""
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")]
        cpu = models[0] if models else cpu
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def train_overrides(study: StudyConfig, data: StudyDataPaths, spec: RunSpec, run_dir: Path) -> list[str]:
    """The ``--set`` overrides of a run, epochs chosen so that the run lasts ``spec.steps`` steps (rounded up to
    whole epochs: the schedule of τ and the learning rate spans whole epochs)."""
    base = [*study.tiny_model, f"data.domain_v={data.domain_v}", f"data.domain_a={data.domain_a}",
            f"data.input_size=[{study.data.input_size[0]}, {study.data.input_size[1]}]", "data.num_workers=0",
            f"train.seed={spec.seed}", "train.device=cpu", f"train.log_every={study.train.log_every}",
            f"checkpoint.every={study.train.checkpoint_every}", f"checkpoint.out_dir={run_dir / 'train'}"]
    probe = load_train_config(preset_path(spec.row), base, check_folders=False)
    lengths = [len(list_layout(root)) for root in probe.data.domain_roots]
    steps_per_epoch = max(lengths) // (probe.train.batch_size // len(lengths))
    if steps_per_epoch < 1:
        raise StudyError(f"{spec.row}: the domains hold {lengths} frames, fewer than one batch")
    return [*base, f"train.epochs={math.ceil(spec.steps / steps_per_epoch)}"]


def preset_path(row: str) -> Path:
    path = PRESET_DIR / f"{row}.yaml"
    if not path.is_file():
        raise StudyError(f"no preset {path} for row {row!r}")
    return path


def train_command(row: str, overrides: list[str], resume: bool) -> str:
    """The equivalent ``python -m mgcda_core.train`` command line (for the record)."""
    argv = ["python", "-m", "mgcda_core.train", "--config", f"config/presets/{row}.yaml"]
    for override in overrides:
        argv += ["--set", override]
    return shlex.join(argv + (["--resume"] if resume else []))


def train_run(spec: RunSpec, overrides: list[str], run_dir: Path, show_progress: bool = True) -> dict:
    """Train (or resume, or skip when ``train.json`` says it is finished); returns the training record."""
    marker = run_dir / TRAIN_MARKER
    if marker.is_file():
        return json.loads(marker.read_text())
    config: TrainConfig = load_train_config(preset_path(spec.row), overrides)
    latest = latest_path(config.checkpoint.out_dir)
    resume = latest.is_file()
    resumed_from = int(load_training_checkpoint(latest)["training"]["step"]) if resume else 0
    start = time.perf_counter()
    summary = train(config, resume=resume, show_progress=show_progress)
    wall = time.perf_counter() - start
    if summary.step != summary.total_steps:
        raise StudyError(f"{run_dir}: training stopped at step {summary.step} of {summary.total_steps}")
    record = {"steps": summary.total_steps, "resumed_from_step": resumed_from, "wall_s": round(wall, 1),
              "seconds_per_step": round(wall / max(summary.total_steps - resumed_from, 1), 4),
              "checkpoint": summary.checkpoint, "last_losses": summary.losses,
              "command": train_command(spec.row, overrides, resume), "config": to_dict(config)}
    atomic_write_json(marker, record)
    return record


def evaluate_sets(study: StudyConfig, data: StudyDataPaths, out_dir: Path, scores: tuple[str, ...],
                  checkpoint: str | None = None) -> tuple[dict, float]:
    """Every evaluation set × score through ``python -m mgcda_core.evaluate``'s code (a trained ``checkpoint`` or
    training-free scores); finished ones are read back from ``out_dir/<set>/<score>/metrics.json``.
    Returns {set: {score: {AP, FPR95, AUROC, num_images}}} and the wall time spent here."""
    roots = {"target_val": data.target_val, "target_test": data.target_test,
             "road_anomaly": study.evaluation.road_anomaly}
    height, width = study.data.input_size
    results: dict[str, dict[str, dict]] = {}
    start = time.perf_counter()
    for set_name, dataset in EVAL_SETS.items():
        for score in scores:
            out = out_dir / set_name / score
            if not (out / "metrics.json").is_file():
                argv = ["--dataset", dataset, "--root", str(roots[set_name]), "--score", score, "--out", str(out),
                        "--input-size", str(height), str(width), "--gallery", "0"]
                argv += ["--checkpoint", checkpoint] if checkpoint is not None else []
                evaluate_cli.evaluate(evaluate_cli.parse_args(argv))
            metrics = json.loads((out / "metrics.json").read_text())
            results.setdefault(set_name, {})[score] = {k: metrics[k] for k in (*METRICS, "num_images")}
    return results, time.perf_counter() - start


def evaluate_reference(study: StudyConfig, data: StudyDataPaths, study_dir: Path) -> dict:
    """The training-free scores of the embedded segmentation network on the same sets and input size: what the
    trained dissimilarity networks have to beat."""
    return evaluate_sets(study, data, study_dir / "reference", study.evaluation.reference_scores)[0]


def run_one(study: StudyConfig, data: StudyDataPaths, spec: RunSpec, study_dir: Path,
            show_progress: bool = True) -> dict:
    """Train, evaluate and summarise one run; returns its ``done.json`` record (read back when already done)."""
    run_dir = spec.directory(study_dir)
    done = run_dir / DONE_MARKER
    if done.is_file():
        return json.loads(done.read_text())
    overrides = train_overrides(study, data, spec, run_dir)
    training = train_run(spec, overrides, run_dir, show_progress)
    metrics, eval_wall = evaluate_sets(study, data, run_dir / "eval", study.evaluation.scores, training["checkpoint"])
    scalars = read_scalars(run_dir / "train" / TENSORBOARD_DIR)
    plot_training_curves(scalars, run_dir / "curves.png", title=f"{spec.row}, seed {spec.seed}")
    record = {"row": spec.row, "seed": spec.seed, "steps": training["steps"], "metrics": metrics,
              "wall_s": {"train": training["wall_s"], "evaluate": round(eval_wall, 1)},
              "train_resumed_from_step": training["resumed_from_step"],
              "seconds_per_step": training["seconds_per_step"], "train_command": training["command"],
              "diagnostics": adversarial_summary(scalars), "machine": machine_info()}
    atomic_write_json(done, record)
    return record
