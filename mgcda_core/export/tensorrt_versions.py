"""What the installed TensorRT version can build: the declared minimum and its ONNX parser's operator list.

Sources: onnx/onnx-tensorrt ``docs/Changelog.md`` (the parser TensorRT ships), entries per release:
- 10.3: "Added support for tensor ``axes`` inputs for ``Slice`` nodes". The exported graphs need it: the
  TorchScript exporter without constant folding feeds a Slice's ``axes`` from Unsqueeze(Constant)
  (``/segmentation/Slice_4`` in the default graph), which 10.0-10.2 reject. Hence ``MIN_TENSORRT``.
- operators first supported after 10.0 are listed in ``OPERATORS_ADDED``; ``tensorrt_supported_ops.txt`` is the
  newest matrix, so an older TensorRT supports that list minus the operators added after it.
"""

from __future__ import annotations

import dataclasses
import re

from mgcda_core.export.onnx_checks import SupportedOps, load_supported_ops

Version = tuple[int, int]

MIN_TENSORRT: Version = (10, 3)

# Operator -> first TensorRT release whose ONNX parser supports it (onnx-tensorrt docs/Changelog.md).
OPERATORS_ADDED: dict[str, Version] = {
    "DeformConv": (10, 1),
    "BlackmanWindow": (10, 4), "HammingWindow": (10, 4), "HannWindow": (10, 4),
    "STFT": (10, 5),
    "Attention": (10, 14),
    "RotaryEmbedding": (10, 15), "RMSNormalization": (10, 15), "TensorScatter": (10, 15),
}


def parse_version(version: str) -> Version:
    """(major, minor) of a TensorRT version string such as ``10.3.0.30`` or ``11.1.0``."""
    match = re.match(r"(\d+)\.(\d+)", version.strip())
    if match is None:
        raise ValueError(f"cannot read a TensorRT version from {version!r}; expected 'major.minor[...]'")
    return int(match.group(1)), int(match.group(2))


def check_minimum_version(version: str) -> None:
    """RuntimeError with one line when ``version`` is older than ``MIN_TENSORRT``."""
    if parse_version(version) < MIN_TENSORRT:
        minimum = ".".join(map(str, MIN_TENSORRT))
        raise RuntimeError(f"TensorRT {version} is too old: the exported graphs need TensorRT >= {minimum} (its ONNX "
                           "parser reads Slice axes from a tensor); upgrade TensorRT (JetPack 6 ships 10.3)")


def supported_ops_for(version: str, newest: SupportedOps | None = None) -> SupportedOps:
    """The operators TensorRT ``version``'s parser supports: ``newest`` (the shipped list) minus later additions."""
    newest = newest or load_supported_ops()
    wanted = parse_version(version)
    if wanted >= parse_version(newest.tensorrt_version):
        return newest
    ops = frozenset(op for op in newest.ops if OPERATORS_ADDED.get(op, (0, 0)) <= wanted)
    return dataclasses.replace(newest, ops=ops, tensorrt_version=version)
