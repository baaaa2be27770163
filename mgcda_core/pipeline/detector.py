"""``Detector``: numpy image in (any size, grey/RGB/RGBA uint8), anomaly score map out at the same size."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from mgcda_core.constants import DEFAULT_INPUT_SIZE
from mgcda_core.model.segmentation import DEFAULT_WEIGHTS
from mgcda_core.model.shipped import SHIPPED_DISSIMILARITY, SHIPPED_SCORE, shipped_checkpoint
from mgcda_core.pipeline.calibration import DEFAULT_CALIBRATION, Calibration
from mgcda_core.pipeline.graph import InferenceGraph
from mgcda_core.pipeline.scores import SCORES, TRAINED
from mgcda_core.pipeline.sml import default_stats_path, load_stats
from mgcda_core.pipeline.stages import InferenceStages
from mgcda_core.runtime.base import Runtime
from mgcda_core.utils.images import to_rgb

# ESPNetv2 needs multiples of 16, EfficientNet-Lite0's 5 perceptual levels multiples of 32.
SIZE_MULTIPLE = 32


def check_input_size(size: tuple[int, int]) -> tuple[int, int]:
    """Validate a network input size (height, width): positive multiples of 32."""
    if len(size) != 2 or any(int(v) != v or v <= 0 or v % SIZE_MULTIPLE for v in size):
        raise ValueError(f"network input size must be (height, width), positive multiples of {SIZE_MULTIPLE}, "
                         f"got {size}")
    return int(size[0]), int(size[1])


def to_network_input(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 HxW[x1|3|4] → float32 1 x 3 x h x w RGB in [0, 1] at ``size`` (area when shrinking, else bilinear)."""
    rgb = to_rgb(image)
    height, width = size
    shrink = rgb.shape[0] > height or rgb.shape[1] > width
    resized = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    tensor = np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32)
    tensor /= np.float32(255.0)  # in place: a second fresh array would cost more than the division
    return tensor


def build_graph(score: str = SHIPPED_SCORE, checkpoint: str | os.PathLike[str] | None = None,
                sml_stats: str | os.PathLike[str] | None = None, output: str = "score") -> InferenceGraph:
    """The inference graph on the embedded defaults, plus the trained dissimilarity network in ``checkpoint``
    (for ``dissimilarity``/``ensemble`` without a checkpoint: the network shipped in the package).

    For ``score="sml"`` the statistics come from ``sml_stats`` or, by default, beside the embedded
    segmentation weights (``default_stats_path``).
    """
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; expected one of {SCORES}")
    dissimilarity = None
    if checkpoint is None and score in TRAINED and output == "score":
        checkpoint = shipped_checkpoint()
    if checkpoint is not None:
        from mgcda_core.model.checkpoint import load_model

        dissimilarity = load_model(checkpoint).eval()
    mean = std = None
    if score == "sml" and output == "score":
        mean, std = load_stats(sml_stats if sml_stats is not None else default_stats_path(DEFAULT_WEIGHTS))
    return InferenceGraph(InferenceStages.default(), score, dissimilarity, mean, std, output).eval()


def weights_info(graph: InferenceGraph, checkpoint: str | os.PathLike[str] | None = None) -> dict[str, str | None]:
    """Which weights ``graph`` runs, for ``Detector.info`` and the node's outputs: the embedded segmentation file,
    the perceptual extractor, the resynthesis network and the dissimilarity network (the ``checkpoint`` file's
    name, the shipped network when the graph holds one without ``checkpoint``, ``None`` for training-free
    scores)."""
    if checkpoint is not None:
        dissimilarity: str | None = Path(checkpoint).name
    else:
        dissimilarity = SHIPPED_DISSIMILARITY.name if graph.dissimilarity is not None else None
    return {"segmentation": DEFAULT_WEIGHTS.name, "perceptual": graph.stages.perceptual_source,
            "resynthesis": type(graph.stages.resynthesis).__name__, "dissimilarity": dissimilarity}


class Detector:
    """Runs an inference graph through a ``Runtime``: resize to the network size, score, resize back.

    ``raw_score(rgb)`` is the graph's score (for metrics); ``detector(rgb)`` its monotone calibration to [0, 1]
    (for masks and the node). ``info`` records which weights are in use.
    """

    def __init__(self, runtime: Runtime, score: str, input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
                 calibration: Calibration | None = None, info: dict | None = None) -> None:
        if not isinstance(runtime, Runtime):
            raise TypeError(f"runtime must implement mgcda_core.runtime.base.Runtime, got {type(runtime).__name__}")
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}; expected one of {SCORES}")
        self.runtime = runtime
        self.score = score
        self.input_size = check_input_size(input_size)
        self.calibration = calibration if calibration is not None else DEFAULT_CALIBRATION[score]
        self.info = {"score": score, "input_size": list(self.input_size), "backend": runtime.name,
                     "device": runtime.device, **(info or {})}

    @classmethod
    def _torch(cls, graph: InferenceGraph, score: str, input_size: tuple[int, int], device: str,
               calibration: Calibration | None, checkpoint: str | os.PathLike[str] | None) -> Detector:
        from mgcda_core.runtime.torch_runtime import TorchRuntime

        return cls(TorchRuntime(graph, device), score, input_size, calibration, weights_info(graph, checkpoint))

    @classmethod
    def default(cls, score: str = SHIPPED_SCORE, input_size: tuple[int, int] = DEFAULT_INPUT_SIZE, device: str = "cpu",
                sml_stats: str | os.PathLike[str] | None = None, calibration: Calibration | None = None) -> Detector:
        """Embedded weights only (nothing downloads): the network shipped in the package with ``score``
        ``dissimilarity`` (the default) or ``ensemble``, or a training-free ``score`` on the embedded ESPNetv2."""
        graph = build_graph(score, None, sml_stats)
        return cls._torch(graph, score, input_size, device, calibration, None)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], score: str = "dissimilarity",
                        input_size: tuple[int, int] = DEFAULT_INPUT_SIZE, device: str = "cpu",
                        sml_stats: str | os.PathLike[str] | None = None,
                        calibration: Calibration | None = None) -> Detector:
        """The embedded front half plus the trained dissimilarity network in ``path`` (an mgcda checkpoint)."""
        graph = build_graph(score, path, sml_stats)
        return cls._torch(graph, score, input_size, device, calibration, path)

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """uint8 HxW[x1|3|4] → float32 1 x 3 x h x w RGB in [0, 1] at the network size."""
        return to_network_input(image, self.input_size)

    def postprocess(self, score: np.ndarray, size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
        """Network-size 1 x 1 x h x w score → float32 H x W (bilinear), written into ``out`` when given (a
        C-contiguous H x W float32 array, e.g. an outgoing message's payload)."""
        expected = (1, 1, *self.input_size)
        if score.shape != expected:
            raise ValueError(f"runtime {self.runtime.name} returned shape {score.shape}, expected {expected}")
        # cv2 would silently allocate a new array for a mismatched dst, leaving the caller's buffer stale
        if out is not None and (out.dtype != np.float32 or out.shape != tuple(size) or not out.flags.c_contiguous):
            raise ValueError(f"out must be a C-contiguous float32 array of shape {tuple(size)}, "
                             f"got {out.dtype} {out.shape}")
        return cv2.resize(score[0, 0].astype(np.float32, copy=False), (size[1], size[0]), dst=out,
                          interpolation=cv2.INTER_LINEAR)

    def raw_score(self, image: np.ndarray) -> np.ndarray:
        """Raw anomaly score (higher = more anomalous), float32 H x W at the input's size."""
        rgb = to_rgb(image)
        return self.postprocess(self.runtime.run(self.preprocess(rgb)), rgb.shape[:2])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Calibrated anomaly score in [0, 1], float32 H x W at the input's size."""
        return self.calibration.in_place(self.raw_score(image))  # raw_score's array is this call's own
