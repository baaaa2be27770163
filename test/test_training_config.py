"""config/train.yaml, the Table 3 presets, and the CLI's refusal of bad configs before any work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mgcda_core.config_loader import ConfigError, to_dict
from mgcda_core.training.config import TrainConfig, load_train_config

REPO = Path(__file__).resolve().parents[1]
PRESETS = REPO / "config" / "presets"

# Table 3 rows: (sources, oda, fda, dynamic label smoothing, cacl mode).
TABLE3 = {
    "baseline_v": ("v", False, False, True, "none"),
    "baseline_a": ("a", False, False, True, "none"),
    "baseline_mix": ("both", False, False, True, "none"),
    "oda": ("both", True, False, False, "none"),
    "oda_fda": ("both", True, True, False, "none"),
    "mdat": ("both", True, True, True, "none"),
    "mdat_pcl": ("both", True, True, True, "pcl"),
    "mdat_cpcl": ("both", True, True, True, "cpcl"),
    "mgcda": ("both", True, True, True, "cacl"),
}


def test_defaults_are_the_papers() -> None:
    config = load_train_config(REPO / "config" / "train.yaml", check_folders=False)
    assert (config.loss.lambda_f, config.loss.lambda_o, config.loss.lambda_c) == (0.04, 0.06, 0.1)
    assert (config.optim.lr, config.optim.poly_power) == (1e-4, 0.99)
    assert (config.train.epochs, config.train.batch_size) == (50, 8)
    assert (config.cacl.mode, config.cacl.n_anchor, config.cacl.temperature) == ("cacl", 50, 0.1)
    assert config.data.input_size == (256, 512) and config.mdat.tau_b == 1.0
    # The YAML file spells out every default of the dataclasses (nothing hidden in code only).
    assert to_dict(config) == to_dict(TrainConfig())


@pytest.mark.parametrize("name", sorted(TABLE3))
def test_presets_select_table3_rows(name: str) -> None:
    config = load_train_config(PRESETS / f"{name}.yaml", check_folders=False)
    row = (config.data.sources, config.mdat.oda, config.mdat.fda, config.mdat.label_smoothing, config.cacl.mode)
    assert row == TABLE3[name]
    assert config.checkpoint.out_dir == Path("runs") / name
    assert config.loss.lambda_f == 0.04 and config.train.epochs == 50  # the rest comes from train.yaml


def test_missing_data_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    with pytest.raises(ConfigError, match=f"data.domain_a: folder {tmp_path / 'nowhere'} does not exist"):
        load_train_config(REPO / "config" / "train.yaml", [f"data.domain_v={tmp_path / 'v'}",
                                                           f"data.domain_a={tmp_path / 'nowhere'}"])
    # A one-domain baseline only needs its own folder.
    config = load_train_config(PRESETS / "baseline_v.yaml", [f"data.domain_v={tmp_path / 'v'}",
                                                             f"data.domain_a={tmp_path / 'nowhere'}"])
    assert config.data.domain_roots == (tmp_path / "v",)


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.batch_size=5"], "train.batch_size 5 must split evenly over the 2 domains"),
    (["mdat.tau_b=0.3"], "mdat: tau_b must lie in [0.5, 1], got 0.3"),
    (["mdat.do_stride=3"], "mdat: do_stride must be 1 (per-pixel map, the paper's) or 2, got 3"),
    (["loss.class_weights_mode=given"], "class_weights (normal, anomaly) must be given exactly"),
    (["train.amp=maybe"], "'train.amp'"),
    (["optim.betas=[0.9, 1.0]"], "betas must lie in [0, 1)"),
])
def test_value_checks(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_train_config(REPO / "config" / "train.yaml", overrides, check_folders=False)
    assert message in str(error.value)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mgcda_core.train", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)


def test_cli_refuses_bad_config_before_work(tmp_path: Path) -> None:
    unknown = _cli("--config", "config/train.yaml", "--set", "optim.learning_rate=1")
    assert unknown.returncode == 2
    assert "error: unknown key 'optim.learning_rate'" in unknown.stderr
    missing = _cli("--config", "config/presets/mgcda.yaml", "--set", f"data.domain_v={tmp_path / 'absent'}",
                   "--set", f"checkpoint.out_dir={tmp_path / 'run'}")
    assert missing.returncode == 2
    assert f"data.domain_v: folder {tmp_path / 'absent'} does not exist" in missing.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written
