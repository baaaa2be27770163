"""Study runs: step budget → epochs, resuming a partial training (real tiny trainings on random layouts),
skipping finished runs, the target split, and the training curves read back from the real event files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_training_data import write_layout

from mgcda_core.losses.mdat import tau_at
from mgcda_core.study.config import ROW_NAMES, StudyConfig, StudyData, StudyEvaluation, load_study_config
from mgcda_core.study.data import StudyDataPaths, StudyError, split_target
from mgcda_core.study.runner import RunSpec, evaluate_sets, preset_path, run_one, train_overrides, train_run
from mgcda_core.study.training_curves import adversarial_summary, plot_training_curves, read_scalars
from mgcda_core.training.config import load_train_config
from mgcda_core.training.logging import TENSORBOARD_DIR
from mgcda_core.training.run_checkpoints import latest_path

REPO = Path(__file__).resolve().parents[1]
TINY = ("model.encoder=vgg16", "model.width=0.125", "model.pretrained=false", "mdat.do_base_channels=4",
        "cacl.embed_dim=8", "cacl.n_anchor=8", "train.batch_size=4")


pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> StudyDataPaths:
    root = tmp_path_factory.mktemp("layout")
    # V has 6 frames, A 10: steps per epoch follow the larger domain (10 // 2 with 2 + 2 images per step).
    return StudyDataPaths(write_layout(root / "v", 6, seed=1), write_layout(root / "a", 10, seed=2, prefix="mix"),
                          root / "val", root / "test", ())


def study() -> StudyConfig:
    return StudyConfig(data=StudyData(input_size=(32, 64)), tiny_model=TINY,
                       evaluation=StudyEvaluation(road_anomaly=Path("unused")))


def test_study_yaml_loads_and_every_row_has_a_preset() -> None:
    config = load_study_config(REPO / "config" / "study.yaml")
    assert config.budgets.steps("long") > config.budgets.steps("short")
    for row in ROW_NAMES:
        load_train_config(preset_path(row), config.tiny_model, check_folders=False)
    with pytest.raises(ValueError, match="multiples of 32"):
        StudyData(input_size=(48, 128))
    with pytest.raises(ValueError, match="unknown budget"):
        config.budgets.steps("large")


# Two-domain rows: max(6, 10) // 2 = 5 steps per epoch (2 + 2 images per step); baseline_v: 6 // 4 = 1 step per
# epoch (4 V images per step); baseline_a: 10 // 4 = 2. Epochs = ceil(steps / steps per epoch).
@pytest.mark.parametrize(("row", "steps", "epochs"),
                         [("mgcda", 12, 3), ("baseline_mix", 10, 2), ("baseline_v", 12, 12), ("baseline_a", 11, 6)])
def test_epochs_cover_the_step_budget(data: StudyDataPaths, tmp_path: Path, row: str, steps: int, epochs: int) -> None:
    overrides = train_overrides(study(), data, RunSpec(row, 0, steps), tmp_path)
    assert overrides[-1] == f"train.epochs={epochs}"
    config = load_train_config(preset_path(row), overrides)
    assert f"checkpoint.out_dir={tmp_path / 'train'}" in overrides and config.train.seed == 0


def test_partial_training_resumes_and_curves_come_from_its_event_files(data: StudyDataPaths, tmp_path: Path) -> None:
    spec = RunSpec("mgcda", 0, 10)
    overrides = train_overrides(study(), data, spec, tmp_path)  # 2 epochs x 5 steps
    # A run killed after its step-4 checkpoint: stop there (stop_at_step may change between attempts).
    with pytest.raises(StudyError, match="stopped at step 4 of 10"):
        train_run(spec, [*overrides, "checkpoint.every=2", "train.stop_at_step=4", "train.log_every=1"], tmp_path,
                  show_progress=False)
    assert latest_path(tmp_path / "train").is_file() and not (tmp_path / "train.json").exists()

    record = train_run(spec, [*overrides, "checkpoint.every=2", "train.log_every=1"], tmp_path, show_progress=False)
    assert record["resumed_from_step"] == 4 and record["steps"] == 10
    assert record["command"].endswith("--resume") and "--config config/presets/mgcda.yaml" in record["command"]
    assert json.loads((tmp_path / "train.json").read_text())["steps"] == 10
    assert train_run(spec, ["not=used"], tmp_path) == record  # finished: read back, nothing re-run

    scalars = read_scalars(tmp_path / "train" / TENSORBOARD_DIR)
    tau = scalars["mdat/tau"]
    assert tau.steps.tolist() == list(range(10))  # every step once, across the resumption
    np.testing.assert_allclose(tau.values, [tau_at(int(s), 10) for s in tau.steps], atol=1e-6)
    for tag in ("loss/ce", "loss/mda_f", "loss/mda_o", "loss/cac", "mdat/acc_f_v", "mdat/acc_o_a",
                "mdat/acc_f_a_anomaly", "mdat/acc_o_a_anomaly", "mdat/gap_f", "mdat/gap_o", "cacl/V/anchors"):
        assert tag in scalars, sorted(scalars)
    # the trainer's fill = drawn / requested: 2 images per domain x N_a = 8 anchors (x 2·N_a positives)
    np.testing.assert_allclose(scalars["cacl/V/anchor_fill"].values, scalars["cacl/V/anchors"].values / 16)
    np.testing.assert_allclose(scalars["cacl/A/positive_fill"].values, scalars["cacl/A/positives"].values / 32)
    panels = plot_training_curves(scalars, tmp_path / "curves.png", title="mgcda")
    assert panels[:4] == ["τ (eq. 1)", "domain classifier accuracy, all pixels (chance 0.5)",
                          "domain classifier accuracy, anomaly pixels (chance 0.5)",
                          "domain gap mean P_V − mean P_A (0: not separated)"]
    assert {"ce", "mda_f", "mda_o", "cac", "cls_f", "cls_o", "total"} <= set(panels)
    with Image.open(tmp_path / "curves.png") as image:
        assert image.format == "PNG" and image.width > 500
    summary = adversarial_summary(scalars, fraction=0.2)
    assert summary["mdat/tau"] == {"start": pytest.approx(np.mean(tau.values[:2])),
                                   "end": pytest.approx(np.mean(tau.values[-2:]))}


def test_finished_run_is_skipped(tmp_path: Path) -> None:
    spec = RunSpec("oda", 1, 10)
    record = {"row": "oda", "seed": 1, "steps": 10, "marker": "constructed"}
    done = spec.directory(tmp_path) / "done.json"
    done.parent.mkdir(parents=True)
    done.write_text(json.dumps(record))
    missing = StudyDataPaths(*(tmp_path / "absent" for _ in range(4)), ())  # training would fail on these
    assert run_one(study(), missing, spec, tmp_path) == record


def test_plot_refuses_a_log_without_losses(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        read_scalars(tmp_path)
    with pytest.raises(ValueError, match="no loss/\\* scalars"):
        plot_training_curves({}, tmp_path / "x.png")


def test_target_split_every_third_frame_is_validation(tmp_path: Path) -> None:
    for folder in ("original", "labels"):
        (tmp_path / "fs" / folder).mkdir(parents=True)
    names = [f"frame_{i:02d}.png" for i in range(7)]
    for name in names:
        for folder in ("original", "labels"):
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "fs" / folder / name)
    val, test = split_target(tmp_path / "fs", tmp_path / "out", val_every=3)
    assert sorted(p.name for p in (val / "labels").iterdir()) == [names[0], names[3], names[6]]
    assert sorted(p.name for p in (test / "original").iterdir()) == [n for i, n in enumerate(names) if i % 3]
    assert split_target(tmp_path / "fs", tmp_path / "out", val_every=3) == (val, test)  # re-run: same links
    (tmp_path / "fs" / "original" / names[2]).unlink()
    with pytest.raises(StudyError, match="has no image"):
        split_target(tmp_path / "fs", tmp_path / "out2", val_every=3)


def write_eval_sets(root: Path) -> tuple[Path, Path, Path]:
    """Two-frame target splits (Fishyscapes layout) and a two-frame RoadAnomaly-layout set, 64x128 random RGB."""
    rng = np.random.default_rng(3)
    label = np.zeros((64, 128), np.uint8)
    label[20:40, 50:80] = 1
    label[:4] = 255
    splits = []
    for split in ("val", "test"):
        for folder in ("original", "labels"):
            (root / split / folder).mkdir(parents=True)
        for index in range(2):
            rgb = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(root / split / "original" / f"{index}.png")
            Image.fromarray(label).save(root / split / "labels" / f"{index}.png")
        splits.append(root / split)
    road = root / "road"
    names = []
    for index in range(2):
        (road / "frames" / f"r{index}.labels").mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)).save(road / "frames" / f"r{index}.jpg")
        road_label = (label == 1).astype(np.uint8) * 2  # RoadAnomaly's anomaly id
        Image.fromarray(road_label).save(road / "frames" / f"r{index}.labels" / "labels_semantic.png")
        names.append(f"r{index}.jpg")
    (road / "frame_list.json").write_text(json.dumps(names))
    return splits[0], splits[1], road


def test_evaluate_sets_writes_every_set_and_reads_finished_ones_back(tmp_path: Path) -> None:
    val, test, road = write_eval_sets(tmp_path / "sets")
    config = StudyConfig(data=StudyData(input_size=(64, 128)), evaluation=StudyEvaluation(road_anomaly=road))
    paths = StudyDataPaths(tmp_path, tmp_path, val, test, ())
    results, _ = evaluate_sets(config, paths, tmp_path / "eval", ("entropy",))
    assert set(results) == {"target_val", "target_test", "road_anomaly"}
    for set_name, by_score in results.items():
        written = json.loads((tmp_path / "eval" / set_name / "entropy" / "metrics.json").read_text())
        assert by_score["entropy"] == {k: written[k] for k in ("AP", "FPR95", "AUROC", "num_images")}
        assert written["num_images"] == 2 and written["model"]["input_size"] == [64, 128]
    stamp = (tmp_path / "eval" / "road_anomaly" / "entropy" / "metrics.json").stat().st_mtime_ns
    for frame in (test / "original").iterdir():
        frame.unlink()  # a second evaluation would fail: finished results must be read back instead
    assert evaluate_sets(config, paths, tmp_path / "eval", ("entropy",))[0] == results
    assert (tmp_path / "eval" / "road_anomaly" / "entropy" / "metrics.json").stat().st_mtime_ns == stamp


def test_study_folder_refuses_other_settings(tmp_path: Path) -> None:
    from mgcda_core.config_loader import ConfigError
    from mgcda_core.study.__main__ import check_study_marker

    settings = {"budget": "short", "steps": 150, "config": {"data": {"seed": 0}}}
    check_study_marker(tmp_path, settings)
    check_study_marker(tmp_path, settings)  # same settings: accepted (more rows or seeds may be added)
    with pytest.raises(ConfigError, match=r"config\.data\.seed: 0 -> 1; steps: 150 -> 600"):
        check_study_marker(tmp_path, {**settings, "steps": 600, "config": {"data": {"seed": 1}}})
