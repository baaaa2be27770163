"""A torch device named on the command line, checked before any model is built."""

from __future__ import annotations

import torch

from mgcda_core.errors import ConfigError, shorten


def check_device(text: str, option: str = "--device") -> torch.device:
    """``torch.device(text)``, refusing (one line, naming ``option``) a malformed name or an absent CUDA device."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{option} {shorten(text)} is not a torch device (e.g. cpu, cuda, cuda:0)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{option} {text}: no CUDA device is available here; use --device cpu")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{option} {text}: there is no such device, only cuda:0..cuda:{count - 1}")
    return device
