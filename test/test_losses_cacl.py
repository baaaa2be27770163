"""CACL: anomaly-aware pixel sampling, eq. 3 (log form) against a direct double loop, the projector."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mgcda_core.losses.cacl import PixelSample, contrastive_loss, sample_pixels
from mgcda_core.model.projector import ContrastProjector

H, W = 16, 16
HW = H * W
N_ANCHOR = 4  # requested per image: 4 anchors (2 hard + 2 easy), 8 positives, 8 hard + 24 easy negatives


def make_image(hard_anomaly: int, easy_anomaly: int, hard_normal: int, easy_normal: int, seed: int):
    """Labels and prediction of one H x W image with exactly these pool sizes, scattered; the rest is 255."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(HW, generator=g)
    labels = torch.full((HW,), 255, dtype=torch.uint8)
    prediction = torch.randint(0, 2, (HW,), generator=g)  # arbitrary on ignored pixels
    sizes = [hard_anomaly, easy_anomaly, hard_normal, easy_normal]
    chunks = torch.split(perm[: sum(sizes)], sizes)
    for chunk, (label, predicted) in zip(chunks, [(1, 0), (1, 1), (0, 1), (0, 0)]):
        labels[chunk] = label
        prediction[chunk] = predicted
    return labels.view(H, W), prediction.view(H, W)


def make_batch(pools: list[tuple[int, int, int, int]]):
    images = [make_image(*pool, seed=i) for i, pool in enumerate(pools)]
    return torch.stack([label for label, _ in images]), torch.stack([p for _, p in images])


# Image pools (hard anomaly, easy anomaly, hard normal, easy normal) and domains V, A, V, A.
POOLS = [(10, 30, 20, 100), (1, 30, 3, 100), (10, 0, 50, 0), (0, 2, 0, 5)]
DOMAINS = [0, 1, 0, 1]
# Expected draws per image, by the fill rules: (anchors hard, anchors easy, positives, negatives hard, negatives easy)
EXPECTED = [
    (2, 2, 8, 8, 24),  # everything available
    (1, 3, 8, 3, 29),  # 1 hard anomaly -> 3 easy anchors; 3 hard normals -> 29 easy negatives
    (4, 0, 0, 32, 0),  # no easy anomaly -> 4 hard anchors, no positives; no easy normal -> 32 hard negatives
    (0, 2, 0, 0, 5),  # shortfall: 2 anchors take every anomaly, nothing left for positives; 5 negatives
]


def _per_image(index: torch.Tensor) -> list[int]:
    return torch.bincount(index // HW, minlength=len(POOLS)).tolist()


def test_cacl_sampling_counts_pools_and_domains() -> None:
    labels, prediction = make_batch(POOLS)
    sample = sample_pixels(labels, prediction, DOMAINS, mode="cacl", n_anchor=N_ANCHOR,
                           generator=torch.Generator().manual_seed(0))
    flat_labels, flat_pred = labels.reshape(-1).long(), prediction.reshape(-1).long()
    hard = flat_pred != flat_labels
    anchors = torch.cat(sample.anchors)
    negatives = torch.cat(sample.negatives)

    # Pool membership: nothing from 255; anchors anomaly; positives easy anomaly; negatives normal.
    assert (flat_labels[anchors] == 1).all()
    assert (flat_labels[sample.positives] == 1).all() and (~hard[sample.positives]).all()
    assert (flat_labels[negatives] == 0).all()
    # Without replacement, positives disjoint from anchors.
    for index in (anchors, sample.positives, negatives):
        assert index.unique().numel() == index.numel()
    assert not set(anchors.tolist()) & set(sample.positives.tolist())

    # Exact numbers per image, split hard / easy.
    assert _per_image(anchors[hard[anchors]]) == [e[0] for e in EXPECTED]
    assert _per_image(anchors[~hard[anchors]]) == [e[1] for e in EXPECTED]
    assert _per_image(sample.positives) == [e[2] for e in EXPECTED]
    assert _per_image(negatives[hard[negatives]]) == [e[3] for e in EXPECTED]
    assert _per_image(negatives[~hard[negatives]]) == [e[4] for e in EXPECTED]

    # Anchors and negatives pooled per domain: V set only from images 0 and 2, A set from 1 and 3.
    for d, own in ((0, {0, 2}), (1, {1, 3})):
        assert set((sample.anchors[d] // HW).tolist()) <= own
        assert set((sample.negatives[d] // HW).tolist()) <= own
    # Positives pooled over both domains (images 0 and 1 have easy anomalies).
    assert sample.positive_domains is None
    assert set((sample.positives // HW).tolist()) == {0, 1}
    assert sample.shape == (len(POOLS), H, W)


def test_cacl_counts_report_draws_and_shortfall() -> None:
    labels, prediction = make_batch(POOLS)
    counts = sample_pixels(labels, prediction, DOMAINS, n_anchor=N_ANCHOR,
                           generator=torch.Generator().manual_seed(1)).counts
    expected = {}
    for name, images in (("V", (0, 2)), ("A", (1, 3))):
        rows = [EXPECTED[i] for i in images]
        ah, ae, p, nh, ne = (sum(r[k] for r in rows) for k in range(5))
        expected.update({
            f"{name}/images": 2, f"{name}/anchors_hard": ah, f"{name}/anchors_easy": ae, f"{name}/positives": p,
            f"{name}/negatives_hard": nh, f"{name}/negatives_easy": ne, f"{name}/anchors": ah + ae,
            f"{name}/negatives": nh + ne, f"{name}/anchors_shortfall": 2 * N_ANCHOR - ah - ae,
            f"{name}/positives_shortfall": 2 * 2 * N_ANCHOR - p,
            f"{name}/negatives_shortfall": 2 * 8 * N_ANCHOR - nh - ne,
        })
    assert counts == expected
    assert counts["A/anchors_shortfall"] == 2 and counts["V/positives_shortfall"] == 8


def test_scarce_easy_anomalies_go_to_anchors_first() -> None:
    labels, prediction = make_batch([(3, 3, 40, 40)])
    sample = sample_pixels(labels, prediction, [0], n_anchor=N_ANCHOR, generator=torch.Generator().manual_seed(0))
    # anchors: 2 hard + 2 easy (both pools can give 2); the single easy anomaly left becomes the only positive.
    assert (sample.counts["V/anchors_hard"], sample.counts["V/anchors_easy"], sample.counts["V/positives"]) == (2, 2, 1)


def test_odd_anchor_count_gives_the_extra_anchor_to_hard() -> None:
    labels, prediction = make_batch([(20, 40, 60, 120)])
    counts = sample_pixels(labels, prediction, [1], n_anchor=5, generator=torch.Generator().manual_seed(0)).counts
    assert [counts[f"A/{k}"] for k in ("anchors_hard", "anchors_easy", "positives", "negatives_hard", "negatives_easy")] \
        == [3, 2, 10, 10, 30]
    assert counts["V/images"] == 0 and counts["V/anchors"] == 0 and counts["V/anchors_shortfall"] == 0


@pytest.mark.parametrize("mode", ["pcl", "cpcl"])
def test_random_modes_ignore_prediction(mode: str) -> None:
    # Every anomaly is mispredicted: anomaly-aware sampling finds no easy anomaly for positives, random does.
    pools = [(20, 0, 50, 50), (20, 0, 50, 50)]
    labels, prediction = make_batch(pools)
    domains = [0, 1]
    aware = sample_pixels(labels, prediction, domains, mode="cacl", n_anchor=N_ANCHOR,
                          generator=torch.Generator().manual_seed(0))
    assert aware.positives.numel() == 0
    sample = sample_pixels(labels, prediction, domains, mode=mode, n_anchor=N_ANCHOR,
                           generator=torch.Generator().manual_seed(0))
    flat_labels = labels.reshape(-1)
    assert [s.numel() for s in sample.anchors] == [N_ANCHOR, N_ANCHOR]
    assert sample.positives.numel() == 2 * 2 * N_ANCHOR
    assert [s.numel() for s in sample.negatives] == [8 * N_ANCHOR, 8 * N_ANCHOR]
    assert (flat_labels[torch.cat(sample.anchors)] == 1).all() and (flat_labels[sample.positives] == 1).all()
    assert (flat_labels[torch.cat(sample.negatives)] == 0).all()
    assert not set(torch.cat(sample.anchors).tolist()) & set(sample.positives.tolist())
    # No hard/easy split: negatives mix mispredicted and correct normals (32 of 100, 50 of each kind).
    hard = prediction.reshape(-1).long() != flat_labels.long()
    hard_negatives = int(hard[sample.negatives[0]].sum())
    assert 0 < hard_negatives < 8 * N_ANCHOR
    assert sample.counts["V/anchors_hard"] == 0 and sample.counts["V/negatives_hard"] == 0
    if mode == "pcl":  # positives kept per domain
        torch.testing.assert_close(sample.positive_domains, sample.positives // HW)
    else:
        assert sample.positive_domains is None


def test_sampling_is_deterministic_with_a_seeded_generator() -> None:
    labels, prediction = make_batch(POOLS)

    def draw(seed: int) -> PixelSample:
        return sample_pixels(labels, prediction, DOMAINS, n_anchor=N_ANCHOR, generator=torch.Generator().manual_seed(seed))

    first, again, other = draw(7), draw(7), draw(8)
    for a, b in zip([*first.anchors, first.positives, *first.negatives], [*again.anchors, again.positives, *again.negatives]):
        assert torch.equal(a, b)
    assert not torch.equal(first.negatives[0], other.negatives[0])


def test_draws_are_uniform_over_a_pool() -> None:
    # 100 easy normals, 8 negatives per draw: each pixel is picked with probability 0.08 (about 40 of 500).
    labels, prediction = make_batch([(0, 4, 0, 100)])
    generator = torch.Generator().manual_seed(3)
    hits = torch.zeros(HW, dtype=torch.long)
    for _ in range(500):
        hits += torch.bincount(sample_pixels(labels, prediction, [0], n_anchor=1, generator=generator).negatives[0],
                               minlength=HW)
    picked = hits[labels.reshape(-1) == 0]
    assert picked.sum() == 500 * 8
    assert picked.min() > 15 and picked.max() < 70  # binomial(500, 0.08): mean 40, sd 6


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (dict(mode="foo"), ValueError, "mode"),
        (dict(n_anchor=0), ValueError, "n_anchor"),
        (dict(labels=torch.zeros(2, H, W)), TypeError, "labels must be an integer"),
        (dict(labels=torch.full((2, H, W), 2)), ValueError, r"found \[2\]"),
        (dict(labels=torch.zeros(2, H * W, dtype=torch.long)), ValueError, "B x H x W"),
        (dict(labels=torch.zeros(0, H, W, dtype=torch.long), prediction=torch.zeros(0, H, W, dtype=torch.long),
              domain=[]), ValueError, "non-empty"),
        (dict(prediction=torch.zeros(2, H, W + 1, dtype=torch.long)), ValueError, "prediction must have"),
        (dict(prediction=torch.full((2, H, W), 3)), ValueError, "prediction must contain only 0 and 1"),
        (dict(prediction=torch.zeros(2, H, W)), TypeError, "prediction"),
        (dict(domain=[0]), ValueError, "one id per image"),
        (dict(domain=[0, 2]), ValueError, "domain ids"),
        (dict(generator=0), TypeError, "generator"),
    ],
)
def test_sampling_rejects_bad_inputs(change: dict, error: type, match: str) -> None:
    args = dict(labels=torch.zeros(2, H, W, dtype=torch.long), prediction=torch.zeros(2, H, W, dtype=torch.long),
                domain=[0, 1], mode="cacl", n_anchor=2, generator=None)
    args.update(change)
    with pytest.raises(error, match=match):
        sample_pixels(**args)


# ---------------------------------------------------------------- eq. 3
def reference_eq3(embeddings: torch.Tensor, sample: PixelSample, alpha: float) -> float:
    """Direct double loop over anchors and positives, in Python floats."""
    channels = embeddings.shape[1]
    vectors = embeddings.detach().permute(0, 2, 3, 1).reshape(-1, channels).double().tolist()

    def dot(i: int, j: int) -> float:
        return sum(x * y for x, y in zip(vectors[i], vectors[j]))

    domain_terms = []
    for d in (0, 1):
        anchors = sample.anchors[d].tolist()
        positives = [p for k, p in enumerate(sample.positives.tolist())
                     if sample.positive_domains is None or int(sample.positive_domains[k]) == d]
        if not anchors or not positives:
            continue
        total = 0.0
        for a in anchors:
            negative_sum = sum(math.exp(dot(a, n) / alpha) for n in sample.negatives[d].tolist())
            for p in positives:
                positive = math.exp(dot(a, p) / alpha)
                total += -math.log(positive / (positive + negative_sum))
        domain_terms.append(total / (len(anchors) * len(positives)))
    return sum(domain_terms)  # eq. 3 sums the domain terms


def _tiny_embeddings(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64), dim=1)


def _index(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


HAND_SAMPLE = PixelSample(
    anchors=[_index(0, 5, 7), _index(13, 20)],
    positives=_index(1, 2, 14, 22),
    negatives=[_index(3, 4, 8), _index(15, 16, 17, 23)],
)


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.005])  # 0.005: logits up to 200, exp overflows float32
@pytest.mark.parametrize("per_domain_positives", [False, True])
def test_eq3_matches_double_loop(alpha: float, per_domain_positives: bool) -> None:
    sample = HAND_SAMPLE._replace(positive_domains=_index(0, 0, 1, 1) if per_domain_positives else None)
    embeddings = _tiny_embeddings().float()
    loss = contrastive_loss(embeddings, sample, temperature=alpha)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(reference_eq3(embeddings, sample, alpha), rel=1e-4)


def test_eq3_sums_only_domains_with_anchors_and_handles_no_negatives() -> None:
    embeddings = _tiny_embeddings(1)
    only_v = HAND_SAMPLE._replace(anchors=[HAND_SAMPLE.anchors[0], _index()])
    assert contrastive_loss(embeddings, only_v).item() == pytest.approx(reference_eq3(embeddings, only_v, 0.1), rel=1e-6)
    no_negatives = HAND_SAMPLE._replace(negatives=[_index(), _index()])
    assert contrastive_loss(embeddings, no_negatives).item() == 0.0  # every ratio is 1


def test_eq3_end_to_end_and_gradient() -> None:
    labels, prediction = make_batch(POOLS)
    sample = sample_pixels(labels, prediction, DOMAINS, n_anchor=N_ANCHOR, generator=torch.Generator().manual_seed(2))
    raw = torch.randn(len(POOLS), 6, H, W, generator=torch.Generator().manual_seed(4), requires_grad=True)
    embeddings = F.normalize(raw, dim=1)
    loss = contrastive_loss(embeddings, sample)
    assert loss.item() == pytest.approx(reference_eq3(embeddings, sample, 0.1), rel=1e-4)
    loss.backward()
    used = torch.cat([*sample.anchors, sample.positives, *sample.negatives])
    grad_norm = raw.grad.permute(0, 2, 3, 1).reshape(-1, 6).norm(dim=1)
    assert (grad_norm[used] > 0).any()
    unused = torch.ones(len(POOLS) * HW, dtype=torch.bool)
    unused[used] = False
    assert (grad_norm[unused] == 0).all()


def test_eq3_zero_with_gradient_when_nothing_sampled() -> None:
    labels = torch.zeros(2, H, W, dtype=torch.long)  # no anomaly anywhere: no anchors
    sample = sample_pixels(labels, labels, [0, 1], n_anchor=N_ANCHOR)
    embeddings = torch.randn(2, 3, H, W, requires_grad=True)
    loss = contrastive_loss(embeddings, sample)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(embeddings.grad, torch.zeros_like(embeddings))


def test_eq3_rejects_bad_inputs() -> None:
    embeddings = _tiny_embeddings()
    with pytest.raises(ValueError, match="temperature"):
        contrastive_loss(embeddings, HAND_SAMPLE, temperature=0.0)
    with pytest.raises(ValueError, match="B x C x H x W"):
        contrastive_loss(embeddings[0], HAND_SAMPLE)
    labels = torch.zeros(1, 3, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="drawn for"):
        contrastive_loss(embeddings, sample_pixels(labels, labels, [0]))
    with pytest.raises(ValueError, match="domains"):
        contrastive_loss(embeddings, HAND_SAMPLE._replace(anchors=[HAND_SAMPLE.anchors[0]]))


# ---------------------------------------------------------------- projector
def test_projector_layout_and_unit_embeddings() -> None:
    torch.manual_seed(0)
    projector = ContrastProjector()
    convs = [m for m in projector.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(64, 64, (1, 1)), (64, 128, (1, 1))]
    assert [type(m) for m in projector.head] == [nn.Conv2d, nn.ReLU, nn.Conv2d]
    small = ContrastProjector(in_channels=16)
    out = small(torch.randn(2, 16, 5, 7))
    assert out.shape == (2, 128, 5, 7)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2, 5, 7))
    with pytest.raises(ValueError, match="B x 16 x H x W"):
        small(torch.randn(2, 8, 5, 7))
    with pytest.raises(ValueError, match="in_channels"):
        ContrastProjector(in_channels=0)


def test_eq3_stays_float32_inside_autocast() -> None:
    embeddings = _tiny_embeddings(2).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 matmuls would be off by ~1e-2 relative
        loss = contrastive_loss(embeddings, HAND_SAMPLE, temperature=0.05)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference_eq3(embeddings, HAND_SAMPLE, 0.05), rel=1e-5)


def test_projecting_only_the_sampled_pixels_gives_the_same_loss_and_gradients() -> None:
    from mgcda_core.losses.cacl import gather_sampled
    from mgcda_core.model.projector import ContrastProjector

    labels, prediction = make_batch(POOLS)
    for mode in ("cacl", "pcl"):
        sample = sample_pixels(labels, prediction, DOMAINS, mode=mode, n_anchor=N_ANCHOR,
                               generator=torch.Generator().manual_seed(5))
        torch.manual_seed(0)
        projector = ContrastProjector(in_channels=6, out_channels=8, hidden_channels=5)
        features = torch.randn(len(POOLS), 6, H, W, generator=torch.Generator().manual_seed(6), requires_grad=True)
        dense = contrastive_loss(projector(features), sample)
        dense_grad = torch.autograd.grad(dense, [features, *projector.parameters()])
        gathered, compact = gather_sampled(features, sample)
        sparse = contrastive_loss(projector(gathered), compact)
        sparse_grad = torch.autograd.grad(sparse, [features, *projector.parameters()])
        torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-6)
        for a, b in zip(sparse_grad, dense_grad):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
