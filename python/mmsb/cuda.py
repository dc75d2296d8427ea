"""CUDA: whether devices are usable, and NCCL replication. Device pages themselves are made with
``bus.create_page(..., location="cuda:N")`` (see docs/api.md, "Device pages")."""

from __future__ import annotations

from . import _core


def is_available() -> bool:
    """True when this build has CUDA code and a CUDA device is usable right now."""
    return _core.cuda_compiled() and _core.cuda_device_count() > 0


def device_count() -> int:
    """Number of usable CUDA devices (0 without a driver or GPU)."""
    return _core.cuda_device_count()


def nccl_available() -> bool:
    """True when this build has NCCL support, libnccl loads (it is opened at run time, never
    linked) and a CUDA device is usable."""
    return _core.nccl_available()


def nccl_version() -> str:
    """NCCL's version, e.g. ``"2.28.9"``, or ``""`` when libnccl cannot be loaded (no GPU needed)."""
    return _core.nccl_version()


#: Replicas of device pages kept identical on several GPUs: rank 0 broadcasts each tick's rows over
#: NCCL and every rank applies them in the same order. See docs/api.md, "mmsb.cuda.Replicator".
Replicator = _core.Replicator
