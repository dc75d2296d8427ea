"""CUDA status. Device pages are not available in this version; see mmsb.build_info()."""

from __future__ import annotations

from . import _core


def is_available() -> bool:
    """True when this build has CUDA code and a CUDA device is usable right now."""
    return _core.cuda_compiled() and _core.cuda_device_count() > 0


def device_count() -> int:
    """Number of usable CUDA devices (0 without a driver or GPU)."""
    return _core.cuda_device_count()
