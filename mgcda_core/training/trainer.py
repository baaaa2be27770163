"""The training loop: data, the MGCDA step, progress bar, TensorBoard scalars, checkpoints and resume.

Order of work: the config has been checked (keys, types, data folders) by the loader; the layouts are listed and
checked here before any network is built; only then does training start. A resumed run continues at the saved
step with the saved optimiser/scheduler/scaler/RNG states, and since data order and CACL draws are functions of
(seed, epoch, step), it reproduces an uninterrupted run exactly on CPU.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mgcda_core.config_loader import config_differences, to_dict
from mgcda_core.data.layout import LABEL_FOLDER, DomainBatchSampler, LayoutDataset, MultiDomainDataset
from mgcda_core.errors import ConfigError
from mgcda_core.losses.segmentation import enet_class_weights, label_folder_pixel_counts
from mgcda_core.training import run_checkpoints as ckpt
from mgcda_core.training.config import TrainConfig
from mgcda_core.training.distributed import DistContext, barrier, broadcast_object, init_distributed, shutdown
from mgcda_core.training.logging import ScalarLogger
from mgcda_core.training.step import TrainStep

# Config keys that may change between a run and its resumption (they do not affect the parameters).
RESUMABLE_CHANGES = ("train.stop_at_step", "train.log_every", "data.num_workers", "checkpoint.every",
                     "checkpoint.keep_numbered", "train.device")


@dataclass(frozen=True)
class TrainSummary:
    step: int  # completed updates
    total_steps: int
    losses: dict[str, float]  # of the last step
    checkpoint: str


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_resume_config(saved: dict[str, Any], current: dict[str, Any], path: str) -> None:
    """Refuse to resume with a config that changes the training itself (lists the differing keys)."""
    details = config_differences(saved, current, allowed=RESUMABLE_CHANGES)
    if details:
        raise ckpt.CheckpointError(f"cannot resume from {path}: the config differs in {details} "
                                   f"(only {', '.join(RESUMABLE_CHANGES)} may change)")


class Trainer:
    """Builds everything for ``config`` on this process (rank) and runs :meth:`fit`."""

    def __init__(self, config: TrainConfig, context: DistContext | None = None, resume: bool = False,
                 show_progress: bool = True, overwrite: bool = False) -> None:
        self.config = config
        self.context = context or init_distributed(config.train.device)
        self.show_progress = show_progress and self.context.is_main
        self.out_dir = config.checkpoint.out_dir
        if not resume:
            existing = ckpt.existing_checkpoints(self.out_dir)
            if existing and not overwrite:
                raise ckpt.CheckpointError(
                    f"{existing[0].parent} holds checkpoints of a run ({', '.join(p.name for p in existing[:3])}"
                    f"{', ...' if len(existing) > 3 else ''}): pass --resume to continue it or --overwrite to "
                    "start over and delete them")
            if existing and self.context.is_main:
                ckpt.remove_checkpoints(existing)
            barrier(self.context)
        data = config.data
        # Layout checks first: a broken dataset fails before any network is built.
        self.domains = [LayoutDataset(root, data.input_size, domain=d)
                        for root, d in zip(data.domain_roots, data.domain_ids)]
        self.dataset = MultiDomainDataset(self.domains)
        per_domain = config.train.batch_size // len(self.domains)
        self.sampler = DomainBatchSampler([len(d) for d in self.domains], per_domain, config.train.seed, data.hflip,
                                          rank=self.context.rank, world_size=self.context.world_size)
        self.total_steps = config.train.epochs * self.sampler.steps_per_epoch

        payload = ckpt.load_training_checkpoint(ckpt.latest_path(self.out_dir)) if resume else None
        if payload is not None:
            check_resume_config(payload[ckpt.CONFIG_KEY], to_dict(config), str(ckpt.latest_path(self.out_dir)))
            state = payload[ckpt.TRAINING_KEY]
            if state["world_size"] != self.context.world_size:
                raise ckpt.CheckpointError(f"cannot resume: the checkpoint was written by {state['world_size']} "
                                           f"process(es), this run has {self.context.world_size} "
                                           "(the data order depends on it)")

        seed_everything(config.train.seed)
        # The network before the label scan: a refused model setting fails in seconds, not after the scan.
        self.step_fn = TrainStep(config, self.context, self.total_steps, class_weights=None)
        multiple = self.step_fn.model.input_multiple
        if any(side % multiple for side in data.input_size):
            raise ConfigError(f"data.input_size: {list(data.input_size)} must be multiples of {multiple} for "
                              f"encoder {config.model.encoder} (its coarsest stride)")
        self.class_weights = (payload[ckpt.TRAINING_KEY]["class_weights"] if payload is not None
                              else self._class_weights())
        self.step_fn.set_class_weights(self.class_weights)
        self.step = 0
        if payload is not None:
            state = payload[ckpt.TRAINING_KEY]
            self.step_fn.load_state_dict(payload["model"], state)
            self.step = int(state["step"])
            # Training draws no global random numbers (data order and CACL draws are seeded per epoch/step);
            # the global states are restored for code that might (e.g. a user's encoder with dropout).
            ckpt.restore_rng_state(state["rng"])

    def _class_weights(self) -> torch.Tensor | None:
        mode = self.config.loss.class_weights_mode
        if mode == "none":
            return None
        if mode == "given":
            return torch.tensor(self.config.loss.class_weights, dtype=torch.float32)
        counts = None
        if self.context.is_main:  # one rank reads the label folders, the others receive the result
            counts = sum(label_folder_pixel_counts(root / LABEL_FOLDER, progress=self.show_progress)
                         for root in self.config.data.domain_roots)
        counts = broadcast_object(counts, self.context)
        return enet_class_weights(counts)

    def _loader(self, epoch: int = 0) -> DataLoader:
        workers = self.config.data.num_workers
        # Its own generator: an iterator otherwise draws its workers' base seed from the global torch RNG, so a
        # resumed run (one more iterator for the resumed epoch) would save another RNG state than an unbroken one.
        generator = torch.Generator().manual_seed(self.config.train.seed * 100_003 + epoch)
        return DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=workers, generator=generator,
                          pin_memory=self.context.device.type == "cuda", persistent_workers=False)

    def save(self) -> str:
        """Write latest.pt (and step_<N>.pt when configured) on rank 0; all ranks wait for it."""
        path = ckpt.latest_path(self.out_dir)
        if self.context.is_main:
            epoch = self.step // self.sampler.steps_per_epoch  # the epoch the next step belongs to
            state = {
                **self.step_fn.state_dict(),
                "step": self.step,
                "epoch": epoch,
                "tau": self.step_fn.tau(self.step) if len(self.step_fn.classifiers) else None,
                "total_steps": self.total_steps,
                "world_size": self.context.world_size,
                "class_weights": self.class_weights,
                "rng": ckpt.capture_rng_state(),
                # Data order is a pure function of these (see mgcda_core.data.layout); no sampler state needed.
                "data_order": {"seed": self.config.train.seed, "epoch": epoch,
                               "step_in_epoch": self.step - epoch * self.sampler.steps_per_epoch},
            }
            config = to_dict(self.config)
            ckpt.save_training_checkpoint(path, self.step_fn.model, state, config)
            if self.config.checkpoint.keep_numbered:
                numbered = ckpt.numbered_path(self.out_dir, self.step)
                ckpt.save_training_checkpoint(numbered, self.step_fn.model, state, config)
        barrier(self.context)
        return str(path)

    def fit(self) -> TrainSummary:
        cfg = self.config.train
        end = min(self.total_steps, cfg.stop_at_step or self.total_steps)
        logger = ScalarLogger(self.out_dir, enabled=self.context.is_main, start_step=self.step)
        progress = tqdm(total=end, initial=self.step, desc="train", unit="step", disable=not self.show_progress,
                        dynamic_ncols=True)
        spe = self.sampler.steps_per_epoch
        losses: dict[str, float] = {}
        path = str(ckpt.latest_path(self.out_dir))
        line_time, line_step = time.perf_counter(), self.step
        try:
            for epoch in range(self.step // spe, self.config.train.epochs):
                if self.step >= end:
                    break
                self.sampler.set_epoch(epoch, start_step=self.step - epoch * spe)
                for batch in self._loader(epoch):
                    result = self.step_fn(batch, self.step)
                    losses = result.losses
                    if self.step % cfg.log_every == 0 or self.step + 1 == end:
                        logger.log(self.step, {**{f"loss/{k}": v for k, v in losses.items()}, **result.scalars})
                    self.step += 1
                    progress.update(1)
                    progress.set_postfix({k: f"{v:.4g}" for k, v in losses.items()}, refresh=False)
                    at_end = self.step >= end
                    if self.context.is_main and not self.show_progress and (self.step % cfg.log_every == 0 or at_end):
                        # Without the bar (a background run's log file), one plain line per log_every steps.
                        now = time.perf_counter()
                        print(progress_line(self.step, end, (now - line_time) / (self.step - line_step), losses),
                              flush=True)
                        line_time, line_step = now, self.step
                    if at_end or self.step % self.config.checkpoint.every == 0:
                        path = self.save()
                    if at_end:
                        break
        finally:
            progress.close()
            logger.close()
        return TrainSummary(step=self.step, total_steps=self.total_steps, losses=losses, checkpoint=path)


def progress_line(step: int, end: int, seconds_per_step: float, losses: dict[str, float]) -> str:
    """One plain progress line: ``step 250/1670  4.12 s/step  total=1.2 ce=0.071``."""
    terms = " ".join(f"{name}={value:.4g}" for name, value in losses.items())
    return f"step {step}/{end}  {seconds_per_step:.2f} s/step  {terms}"


def train(config: TrainConfig, resume: bool = False, show_progress: bool = True,
          overwrite: bool = False) -> TrainSummary:
    """Run (or resume) training for ``config`` in this process, joining torchrun's process group if launched by it.

    Without ``resume``, an ``out_dir`` holding checkpoints is refused unless ``overwrite`` (which deletes them).
    """
    context = init_distributed(config.train.device)
    try:
        return Trainer(config, context, resume=resume, show_progress=show_progress, overwrite=overwrite).fit()
    finally:
        shutdown(context)
