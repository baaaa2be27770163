"""MGCDA trainer: learning, bit-exact kill-and-resume, atomic checkpoints, errors, TensorBoard scalars,
inference parameter count. Tiny networks (width 0.125) on 32x64 images."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_training_data import write_layout

from mgcda_core.config_loader import ConfigError
from mgcda_core.model.checkpoint import load_model
from mgcda_core.model.dissimilarity import DissimNetPrior
from mgcda_core.training.config import load_train_config
from mgcda_core.training.distributed import DistContext
from mgcda_core.training.run_checkpoints import CheckpointError, latest_path, load_training_checkpoint
from mgcda_core.training.step import NonFiniteLossError, TrainStep
from mgcda_core.training.trainer import Trainer
from mgcda_core.utils.flops import count_parameters

CONFIG = Path(__file__).resolve().parents[1] / "config" / "train.yaml"
CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture(scope="module")
def domains(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("layout")
    return write_layout(root / "v", 6, seed=1), write_layout(root / "a", 6, seed=2, prefix="mix")


def tiny_overrides(domains: tuple[Path, Path], out_dir: Path, *overrides: str) -> list[str]:
    """--set values that shrink train.yaml: width 0.125, 32x64, 2 + 2 images per step, 3 steps per epoch."""
    v, a = domains
    return [f"data.domain_v={v}", f"data.domain_a={a}", "model.width=0.125", "model.pretrained=false",
            "data.input_size=[32, 64]", "data.num_workers=0", "train.batch_size=4", "train.epochs=2",
            "mdat.do_base_channels=4", "cacl.n_anchor=8", "train.log_every=1", f"checkpoint.out_dir={out_dir}",
            *overrides]


def tiny_config(domains: tuple[Path, Path], out_dir: Path, *overrides: str):
    return load_train_config(CONFIG, tiny_overrides(domains, out_dir, *overrides))


def _all_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    step = trainer.step_fn
    tensors = {f"model.{k}": v for k, v in step.model.state_dict().items()}
    tensors.update({f"classifiers.{k}": v for k, v in step.classifiers.state_dict().items()})
    tensors.update({f"projector.{k}": v for k, v in step.projector.state_dict().items()})
    for group, optimizer in (("adam", step.optimizer), ("adam_cls", step.classifier_optimizer)):
        for index, state in optimizer.state_dict()["state"].items():
            tensors.update({f"{group}.{index}.{k}": v for k, v in state.items() if isinstance(v, torch.Tensor)})
    return tensors


def test_steps_reduce_loss_on_fixed_batch(domains: tuple[Path, Path], tmp_path: Path) -> None:
    config = tiny_config(domains, tmp_path, "optim.lr=1e-3", "train.epochs=20")
    trainer = Trainer(config, CPU, show_progress=False)
    trainer.sampler.set_epoch(0)
    batch = next(iter(trainer._loader()))
    ce = [trainer.step_fn(batch, step).losses["ce"] for step in range(12)]
    assert ce[-1] < 0.8 * ce[0], ce


def test_kill_and_resume_matches_uninterrupted_run(domains: tuple[Path, Path], tmp_path: Path) -> None:
    full = Trainer(tiny_config(domains, tmp_path / "full"), CPU, show_progress=False)
    assert full.total_steps == 6
    assert full.fit().step == 6

    # Stop mid-epoch 1 (step 4 of 6), as a killed run that checkpointed at step 4 would leave it.
    part = tiny_config(domains, tmp_path / "part", "train.stop_at_step=4")
    assert Trainer(part, CPU, show_progress=False).fit().step == 4
    # A write killed after the step-4 checkpoint leaves a stray temporary file beside latest.pt.
    stray = latest_path(tmp_path / "part").parent / ".latest.pt.k1lled.tmp"
    stray.write_bytes(b"PK\x03\x04 truncated zip")
    saved = load_training_checkpoint(latest_path(tmp_path / "part"))["training"]
    assert (saved["step"], saved["epoch"], saved["data_order"]["step_in_epoch"]) == (4, 1, 1)
    assert saved["tau"] == pytest.approx(1.0 - 0.5 * 4 / 6)

    resumed = Trainer(tiny_config(domains, tmp_path / "part"), CPU, resume=True, show_progress=False)
    assert resumed.step == 4
    assert resumed.fit().step == 6
    expected, got = _all_state(full), _all_state(resumed)
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, f"resumed run differs from the uninterrupted one in {different[:5]}"
    assert resumed.step_fn.scheduler.state_dict() == full.step_fn.scheduler.state_dict()
    rng = [load_training_checkpoint(latest_path(tmp_path / run))["training"]["rng"] for run in ("full", "part")]
    assert torch.equal(rng[0]["torch"], rng[1]["torch"])
    assert rng[0]["python"] == rng[1]["python"] and torch.equal(rng[0]["numpy"]["key"], rng[1]["numpy"]["key"])


# Runs training in a child process that SIGKILLs itself halfway through writing its ``kill_at``-th latest.pt.
KILLED_MID_CHECKPOINT = """
import contextlib, json, os, signal, sys
from pathlib import Path
import torch
import mgcda_core.utils.atomic as atomic
from mgcda_core.training.config import load_train_config
from mgcda_core.training.distributed import DistContext
from mgcda_core.training.trainer import Trainer

config_path, overrides, kill_at = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
original, writes = atomic.atomic_open, []

class HalfThenKilled:
    def __init__(self, handle):
        self.handle = handle
    def write(self, data):
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        os.fsync(self.handle.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

@contextlib.contextmanager
def killing_open(path, mode="wb"):
    with original(path, mode) as handle:
        if Path(path).name == "latest.pt":
            writes.append(path)
            if len(writes) == kill_at:
                yield HalfThenKilled(handle)
                return
        yield handle

atomic.atomic_open = killing_open
cpu = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
Trainer(load_train_config(config_path, overrides), cpu, show_progress=False).fit()
"""


def test_sigkill_mid_checkpoint_resumes_from_last_complete_one(domains: tuple[Path, Path], tmp_path: Path) -> None:
    """Fault test (docs/TRAINING.md, resume) with a real SIGKILL: the process dies halfway through writing the step-4 checkpoint;
    latest.pt still holds step 2, and resuming from it ends bit-identical to an uninterrupted run."""
    full = Trainer(tiny_config(domains, tmp_path / "full", "checkpoint.every=2"), CPU, show_progress=False)
    assert full.fit().step == 6

    overrides = tiny_overrides(domains, tmp_path / "killed", "checkpoint.every=2")
    child = subprocess.run([sys.executable, "-c", KILLED_MID_CHECKPOINT, str(CONFIG), json.dumps(overrides), "2"],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    latest = latest_path(tmp_path / "killed")
    strays = list(latest.parent.glob(".latest.pt.*.tmp"))
    assert len(strays) == 1 and strays[0].stat().st_size > 0  # the half-written step-4 file, never renamed
    assert load_training_checkpoint(latest)["training"]["step"] == 2

    resumed = Trainer(tiny_config(domains, tmp_path / "killed", "checkpoint.every=2"), CPU, resume=True,
                      show_progress=False)
    assert resumed.step == 2
    assert resumed.fit().step == 6
    expected, got = _all_state(full), _all_state(resumed)
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, f"resumed run differs from the uninterrupted one in {different[:5]}"


def test_resume_refuses_changed_config_and_missing_checkpoint(domains: tuple[Path, Path], tmp_path: Path) -> None:
    Trainer(tiny_config(domains, tmp_path, "train.stop_at_step=1"), CPU, show_progress=False).fit()
    with pytest.raises(CheckpointError, match=r"optim\.lr: 0\.0001 -> 0\.0002"):
        Trainer(tiny_config(domains, tmp_path, "optim.lr=2e-4"), CPU, resume=True, show_progress=False)
    with pytest.raises(CheckpointError, match="no checkpoint to resume from: .*other.*latest.pt"):
        Trainer(tiny_config(domains, tmp_path / "other"), CPU, resume=True, show_progress=False)


def test_a_run_is_replaced_only_with_overwrite(domains: tuple[Path, Path], tmp_path: Path) -> None:
    Trainer(tiny_config(domains, tmp_path, "train.stop_at_step=2", "checkpoint.keep_numbered=true"), CPU,
            show_progress=False).fit()
    shorter = tiny_config(domains, tmp_path, "train.stop_at_step=1")
    with pytest.raises(CheckpointError, match="holds checkpoints of a run \\(latest.pt, step_00000002.pt\\): pass "
                                              "--resume to continue it or --overwrite"):
        Trainer(shorter, CPU, show_progress=False)
    assert load_training_checkpoint(latest_path(tmp_path))["training"]["step"] == 2
    Trainer(shorter, CPU, show_progress=False, overwrite=True).fit()
    assert load_training_checkpoint(latest_path(tmp_path))["training"]["step"] == 1
    assert sorted(p.name for p in latest_path(tmp_path).parent.iterdir()) == ["latest.pt"]


def test_non_finite_loss_names_step_terms_and_files(domains: tuple[Path, Path], tmp_path: Path) -> None:
    # An absurd learning rate makes the weights overflow after the first update.
    trainer = Trainer(tiny_config(domains, tmp_path, "optim.lr=1e38"), CPU, show_progress=False)
    trainer.sampler.set_epoch(0)
    second = list(trainer.sampler)[1]
    names = [("V:" if d == 0 else "A:") + trainer.domains[d].names[i] for d, i, _ in second]
    with pytest.raises(NonFiniteLossError) as error:
        trainer.fit()
    message = str(error.value)
    assert "non-finite loss at step 1" in message
    for term in ("total=", "ce=", "mda_f=", "mda_o=", "cac=", "cls_f=", "cls_o="):
        assert term in message
    assert "nan" in message or "inf" in message
    assert f"batch files: {', '.join(names)}" in message


def test_tensorboard_logs_tau_lr_losses_and_cacl_counts(domains: tuple[Path, Path], tmp_path: Path) -> None:
    config = tiny_config(domains, tmp_path)
    Trainer(config, CPU, show_progress=False).fit()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected_tags = {"loss/total", "loss/ce", "loss/mda_f", "loss/mda_o", "loss/cac", "loss/cls_f", "loss/cls_o",
                     "mdat/tau", "mdat/acc_f_v", "mdat/acc_f_a", "mdat/acc_o_v", "mdat/acc_o_a",
                     "lr/network", "lr/classifiers", "cacl/V/anchors", "cacl/A/anchors", "cacl/V/negatives",
                     "cacl/A/negatives", "cacl/V/positives", "cacl/A/positives"}
    assert expected_tags <= tags, expected_tags - tags
    total = 6
    tau = {e.step: e.value for e in events.Scalars("mdat/tau")}
    assert sorted(tau) == list(range(total))
    for i, value in tau.items():
        assert value == pytest.approx(1.0 - 0.5 * i / total, abs=1e-6)  # eq. 1 with tau_b = 1
    for i, value in ((e.step, e.value) for e in events.Scalars("lr/network")):
        assert value == pytest.approx(1e-4 * (1 - i / total) ** 0.99, rel=1e-5)  # poly 0.99
    # Anchors drawn per domain never exceed n_anchor (8) per image (2 images per domain and step).
    assert all(0 < e.value <= 16 for e in events.Scalars("cacl/V/anchors"))
    # The fill ratio is the drawn count over the requested n_anchor x images of that domain.
    for domain in ("V", "A"):
        drawn = {e.step: e.value for e in events.Scalars(f"cacl/{domain}/anchors")}
        fill = {e.step: e.value for e in events.Scalars(f"cacl/{domain}/anchor_fill")}
        assert sorted(fill) == sorted(drawn)
        for step, value in fill.items():
            assert value == pytest.approx(drawn[step] / 16, abs=1e-6)


def test_inference_parameters_identical_with_and_without_mdat_cacl(domains: tuple[Path, Path], tmp_path: Path) -> None:
    full = tiny_config(domains, tmp_path / "full", "train.stop_at_step=1")
    base = tiny_config(domains, tmp_path / "base", "train.stop_at_step=1", "mdat.oda=false", "mdat.fda=false",
                       "cacl.mode=none")
    Trainer(full, CPU, show_progress=False).fit()
    Trainer(base, CPU, show_progress=False).fit()
    reference = count_parameters(DissimNetPrior("vgg16", width=0.125))
    full_model, base_model = load_model(latest_path(tmp_path / "full")), load_model(latest_path(tmp_path / "base"))
    assert count_parameters(full_model) == count_parameters(base_model) == reference
    # The training-only modules exist, outside the network: the checkpoint holds them separately.
    saved = load_training_checkpoint(latest_path(tmp_path / "full"))["training"]
    assert sum(v.numel() for v in saved["classifiers"].values()) > 0
    assert sum(v.numel() for v in saved["projector"].values()) > 0
    assert "classifiers" not in load_training_checkpoint(latest_path(tmp_path / "base"))["training"]


def test_one_domain_baseline_takes_whole_batch_from_it(domains: tuple[Path, Path], tmp_path: Path) -> None:
    config = tiny_config(domains, tmp_path, "data.sources=a", "mdat.oda=false", "mdat.fda=false", "cacl.mode=none")
    trainer = Trainer(config, CPU, show_progress=False)
    trainer.sampler.set_epoch(0)
    batch = next(iter(trainer._loader()))
    assert batch["domain"].tolist() == [1, 1, 1, 1]
    assert all(name.startswith("mix") for name in batch["name"])
    with pytest.raises(ConfigError, match="one-domain baseline"):
        tiny_config(domains, tmp_path, "data.sources=v")


def test_enet_class_weights_from_label_folders(domains: tuple[Path, Path], tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    counts = np.zeros(2)
    for root in domains:
        for path in (root / "labels").iterdir():
            label = np.asarray(Image.open(path))
            counts += [(label == 0).sum(), (label == 1).sum()]
    expected = 1.0 / np.log(1.02 + counts / counts.sum())
    trainer = Trainer(tiny_config(domains, tmp_path), CPU, show_progress=False)
    np.testing.assert_allclose(trainer.class_weights.numpy(), expected, rtol=1e-6)
    given = Trainer(tiny_config(domains, tmp_path, "loss.class_weights_mode=given", "loss.class_weights=[1, 9]"),
                    CPU, show_progress=False)
    assert given.class_weights.tolist() == [1.0, 9.0]


def test_model_and_amp_settings_refused_as_config_errors(domains: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train.amp is true but the device is cpu"):
        TrainStep(tiny_config(domains, tmp_path, "train.amp=true"), CPU, total_steps=1, class_weights=None)
    with pytest.raises(ConfigError, match="model: .*resnet99"):
        TrainStep(tiny_config(domains, tmp_path, "model.encoder=resnet99"), CPU, total_steps=1, class_weights=None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mixed precision trains on CUDA only; no CUDA device here")
def test_mixed_precision_steps_on_cuda_reduce_loss(domains: tuple[Path, Path], tmp_path: Path) -> None:
    config = tiny_config(domains, tmp_path, "optim.lr=1e-3", "train.epochs=20", "train.device=cuda", "train.amp=true")
    cuda = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cuda"))
    trainer = Trainer(config, cuda, show_progress=False)
    assert trainer.step_fn.amp and trainer.step_fn.scaler.is_enabled()
    trainer.sampler.set_epoch(0)
    batch = next(iter(trainer._loader()))
    results = [trainer.step_fn(batch, step) for step in range(12)]
    assert all(all(torch.isfinite(torch.tensor(list(r.losses.values())))) for r in results)
    assert results[-1].losses["ce"] < 0.8 * results[0].losses["ce"]
    assert all(p.dtype == torch.float32 for p in trainer.step_fn.model.parameters())  # fp16 only inside autocast


def test_without_the_bar_a_plain_line_every_log_every_steps(domains: tuple[Path, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny_config(domains, tmp_path, "train.log_every=2", "train.stop_at_step=5")
    Trainer(config, CPU, show_progress=False).fit()
    lines = capsys.readouterr().out.splitlines()
    steps = [line.split()[1] for line in lines if line.startswith("step ")]
    assert steps == ["2/5", "4/5", "5/5"], lines
    assert all(re.search(r"  \d+\.\d\d s/step  total=\S+ ce=\S+", line) for line in lines if line.startswith("step "))
