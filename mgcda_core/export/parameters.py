"""Which parameters an exported inference graph carries, per component, against the baseline network's.

SPEC section 3: MGCDA's training-only modules (domain classifiers D_f and D_o, the contrastive projector) must
not reach the deployed network, so the exported dissimilarity parameters must equal a freshly built baseline
``DissimNetPrior`` of the same architecture.
"""

from __future__ import annotations

from typing import Any

import onnx
import torch

from mgcda_core.export.onnx_checks import initializer_numel
from mgcda_core.utils.flops import count_parameters

# Top-level components of ``InferenceGraph`` (attribute paths, as the exporter names initializers).
COMPONENTS = ("stages.segmentation", "stages.resynthesis", "stages.uncertainty", "dissimilarity")


def component_of(name: str) -> str:
    for component in COMPONENTS:
        if name.startswith(component + "."):
            return component
    return "other"


def parameter_report(model: onnx.ModelProto, graph: torch.nn.Module) -> dict[str, Any]:
    """Exported parameter elements per component, the baseline ``DissimNetPrior`` count when the graph has one,
    and the elements of initializers that are no parameter (buffers such as BatchNorm statistics, constants).

    Raises ValueError when the exported dissimilarity parameters differ from the baseline's.
    """
    numel = initializer_numel(model)
    parameters = dict(graph.named_parameters())
    exported: dict[str, int] = {}
    for name, count in numel.items():
        if name in parameters:
            exported[component_of(name)] = exported.get(component_of(name), 0) + count
    report: dict[str, Any] = {
        "exported_parameters": sum(exported.values()),
        "exported_parameters_by_component": dict(sorted(exported.items())),
        "non_parameter_initializer_elements": sum(c for n, c in numel.items() if n not in parameters),
    }
    dissimilarity = getattr(graph, "dissimilarity", None)
    if dissimilarity is not None and "dissimilarity" in exported:
        from mgcda_core.model.dissimilarity import DissimNetPrior

        network = DissimNetPrior(**dissimilarity.architecture, pretrained=False)
        baseline = count_parameters(network)
        if getattr(graph, "share_features", False):
            # a frozen encoder shared with the perceptual difference is exported once, as the extractor's weights
            baseline -= count_parameters(network.encoder)
            report["shared_encoder_parameters"] = count_parameters(network.encoder)
        report["baseline_dissimnet_parameters"] = baseline
        if exported["dissimilarity"] != baseline:
            raise ValueError(f"exported dissimilarity network has {exported['dissimilarity']} parameters, the baseline "
                             f"DissimNetPrior{dissimilarity.architecture} has {baseline}")
    return report
