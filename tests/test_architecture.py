"""The house rules of DESIGN.md, checked on the source (no imports of the package, no TensorFlow).

Each rule is its own test function with its own allow-list of current offenders, each entry naming the
engineer (worktree) who owns it. The lists only shrink: an entry that no longer offends fails the test
too, so that it is removed and cannot let a regression back in. Other checks may be added to this file in
their own functions.
"""
from __future__ import annotations

import ast
import builtins
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Optional

PACKAGE = Path(__file__).resolve().parent.parent / "edgesep"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50
RUNNER = "edgesep.devices.runner"  # ships alone to devices: exempt from the length rule, keeps its own error type


# ------------------------------------------------------------------------------------------------ the source

@lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its ``__init__``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


@lru_cache(maxsize=None)
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(), filename=str(modules()[name]))


def is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def resolve_from(name: str, node: ast.ImportFrom) -> Optional[str]:
    """The absolute module an ``ImportFrom`` in module ``name`` reads from (None outside the package)."""
    if node.level:
        base = name.split(".") if is_package(name) else name.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return target if target == "edgesep" or target.startswith("edgesep.") else None


def imports(name: str) -> Iterator[tuple[str, Optional[str], int]]:
    """(imported module, imported name or None, line) for every import of a package module in ``name``,
    at any depth (imports inside functions count). ``from pkg import mod`` yields the module ``pkg.mod``."""
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "edgesep" or alias.name.startswith("edgesep."):
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = resolve_from(name, node)
            if source is None:
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules():
                    yield submodule, None, node.lineno
                else:
                    yield source, alias.name, node.lineno


def functions(name: str) -> Iterator[tuple[str, ast.AST]]:
    """(qualified name, node) of every function and method in module ``name``, nested ones included."""
    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{prefix}{child.name}", child
                yield from walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree(name), "")


def check_allow_list(offenders: dict[str, str], allowed: dict[str, str], what: str) -> None:
    """Fail on offenders not allowed, and on allowed entries that no longer offend (the list only shrinks)."""
    new = {k: v for k, v in offenders.items() if k not in allowed}
    stale = sorted(set(allowed) - set(offenders))
    problems = [f"{k}: {v}" for k, v in sorted(new.items())]
    problems += [f"{k} no longer breaks the rule: remove it from the allow-list" for k in stale]
    assert not problems, f"{what}:\n  " + "\n  ".join(problems)


# --------------------------------------------------------------------------------------- module length (400)

# Current offenders, by owner. Remove an entry when its module is split.
LONG_MODULES_ALLOWED: dict[str, str] = {}


def test_no_module_over_400_lines():
    offenders = {}
    for name, path in modules().items():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES and name != RUNNER:
            offenders[name] = f"{lines} lines > {MAX_MODULE_LINES}"
    check_allow_list(offenders, LONG_MODULES_ALLOWED, "modules over 400 lines")


# -------------------------------------------------------------------------------------- function length (50)

# "module:function" -> owner. Remove an entry when the function is split.
LONG_FUNCTIONS_ALLOWED: dict[str, str] = {}


def test_no_function_over_50_lines():
    offenders = {}
    for name in modules():
        for qualname, node in functions(name):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                offenders[f"{name}:{qualname}"] = f"{lines} lines > {MAX_FUNCTION_LINES}"
    check_allow_list(offenders, LONG_FUNCTIONS_ALLOWED, "functions over 50 lines")


# -------------------------------------------------------------------------------------------- import cycles

# Cycles as "a -> b -> a" (sorted members joined by " <-> ") -> owner.
CYCLES_ALLOWED: dict[str, str] = {}


def import_graph() -> dict[str, set[str]]:
    return {name: {target for target, _, _ in imports(name) if target in modules() and target != name}
            for name in modules()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one member."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_counting_imports_inside_functions():
    offenders = {" <-> ".join(c): "import cycle" for c in strongly_connected(import_graph())}
    check_allow_list(offenders, CYCLES_ALLOWED, "import cycles among edgesep modules")


def test_the_cycle_finder_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


# ------------------------------------------------------------------------------- private names across modules

# "module:line:name" -> owner.
PRIVATE_IMPORTS_ALLOWED: dict[str, str] = {}


def test_no_private_names_imported_across_modules():
    offenders = {}
    for name in modules():
        for source, imported, line in imports(name):
            if imported and imported.startswith("_") and not imported.startswith("__") and source != name:
                offenders[f"{name}:{imported}"] = f"line {line}: from {source} import {imported}"
    check_allow_list(offenders, PRIVATE_IMPORTS_ALLOWED, "private names imported across modules")


# ---------------------------------------------------------------------------------- one exception base class

# "module:Class" -> owner.
EXCEPTIONS_ALLOWED: dict[str, str] = {}
BUILTIN_EXCEPTIONS = {n for n in dir(builtins) if isinstance(getattr(builtins, n), type)
                      and issubclass(getattr(builtins, n), BaseException)}
# Signals, not errors: a class derived from these (e.g. SIGTERM raised as a KeyboardInterrupt so that every
# cleanup path of Ctrl-C runs) is control flow, and the rule does not apply to it.
CONTROL_FLOW = {"KeyboardInterrupt", "SystemExit", "GeneratorExit"}


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def exception_classes() -> dict[str, tuple[str, list[str]]]:
    """``module:Class`` -> (class name, base names) of every class of the package."""
    return {f"{name}:{node.name}": (node.name, [_base_name(b) for b in node.bases])
            for name in modules() if name != RUNNER
            for node in ast.walk(tree(name)) if isinstance(node, ast.ClassDef)}


def test_every_exception_class_derives_from_edgesep_error():
    classes = exception_classes()
    bases_by_name: dict[str, list[str]] = {}
    for class_name, bases in classes.values():
        bases_by_name.setdefault(class_name, []).extend(bases)

    def ancestry(class_name: str, seen: frozenset = frozenset()) -> set[str]:
        found = set()
        for base in bases_by_name.get(class_name, []):
            if base not in seen:
                found |= {base} | ancestry(base, seen | {class_name})
        return found

    offenders = {}
    for key, (class_name, _) in classes.items():
        above = ancestry(class_name)
        is_exception = bool(above & BUILTIN_EXCEPTIONS) or any(b.endswith(("Error", "Exception")) for b in above)
        if is_exception and class_name != "EdgesepError" and not above & ({"EdgesepError"} | CONTROL_FLOW):
            offenders[key] = f"derives from {', '.join(sorted(above))}, not from edgesep.errors.EdgesepError"
    check_allow_list(offenders, EXCEPTIONS_ALLOWED, "exception classes outside the one error base")
