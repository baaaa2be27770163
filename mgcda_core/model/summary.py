"""``python -m mgcda_core.model.summary``: parameters and FLOPs of ``DissimNetPrior`` per encoder.

Counts run on PyTorch's meta device (shapes only, no arithmetic), so the table is instant at any size.
FLOPs come from :func:`mgcda_core.utils.flops.count_flops` (a multiply-add counts 2).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from mgcda_core.constants import DEFAULT_INPUT_SIZE, NUM_CLASSES
from mgcda_core.model.dissimilarity import DissimNetPrior
from mgcda_core.model.encoders import ENCODERS
from mgcda_core.utils.flops import count_flops, count_parameters


@dataclass(frozen=True)
class ModelSummary:
    encoder: str
    parameters: int
    encoder_parameters: int
    flops: int
    encoder_flops: int  # both siamese passes


def summarise(encoder: str, height: int, width: int, width_multiplier: float = 1.0) -> ModelSummary:
    """Parameter and FLOP counts of one ``DissimNetPrior`` (batch 1, ``height`` x ``width`` input)."""
    meta = torch.device("meta")
    with meta:
        model = DissimNetPrior(encoder, width=width_multiplier).eval()
    image = torch.empty(1, 3, height, width, device=meta)
    semantic = torch.empty(1, NUM_CLASSES, height, width, device=meta)
    return ModelSummary(encoder=encoder, parameters=count_parameters(model),
                        encoder_parameters=count_parameters(model.encoder),
                        flops=count_flops(model, image, image, semantic, image),
                        encoder_flops=2 * count_flops(model.encoder, image))


def format_table(rows: list[ModelSummary], height: int, width: int) -> str:
    """Markdown table of ``rows``."""
    lines = [f"DissimNetPrior at {height}x{width}, batch 1 (GFLOPs: multiply-add = 2 FLOPs)", "",
             "| encoder | params (M) | encoder params (M) | GFLOPs | encoder GFLOPs (x2 siamese) | rest GFLOPs |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.encoder} | {r.parameters / 1e6:.3f} | {r.encoder_parameters / 1e6:.3f} | "
                     f"{r.flops / 1e9:.2f} | {r.encoder_flops / 1e9:.2f} | {(r.flops - r.encoder_flops) / 1e9:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=DEFAULT_INPUT_SIZE[0])
    parser.add_argument("--width", type=int, default=DEFAULT_INPUT_SIZE[1])
    parser.add_argument("--width-multiplier", type=float, default=1.0)
    parser.add_argument("--encoders", nargs="+", choices=ENCODERS, default=list(ENCODERS))
    args = parser.parse_args(argv)
    rows = [summarise(name, args.height, args.width, args.width_multiplier) for name in args.encoders]
    print(format_table(rows, args.height, args.width))


if __name__ == "__main__":
    main()
