"""Runtimes that execute an exported or in-memory inference graph behind one interface."""

from mgcda_core.runtime.base import Runtime

__all__ = ["Runtime"]
