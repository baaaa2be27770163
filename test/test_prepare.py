"""prepare: procedural frames through the real InferenceStages into Synboost's layout; resume skips finished frames."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mgcda_core.data.anomalymix import AnomalyMix, AnomalyMixConfig
from mgcda_core.data.layout import LAYOUT_FOLDERS, list_layout
from mgcda_core.data.procedural import ProceduralConfig, generate
from mgcda_core.data.voidclass import VoidClass
from mgcda_core.pipeline.stages import InferenceStages
from mgcda_core.prepare import DOMAINS, PrepareConfig, main, prepare
from mgcda_core.utils.images import read_label, read_rgb

SIZE = (64, 128)


@pytest.fixture(scope="module")
def stages() -> InferenceStages:
    return InferenceStages.default()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, stages: InferenceStages) -> tuple[PrepareConfig, dict]:
    raw = tmp_path_factory.mktemp("raw")
    manifest = generate(raw, ProceduralConfig(frames=4, size=SIZE, seed=1, coco_images=8, target_frames=1))
    config = PrepareConfig(raw / "cityscapes", raw / "coco", tmp_path_factory.mktemp("prepared"), size=SIZE,
                           batch_size=4, seed=2, coco_min_size=manifest["coco_min_size"])
    return config, prepare(config, stages)


def _mtimes(root: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in root.rglob("*.png")}


def test_domains_hold_the_same_file_names_and_the_summary_counts_them(prepared: tuple[PrepareConfig, dict]) -> None:
    config, summary = prepared
    assert json.loads((config.out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    for domain in DOMAINS:
        root = config.out / domain
        listings = {folder: sorted(p.name for p in (root / folder).iterdir()) for folder in LAYOUT_FOLDERS}
        names = listings["original"]
        assert len(names) == 4 and all(listing == names for listing in listings.values())
        assert list_layout(root) == names  # the training reader accepts it
        labels = np.stack([read_label(root / "labels" / name) for name in names])
        counts = summary["domains"][domain]
        assert (counts["frames"], counts["written"], counts["skipped"]) == (4, 4, 0)
        assert counts["anomaly_pixels"] == int((labels == 1).sum())
        assert counts["ignore_pixels"] == int((labels == 255).sum())
        assert counts["anomaly_ratio"] == pytest.approx((labels == 1).sum() / (labels != 255).sum())
    assert summary["domains"]["anomalymix"]["frames_with_anomaly"] == 4  # every frame gets a pasted object


def test_files_hold_the_domain_frames_and_the_stage_outputs(prepared: tuple[PrepareConfig, dict],
                                                            stages: InferenceStages) -> None:
    config, _ = prepared
    sources = {"voidclass": VoidClass(config.cityscapes),
               "anomalymix": AnomalyMix(config.cityscapes, config.coco,
                                        config=AnomalyMixConfig(min_size=config.coco_min_size, seed=config.seed))}
    for domain, source in sources.items():
        root = config.out / domain
        for frame in source:
            np.testing.assert_array_equal(read_rgb(root / "original" / f"{frame.name}.png"), frame.image)
            np.testing.assert_array_equal(read_label(root / "labels" / f"{frame.name}.png"), frame.label)
    root = config.out / "voidclass"
    names = sorted(p.name for p in (root / "original").iterdir())[:2]  # two frames keep the test short
    images = np.stack([read_rgb(root / "original" / name) for name in names])
    with torch.inference_mode():
        outputs = stages(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    for index, name in enumerate(names):
        np.testing.assert_array_equal(read_label(root / "semantic" / name), outputs.semantic[index].numpy())
        synthesis = read_rgb(root / "synthesis" / name).astype(np.float32) / 255
        np.testing.assert_allclose(synthesis, outputs.synthesis[index].permute(1, 2, 0).numpy(), atol=0.5 / 255 + 1e-6)
        for channel, folder in enumerate(("entropy", "logit_distance", "mae_features")):
            stored = read_label(root / folder / name).astype(np.float32) / 255
            np.testing.assert_allclose(stored, outputs.uncertainty[index, channel].numpy(), atol=0.5 / 255 + 1e-6)


def test_rerun_skips_finished_frames_and_redoes_an_incomplete_one(prepared: tuple[PrepareConfig, dict],
                                                                  stages: InferenceStages) -> None:
    config, _ = prepared
    before = _mtimes(config.out)
    again = prepare(config, stages)
    assert all((d["written"], d["skipped"]) == (0, 4) for d in again["domains"].values())
    assert _mtimes(config.out) == before
    victim = sorted((config.out / "anomalymix" / "entropy").iterdir())[1]
    content = victim.read_bytes()
    victim.unlink()
    third = prepare(config, stages)
    assert (third["domains"]["anomalymix"]["written"], third["domains"]["anomalymix"]["skipped"]) == (1, 3)
    assert victim.read_bytes() == content  # the frame is recomputed identically (seeded paste position)
    after = _mtimes(config.out)
    changed = {path for path in before if after[path] != before[path]}
    assert changed <= {victim.parent.parent / folder / victim.name for folder in LAYOUT_FOLDERS}


def test_resuming_with_other_output_settings_is_refused(prepared: tuple[PrepareConfig, dict],
                                                         stages: InferenceStages) -> None:
    config, _ = prepared
    with pytest.raises(ValueError, match=r"prepared with other settings \(seed: 2 -> 3; coco_min_size: \d+ -> 10\)"):
        prepare(replace(config, seed=3, coco_min_size=10), stages)
    assert json.loads((config.out / "prepare.json").read_text())["seed"] == 2


def test_bad_inputs_fail_before_any_model_is_loaded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--cityscapes", str(tmp_path / "none"), "--coco", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "leftImg8bit" in error and error.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["--cityscapes", str(tmp_path), "--coco", str(tmp_path), "--out", str(tmp_path), "--size", "big"])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        PrepareConfig(tmp_path, tmp_path, tmp_path, batch_size=0)
