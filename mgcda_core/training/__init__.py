"""MGCDA training: typed config, trainer loop, checkpoints and resume, DDP helpers, scalar logging.

Import the submodules directly (``from mgcda_core.training.trainer import Trainer``).
"""
