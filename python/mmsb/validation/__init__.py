"""The ten validators of DESIGN §5 (`mmsb validate`): each runs its workload through the public
mmsb API and measures the property its name claims; targets come from benchmarks_targets.json."""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence, Union

from ._framework import Context, ValidationReport, load_targets, machine_info, registered, run_validators
from . import v01_replay, v02_integrity, v03_graph, v04_purity, v05_throughput  # noqa: F401 (register)
from . import v06_tick, v07_memory, v08_invariants, v09_stability, v10_provenance  # noqa: F401


def validate(targets: Optional[os.PathLike] = None, quick: bool = False, *, progress: Optional[bool] = None,
             only: Union[str, Sequence[str], None] = None, on_result: Optional[Callable[[dict], None]] = None
             ) -> ValidationReport:
    """Run the validators (all ten, or those named in `only`: an empty one is refused with
    InvalidArgumentError) at full size, or shrunk with `quick=True`, against `targets` (default:
    the packaged benchmarks_targets.json). Progress bars show when stderr is a terminal unless
    `progress=False`. Returns a ValidationReport (bool() is True only when every validator passed)."""
    return run_validators(targets, quick=quick, progress=progress, only=only, on_result=on_result)


__all__ = ["Context", "ValidationReport", "load_targets", "machine_info", "registered", "validate"]
