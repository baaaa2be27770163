"""Which parameters an exported inference graph carries, per component, against the baseline network's.

MGCDA's training-only modules (domain classifiers D_f and D_o, the contrastive projector; Zhang et al., ACM MM
2023, section 3, and docs/TRAINING.md) must not reach the deployed network, so the exported dissimilarity
parameters must equal a freshly built baseline ``DissimNetPrior`` of the same architecture.
"""

from __future__ import annotations

from typing import Any

import onnx
import torch

from mgcda_core.export.onnx_checks import initializer_numel, parameter_initializers
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

    A parameter counts as exported when the ONNX carries its values (``parameter_initializers``: under its name,
    or merged with identical ones). A frozen dissimilarity encoder that the graph shares with the perceptual
    extractor (``InferenceGraph.share_features``) runs as the extractor, so its parameters are exported under
    ``stages.uncertainty`` and are expected missing from ``dissimilarity``. Raises ValueError when the exported
    dissimilarity parameters differ from the baseline's.
    """
    parameters = dict(graph.named_parameters())
    if getattr(graph, "share_features", False):
        # a shared encoder runs as the extractor; its values are in the ONNX only as the extractor's (identical)
        # initializers, which must not count a second time as the dissimilarity network's
        parameters = {n: p for n, p in parameters.items() if not n.startswith("dissimilarity.encoder.")}
    values = {name: p.detach().cpu().numpy() for name, p in parameters.items()}
    exported: dict[str, int] = {}
    for name in parameter_initializers(model, values):
        exported[component_of(name)] = exported.get(component_of(name), 0) + parameters[name].numel()
    report: dict[str, Any] = {
        "exported_parameters": sum(exported.values()),
        "exported_parameters_by_component": dict(sorted(exported.items())),
        "non_parameter_initializer_elements": sum(c for n, c in initializer_numel(model).items()
                                                  if n not in parameters),
    }
    dissimilarity = getattr(graph, "dissimilarity", None)
    if dissimilarity is not None and "dissimilarity" in exported:
        from mgcda_core.model.dissimilarity import DissimNetPrior

        baseline = count_parameters(DissimNetPrior(**dissimilarity.architecture))
        shared = count_parameters(dissimilarity.encoder) if getattr(graph, "share_features", False) else 0
        report["baseline_dissimnet_parameters"] = baseline
        report["shared_encoder_parameters"] = shared
        if exported["dissimilarity"] != baseline - shared:
            raise ValueError(f"exported dissimilarity network has {exported['dissimilarity']} parameters, the baseline "
                             f"DissimNetPrior{dissimilarity.architecture} has {baseline}"
                             + (f" of which {shared} run as the shared perceptual encoder" if shared else ""))
    return report
