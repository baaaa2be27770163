"""Training step time: baseline vs +MDAT vs full MGCDA (MDAT + CACL), measured side by side in one run; also full
MGCDA with the opt-in strided D_o (``mdat.do_stride: 2``).

Each variant is the real ``TrainStep`` (forward, both backward passes, both optimiser steps) on one fixed
in-memory batch of 4 V + 4 A images with anomaly rectangles; warm-up steps, then the median of N steps. Rows
give ratios to the baseline (README's Benchmarks bar: full ≤ 1.5x with the paper's D_o) and the CACL share of the full step (bar ≤ 10%),
measured two ways: CACL's own work timed alone (sampling + projector + loss, forward and backward), and the
difference full − MDAT.

Setting: the paper's network (VGG16, width 1, D_o base 32) at 64x128 on a CPU (a CPU step at 256x512 takes
minutes; every module is fully convolutional, so the ratios hardly depend on the size) and at the paper's training
size 256x512 on CUDA; ``quick`` uses width 0.25 with D_o base 8 at 64x128 (the same scaling). Random
initialisation (nothing downloads).
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from mgcda_core.constants import NUM_CLASSES
from mgcda_core.losses.cacl import contrastive_loss, gather_sampled, sample_pixels
from mgcda_core.model.projector import ContrastProjector
from mgcda_core.training.config import CaclConfig, DataConfig, MdatConfig, ModelConfig, TrainConfig, TrainLoopConfig
from mgcda_core.training.distributed import DistContext, resolve_device
from mgcda_core.training.step import TrainStep
from mgcda_core.utils.flops import call_flops

PER_DOMAIN = 4
CACL_ALONE = "CACL sampling+loss alone"
FULL = "MGCDA (MDAT+CACL)"
FULL_STEP_BAR = 1.5  # full MGCDA step with the paper's per-pixel D_o, as a multiple of the baseline step
VARIANTS = {
    "baseline": (MdatConfig(oda=False, fda=False), CaclConfig(mode="none")),
    "+MDAT": (MdatConfig(), CaclConfig(mode="none")),
    FULL: (MdatConfig(), CaclConfig(mode="cacl")),
    "MGCDA, D_o stride 2 (opt-in)": (MdatConfig(do_stride=2), CaclConfig(mode="cacl")),
}


def make_batch(size: tuple[int, int], per_domain: int = PER_DOMAIN, seed: int = 0) -> dict:
    """A fixed random batch: per_domain V then per_domain A images, each with an anomaly rectangle."""
    generator = torch.Generator().manual_seed(seed)
    count = 2 * per_domain
    height, width = size
    label = torch.zeros(count, height, width, dtype=torch.int64)
    label[:, height // 4: height // 2, width // 4: width // 2] = 1
    label[:, -2:] = 255
    semantic = torch.randint(0, NUM_CLASSES, (count, height, width), generator=generator)
    return {
        "image": torch.randn(count, 3, height, width, generator=generator),
        "synthesis": torch.randn(count, 3, height, width, generator=generator),
        "semantic": torch.nn.functional.one_hot(semantic, NUM_CLASSES).permute(0, 3, 1, 2).float(),
        "prior": torch.rand(count, 3, height, width, generator=generator),
        "label": label,
        "domain": torch.tensor([0] * per_domain + [1] * per_domain),
        "name": [f"bench_{i}.png" for i in range(count)],
    }


def interleaved_medians(fns: dict[str, Callable[[], object]], warmup: int, repeats: int,
                        device: torch.device) -> dict[str, float]:
    """Median seconds per function, timing them round-robin so that load changes on a shared machine hit all alike."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for round_index in range(warmup + repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if round_index >= warmup:
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def _config(width: float, size: tuple[int, int], do_base: int, mdat: MdatConfig, cacl: CaclConfig) -> TrainConfig:
    return TrainConfig(model=ModelConfig(width=width, pretrained=False),
                       data=DataConfig(input_size=size),
                       mdat=MdatConfig(oda=mdat.oda, fda=mdat.fda, do_base_channels=do_base, do_stride=mdat.do_stride),
                       cacl=cacl,
                       train=TrainLoopConfig(batch_size=2 * PER_DOMAIN, device="auto"))


def run(quick: bool) -> list[dict]:
    device = resolve_device("auto")
    if quick:
        width, size, do_base = 0.25, (64, 128), 8
    else:
        width, size, do_base = 1.0, ((256, 512) if device.type == "cuda" else (64, 128)), 32
    warmup, repeats = (1, 2) if quick else ((3, 10) if device.type == "cuda" else (1, 3))
    context = DistContext(rank=0, world_size=1, local_rank=0, device=device)
    batch = make_batch(size)
    setting = f"vgg16 w{width} {size[0]}x{size[1]} batch {PER_DOMAIN}+{PER_DOMAIN} {device.type}"
    total_steps = 10_000  # only fixes τ and the LR schedule; the timed steps stay at its start

    steps: dict[str, TrainStep] = {}
    for name, (mdat, cacl) in VARIANTS.items():
        torch.manual_seed(0)
        steps[name] = TrainStep(_config(width, size, do_base, mdat, cacl), context, total_steps, class_weights=None)
    full_step = steps[FULL]
    assert full_step.projector is not None
    projector: ContrastProjector = full_step.projector
    label = batch["label"].to(device)
    features = torch.randn(label.shape[0], full_step.model.decoder_channels, *size, device=device, requires_grad=True)
    prediction = (torch.rand(label.shape, device=device) < 0.3).long()
    domain = batch["domain"].to(device)

    def cacl_only() -> None:
        # CACL's own work alone on decoder-shaped features, as the training step does it: sampling, the sampled
        # pixels gathered, projector, eq. 3, backward.
        sample = sample_pixels(label, prediction, domain, mode="cacl", n_anchor=50,
                               generator=torch.Generator(device=device).manual_seed(0))
        sampled, compact = gather_sampled(features, sample)
        contrastive_loss(projector(sampled), compact, 0.1).backward()

    fns: dict[str, Callable[[], object]] = {name: functools.partial(s, batch, 0) for name, s in steps.items()}
    flops = {name: call_flops(fn) for name, fn in fns.items()}
    fns[CACL_ALONE] = cacl_only
    flops[CACL_ALONE] = call_flops(cacl_only)
    times = interleaved_medians(fns, warmup, repeats, device)

    base, full, mdat_only = times["baseline"], times[FULL], times["+MDAT"]
    rows: list[dict[str, Any]] = [{"setting": setting, "variant": name, "step_ms": 1000 * times[name], "x_baseline": times[name] / base,
             "GFLOP": flops[name] / 1e9, "x_baseline_flops": flops[name] / flops["baseline"]} for name in steps]
    for row in rows:
        if row["variant"] == FULL:
            row["bar"] = f"<= {FULL_STEP_BAR}x " + ("ok" if row["x_baseline"] <= FULL_STEP_BAR else "MISSED")
    share = times[CACL_ALONE] / full
    rows.append({"setting": setting, "variant": CACL_ALONE, "step_ms": 1000 * times[CACL_ALONE],
                 "GFLOP": flops[CACL_ALONE] / 1e9, "share_of_full_step": share,
                 "bar": "<= 10% " + ("ok" if share <= 0.10 else "MISSED")})
    rows.append({"setting": setting, "variant": "CACL as full - MDAT", "step_ms": 1000 * (full - mdat_only),
                 "share_of_full_step": (full - mdat_only) / full})
    return rows
