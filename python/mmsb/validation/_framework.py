"""The validator framework: a registry of the ten validators, their targets (read from
benchmarks_targets.json), the context each one runs in, and the report they produce."""

from __future__ import annotations

import collections.abc
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from .. import _progress
from .._reports import Report

_OPS: dict[str, Callable[[float, float], bool]] = {
    "==": lambda v, t: v == t,
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
}

Validator = Callable[["Context"], dict]
_REGISTRY: dict[str, tuple[int, Validator, frozenset]] = {}


def validator(number: int, name: str, metrics: Sequence[str]) -> Callable[[Validator], Validator]:
    """Registers `fn(ctx) -> {metric: value}` as validator `number` called `name`, measuring
    `metrics` (declared so that targets naming another metric are refused before any run)."""

    def register(fn: Validator) -> Validator:
        _REGISTRY[name] = (number, fn, frozenset(metrics))
        return fn

    return register


def registered() -> list[str]:
    """Validator names in their numbered order."""
    return [name for name, _ in sorted(_REGISTRY.items(), key=lambda kv: kv[1][0])]


@dataclass
class Context:
    """What a validator gets: the size to run at, a seed, a fresh scratch directory (removed
    afterwards), a progress wrapper and a place for details that are reported but not checked."""

    quick: bool
    seed: int
    tmpdir: Path
    show_progress: bool
    details: dict = field(default_factory=dict)

    def size(self, full: Any, quick: Any) -> Any:
        """The full-workload value, or the quick one under --quick."""
        return quick if self.quick else full

    def progress(self, iterable: Iterable, total: Optional[int] = None, desc: Optional[str] = None) -> Iterable:
        """`iterable` with a tqdm bar (terminal or notebook) when progress is on."""
        return _progress.iterate(iterable, self.show_progress, total=total, desc=desc)

    def note(self, key: str, value: Any) -> None:
        """A figure worth reporting that no target checks (sizes, rates of the parts)."""
        self.details[key] = value


def load_targets(path: Optional[os.PathLike] = None) -> dict:
    """The validators' targets: the packaged benchmarks_targets.json, or `path`. Raises
    InvalidArgumentError naming what is wrong with a malformed file."""
    from ..errors import InvalidArgumentError

    if path is not None:
        try:
            path = os.fsdecode(path)  # a bytes path too, as a bus takes one
        except TypeError:
            raise InvalidArgumentError(f"targets must be a path (str, bytes or os.PathLike) or None; "
                                       f"got {type(path).__name__}") from None
    try:
        if path is None:
            text = resources.files("mmsb").joinpath("benchmarks_targets.json").read_text()
        else:
            text = Path(path).read_text()
        data = json.loads(text)
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: JSON nested too deep to parse
        raise InvalidArgumentError(f"cannot read targets from {path or 'the mmsb package'}: "
                                   f"{'nested too deeply' if isinstance(e, RecursionError) else e}") from None
    validators = data.get("validators") if isinstance(data, dict) else None
    if not isinstance(validators, dict):
        raise InvalidArgumentError(f"targets file {path}: no 'validators' object")
    for name, spec in validators.items():
        checks = spec.get("checks") if isinstance(spec, dict) else None
        if not isinstance(checks, list) or not checks:
            raise InvalidArgumentError(f"targets file {path}: validator {name!r} has no checks")
        for c in checks:
            if not _well_formed(c):
                raise InvalidArgumentError(
                    f"targets file {path}: a check of {name!r} needs a metric name, op (one of {sorted(_OPS)}), "
                    f"a finite numeric threshold in a float's range and, if any, a unit string; got {c!r}")
            c.setdefault("unit", "")
    return validators


def _well_formed(check: Any) -> bool:
    """A check a run can evaluate and report: bools are not thresholds, NaN compares false, and
    an int past the float range (10**400) is no figure a metric can be held to."""
    if not isinstance(check, dict):
        return False
    threshold = check.get("threshold")
    return (isinstance(check.get("metric"), str) and bool(check["metric"]) and check.get("op") in _OPS
            and isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
            and _finite(threshold) and isinstance(check.get("unit", ""), str))


def _finite(x: Union[int, float]) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:  # an int too large for a float
        return False


def machine_info() -> dict:
    """CPU, cores, memory and the build, for the JSON report."""
    from .. import build_info
    from .._demo_steps import physical_memory

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_bytes": physical_memory(), "platform": platform.platform(),
            "python": sys.version.split()[0], "build_info": build_info()}


class ValidationReport(Report):
    """mmsb.validate(): `results` (one dict per validator: number, name, passed, metrics,
    checks, seconds, error, details), `passed`, `summary` ("N/10 PASS"), `machine`, `quick`."""

    def __bool__(self) -> bool:
        return bool(self["passed"])

    def lines(self) -> list[str]:
        """One ✓/✗ line per validator with each measured figure next to its target."""
        out = []
        for r in self["results"]:
            mark = "✓" if r["passed"] else "✗"
            if r["error"]:
                figures = f"error: {r['error']}"
            else:
                figures = "; ".join(
                    f"{c['metric']} = {_fmt(c['value'])} (target {c['op']} {_fmt(c['threshold'])}{' ' + c['unit'] if c['unit'] else ''})"
                    for c in r["checks"])
            out.append(f"{mark} {r['number']:>2} {r['name']:<11} {figures}  [{r['seconds']:.1f} s]")
        out.append(self["summary"])
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def __repr__(self) -> str:
        failed = [r["name"] for r in self["results"] if not r["passed"]]
        return f"ValidationReport({self['summary']}{', quick' if self['quick'] else ''}" + (
            f", failed={failed})" if failed else ")")

    def _repr_html_(self) -> str:
        from .._html import validation_html

        return validation_html(self)

    def to_json(self) -> str:
        return json.dumps(dict(self), indent=2, default=str)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def run_validators(targets: Optional[os.PathLike] = None, quick: bool = False, progress: Optional[bool] = None,
                   only: Union[str, Sequence[str], None] = None, seed: int = 20261128,
                   on_result: Optional[Callable[[dict], None]] = None) -> ValidationReport:
    """Runs the validators (all, or those named in `only`: one name or several) and checks each
    against its targets."""
    from ..errors import InvalidArgumentError

    spec = load_targets(targets)
    names = registered()
    if isinstance(only, str):
        only = [only]  # one name, not its letters
    elif only is not None:
        given = list(only) if isinstance(only, collections.abc.Iterable) else None
        if given is None or not all(isinstance(n, str) for n in given):
            raise InvalidArgumentError(f"only must be a validator name or a list of them; got {only!r}")
        only = given
    if only is not None:
        if not only:  # an empty selection would run nothing, or read as "all": refuse both
            raise InvalidArgumentError(f"only must name at least one validator; got {only!r}; known: {names}")
        unknown = [n for n in only if n not in _REGISTRY]
        if unknown:
            raise InvalidArgumentError(f"unknown validator(s) {unknown}; known: {names}")
        names = [n for n in names if n in only]
    missing = [n for n in names if n not in spec]
    if missing:
        raise InvalidArgumentError(f"the targets have no entry for validator(s) {missing}")
    for name in names:
        measured = _REGISTRY[name][2]
        unmeasured = [c["metric"] for c in spec[name]["checks"] if c["metric"] not in measured]
        if unmeasured:
            raise InvalidArgumentError(f"the targets of validator {name!r} check {unmeasured}, which it does not "
                                       f"measure; it measures {sorted(measured)}")
    show = _progress.wanted(progress)
    results = []
    for name in names:
        number, fn, _ = _REGISTRY[name]
        tmp = Path(tempfile.mkdtemp(prefix=f"mmsb-validate-{name}-"))
        ctx = Context(quick=quick, seed=seed, tmpdir=tmp, show_progress=show)
        start = time.perf_counter()
        error = None
        metrics: dict = {}
        try:
            metrics = dict(fn(ctx))
        except Exception as e:  # a validator that crashes fails, and says why
            error = f"{type(e).__name__}: {e}"
            ctx.note("traceback", traceback.format_exc())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        checks = []
        for c in spec[name]["checks"]:
            value = metrics.get(c["metric"])
            ok = error is None and value is not None and _OPS[c["op"]](value, c["threshold"])
            if value is None and error is None:
                error = f"the validator did not measure {c['metric']!r}"
            checks.append({**c, "value": value, "passed": bool(ok)})
        result = {"number": number, "name": name, "description": spec[name].get("description", ""),
                  "passed": error is None and all(c["passed"] for c in checks), "metrics": metrics,
                  "checks": checks, "seconds": time.perf_counter() - start, "error": error,
                  "details": ctx.details}
        results.append(result)
        if on_result is not None:
            on_result(result)
    passed = sum(r["passed"] for r in results)
    return ValidationReport(results=results, passed=passed == len(results) and bool(results),
                            summary=f"{passed}/{len(results)} PASS", quick=quick, machine=machine_info())
