"""The exportable inference graph: image at network resolution → raw anomaly score (or a prefix of the path)."""

from __future__ import annotations

import torch
from torch import nn

from mgcda_core.model.dissimilarity import DissimNetPrior
from mgcda_core.pipeline import scores
from mgcda_core.pipeline.stages import InferenceStages, imagenet_normalise

OUTPUTS = ("score", "logits", "uncertainty", "synthesis")


def encoder_shared(dissimilarity: DissimNetPrior, stages: InferenceStages) -> bool:
    """Whether ``dissimilarity``'s image encoder is frozen and computes exactly the first levels of the
    perceptual extractor's pyramid, so that the graph can run the backbone once for both.

    Checked on a probe input rather than by name: a frozen encoder whose weights differ from the extractor's
    (another checkpoint, another width) is simply not shared.
    """
    if not getattr(dissimilarity, "freeze_encoder", False):
        return False
    encoder = dissimilarity.encoder
    probe = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    device = next(encoder.parameters()).device
    with torch.no_grad():
        ours = encoder(probe.to(device))
        try:
            theirs = stages.uncertainty.extractor.features(probe.to(device))
        except ValueError:  # the extractor cannot take the probe size
            return False
    if len(theirs) < len(ours):
        return False
    # same weights and the same operations: equal up to the few ulps that another kernel order may give
    return all(a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(ours, theirs))


class InferenceGraph(nn.Module):
    """``forward(image)``: float32 N x 3 x H x W RGB in [0, 1] → float32 N x 1 x H x W raw score (higher = more
    anomalous), or with ``output`` = "logits" (N x 19), "uncertainty" (N x 3), "synthesis" (N x 3) that prefix.

    Branches depend only on constructor arguments, never on data, so the graph traces/exports to ONNX as is.
    Training-free scores run only the segmentation network; "dissimilarity" and "ensemble" need ``dissimilarity``
    (a ``DissimNetPrior``); "sml" needs ``sml_mean``/``sml_std`` (19 entries each).
    """

    sml_mean: torch.Tensor | None  # buffers, or None without statistics
    sml_std: torch.Tensor | None

    def __init__(self, stages: InferenceStages, score: str = "max_logit", dissimilarity: DissimNetPrior | None = None,
                 sml_mean: torch.Tensor | None = None, sml_std: torch.Tensor | None = None, output: str = "score") -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if score not in scores.SCORES:
            raise ValueError(f"unknown score {score!r}; expected one of {scores.SCORES}")
        if output == "score" and score in scores.TRAINED and dissimilarity is None:
            raise ValueError(f"score {score!r} needs a trained dissimilarity network (Detector.from_checkpoint); "
                             f"training-free scores: {scores.TRAINING_FREE}")
        if output == "score" and score == "sml" and (sml_mean is None or sml_std is None):
            raise ValueError("score 'sml' needs per-class statistics: run python -m mgcda_core.sml_stats")
        self.stages = stages
        self.score = score
        self.output = output
        self.dissimilarity = dissimilarity
        self.share_features = dissimilarity is not None and encoder_shared(dissimilarity, stages)
        if sml_mean is not None and sml_std is not None:
            self.register_buffer("sml_mean", sml_mean.float().reshape(-1))
            self.register_buffer("sml_std", sml_std.float().reshape(-1))
        else:
            self.sml_mean = self.sml_std = None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.output == "logits" or (self.output == "score" and self.score in scores.TRAINING_FREE):
            logits = self.stages.segmentation(image)
            if self.output == "logits":
                return logits
            return self._training_free(logits).unsqueeze(1)
        out = self.stages(image)
        if self.output == "uncertainty":
            return out.uncertainty
        if self.output == "synthesis":
            return out.synthesis
        semantic = out.onehot
        assert self.dissimilarity is not None  # __init__ refuses the trained scores without a dissimilarity network
        if self.share_features:  # the frozen encoder is the perceptual extractor: reuse its pyramid
            n = image.shape[0]
            levels = out.features[: len(self.dissimilarity.encoder.out_channels)]
            dissim = self.dissimilarity.decode([f[:n] for f in levels], [f[n:] for f in levels], semantic,
                                               out.uncertainty)
        else:
            dissim = self.dissimilarity(imagenet_normalise(image), imagenet_normalise(out.synthesis), semantic,
                                        out.uncertainty)
        prob = scores.dissimilarity(dissim.logits)
        if self.score == "ensemble":
            prob = scores.ensemble(prob, out.uncertainty[:, 0])
        return prob.unsqueeze(1)

    def _training_free(self, logits: torch.Tensor) -> torch.Tensor:
        if self.score == "sml":
            assert self.sml_mean is not None and self.sml_std is not None  # __init__ refuses "sml" without statistics
            return scores.sml(logits, self.sml_mean, self.sml_std)
        return {"msp": scores.msp, "entropy": scores.entropy, "max_logit": scores.max_logit,
                "energy": scores.energy}[self.score](logits)
