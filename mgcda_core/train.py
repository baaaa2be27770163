"""``python -m mgcda_core.train --config config/train.yaml [--set key=value ...] [--resume]``

Trains the Synboost dissimilarity network with MGCDA (MDAT + CACL). Single process (CPU or one GPU), or one
process per GPU under ``torchrun --nproc_per_node=N -m mgcda_core.train ...``. See docs/TRAINING.md.
"""

from __future__ import annotations

import argparse
import sys

from mgcda_core.utils.cli import user_errors


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mgcda_core.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/train.yaml", help="YAML config (presets: config/presets/*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, value parsed as YAML (repeatable), e.g. --set optim.lr=2e-4")
    parser.add_argument("--resume", action="store_true",
                        help="continue from <checkpoint.out_dir>/checkpoints/latest.pt at its step")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in a <checkpoint.out_dir> that holds checkpoints, deleting them")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar: one plain line every train.log_every steps instead")
    args = parser.parse_args(argv)
    if args.resume and args.overwrite:
        parser.error("--resume continues the run in checkpoint.out_dir, --overwrite replaces it: give one")

    # The config module does not import torch: a bad config is refused within a second.
    from mgcda_core.training.config import load_train_config

    config = load_train_config(args.config, args.overrides)

    from mgcda_core.training.step import NonFiniteLossError
    from mgcda_core.training.trainer import train

    try:
        summary = train(config, resume=args.resume, overwrite=args.overwrite, show_progress=not args.no_progress)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    losses = ", ".join(f"{k}={v:.4g}" for k, v in summary.losses.items())
    print(f"trained to step {summary.step}/{summary.total_steps}; last losses: {losses}; "
          f"checkpoint: {summary.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
