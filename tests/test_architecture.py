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


# ------------------------------------------------------------------- device kinds are known only in devices/

# "module:line" -> owner. A target's kind is its scheme's business: ask edgesep.devices (scheme_of, split_options,
# device_resource, ...), never compare a target string's prefix.
TARGET_PREFIX_CHECKS_ALLOWED: dict[str, str] = {}
TARGET_PREFIXES = ("local", "adb", "ssh")  # the built-in schemes' target forms: local, adb[:SERIAL], ssh://...


def _string_constants(node: ast.AST) -> list[str]:
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)]


def target_prefix_hit(node: ast.AST) -> Optional[str]:
    """What makes ``node`` a target-prefix check (``x.startswith("adb")``, ``x == "local"``), or None."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args
            and node.func.attr in ("startswith", "removeprefix")):
        texts = [t for t in _string_constants(node.args[0]) if t.startswith(TARGET_PREFIXES)]
        return f".{node.func.attr}({texts[0]!r})" if texts else None
    if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn))
                                             for op in node.ops):
        texts = [t for side in (node.left, *node.comparators) for t in _string_constants(side)
                 if t in ("local", "adb") or t.startswith(("adb:", "ssh://"))]
        return f"compares a target with {texts[0]!r}" if texts else None
    return None


def test_no_target_prefix_checks_outside_devices():
    offenders = {}
    for name in modules():
        if name == "edgesep.devices" or name.startswith("edgesep.devices."):
            continue
        for node in ast.walk(tree(name)):
            hit = target_prefix_hit(node)
            if hit:
                offenders[f"{name}:{node.lineno}"] = hit
    check_allow_list(offenders, TARGET_PREFIX_CHECKS_ALLOWED, "target-prefix checks outside edgesep.devices")


def test_the_target_prefix_finder_finds_them():
    sample = ast.parse("if t.startswith(('adb', 'x')) or t.strip() == 'local' or u.startswith('edgesep/'):\n pass")
    hits = sorted(h for h in map(target_prefix_hit, ast.walk(sample)) if h)
    assert hits == [".startswith('adb')", "compares a target with 'local'"]


# --------------------------------------------------------------------------------------- converters do not train

# "module:line" -> owner. The built-in network is trained by edgesep.train, reached through edgesep.source.
CONVERTERS_TRAINING_ALLOWED: dict[str, str] = {}


def test_converters_do_not_import_train_or_the_model_source():
    offenders = {}
    for name in modules():
        if name.startswith("edgesep.converters"):
            for target, _, line in imports(name):
                if target in ("edgesep.train", "edgesep.source"):
                    offenders[f"{name}:{line}"] = f"imports {target}"
    check_allow_list(offenders, CONVERTERS_TRAINING_ALLOWED, "converters importing the trainer")


# ------------------------------------------------------------------------------------- rendering only in report/

# "module:line" -> owner. Tables, live displays and plots are built in edgesep.report.
RENDERING_IMPORTS_ALLOWED: dict[str, str] = {}
RENDERING_PACKAGES = ("rich", "matplotlib")


def external_imports(name: str) -> Iterator[tuple[str, int]]:
    """(top-level package, line) of every import of a package outside edgesep in module ``name``."""
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            yield from ((alias.name.split(".")[0], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            yield node.module.split(".")[0], node.lineno


def test_only_report_imports_rich_or_matplotlib():
    offenders = {}
    for name in modules():
        if name != "edgesep.report" and not name.startswith("edgesep.report."):
            for package, line in external_imports(name):
                if package in RENDERING_PACKAGES:
                    offenders[f"{name}:{line}"] = f"imports {package}"
    check_allow_list(offenders, RENDERING_IMPORTS_ALLOWED, "rendering libraries imported outside edgesep.report")


# --------------------------------------------------------------------- export.json is read through its record

# "module:line" -> owner. edgesep.converters.records (ExportResult.from_dict, read_export/load_export) is the one
# reader of export.json; everyone else uses the record's attributes.
EXPORT_READS_ALLOWED: dict[str, str] = {}
EXPORT_RECORD = "edgesep.converters.records"
EXPORT_ONLY_KEYS = ("artifacts", "max_abs_error_vs_keras", "top1_agreement_vs_keras", "output_sqnr_db_vs_keras",
                    "int8_check", "export_config")  # keys no other document of edgesep has
READ_CALLS = ("read_text", "read_bytes", "load", "loads", "open")


def raw_export_reads(name: str) -> dict[str, str]:
    """``doc["artifacts"]`` / ``doc.get("int8_check")`` reads, and functions that read a file named export.json."""
    found = {}
    for node in ast.walk(tree(name)):
        key = None
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            key = node.slice.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args and isinstance(node.args[0], ast.Constant)):
            key = node.args[0].value
        if key in EXPORT_ONLY_KEYS:
            found[f"{name}:{node.lineno}"] = f"reads export.json's {key!r} by key"
    for qualname, fn in functions(name):
        names_file = any(isinstance(n, ast.Constant) and n.value == "export.json" for n in ast.walk(fn))
        reads = any(isinstance(n, ast.Call) and (getattr(n.func, "attr", None) or getattr(n.func, "id", None))
                    in READ_CALLS for n in ast.walk(fn))
        if names_file and reads:
            found[f"{name}:{fn.lineno}"] = f"{qualname} reads export.json itself"
    return found


def test_export_json_is_read_only_through_its_record():
    offenders = {}
    for name in modules():
        if name != EXPORT_RECORD:
            offenders.update(raw_export_reads(name))
    check_allow_list(offenders, EXPORT_READS_ALLOWED, "export.json read outside its record")


# ---------------------------------------------------------------------------------- every file write through io

# "module:line" -> owner. edgesep.io writes atomically and turns OS errors into one line (write_bytes/text/json,
# write_with for a tool writing to a path, move for a tool's finished output, StagedDir for a set of files).
RAW_WRITES_ALLOWED: dict[str, str] = {}
IO_MODULE = "edgesep.io"


def raw_writes(name: str) -> dict[str, str]:
    """``path.write_text(...)``, ``os.replace``/``os.rename`` and ``open(..., "w")``-style writes in ``name``."""
    found = {}
    for node in ast.walk(tree(name)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        attr = func.attr if isinstance(func, ast.Attribute) else None
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
        if attr in ("write_text", "write_bytes") and owner not in ("io", "edgesep_io"):
            found[f"{name}:{node.lineno}"] = f".{attr}(...) outside edgesep.io"
        elif owner in ("os", "shutil") and attr in ("replace", "rename", "move", "copy", "copyfile", "copy2"):
            found[f"{name}:{node.lineno}"] = f"{owner}.{attr}(...) outside edgesep.io"
        elif isinstance(func, ast.Name) and func.id == "open":
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"),
                                                                None)
            if isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax+"):
                found[f"{name}:{node.lineno}"] = f"open(..., {mode.value!r}) outside edgesep.io"
    return found


def test_every_file_write_goes_through_io():
    offenders = {}
    for name in modules():
        if name not in (IO_MODULE, RUNNER):  # the runner ships alone to devices, without edgesep.io
            offenders.update(raw_writes(name))
    check_allow_list(offenders, RAW_WRITES_ALLOWED, "file writes outside edgesep.io")


def test_the_read_and_write_finders_find_them():
    sample = ast.parse("def f(p):\n    d = json.loads((p / 'export.json').read_text())\n    return d['artifacts']\n"
                       "def g(p):\n    p.write_text('x')\n    os.replace(p, p)\n    open(p, 'wb')\n    open(p)\n")
    modules()["sample"] = Path("sample.py")
    tree.cache_clear()
    try:
        import unittest.mock

        with unittest.mock.patch(f"{__name__}.tree", lambda name: sample):
            reads, writes = raw_export_reads("sample"), raw_writes("sample")
    finally:
        modules().pop("sample")
    assert sorted(reads.values()) == ["f reads export.json itself", "reads export.json's 'artifacts' by key"]
    assert len(writes) == 3 and all("outside edgesep.io" in v for v in writes.values())
