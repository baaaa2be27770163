"""The trained dissimilarity network shipped in the package, and the tool that writes it.

``SHIPPED_DISSIMILARITY`` is an mgcda checkpoint (``model.checkpoint`` format) holding the real-time network of
``config/presets/realtime.yaml`` trained with MGCDA on real driving data; its model card (data, licences,
training command and budget, validation and RoadAnomaly numbers, speed) is ``SHIPPED_CARD``. Weights are stored
in float16 (half the size) and loaded into the float32 network; ``SHIPPED_SCORE`` is the score chosen on the
validation set, never on RoadAnomaly.

    python -m mgcda_core.model.shipped --checkpoint runs/realtime_mgcda/checkpoints/step_00001500.pt \\
        --out mgcda_core/assets/mgcda_realtime_256x512.pt

writes such a file: architecture and weights only (no optimiser or training state), float tensors in float16,
atomically.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from mgcda_core.errors import MissingInputError, OutputError
from mgcda_core.model.checkpoint import FORMAT, VERSION, load_model
from mgcda_core.utils.atomic import atomic_write_with
from mgcda_core.utils.cli import user_errors

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED_DISSIMILARITY = ASSETS / "mgcda_realtime_256x512.pt"
SHIPPED_CARD = ASSETS / "mgcda_realtime_256x512.md"
SHIPPED_SCORE = "dissimilarity"  # chosen on validation AP (the model card gives the numbers)
MAX_SHIPPED_BYTES = 25 * 2**20


def shipped_checkpoint() -> Path:
    """Path of the shipped network; an installation that lacks it is an error naming the file."""
    if not SHIPPED_DISSIMILARITY.is_file():
        raise MissingInputError(f"the shipped dissimilarity network {SHIPPED_DISSIMILARITY} is missing from this "
                                "installation; reinstall the package or pass a checkpoint explicitly")
    return SHIPPED_DISSIMILARITY


def write_shipped(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str]) -> int:
    """Write ``checkpoint``'s network (architecture + float16 weights) to ``out``; returns the file size.

    The network is loaded strictly first, so only a valid checkpoint is ever written; a result above
    ``MAX_SHIPPED_BYTES`` is refused.
    """
    model = load_model(checkpoint)
    state = {key: value.half() if value.is_floating_point() else value for key, value in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "architecture": dict(model.architecture), "model": state,
               "source": Path(checkpoint).name}
    atomic_write_with(out, lambda handle: torch.save(payload, handle))
    size = Path(out).stat().st_size
    if size > MAX_SHIPPED_BYTES:
        Path(out).unlink()
        raise OutputError(f"{out}: {size} bytes exceed the {MAX_SHIPPED_BYTES} bytes a shipped network may take")
    return size


@user_errors
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mgcda_core.model.shipped",
                                     description="write a trained checkpoint as the package's float16 network")
    parser.add_argument("--checkpoint", required=True, type=Path, help="mgcda checkpoint (training or inference)")
    parser.add_argument("--out", type=Path, default=SHIPPED_DISSIMILARITY, help=f"default {SHIPPED_DISSIMILARITY}")
    args = parser.parse_args(argv)
    size = write_shipped(args.checkpoint, args.out)
    print(f"{args.out}: {size / 2**20:.2f} MiB (float16 weights of {args.checkpoint})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
