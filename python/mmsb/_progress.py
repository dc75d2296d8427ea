"""Progress bars for long operations: recovery and replay of a big log, time travel, checkpoints
of many pages, `mmsb validate`, `mmsb bench`.

One rule everywhere: `progress=None` (the default) shows a bar only where someone is watching
(stderr is a terminal, or the code runs in a Jupyter kernel) and only once the work has taken
more than half a second, so that short operations and scripts in CI print nothing;
`progress=True` always shows one, `progress=False` never. tqdm.auto picks the terminal or the
notebook widget.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Iterable, Optional, Union

# What a progress= argument may be: None (a bar where someone watches and the work lasts), True,
# False, or a callable(phase, done, total) with phase "scan", "replay" or "checkpoint".
Progress = Union[bool, None, Callable[[str, int, int], None]]

# A bar appears only for work that has already lasted this long (seconds) when not forced.
QUIET_SECONDS = 0.5

_PHASES = {
    "scan": ("checking log segments", "segment"),
    "replay": ("replaying changes", "change"),
    "checkpoint": ("writing pages", "page"),
}


def interactive() -> bool:
    """True when a person is likely watching: stderr is a terminal, or this is a Jupyter kernel."""
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):  # a replaced or closed stderr
        pass
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython() if hasattr(shell, "get_ipython") else None
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def wanted(progress: Optional[bool]) -> bool:
    """Whether `progress` (None, True or False) asks for bars here; anything else (a callable
    included: validate and bench have no engine phases to report) is InvalidArgumentError."""
    if progress is None:
        return interactive()
    if not isinstance(progress, bool):
        from .errors import InvalidArgumentError

        raise InvalidArgumentError(f"progress must be None, True or False here; got {type(progress).__name__}")
    return progress


def iterate(iterable: Iterable, progress: Optional[bool], total: Optional[int] = None,
            desc: Optional[str] = None) -> Iterable:
    """`iterable`, with a bar when `progress` asks for one (validators, bench steps)."""
    if not wanted(progress):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, mininterval=0.5)


def bar(total: int, desc: str, show: bool) -> Any:
    """A tqdm bar of `total` steps when `show`, else None (callers test for None)."""
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, mininterval=0.5)


class _Bars:
    """The callable the engine reports phases to (phase, done, total): one bar per phase, opened
    once the phase has lasted QUIET_SECONDS unless forced, closed when it completes."""

    def __init__(self, what: str, forced: bool) -> None:
        self.what, self.forced = what, forced
        self.bar: Any = None
        self.phase: Optional[str] = None
        self.started = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self.phase:
            self._close()
            self.phase, self.started = phase, time.monotonic()
        if self.bar is None and (self.forced or time.monotonic() - self.started >= QUIET_SECONDS):
            from tqdm.auto import tqdm

            label, unit = _PHASES.get(phase, (phase, "it"))
            self.bar = tqdm(total=total, desc=f"mmsb {self.what}: {label}", unit=unit, leave=False,
                            mininterval=0.2, unit_scale=True)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
        if done >= total:
            self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def reporter(progress: Optional[bool], what: str) -> Optional[Callable[[str, int, int], None]]:
    """What the engine should report `what`'s phases to for `progress` (None, True or False):
    None when nothing is to be shown, so the engine does not even count."""
    if not wanted(progress):
        return None
    return _Bars(what, forced=progress is True)
