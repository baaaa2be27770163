"""Choosing a checkpoint and a score on validation data: ``python -m mgcda_core.validate``.

    python -m mgcda_core.validate --run runs/realtime_mgcda --val data/train_real/val_anomalymix

Every checkpoint of the run (``checkpoints/step_*.pt`` and ``latest.pt``) scores every frame of a training-layout
folder (by default the validation AnomalyMix of ``prepare --train-real``: Cityscapes val frames with object
identities that training never saw) from the layout's own stored inputs — the image, resynthesis, semantic map
and uncertainty maps exactly as training reads them — with each score of ``SCORES``. Metrics follow the
Fishyscapes protocol (pooled pixels, exact AP, FPR95, AUROC).

The rule, fixed before any result was seen: the (checkpoint, score) pair with the highest validation AP wins; a
tie goes to the lower FPR95, then to the earlier step. RoadAnomaly is never an input here.
Results go to ``<run>/validation.json`` (every pair, and the choice).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mgcda_core.data.layout import LayoutDataset
from mgcda_core.errors import DataError, MissingInputError, ModelError
from mgcda_core.evaluation import MetricAccumulator
from mgcda_core.model.checkpoint import load_model, read_checkpoint
from mgcda_core.pipeline import scores
from mgcda_core.training.run_checkpoints import TRAINING_KEY
from mgcda_core.utils.atomic import atomic_write_json
from mgcda_core.utils.cli import user_errors

SCORES = scores.TRAINED
_STEP_FILE = re.compile(r"step_(\d+)\.pt$")


def run_checkpoints(run: Path) -> list[Path]:
    """The run's numbered checkpoints by step, then ``latest.pt`` when its step is not among them."""
    folder = run / "checkpoints"
    numbered = sorted((p for p in folder.glob("step_*.pt") if _STEP_FILE.search(p.name)),
                      key=lambda p: int(_STEP_FILE.search(p.name).group(1)))  # type: ignore[union-attr]
    latest = folder / "latest.pt"
    steps = {checkpoint_step(p) for p in numbered}
    if latest.is_file() and checkpoint_step(latest) not in steps:
        numbered.append(latest)
    if not numbered:
        raise MissingInputError(f"{folder}: no step_*.pt or latest.pt checkpoint")
    return numbered


def checkpoint_step(path: Path) -> int:
    training = read_checkpoint(path).get(TRAINING_KEY)
    step = training.get("step") if isinstance(training, dict) else None
    if not isinstance(step, int):
        raise ModelError(f"{path}: no integer 'step' entry; expected a training checkpoint")
    return step


def score_maps(model: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """Every score of ``SCORES`` for a layout batch (N x H x W each)."""
    with torch.inference_mode():
        out = model(batch["image"], batch["synthesis"], batch["semantic"], batch["prior"])
    dissimilarity = scores.dissimilarity(out.logits)
    return {"dissimilarity": dissimilarity, "ensemble": scores.ensemble(dissimilarity, batch["prior"][:, 0])}


def evaluate_checkpoint(path: Path, dataset: LayoutDataset, batch_size: int = 4) -> dict[str, dict]:
    """Fishyscapes metrics of every score of ``SCORES`` for one checkpoint over ``dataset``."""
    model = load_model(path).eval()
    accumulators = {name: MetricAccumulator("fishyscapes") for name in SCORES}
    indices = list(range(len(dataset)))
    for start in tqdm(range(0, len(indices), batch_size), desc=path.name, unit="batch", file=sys.stderr, leave=False):
        samples = [dataset[i] for i in indices[start:start + batch_size]]
        batch = {key: torch.stack([s[key] for s in samples]) for key in ("image", "synthesis", "semantic", "prior")}
        maps = score_maps(model, batch)
        for name, values in maps.items():
            for sample, value in zip(samples, values.numpy()):
                accumulators[name].add(value.astype(np.float32), sample["label"].numpy(), frame=sample["name"])
    return {name: acc.result() for name, acc in accumulators.items()}


def choose(rows: Sequence[dict]) -> dict:
    """The rule of the module docstring: highest AP, then lowest FPR95, then earliest step."""
    if not rows:
        raise DataError("no validation results to choose from")
    return min(rows, key=lambda r: (-r["AP"], r["FPR95"], r["step"]))


def validate_run(run: Path, val: Path, input_size: tuple[int, int], batch_size: int = 4) -> dict:
    """Evaluate every checkpoint of ``run`` not yet in ``<run>/validation.json`` for this validation set, so the
    command can follow a running training; then choose over all of them."""
    dataset = LayoutDataset(val, input_size)
    previous_path = run / "validation.json"
    rows: list[dict] = []
    if previous_path.is_file():
        previous = json.loads(previous_path.read_text(encoding="utf-8"))
        if previous.get("validation_set") == str(val) and previous.get("num_images") == len(dataset):
            rows = previous["results"]
    done = {(row["checkpoint"], row["step"]) for row in rows}
    for path in run_checkpoints(run):
        step = checkpoint_step(path)
        if (path.name, step) in done:
            continue
        for name, metrics in evaluate_checkpoint(path, dataset, batch_size).items():
            rows.append({"checkpoint": path.name, "step": step, "score": name, "AP": metrics["AP"],
                         "FPR95": metrics["FPR95"], "AUROC": metrics["AUROC"]})
            print(f"step {step:6d} {name:13s} AP {metrics['AP']:.4f}  FPR95 {metrics['FPR95']:.4f}  "
                  f"AUROC {metrics['AUROC']:.4f}", flush=True)
    result = {"validation_set": str(val), "num_images": len(dataset), "rule": "highest AP, then lowest FPR95, "
              "then earliest step", "results": rows, "chosen": choose(rows)}
    atomic_write_json(run / "validation.json", result)
    return result


@user_errors
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mgcda_core.validate",
                                     description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--run", required=True, type=Path, help="training output folder (holds checkpoints/)")
    parser.add_argument("--val", required=True, type=Path, help="training-layout folder of validation frames")
    parser.add_argument("--input-size", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args(argv)
    result = validate_run(args.run, args.val, tuple(args.input_size), args.batch_size)
    chosen = result["chosen"]
    print(f"chosen: {chosen['checkpoint']} (step {chosen['step']}), score {chosen['score']}: AP {chosen['AP']:.4f}, "
          f"FPR95 {chosen['FPR95']:.4f}, AUROC {chosen['AUROC']:.4f} -> {args.run / 'validation.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
