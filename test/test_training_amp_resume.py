"""Resuming across devices with ``train.amp: auto``: a CPU run saves a disabled GradScaler's state ``{}``, which an
enabled scaler (the same run resumed on CUDA) must not be asked to load; a saved enabled state is restored."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from test_training_data import write_layout
from test_training_trainer import CPU, tiny_config

from mgcda_core.training.distributed import DistContext
from mgcda_core.training.step import TrainStep
from mgcda_core.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture(scope="module")
def domains(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("layout")
    return write_layout(root / "v", 6, seed=1), write_layout(root / "a", 6, seed=2, prefix="mix")


def test_scaler_state_is_loaded_only_when_one_was_saved(domains: tuple[Path, Path], tmp_path: Path) -> None:
    step = TrainStep(tiny_config(domains, tmp_path), CPU, total_steps=2, class_weights=None)
    saved_on_cpu = step.state_dict()
    assert saved_on_cpu["scaler"] == {}  # amp auto on CPU: the scaler is disabled
    # Resumed where mixed precision is on: the enabled scaler starts from its initial scale instead of failing.
    step.scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0**16)
    step.load_state_dict(step.model.state_dict(), saved_on_cpu)
    assert step.scaler.is_enabled() and step.scaler.get_scale() == 2.0**16
    saved_with_amp = {**saved_on_cpu, "scaler": {**step.scaler.state_dict(), "scale": 1024.0}}
    step.load_state_dict(step.model.state_dict(), saved_with_amp)
    assert step.scaler.get_scale() == 1024.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="resuming on CUDA needs a CUDA device; none here")
def test_cpu_checkpoint_resumes_on_cuda_with_mixed_precision(domains: tuple[Path, Path], tmp_path: Path) -> None:
    assert Trainer(tiny_config(domains, tmp_path, "train.stop_at_step=2"), CPU, show_progress=False).fit().step == 2
    cuda = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cuda"))
    resumed = Trainer(tiny_config(domains, tmp_path, "train.device=cuda"), cuda, resume=True, show_progress=False)
    assert resumed.step == 2 and resumed.step_fn.scaler.is_enabled()
    summary = resumed.fit()
    assert summary.step == 6 and all(torch.isfinite(torch.tensor(list(summary.losses.values()))))


def test_a_step_the_scaler_skips_still_advances_the_schedule_without_a_warning(domains: tuple[Path, Path],
                                                                               tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(domains, tmp_path, "optim.lr=1e-3"), CPU, show_progress=False)
    trainer.sampler.set_epoch(0)
    batch = next(iter(trainer._loader()))
    step = trainer.step_fn
    # An enabled scaler at a scale that overflows every gradient: the optimiser step is skipped, as on the first
    # mixed-precision steps on CUDA.
    step.scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=3.0e38)
    before = {k: v.clone() for k, v in step.model.state_dict().items()}
    first_lr = step.optimizer.param_groups[0]["lr"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyTorch's "lr_scheduler.step() before optimizer.step()" would raise here
        step(batch, 0)
    assert step.scaler.get_scale() < 3.0e38  # the overflow was seen and the step skipped
    assert all(torch.equal(before[k], v) for k, v in step.model.state_dict().items())
    assert step.optimizer.param_groups[0]["lr"] < first_lr  # the schedule moved on by one step
