"""Two-process DDP on gloo through torchrun, and the single-process CLI with --resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from test_training_data import write_layout

from mgcda_core.training.run_checkpoints import latest_path, load_training_checkpoint

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")

# Each rank trains, then saves everything it holds so the test can compare the ranks.
RANK_SCRIPT = """
import os, sys, torch
from mgcda_core.training.config import load_train_config
from mgcda_core.training.trainer import Trainer
from mgcda_core.training.distributed import init_distributed, shutdown
config = load_train_config(sys.argv[1], sys.argv[3:])
context = init_distributed("cpu")
trainer = Trainer(config, context, show_progress=False)
trainer.fit()
step = trainer.step_fn
state = {**{"model." + k: v for k, v in step.model.state_dict().items()},
         **{"classifiers." + k: v for k, v in step.classifiers.state_dict().items()},
         **{"projector." + k: v for k, v in step.projector.state_dict().items()}}
torch.save({"state": state, "steps": trainer.total_steps, "world": context.world_size},
           os.path.join(sys.argv[2], f"rank{context.rank}.pt"))
shutdown(context)
"""


def _overrides(tmp_path: Path, v: Path, a: Path) -> list[str]:
    return [f"data.domain_v={v}", f"data.domain_a={a}", "model.width=0.125", "model.pretrained=false",
            "data.input_size=[32, 64]", "data.num_workers=0", "train.batch_size=4", "train.epochs=1",
            "mdat.do_base_channels=4", "cacl.n_anchor=8", "train.log_every=1", f"checkpoint.out_dir={tmp_path / 'run'}"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_two_process_ddp_keeps_ranks_identical(tmp_path: Path) -> None:
    v, a = write_layout(tmp_path / "v", 4, seed=1), write_layout(tmp_path / "a", 4, seed=2, prefix="mix")
    script = tmp_path / "rank_script.py"
    script.write_text(RANK_SCRIPT)
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(script), str(REPO / "config" / "train.yaml"),
               str(tmp_path), *_overrides(tmp_path, v, a), "train.batch_size=2"]
    result = subprocess.run(command, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # 4 samples per domain, 1 + 1 per rank and step, 2 ranks -> 2 steps per epoch.
    assert ranks[0]["world"] == 2 and ranks[0]["steps"] == 2
    first, second = ranks[0]["state"], ranks[1]["state"]
    assert first.keys() == second.keys()
    assert any(k.startswith("classifiers.") for k in first) and any(k.startswith("projector.") for k in first)
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, f"ranks diverged in {different[:5]}"
    # Rank 0 alone wrote the checkpoint (with the ranks' common weights) and the TensorBoard events.
    saved = load_training_checkpoint(latest_path(tmp_path / "run"))
    assert saved["training"]["world_size"] == 2 and saved["training"]["step"] == 2
    assert all(torch.equal(saved["model"][k], first[f"model.{k}"]) for k in saved["model"])
    assert len(list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_cli_trains_and_resumes(tmp_path: Path) -> None:
    v, a = write_layout(tmp_path / "v", 4, seed=1), write_layout(tmp_path / "a", 4, seed=2, prefix="mix")
    base = [sys.executable, "-m", "mgcda_core.train", "--config", str(REPO / "config" / "presets" / "mgcda.yaml"),
            "--no-progress"]
    sets = [arg for item in _overrides(tmp_path, v, a) + ["train.epochs=2"] for arg in ("--set", item)]
    first = subprocess.run([*base, *sets, "--set", "train.stop_at_step=2"], capture_output=True, text=True,
                           env=_env(), cwd=tmp_path, timeout=120)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "trained to step 2/4" in first.stdout
    resumed = subprocess.run([*base, *sets, "--resume"], capture_output=True, text=True, env=_env(), cwd=tmp_path,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "trained to step 4/4" in resumed.stdout
    assert load_training_checkpoint(latest_path(tmp_path / "run"))["training"]["step"] == 4
