"""Checkpoint and score choice on validation data: every checkpoint x score is scored with the Fishyscapes
metrics, the rule picks the highest AP, and a re-run only evaluates new checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score

from mgcda_core.data.layout import LAYOUT_FOLDERS, LayoutDataset
from mgcda_core.model.dissimilarity import DissimNetPrior
from mgcda_core.pipeline import scores
from mgcda_core.training.run_checkpoints import save_training_checkpoint
from mgcda_core.validate import choose, run_checkpoints, validate_run

pytestmark = pytest.mark.usefixtures("single_thread_torch")
SIZE = (32, 64)


def _layout(root: Path, frames: int = 3) -> None:
    rng = np.random.default_rng(0)
    for folder in LAYOUT_FOLDERS:
        (root / folder).mkdir(parents=True)
    for i in range(frames):
        name = f"f{i}.png"
        for folder in ("original", "synthesis"):
            Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(root / folder / name)
        Image.fromarray(rng.integers(0, 19, SIZE, dtype=np.uint8)).save(root / "semantic" / name)
        label = np.zeros(SIZE, dtype=np.uint8)
        label[8:16, 10:30] = 1
        label[0, :] = 255
        Image.fromarray(label).save(root / "labels" / name)
        for folder in ("entropy", "logit_distance", "mae_features"):
            Image.fromarray(rng.integers(0, 256, SIZE, dtype=np.uint8)).save(root / folder / name)


def _checkpoint(run: Path, step: int, seed: int) -> None:
    torch.manual_seed(seed)
    model = DissimNetPrior("vgg16", width=0.125)
    save_training_checkpoint(run / "checkpoints" / f"step_{step:08d}.pt", model, {"step": step}, {})


def test_every_checkpoint_and_score_is_evaluated_and_the_rule_chooses(tmp_path: Path) -> None:
    _layout(tmp_path / "val")
    run = tmp_path / "run"
    for step, seed in ((10, 1), (20, 2)):
        _checkpoint(run, step, seed)
    assert [p.name for p in run_checkpoints(run)] == ["step_00000010.pt", "step_00000020.pt"]
    result = validate_run(run, tmp_path / "val", SIZE, batch_size=2)
    rows = result["results"]
    assert {(r["step"], r["score"]) for r in rows} == {(s, n) for s in (10, 20) for n in ("dissimilarity", "ensemble")}
    # independent computation of one row: sklearn's AP over the pooled valid pixels
    from mgcda_core.model.checkpoint import load_model

    model = load_model(run / "checkpoints" / "step_00000020.pt").eval()
    dataset = LayoutDataset(tmp_path / "val", SIZE)
    pooled_scores, pooled_labels = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        with torch.no_grad():
            out = model(*(sample[k][None] for k in ("image", "synthesis", "semantic", "prior")))
        value = scores.dissimilarity(out.logits)[0].numpy()
        valid = sample["label"].numpy() != 255
        pooled_scores.append(value[valid])
        pooled_labels.append(sample["label"].numpy()[valid])
    expected = average_precision_score(np.concatenate(pooled_labels), np.concatenate(pooled_scores))
    row = next(r for r in rows if r["step"] == 20 and r["score"] == "dissimilarity")
    assert row["AP"] == pytest.approx(expected, abs=1e-6)
    assert result["chosen"] == choose(rows) == max(rows, key=lambda r: r["AP"])
    saved = json.loads((run / "validation.json").read_text())
    assert saved["chosen"] == result["chosen"]
    # a new checkpoint: only it is evaluated, earlier rows are kept as they were
    _checkpoint(run, 30, 3)
    again = validate_run(run, tmp_path / "val", SIZE, batch_size=2)
    assert again["results"][:4] == rows and {r["step"] for r in again["results"][4:]} == {30}


def test_rule_breaks_ties_by_fpr95_then_step() -> None:
    rows = [{"step": 5, "AP": 0.5, "FPR95": 0.3}, {"step": 3, "AP": 0.5, "FPR95": 0.2},
            {"step": 1, "AP": 0.5, "FPR95": 0.2}, {"step": 9, "AP": 0.4, "FPR95": 0.1}]
    assert choose(rows)["step"] == 1
    with pytest.raises(ValueError, match="no validation results"):
        choose([])


def test_a_run_without_checkpoints_is_named(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match="no step_.*latest.pt checkpoint"):
        run_checkpoints(tmp_path)


def test_cli_names_a_run_without_checkpoints_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mgcda_core.validate import main

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    _layout(tmp_path / "val", frames=1)
    assert main(["--run", str(tmp_path / "run"), "--val", str(tmp_path / "val"), "--input-size", "32", "64"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "no step_*.pt or latest.pt checkpoint" in error and error.count("\n") == 1
