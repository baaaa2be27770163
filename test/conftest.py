"""Shared fixtures. Every ROS process started from the tests inherits DDS-on-loopback settings from here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# README: no DDS traffic may leave loopback; subprocesses inherit this environment.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 60))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MGCDA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real frames, weights and bags); tests using it skip on a user's clone without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (a fresh clone has no ../shared); CI has it")
    return SHARED_DATA


@pytest.fixture(scope="module")
def single_thread_torch():
    """One intra-op thread for a module of tiny-tensor tests: on 2 shared cores OpenMP spinning makes 2 threads
    many times slower than 1. Restored afterwards. Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
