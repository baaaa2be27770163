"""One MGCDA update (MGCDA section 3): the modules, optimisers and the alternating step, without any data loading.

L_total = L_CE + λ_f·L_MDA^Df + λ_o·L_MDA^Do + λ_c·L_CAC. Per step:
(a) network step: the dissimilarity network (and the CACL projector) minimise L_total, the adversarial terms
    using the crossed labels of eq. 2 through the domain classifiers, whose weights this step leaves alone;
(b) classifier step: D_f and D_o minimise their uncrossed least-squares loss; no gradient reaches the network.
Both steps share one forward pass (the classifiers' outputs are the same numbers for both) and each backward
is restricted to its own parameters, as if (a) froze the classifiers and (b) detached their inputs.
τ follows eq. 1 per step. Both parameter groups use Adam with polynomial decay over all iterations. Under
DDP the network is wrapped in DistributedDataParallel; the projector's and classifiers' gradients are
all-reduced by hand (they sit outside the wrapped network so that inference has exactly the baseline's
parameters). Mixed precision (autocast fp16 + one GradScaler for both optimisers) on CUDA only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from mgcda_core.config_loader import ConfigError
from mgcda_core.errors import WeightsUnavailableError
from mgcda_core.losses.cacl import DOMAIN_NAMES, contrastive_loss, gather_sampled, sample_pixels
from mgcda_core.losses.mdat import classifier_accuracy, classifier_loss, generator_adversarial_loss, tau_at
from mgcda_core.losses.segmentation import weighted_cross_entropy
from mgcda_core.model.dissimilarity import DissimNetPrior
from mgcda_core.model.domain_classifiers import FeatureDomainClassifier, OutputDomainClassifier
from mgcda_core.model.encoder_weights import EncoderWeights
from mgcda_core.model.encoders import ENCODERS
from mgcda_core.model.projector import ContrastProjector
from mgcda_core.training.config import ModelConfig, TrainConfig
from mgcda_core.training.diagnostics import AnchorShortfallMonitor
from mgcda_core.training.distributed import DistContext, all_reduce_gradients, all_reduce_mean

INPUT_KEYS = ("image", "synthesis", "semantic", "prior")


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; the message names the step, every term and the batch's files."""


@dataclass
class StepResult:
    """Scalars of one step: loss terms (unweighted, averaged over ranks; ``total`` has the λs), τ, accuracies,
    learning rates, CACL counts."""

    losses: dict[str, float]
    scalars: dict[str, float] = field(default_factory=dict)


def build_model(config: TrainConfig) -> DissimNetPrior:
    """The dissimilarity network of ``config.model``; a refused setting is reported as a config error."""
    m = config.model
    try:
        return DissimNetPrior(encoder=m.encoder, width=m.width, weights=encoder_weights(config.model),
                              use_prior=m.use_prior, use_correlation=m.use_correlation,
                              decoder_width=m.decoder_width, first_level=m.first_level,
                              freeze_encoder=m.freeze_encoder)
    except ValueError as error:  # unknown encoder, width too small
        raise ConfigError(f"model: {error}") from error
    except WeightsUnavailableError as error:  # the named weights could not be loaded
        raise ConfigError(f"model.pretrained: {error}") from error


def encoder_weights(model: ModelConfig) -> EncoderWeights | None:
    """The named weights ``model.pretrained: true`` selects: the encoder's default ImageNet entry
    (``EncoderWeights.default_for``); ``None`` (random initialisation) when false or for an encoder the network
    will refuse by name."""
    if not model.pretrained or model.encoder not in ENCODERS:
        return None
    return EncoderWeights.default_for(model.encoder)


def use_amp(config: TrainConfig, device: torch.device) -> bool:
    """Mixed precision is CUDA only: ``true`` without CUDA is refused, ``auto`` follows the device."""
    if config.train.amp is True and device.type != "cuda":
        raise ConfigError(f"train.amp is true but the device is {device}; mixed precision runs on CUDA only "
                         "(use auto or false)")
    return config.train.amp is not False and device.type == "cuda"


def _poly(optimizer: torch.optim.Optimizer, total_steps: int, power: float) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=total_steps, power=power)


class TrainStep:
    """Modules, optimisers, schedulers and scaler of a run, and ``__call__(batch, step)`` for one update."""

    def __init__(self, config: TrainConfig, context: DistContext, total_steps: int,
                 class_weights: Tensor | None) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.config = config
        self.context = context
        self.total_steps = total_steps
        device = context.device
        self.amp = use_amp(config, device)
        self.set_class_weights(class_weights)

        self.model = build_model(config).to(device)
        self.feature_classifier = (FeatureDomainClassifier(self.model.fused_channels[-1]).to(device)
                                   if config.mdat.fda else None)
        self.output_classifier = (OutputDomainClassifier(1, config.mdat.do_base_channels,
                                                         config.mdat.do_stride).to(device)
                                  if config.mdat.oda else None)
        self.projector = (ContrastProjector(self.model.decoder_channels, config.cacl.embed_dim).to(device)
                          if config.cacl.enabled else None)
        # Diagnostics: how full the anchor/positive sets are, with a warning when a domain cannot fill them.
        self.anchor_monitor = (AnchorShortfallMonitor(config.cacl.n_anchor)
                               if self.projector is not None and context.is_main else None)
        present = [c for c in (self.feature_classifier, self.output_classifier) if c is not None]
        self.classifiers = nn.ModuleList(present)
        if context.distributed:
            # Ranks build identical modules from the same seed; broadcasting makes that a guarantee.
            for module in (self.classifiers, self.projector):
                if module is not None:
                    for tensor in module.state_dict().values():
                        torch.distributed.broadcast(tensor, src=0)
            ids = [device.index] if device.type == "cuda" else None
            self.network: nn.Module = DistributedDataParallel(self.model, device_ids=ids)
        else:
            self.network = self.model

        o = config.optim
        self.network_parameters = ([p for p in self.model.parameters() if p.requires_grad]
                                   + (list(self.projector.parameters()) if self.projector else []))
        self.optimizer = torch.optim.Adam(self.network_parameters, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.scheduler = _poly(self.optimizer, total_steps, o.poly_power)
        self.classifier_optimizer = (torch.optim.Adam(self.classifiers.parameters(), lr=o.classifier_lr,
                                                      betas=o.classifier_betas) if len(self.classifiers) else None)
        self.classifier_scheduler = (_poly(self.classifier_optimizer, total_steps, o.poly_power)
                                     if self.classifier_optimizer else None)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def set_class_weights(self, class_weights: Tensor | None) -> None:
        """Class weights (normal, anomaly) of L_CE; None = unweighted."""
        self.class_weights = (None if class_weights is None
                              else class_weights.to(device=self.context.device, dtype=torch.float32))

    # -- one update -------------------------------------------------------------------------------------------
    def tau(self, step: int) -> float:
        """τ of eq. 1 at iteration ``step`` (0-based), or τ_b without dynamic label smoothing."""
        m = self.config.mdat
        return tau_at(step, self.total_steps, m.tau_b, dynamic=m.label_smoothing)

    def __call__(self, batch: dict[str, Any], step: int) -> StepResult:
        config, device = self.config, self.context.device
        inputs = [batch[k].to(device, non_blocking=True) for k in INPUT_KEYS]
        label = batch["label"].to(device, non_blocking=True)
        domain = torch.as_tensor(batch["domain"], device=device)
        is_v, is_a = domain == 0, domain == 1
        tau = self.tau(step) if self.classifiers else None
        lam = config.loss
        terms: dict[str, Tensor] = {}
        classifier_terms: dict[str, Tensor] = {}
        scalars: dict[str, float] = {}

        anomaly_pixels = (label == 1).unsqueeze(1)
        # One forward serves both phases: the classifiers are not updated in (a), so their outputs for (b) are the
        # same numbers; each backward below is restricted to its own parameters, which also skips the classifiers'
        # weight gradients in (a) and their input gradients in (b).
        with torch.autocast(device.type, dtype=torch.float16, enabled=self.amp):
            out = self.network(*inputs)
            logits = out.logits.float()
            terms["ce"] = weighted_cross_entropy(logits, label, self.class_weights)
            anomaly = F.softmax(logits, dim=1)[:, 1:2]
            for key, classifier, source in (("f", self.feature_classifier, out.fused_deepest),
                                            ("o", self.output_classifier, anomaly)):
                if classifier is None:
                    continue
                assert tau is not None  # a classifier is present, so self.classifiers is non-empty and tau was set
                pred = classifier(source).float()
                terms[f"mda_{key}"] = generator_adversarial_loss(pred[is_v], pred[is_a], tau)
                classifier_terms[f"cls_{key}"] = classifier_loss(pred[is_v], pred[is_a], tau)
                scalars.update(_accuracy_scalars(key, pred.detach(), is_v, is_a, anomaly_pixels))
            if self.projector is not None:
                sample = sample_pixels(label, logits.detach().argmax(1), domain, mode=config.cacl.mode,
                                       n_anchor=config.cacl.n_anchor, generator=self._cacl_generator(step))
                assert sample.counts is not None  # sample_pixels always fills counts
                features, compact = gather_sampled(out.decoder_features, sample)
                terms["cac"] = contrastive_loss(self.projector(features), compact, config.cacl.temperature)
                scalars.update({f"cacl/{k}": float(v) for k, v in sample.counts.items()
                                if k.split("/")[1] in ("anchors", "positives", "negatives")})
                if self.anchor_monitor is not None:
                    scalars.update(self.anchor_monitor.update(step, sample.counts))
        weights = {"ce": 1.0, "mda_f": lam.lambda_f, "mda_o": lam.lambda_o, "cac": lam.lambda_c}
        total = sum(weights[name] * value for name, value in terms.items())
        assert isinstance(total, Tensor)  # terms always holds "ce", so the sum is a tensor, never the start 0
        losses = self._checked_losses({"total": total, **terms, **classifier_terms}, step, batch)

        # (a) network (+ projector) step: L_total through the frozen classifiers (crossed labels, eq. 2).
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward(inputs=self.network_parameters, retain_graph=bool(classifier_terms))
        if self.projector is not None:
            all_reduce_gradients(self.projector.parameters(), self.context)
        self.scaler.step(self.optimizer)
        # (b) classifier step on the same forward, uncrossed labels: gradients reach the classifiers only.
        if self.classifier_optimizer is not None:
            self.classifier_optimizer.zero_grad(set_to_none=True)
            classifier_total = sum(classifier_terms.values())
            assert isinstance(classifier_total, Tensor)  # a classifier optimiser means classifiers, hence their terms
            self.scaler.scale(classifier_total).backward(inputs=list(self.classifiers.parameters()))
            all_reduce_gradients(self.classifiers.parameters(), self.context)
            self.scaler.step(self.classifier_optimizer)
        self.scaler.update()

        scalars["lr/network"] = self.optimizer.param_groups[0]["lr"]
        if self.classifier_optimizer is not None:
            scalars["lr/classifiers"] = self.classifier_optimizer.param_groups[0]["lr"]
            assert tau is not None  # a classifier optimiser exists only with classifiers, and then tau was set
            scalars["mdat/tau"] = tau
        with warnings.catch_warnings():
            # With mixed precision the scaler skips the optimiser step of an overflowing step (by design, the
            # first steps at its initial scale); the schedule still advances, so the learning rate stays a function
            # of the global step (and of nothing a resume could lose), which PyTorch warns about.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before "
                                                      r"`optimizer\.step\(\)`")
            self.scheduler.step()
            if self.classifier_scheduler is not None:
                self.classifier_scheduler.step()
        return StepResult(losses=losses, scalars=scalars)

    def _cacl_generator(self, step: int) -> torch.Generator:
        # A pure function of (seed, step, rank): resuming needs no generator state.
        seed = int(np.random.SeedSequence((self.config.train.seed, step, self.context.rank)).generate_state(1)[0])
        return torch.Generator(device=self.context.device).manual_seed(seed)

    def _checked_losses(self, terms: dict[str, Tensor], step: int, batch: dict[str, Any]) -> dict[str, float]:
        """Loss values averaged over ranks (one sync); any non-finite value stops every rank with the details."""
        local = torch.stack([t.detach().float() for t in terms.values()])
        averaged = all_reduce_mean(local.clone(), self.context)
        if not bool(torch.isfinite(averaged).all()):
            values = ", ".join(f"{name}={value:.6g}" for name, value in zip(terms, local.tolist()))
            raise NonFiniteLossError(
                f"non-finite loss at step {step} (rank {self.context.rank}): {values}; "
                f"batch files: {', '.join(_batch_files(batch))}")
        return dict(zip(terms, averaged.tolist()))

    # -- state ------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything but the network weights (those go into the checkpoint's ``model`` entry)."""
        state: dict[str, Any] = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }
        if len(self.classifiers):
            state["classifiers"] = self.classifiers.state_dict()
            # both are built exactly when self.classifiers is non-empty
            assert self.classifier_optimizer is not None and self.classifier_scheduler is not None
            state["classifier_optimizer"] = self.classifier_optimizer.state_dict()
            state["classifier_scheduler"] = self.classifier_scheduler.state_dict()
        if self.projector is not None:
            state["projector"] = self.projector.state_dict()
        return state

    def load_state_dict(self, model_state: dict[str, Tensor], state: dict[str, Any]) -> None:
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):  # a disabled scaler (CPU run) saves {}: nothing to carry over to a CUDA resume
            self.scaler.load_state_dict(state["scaler"])
        if len(self.classifiers):
            self.classifiers.load_state_dict(state["classifiers"])
            # both are built exactly when self.classifiers is non-empty
            assert self.classifier_optimizer is not None and self.classifier_scheduler is not None
            self.classifier_optimizer.load_state_dict(state["classifier_optimizer"])
            self.classifier_scheduler.load_state_dict(state["classifier_scheduler"])
        if self.projector is not None:
            self.projector.load_state_dict(state["projector"])


def _accuracy_scalars(key: str, pred: Tensor, is_v: Tensor, is_a: Tensor, anomaly_pixels: Tensor) -> dict[str, float]:
    """Classifier ``key``'s accuracy per domain and its domain gap, on all pixels and on anomaly pixels only.

    Accuracy thresholds at 0.5, so a classifier that outputs one value everywhere scores 1 on one domain and 0
    on the other; the gap mean(P_V) − mean(P_A) says how far it separates the domains whatever its bias
    (0: not at all; τ − (1 − τ) = 2τ − 1 when it reproduces its labels). V and A share their backgrounds, so
    the anomaly pixels are where they differ. The label's anomaly mask is max-pooled to the map's size (a feature
    cell with any anomaly pixel counts); a domain without anomaly pixels in the batch gets no anomaly scalars.
    """
    mask = F.adaptive_max_pool2d(anomaly_pixels.float(), pred.shape[-2:]) > 0
    pred_v, pred_a, mask_v, mask_a = pred[is_v], pred[is_a], mask[is_v], mask[is_a]
    scalars: dict[str, float] = {}
    acc_v, acc_a = classifier_accuracy(pred_v, pred_a)
    assert acc_v is not None and acc_a is not None  # without masks every pixel counts, so neither is None
    scalars[f"mdat/acc_{key}_v"], scalars[f"mdat/acc_{key}_a"] = acc_v, acc_a
    scalars[f"mdat/gap_{key}"] = float(pred_v.mean() - pred_a.mean())
    on_anomaly = classifier_accuracy(pred_v, pred_a, mask_v, mask_a)
    for side, value in zip(("v", "a"), on_anomaly):
        if value is not None:
            scalars[f"mdat/acc_{key}_{side}_anomaly"] = value
    if None not in on_anomaly:
        scalars[f"mdat/gap_{key}_anomaly"] = float(pred_v[mask_v].mean() - pred_a[mask_a].mean())
    return scalars


def _batch_files(batch: dict[str, Any]) -> list[str]:
    names = batch.get("name", [])
    domains = batch.get("domain", [None] * len(names))
    return [f"{DOMAIN_NAMES[int(d)]}:{n}" if d is not None else str(n) for n, d in zip(names, domains)]
