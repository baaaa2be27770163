"""The inference pipeline: segmentation → resynthesis → uncertainty → dissimilarity → score (docs/PIPELINE.md).

- ``InferenceStages`` / ``StageOutputs``: the front half shared by ``prepare`` and inference (``stages.py``);
- ``InferenceGraph``: the exportable torch graph, image → raw score or a prefix (``graph.py``);
- ``Detector``: numpy in, numpy out, through any ``Runtime`` (``detector.py``);
- scores (``scores.py``), calibration (``calibration.py``), uncertainty maps (``uncertainty.py``),
  resynthesis (``resynthesis.py``), SML statistics (``sml.py``).
"""

from mgcda_core.pipeline.calibration import DEFAULT_CALIBRATION, Calibration
from mgcda_core.pipeline.detector import Detector, build_graph
from mgcda_core.pipeline.graph import InferenceGraph
from mgcda_core.pipeline.scores import SCORES, TRAINING_FREE
from mgcda_core.pipeline.stages import InferenceStages, StageOutputs

__all__ = ["DEFAULT_CALIBRATION", "SCORES", "TRAINING_FREE", "Calibration", "Detector", "InferenceGraph",
           "InferenceStages", "StageOutputs", "build_graph"]
