"""python/mmsb/_core.pyi matches the runtime: the same classes, functions and members, the same
member kinds (property, settable, static) and, for public methods, the same parameters.

The runtime side is `mmsb._core` after `import mmsb`, so the methods the Python layer attaches to
Bus and Page (create_page, history, stats, depend, ...) are compared too.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import types
from pathlib import Path
from typing import NamedTuple, Optional

import pytest

import mmsb  # also attaches the Python-layer methods to the engine classes
from mmsb import _core

STUB = Path(mmsb.__file__).resolve().parent / "_core.pyi"

# What pybind11 puts on every class; stubs do not list it.
_BOILERPLATE = {"__doc__", "__module__", "__dict__", "__weakref__", "_pybind11_conduit_v1_", "__repr__"}


class Param(NamedTuple):
    name: str
    keyword_only: bool
    has_default: bool


class StubMember(NamedTuple):
    kind: str  # "method", "static", "property", "attribute" (settable), "classvar"
    settable: bool
    params: Optional[tuple[Param, ...]]


def _decorators(fn: ast.FunctionDef) -> set[str]:
    names = set()
    for d in fn.decorator_list:
        if isinstance(d, ast.Name):
            names.add(d.id)
        elif isinstance(d, ast.Attribute):
            names.add(d.attr)  # `@propagation.setter` -> "setter"
    return names


def _stub_params(fn: ast.FunctionDef, static: bool) -> tuple[Param, ...]:
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [False] * (len(positional) - len(a.defaults)) + [True] * len(a.defaults)
    out = [Param(p.arg, False, d) for p, d in zip(positional, defaults)]
    if not static and out and out[0].name == "self":
        out = out[1:]
    out += [Param(p.arg, True, d is not None) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    return tuple(out)


def parse_stub(path: Path) -> tuple[set[str], dict[str, dict[str, StubMember]]]:
    """(module-level names, {class: {member: StubMember}}) declared by the stub."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module: set[str] = set()
    classes: dict[str, dict[str, StubMember]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            module.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            module.add(node.target.id)
        elif isinstance(node, ast.ClassDef):
            members: dict[str, StubMember] = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    decos = _decorators(item)
                    if "setter" in decos:
                        members[item.name] = members[item.name]._replace(settable=True)
                    elif "property" in decos:
                        members[item.name] = StubMember("property", False, None)
                    else:
                        static = "staticmethod" in decos
                        members[item.name] = StubMember("static" if static else "method", False,
                                                        _stub_params(item, static))
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    classvar = "ClassVar" in ast.unparse(item.annotation)
                    members[item.target.id] = StubMember("classvar" if classvar else "attribute", not classvar, None)
            classes[node.name] = members
    return module, classes


def _split_top_level(text: str) -> list[str]:
    parts, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def runtime_params(obj: object, name: str) -> tuple[Param, ...]:
    """Parameters (without self) of a Python function or of a pybind11 function, whose
    signature lives in the first line of its docstring."""
    if isinstance(obj, staticmethod):
        obj = obj.__func__
    # A Python wrapper made with functools.wraps forwards *args/**kwargs to the engine method:
    # the signature a caller sees is the wrapped one.
    while isinstance(obj, types.FunctionType) and hasattr(obj, "__wrapped__"):
        obj = obj.__wrapped__
    if isinstance(obj, types.FunctionType):
        sig = inspect.signature(obj)
        params = list(sig.parameters.values())
        if params and params[0].name == "self":
            params = params[1:]
        return tuple(Param(p.name, p.kind is p.KEYWORD_ONLY, p.default is not p.empty) for p in params)
    doc = getattr(obj, "__doc__", None) or ""
    first = doc.splitlines()[0] if doc else ""
    found = re.match(rf"^{re.escape(name)}\((.*)\)(?: -> .*)?$", first)
    assert found, f"{name}: no pybind11 signature line in its docstring: {first!r}"
    out: list[Param] = []
    keyword_only = False
    for i, part in enumerate(_split_top_level(found.group(1))):
        if part == "*":
            keyword_only = True
            continue
        if part == "/":
            continue
        pname = part.split(":")[0].strip()
        if i == 0 and pname == "self":
            continue
        out.append(Param(pname, keyword_only, " = " in part))  # pybind11 writes `name: type = default`
    return tuple(out)


MODULE_STUB, CLASS_STUBS = parse_stub(STUB)


def _runtime_members(cls: type) -> dict[str, object]:
    """What the class itself defines. A `__hash__` of None (pybind11 sets it when only `__eq__`
    is bound) stays in: the stub must say `__hash__: ClassVar[None]`, or type checkers take the
    class for hashable."""
    members = {k: v for k, v in vars(cls).items() if k not in _BOILERPLATE}
    if type(members.get("__init__")).__name__ == "wrapper_descriptor":
        del members["__init__"]  # pybind11's "No constructor defined!" slot: no public constructor
    return members


def test_stub_classes_are_the_runtime_classes() -> None:
    runtime = {k for k, v in vars(_core).items() if isinstance(v, type)}
    assert set(CLASS_STUBS) == runtime


def test_stub_functions_are_the_runtime_functions() -> None:
    runtime = {k for k, v in vars(_core).items()
               if not isinstance(v, (type, types.ModuleType)) and not (k.startswith("__") and k != "__version__")}
    assert not MODULE_STUB - runtime, f"in the stub, not in mmsb._core: {sorted(MODULE_STUB - runtime)}"
    assert not runtime - MODULE_STUB, f"in mmsb._core, not in the stub: {sorted(runtime - MODULE_STUB)}"


@pytest.mark.parametrize("cls_name", sorted(CLASS_STUBS))
def test_stub_members_exist_at_runtime_and_back(cls_name: str) -> None:
    cls = getattr(_core, cls_name)
    stub = set(CLASS_STUBS[cls_name])
    runtime = set(_runtime_members(cls))
    # PEP 688 gives types with a buffer slot a `__buffer__` method only from Python 3.12 on.
    stub_only = {n for n in stub - set(dir(cls)) if not (n == "__buffer__" and sys.version_info < (3, 12))}
    assert not stub_only, f"{cls_name}: in the stub, not at runtime: {sorted(stub_only)}"
    runtime_only = runtime - stub
    assert not runtime_only, f"{cls_name}: at runtime, not in the stub: {sorted(runtime_only)}"


@pytest.mark.parametrize("cls_name", sorted(CLASS_STUBS))
def test_stub_member_kinds_match(cls_name: str) -> None:
    cls = getattr(_core, cls_name)
    wrong = []
    for name, member in CLASS_STUBS[cls_name].items():
        raw = inspect.getattr_static(cls, name, None)
        if raw is None:
            continue  # absence is the other test's finding
        is_property = isinstance(raw, property)
        if member.kind in ("property", "attribute") and not is_property:
            wrong.append(f"{name}: a {member.kind} in the stub, {type(raw).__name__} at runtime")
        elif member.kind in ("method", "static") and is_property:
            wrong.append(f"{name}: a method in the stub, a property at runtime")
        elif is_property and member.settable != (raw.fset is not None):
            wrong.append(f"{name}: settable={member.settable} in the stub, {raw.fset is not None} at runtime")
        elif member.kind == "static" and not isinstance(raw, staticmethod):
            wrong.append(f"{name}: static in the stub, not at runtime")
    assert not wrong, f"{cls_name}: " + "; ".join(wrong)


def _public_methods() -> list[tuple[str, str]]:
    return [(c, n) for c, members in sorted(CLASS_STUBS.items()) for n, m in sorted(members.items())
            if m.params is not None and (not n.startswith("_") or n == "__init__")]


@pytest.mark.parametrize("cls_name,name", _public_methods())
def test_public_method_signatures_match(cls_name: str, name: str) -> None:
    cls = getattr(_core, cls_name)
    raw = inspect.getattr_static(cls, name, None)
    if raw is None or (name == "__init__" and "__init__" not in _runtime_members(cls)):
        pytest.skip("absent at runtime: reported by test_stub_members_exist_at_runtime_and_back")
    stub = CLASS_STUBS[cls_name][name].params
    runtime = runtime_params(raw, name)
    assert stub == runtime, f"{cls_name}.{name}:\n  stub:    {stub}\n  runtime: {runtime}"


def test_signature_reader_understands_pybind11_docstrings() -> None:
    class Fake:
        __doc__ = "f(self: X, a: object, b: str = 'x, y', *, c: object = None) -> None\n\nDoc."

    assert runtime_params(Fake(), "f") == (Param("a", False, False), Param("b", False, True), Param("c", True, True))
