"""Typed training configuration (``config/train.yaml``), loaded and checked by ``mgcda_core.config_loader``.

Defaults are the paper's (MGCDA section 4.2): λ_f = 0.04, λ_o = 0.06, λ_c = 0.1, Adam lr 1e-4 with polynomial
decay (power 0.99) over all iterations, 50 epochs, 4 + 4 images per step, CACL with 50 anchors and temperature
0.1 (the paper gives none; our choice). Where the paper is silent Synboost's code decides (Adam betas
(0.5, 0.999), ENet class weights, nearest resizing to 256x512).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mgcda_core.config_loader import ConfigError, load_config
from mgcda_core.constants import DEFAULT_INPUT_SIZE, MAX_MODEL_WIDTH

Sources = Literal["both", "v", "a"]


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _non_negative(name: str, value: float) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


@dataclass(frozen=True)
class ModelConfig:
    """The dissimilarity network (``DissimNetPrior`` constructor arguments)."""

    encoder: str = "vgg16"
    width: float = 1.0
    pretrained: bool = True  # the encoder's default ImageNet weights (EncoderWeights.default_for); unloadable: error
    use_prior: bool = True
    use_correlation: bool = True
    decoder_width: float | None = None  # layers outside the image encoder; null: same as width
    first_level: int = 0                # finest encoder levels the decoder skips (real-time: 1)
    freeze_encoder: bool = False        # keep the ImageNet encoder fixed, shared with the perceptual difference

    def __post_init__(self) -> None:
        for name in ("width", "decoder_width"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= MAX_MODEL_WIDTH:
                raise ValueError(f"{name} must lie in (0, {MAX_MODEL_WIDTH:g}], got {value}")
        if self.freeze_encoder and not self.pretrained:
            raise ValueError("freeze_encoder: true needs pretrained: true (a frozen random encoder learns nothing)")


@dataclass(frozen=True)
class DataConfig:
    """Training layout roots (docs/DATA.md) and batching. Relative paths are relative to the working directory."""

    domain_v: Path = Path("data/train/voidclass")
    domain_a: Path = Path("data/train/anomalymix")
    sources: Sources = "both"  # both: V + A (half of each batch from each); v / a: one-domain baselines
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE  # (height, width), nearest resize as Synboost
    hflip: bool = True
    num_workers: int = 2

    def __post_init__(self) -> None:
        if min(self.input_size) < 8:
            raise ValueError(f"input_size must be at least 8x8 (the encoder downsamples by 8), got {self.input_size}")
        _non_negative("num_workers", self.num_workers)

    @property
    def domain_roots(self) -> tuple[Path, ...]:
        """The roots this run reads, in domain order (V = 0, A = 1)."""
        return {"both": (self.domain_v, self.domain_a), "v": (self.domain_v,), "a": (self.domain_a,)}[self.sources]

    @property
    def domain_ids(self) -> tuple[int, ...]:
        return {"both": (0, 1), "v": (0,), "a": (1,)}[self.sources]


@dataclass(frozen=True)
class LossConfig:
    """L = L_CE + λ_f·L_MDA^Df + λ_o·L_MDA^Do + λ_c·L_CAC."""

    lambda_f: float = 0.04
    lambda_o: float = 0.06
    lambda_c: float = 0.1
    # enet: 1 / ln(1.02 + p) from the label folders; given: ``class_weights``; none: unweighted CE.
    class_weights_mode: Literal["enet", "given", "none"] = "enet"
    class_weights: tuple[float, float] | None = None  # (normal, anomaly), only with mode "given"

    def __post_init__(self) -> None:
        for name in ("lambda_f", "lambda_o", "lambda_c"):
            _non_negative(name, getattr(self, name))
        if (self.class_weights_mode == "given") != (self.class_weights is not None):
            raise ValueError("class_weights (normal, anomaly) must be given exactly when class_weights_mode is 'given'")
        if self.class_weights is not None and min(self.class_weights) <= 0:
            raise ValueError(f"class_weights must be > 0, got {self.class_weights}")


@dataclass(frozen=True)
class MdatConfig:
    """Multi-source domain adversarial training: output (ODA, D_o) and feature (FDA, D_f) classifiers."""

    oda: bool = True
    fda: bool = True
    label_smoothing: bool = True  # dynamic τ of eq. 1; off keeps τ = tau_b
    tau_b: float = 1.0
    do_base_channels: int = 32  # D_o widths base, 2·base, 4·base, 8·base (paper: 32)
    do_stride: int = 1  # 1: per-pixel D_o (the paper's); 2: first four D_o convs strided, ~1/100 of its cost

    def __post_init__(self) -> None:
        if not 0.5 <= self.tau_b <= 1.0:
            raise ValueError(f"tau_b must lie in [0.5, 1], got {self.tau_b}")
        _positive("do_base_channels", self.do_base_channels)
        if self.do_stride not in (1, 2):
            raise ValueError(f"do_stride must be 1 (per-pixel map, the paper's) or 2, got {self.do_stride}")

    @property
    def enabled(self) -> bool:
        return self.oda or self.fda


@dataclass(frozen=True)
class CaclConfig:
    """Cross-domain anomaly-aware contrastive learning (eq. 3); mode none switches it off."""

    mode: Literal["none", "pcl", "cpcl", "cacl"] = "cacl"
    n_anchor: int = 50
    temperature: float = 0.1
    embed_dim: int = 128

    def __post_init__(self) -> None:
        _positive("n_anchor", self.n_anchor)
        _positive("temperature", self.temperature)
        _positive("embed_dim", self.embed_dim)

    @property
    def enabled(self) -> bool:
        return self.mode != "none"


@dataclass(frozen=True)
class OptimConfig:
    """Adam with polynomial decay lr·(1 - i/max_i)^power over all iterations, for the network and the classifiers."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)  # Synboost's; MGCDA does not state them
    weight_decay: float = 0.0
    poly_power: float = 0.99
    classifier_lr: float = 1e-4
    classifier_betas: tuple[float, float] = (0.9, 0.99)  # AdvEnt's discriminator setting

    def __post_init__(self) -> None:
        _positive("lr", self.lr)
        _positive("classifier_lr", self.classifier_lr)
        _non_negative("weight_decay", self.weight_decay)
        _non_negative("poly_power", self.poly_power)
        for name in ("betas", "classifier_betas"):
            if not all(0.0 <= b < 1.0 for b in getattr(self, name)):
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")


@dataclass(frozen=True)
class TrainLoopConfig:
    """Length of the run and execution settings."""

    epochs: int = 50
    batch_size: int = 8  # per process and step, split evenly over the domains used (4 + 4)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool | Literal["auto"] = "auto"  # mixed precision (CUDA only): true, false, or auto = on with CUDA
    stop_at_step: int | None = None  # stop early (checkpointing) at this step; the LR/τ schedule still spans all epochs
    log_every: int = 10  # TensorBoard scalar interval in steps

    def __post_init__(self) -> None:
        _positive("epochs", self.epochs)
        _positive("batch_size", self.batch_size)
        _positive("log_every", self.log_every)
        _non_negative("seed", self.seed)  # numpy's seed sequences refuse negative entries
        if self.stop_at_step is not None:
            _positive("stop_at_step", self.stop_at_step)


@dataclass(frozen=True)
class CheckpointConfig:
    """Where and how often training state is saved (``<out_dir>/checkpoints/latest.pt``)."""

    out_dir: Path = Path("runs/mgcda")
    every: int = 1000  # steps between checkpoints; one is always written at the end
    keep_numbered: bool = False  # also keep step_<N>.pt for every checkpoint

    def __post_init__(self) -> None:
        _positive("every", self.every)


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    mdat: MdatConfig = field(default_factory=MdatConfig)
    cacl: CaclConfig = field(default_factory=CaclConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def __post_init__(self) -> None:
        domains = len(self.data.domain_ids)
        if self.train.batch_size % domains:
            raise ValueError(f"train.batch_size {self.train.batch_size} must split evenly over the {domains} domains "
                             f"of data.sources={self.data.sources!r}")
        if domains == 1 and (self.mdat.enabled or self.cacl.enabled):
            raise ValueError(f"data.sources={self.data.sources!r} is a one-domain baseline: MDAT (mdat.oda, mdat.fda) "
                             "and CACL (cacl.mode) need both domains; switch them off or use sources 'both'")


def check_data_folders(config: TrainConfig) -> None:
    """Refuse a missing domain root (naming the key and the path) before anything else is built."""
    keys = {"both": ("domain_v", "domain_a"), "v": ("domain_v",), "a": ("domain_a",)}[config.data.sources]
    for key in keys:
        root = getattr(config.data, key)
        if not root.is_dir():
            raise ConfigError(f"data.{key}: folder {root} does not exist (expected a training layout root with "
                              f"original/, labels/, ...; build one with python -m mgcda_core.prepare)")


def load_train_config(path: str | os.PathLike[str], overrides: Sequence[str] = (),
                      check_folders: bool = True) -> TrainConfig:
    """Load ``path`` with ``--set`` overrides; with ``check_folders`` also require the data roots to exist."""
    config = load_config(TrainConfig, path, overrides)
    if check_folders:
        check_data_folders(config)
    return config
