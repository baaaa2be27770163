"""Cross-domain Anomaly-aware Contrastive Learning (CACL): pixel sampling and the contrastive loss (eq. 3).

MGCDA (Zhang et al., ACM MM 2023), section 3.3. Domains: 0 = VoidClass (V), 1 = AnomalyMix (A).
Pixel indices are *flat* indices into B*H*W (b*H*W + y*W + x), so they address
``embeddings.permute(0, 2, 3, 1).reshape(-1, C)`` directly.

Sampling per image (``mode="cacl"``), from its ground truth (0 normal, 1 anomaly, 255 ignore) and the
network's current prediction (0/1): *hard* = wrongly predicted, *easy* = rightly predicted. With N_a = n_anchor:

- anchors: N_a anomaly pixels, ceil(N_a/2) hard and floor(N_a/2) easy; a pool that is short is filled from
  the other (so a well-predicted image with no hard anomaly still gives N_a easy anchors);
- positives: 2·N_a *easy* anomaly pixels not already taken as that image's anchors (anchors are drawn
  first; positives get what is left of the easy pool);
- negatives: 2·N_a hard and 6·N_a easy normal pixels, each pool filled from the other when short.

All draws are without replacement and uniformly random within a pool. When an image has fewer pixels than
requested, everything available is taken and the shortfall shows in ``PixelSample.counts``. Ignore (255)
pixels are never sampled. Anchors and negatives are pooled per domain; positives are pooled over both
domains. Ablation modes: ``pcl`` = random sampling (prediction unused, no hard/easy split: anchors N_a,
positives 2·N_a (disjoint), negatives 8·N_a, all uniform within anomaly / normal pixels) with positives
from the anchor's own domain only; ``cpcl`` = the same random sampling with positives pooled over both domains.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from mgcda_core.constants import IGNORE_INDEX

__all__ = ["PixelSample", "sample_pixels", "contrastive_loss", "MODES", "DOMAIN_NAMES"]

MODES = ("cacl", "pcl", "cpcl")
DOMAIN_NAMES = ("V", "A")  # index = domain id

# Column order of the per-image "taken" table, also the count names.
_TAKEN_NAMES = ("anchors_hard", "anchors_easy", "positives", "negatives_hard", "negatives_easy")
# Requested per image, as multiples of n_anchor: anchors, positives, negatives (2 hard + 6 easy).
POSITIVE_FACTOR, _HARD_NEGATIVE_FACTOR, _EASY_NEGATIVE_FACTOR = 2, 2, 6


class PixelSample(NamedTuple):
    """Flat pixel indices (into B*H*W) chosen by ``sample_pixels``; all index tensors are int64 and sorted.

    anchors, negatives: one tensor per domain (index 0 = V, 1 = A). positives: every positive of the batch.
    positive_domains: ``None`` when positives are pooled over both domains (cacl, cpcl); in pcl the domain
    (0/1) of each positive, and an anchor of domain d contrasts only with positives of domain d.
    shape: (B, H, W) the indices refer to. counts: what was drawn, per domain ("V/anchors_hard", ...).
    """

    anchors: list[Tensor]
    positives: Tensor
    negatives: list[Tensor]
    positive_domains: Tensor | None = None
    shape: tuple[int, int, int] | None = None
    counts: dict[str, int] | None = None


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_inputs(labels: Tensor, prediction: Tensor, domain: Tensor | Sequence[int]) -> Tensor:
    """Validate shapes and value sets; returns ``domain`` as an int64 tensor on the labels' device."""
    if not isinstance(labels, Tensor) or not isinstance(prediction, Tensor):
        raise TypeError(
            f"labels and prediction must be torch tensors, got {type(labels).__name__} and {type(prediction).__name__}"
        )
    if labels.ndim != 3 or labels.numel() == 0:
        raise ValueError(f"labels must be a non-empty B x H x W tensor, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor of {{0, 1, {IGNORE_INDEX}}}, got dtype {labels.dtype}")
    if prediction.shape != labels.shape:
        raise ValueError(
            f"prediction must have the labels' shape {tuple(labels.shape)} (B x H x W of 0/1), got {tuple(prediction.shape)}"
        )
    if prediction.is_floating_point() or prediction.is_complex():
        raise TypeError(f"prediction must be an integer or bool tensor of 0/1 (argmax), got dtype {prediction.dtype}")
    if prediction.device != labels.device:
        raise ValueError(f"prediction is on {prediction.device} but labels are on {labels.device}")
    valid_label = (labels == 0) | (labels == 1) | (labels == IGNORE_INDEX)
    if not bool(valid_label.all()):
        bad = torch.unique(labels[~valid_label])[:10].tolist()
        raise ValueError(f"labels must contain only 0 (normal), 1 (anomaly) and {IGNORE_INDEX} (ignore); found {bad}")
    if prediction.dtype != torch.bool and not bool(((prediction == 0) | (prediction == 1)).all()):
        bad = torch.unique(prediction[(prediction != 0) & (prediction != 1)])[:10].tolist()
        raise ValueError(f"prediction must contain only 0 and 1 (the predicted class); found {bad}")
    domain = torch.as_tensor(domain, device=labels.device)
    if domain.ndim != 1 or domain.shape[0] != labels.shape[0]:
        raise ValueError(f"domain must hold one id per image ({labels.shape[0]}), got shape {tuple(domain.shape)}")
    if domain.is_floating_point() or domain.is_complex():
        raise TypeError(f"domain ids must be integers (0 = V, 1 = A), got dtype {domain.dtype}")
    domain = domain.long()
    if not bool(((domain == 0) | (domain == 1)).all()):
        raise ValueError(f"domain ids must be 0 (VoidClass) or 1 (AnomalyMix), got {domain.tolist()}")
    return domain


def _split_quota(avail_first: Tensor, avail_second: Tensor, want_first: int, want_second: int) -> tuple[Tensor, Tensor]:
    """Take want_first + want_second from two pools, filling a short pool's deficit from the other one."""
    take_first = torch.minimum(avail_first, want_first + (want_second - avail_second).clamp(min=0))
    take_second = torch.minimum(avail_second, want_first + want_second - take_first)
    return take_first, take_second


class _Quotas(NamedTuple):
    """How many pixels each image gives from each pool (B-vectors), short pools filled from their partners."""

    anchors_hard: Tensor
    anchors_easy: Tensor
    positives: Tensor
    negatives_hard: Tensor
    negatives_easy: Tensor


def _pools(labels: Tensor, prediction: Tensor, mode: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Masks (B x H*W) of the hard anomaly, easy anomaly, hard normal and easy normal pixels; *hard* = wrongly
    predicted (``cacl``), while random sampling (``pcl``, ``cpcl``) puts every pixel in its class's easy pool."""
    anomaly, normal = labels == 1, labels == 0
    if mode == "cacl":
        hard = prediction.long() != labels.long()
    else:
        hard = torch.zeros_like(anomaly)
    return anomaly & hard, anomaly & ~hard, normal & hard, normal & ~hard


def _quotas(pools: tuple[Tensor, Tensor, Tensor, Tensor], n_anchor: int) -> _Quotas:
    """Per image: anchors ceil(N_a/2) hard + floor(N_a/2) easy anomalies, positives up to 2·N_a of the easy
    anomalies left after the anchors, negatives 2·N_a hard + 6·N_a easy normals (module docstring)."""
    hard_anomaly, easy_anomaly, hard_normal, easy_normal = (pool.sum(dim=1) for pool in pools)
    anchors_hard, anchors_easy = _split_quota(hard_anomaly, easy_anomaly, (n_anchor + 1) // 2, n_anchor // 2)
    positives = (easy_anomaly - anchors_easy).clamp(max=POSITIVE_FACTOR * n_anchor)
    negatives_hard, negatives_easy = _split_quota(
        hard_normal, easy_normal, _HARD_NEGATIVE_FACTOR * n_anchor, _EASY_NEGATIVE_FACTOR * n_anchor
    )
    return _Quotas(anchors_hard, anchors_easy, positives, negatives_hard, negatives_easy)


def _random_ranks(
    pools: tuple[Tensor, Tensor, Tensor, Tensor], n_anchor: int, generator: torch.Generator | None
) -> list[tuple[Tensor, Tensor]]:
    """Per pool: flat indices of up to as many members per image as any quota can ask, in random order, and
    their ranks 0, 1, ... (B x k each).

    A uniform random subset of size q of a pool = its q members with the largest iid noise. Non-members get
    key -1, below every member, and quotas never exceed the pool size, so only members are ever taken. One noise
    draw serves the four pools.
    """
    batch, pixels = pools[0].shape
    device = pools[0].device
    noise_device = generator.device if generator is not None else device
    noise = torch.rand((batch, pixels), generator=generator, dtype=torch.float64, device=noise_device).to(device)
    row_offset = (torch.arange(batch, device=device) * pixels)[:, None]
    largest_negative_pool = (_HARD_NEGATIVE_FACTOR + _EASY_NEGATIVE_FACTOR) * n_anchor  # after filling
    most = (n_anchor, n_anchor + POSITIVE_FACTOR * n_anchor, largest_negative_pool, largest_negative_pool)
    ranked = []
    for pool, k in zip(pools, most):
        top = torch.topk(noise.masked_fill(~pool, -1.0), min(k, pixels), dim=1).indices
        ranked.append((top + row_offset, torch.arange(top.shape[1], device=device)[None, :]))
    return ranked


def _per_domain(chosen: tuple[tuple[Tensor, Tensor], ...], domain: Tensor) -> list[Tensor]:
    """The chosen flat indices (``index[mask]`` of every pair) of each domain's images, sorted, one per domain."""
    out = []
    for d in range(len(DOMAIN_NAMES)):
        in_domain = (domain == d)[:, None]
        picked = torch.cat([index[mask & in_domain] for index, mask in chosen])
        out.append(torch.sort(picked).values)
    return out


def sample_pixels(
    labels: Tensor,
    prediction: Tensor,
    domain: Tensor | Sequence[int],
    mode: str = "cacl",
    n_anchor: int = 50,
    generator: torch.Generator | None = None,
) -> PixelSample:
    """Anomaly-aware pixel sampling for eq. 3 (see the module docstring for the rules).

    labels: B x H x W integer {0, 1, 255}; prediction: B x H x W {0, 1} (argmax of the current logits);
    domain: B ids (0 = V, 1 = A); mode: ``cacl`` | ``pcl`` | ``cpcl``; n_anchor: N_a per image;
    generator: a seeded ``torch.Generator`` for reproducible draws (its device is used for the noise).
    Vectorised over the batch: one top-k of random keys per pool, no Python loop over pixels or images.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    n_anchor = _check_positive_int("n_anchor", n_anchor)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    domain = _check_inputs(labels, prediction, domain)
    batch, height, width = labels.shape

    pools = _pools(labels.reshape(batch, height * width), prediction.reshape(batch, height * width), mode)
    quota = _quotas(pools, n_anchor)
    (hard_anomaly_index, hard_anomaly_rank), (easy_anomaly_index, easy_anomaly_rank), \
        (hard_normal_index, hard_normal_rank), (easy_normal_index, easy_normal_rank) = \
        _random_ranks(pools, n_anchor, generator)
    # Anchors take the first ranks of the anomaly pools, positives the next ranks of the easy one (disjoint).
    chosen_anchors = (
        (hard_anomaly_index, hard_anomaly_rank < quota.anchors_hard[:, None]),
        (easy_anomaly_index, easy_anomaly_rank < quota.anchors_easy[:, None]),
    )
    positive_mask = (easy_anomaly_rank >= quota.anchors_easy[:, None]) & (
        easy_anomaly_rank < (quota.anchors_easy + quota.positives)[:, None]
    )
    chosen_negatives = (
        (hard_normal_index, hard_normal_rank < quota.negatives_hard[:, None]),
        (easy_normal_index, easy_normal_rank < quota.negatives_easy[:, None]),
    )

    positive_flat, positive_order = torch.sort(easy_anomaly_index[positive_mask])
    positive_domains = None
    if mode == "pcl":
        positive_domains = domain[:, None].expand_as(positive_mask)[positive_mask][positive_order]

    return PixelSample(
        anchors=_per_domain(chosen_anchors, domain),
        positives=positive_flat,
        negatives=_per_domain(chosen_negatives, domain),
        positive_domains=positive_domains,
        shape=(batch, height, width),
        counts=_count_table(torch.stack(list(quota), dim=1), domain, n_anchor),
    )


def _count_table(taken: Tensor, domain: Tensor, n_anchor: int) -> dict[str, int]:
    """Per-domain totals of what was drawn and the shortfall against what was requested (one host sync)."""
    per_domain = torch.zeros((len(DOMAIN_NAMES), taken.shape[1]), dtype=torch.long, device=taken.device)
    per_domain.index_add_(0, domain, taken)
    images = torch.bincount(domain, minlength=len(DOMAIN_NAMES))
    table, image_counts = per_domain.tolist(), images.tolist()
    counts: dict[str, int] = {}
    for d, name in enumerate(DOMAIN_NAMES):
        row = dict(zip(_TAKEN_NAMES, table[d]))
        anchors = row["anchors_hard"] + row["anchors_easy"]
        negatives = row["negatives_hard"] + row["negatives_easy"]
        requested_negatives = (_HARD_NEGATIVE_FACTOR + _EASY_NEGATIVE_FACTOR) * n_anchor * image_counts[d]
        counts.update({f"{name}/images": image_counts[d], **{f"{name}/{key}": value for key, value in row.items()}})
        counts.update({
            f"{name}/anchors": anchors,
            f"{name}/negatives": negatives,
            f"{name}/anchors_shortfall": n_anchor * image_counts[d] - anchors,
            f"{name}/positives_shortfall": POSITIVE_FACTOR * n_anchor * image_counts[d] - row["positives"],
            f"{name}/negatives_shortfall": requested_negatives - negatives,
        })
    return counts


def contrastive_loss(embeddings: Tensor, sample: PixelSample, temperature: float = 0.1) -> Tensor:
    """MGCDA eq. 3 in log (InfoNCE) form over the sampled pixels.

    L = sum over the domains d (V and A) of
        mean_{a in S_d^a, p in S^p} -log( e^{a·p/α} / (e^{a·p/α} + Σ_{n in S_d^n} e^{a·n/α}) )
    as eq. 3 writes it (a sum over domains, not their mean: averaging would halve λ_c); a domain without anchors
    or positives contributes 0.
    with S^p all positives (cacl, cpcl) or those of domain d (pcl). Computed as softplus(LSE_n(a·n/α) − a·p/α),
    which is the same quantity without overflow.

    Eq. 3 as printed has no log: its summand is the ratio itself. That ratio lies in (0, 1) and its gradient
    vanishes exactly where a pair is badly separated (ratio near 0), and it is not a likelihood; the log form is
    the InfoNCE loss of the pixel contrastive literature MGCDA builds on, so we implement that.
    α (the temperature) is not given in the paper; 0.1 is our default.

    embeddings: B x C x H x W (L2-normalised by ``ContrastProjector``) of the images ``sample`` was drawn from.
    Returns a scalar; 0 (still connected to ``embeddings`` for autograd) when no domain has anchors and positives.
    """
    if not isinstance(embeddings, Tensor) or embeddings.ndim != 4 or not embeddings.is_floating_point():
        raise ValueError(f"embeddings must be a floating B x C x H x W tensor, got {getattr(embeddings, 'shape', embeddings)!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not (
        math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    batch, channels, height, width = embeddings.shape
    if sample.shape is not None and tuple(sample.shape) != (batch, height, width):
        raise ValueError(
            f"sample was drawn for B x H x W = {tuple(sample.shape)} but embeddings are {tuple(embeddings.shape)}"
        )
    if len(sample.anchors) != len(DOMAIN_NAMES) or len(sample.negatives) != len(DOMAIN_NAMES):
        raise ValueError(f"sample must hold anchors and negatives for the {len(DOMAIN_NAMES)} domains {DOMAIN_NAMES}")
    # Similarities in float32 even inside an autocast region: fp16 matmuls would round a·p/α to ~1e-2 at α = 0.1.
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        terms = _domain_terms(embeddings, sample, temperature)
    if not terms:
        return embeddings.sum() * 0.0
    return torch.stack(terms).sum()


def gather_sampled(features: Tensor, sample: PixelSample) -> tuple[Tensor, PixelSample]:
    """Only the sampled pixels of a B x C x H x W map, as a 1 x C x 1 x N map, and ``sample`` re-indexed into it.

    The projector is a stack of 1x1 convolutions and a per-pixel normalisation, so projecting the gathered
    pixels gives the same embeddings as projecting the whole map and gathering afterwards — for the few
    thousand sampled pixels instead of every pixel of the batch (at 256x512, batch 8: 1M pixels).
    """
    parts = [*sample.anchors, sample.positives, *sample.negatives]
    index = torch.cat([part.reshape(-1) for part in parts]).to(features.device)
    pixels = features.shape[2] * features.shape[3]
    gathered = features.flatten(2)[index // pixels, :, index % pixels]  # N x C
    compact = torch.split(torch.arange(index.numel(), device=features.device), [part.numel() for part in parts])
    count = len(sample.anchors)
    remapped = sample._replace(anchors=list(compact[:count]), positives=compact[count],
                               negatives=list(compact[count + 1:]), shape=(1, 1, index.numel()))
    return gathered.T.reshape(1, features.shape[1], 1, index.numel()), remapped


def _domain_terms(embeddings: Tensor, sample: PixelSample, temperature: float) -> list[Tensor]:
    """Per-domain mean of -log(e^{a·p/α} / (e^{a·p/α} + Σ_n e^{a·n/α})), for domains with anchors and positives."""
    # One gather of every sampled pixel: no B*H*W x C copy of the whole map.
    parts = [*sample.anchors, sample.positives, *sample.negatives]
    index = torch.cat([part.reshape(-1) for part in parts]).to(embeddings.device)
    pixels = embeddings.shape[2] * embeddings.shape[3]
    vectors = embeddings.flatten(2)[index // pixels, :, index % pixels].float()
    chunks = torch.split(vectors, [part.numel() for part in parts])
    anchor_sets, positive_set, negative_sets = chunks[:2], chunks[2], chunks[3:]
    terms = []
    for d in range(len(DOMAIN_NAMES)):
        positives = positive_set
        if sample.positive_domains is not None:
            positives = positives[sample.positive_domains.to(embeddings.device) == d]
        anchors, negatives = anchor_sets[d], negative_sets[d]
        if anchors.shape[0] == 0 or positives.shape[0] == 0:
            continue
        positive_logits = anchors @ positives.T / temperature  # n_a x n_p
        if negatives.shape[0] == 0:  # no negatives: every ratio is 1, the term is exactly 0
            negative_lse = anchors.new_full((anchors.shape[0], 1), -math.inf)
        else:
            negative_lse = torch.logsumexp(anchors @ negatives.T / temperature, dim=1, keepdim=True)
        terms.append(F.softplus(negative_lse - positive_logits).mean())
    return terms
