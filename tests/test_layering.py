"""The package's rooms, checked on the source (AST), so a violation fails CI:

- library code never imports the command layer (``irs_torch.commands``, ``irs_torch.cli``);
- no name starting with ``_`` is imported from, or reached into, another irs_torch module;
- no ``importlib.import_module("irs_torch...")`` workaround for the package's own modules;
- no import cycle among irs_torch modules, counting module-level and function-level imports alike (a
  function-level import is a cycle that only waits for its first call), except the edges listed with a reason
  in :data:`ALLOWED_IMPORT_EDGES`;
- no file in ``irs_torch/`` over :data:`MAX_LINES` lines unless a line ``Long file: <reason>`` is among its
  first :data:`REASON_WITHIN` lines.

The scans run over ``irs_torch/`` and ``scripts/``; the command layer is ``irs_torch/commands/``,
``irs_torch/cli.py`` and ``irs_torch/__main__.py``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "irs_torch"
COMMAND_LAYER = ("irs_torch.commands", "irs_torch.cli", "irs_torch.__main__")


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_module(name: str) -> bool:
    p = REPO.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def sources(*folders):
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            yield path, ast.parse(path.read_text(), filename=str(path))


def in_command_layer(mod: str) -> bool:
    return any(mod == c or mod.startswith(c + ".") for c in COMMAND_LAYER)


def imported_modules(node) -> list[str]:
    """irs_torch modules an import statement names (``from a import b`` names ``a.b`` if it is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "irs_torch"]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
            node.module.split(".")[0] == "irs_torch":
        out = [node.module]
        out += [f"{node.module}.{a.name}" for a in node.names if is_module(f"{node.module}.{a.name}")]
        return out
    return []


def test_the_library_never_imports_the_command_layer():
    bad = []
    for path, tree in sources("irs_torch", "scripts"):
        me = module_name(path)
        if in_command_layer(me):
            continue
        for node in ast.walk(tree):
            for mod in imported_modules(node):
                if in_command_layer(mod):
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno} imports {mod}")
    assert not bad, "\n".join(bad)


def test_no_private_name_crosses_a_module():
    bad = []
    for path, tree in sources("irs_torch", "scripts"):
        module_aliases = {}  # local name -> irs_torch module it is bound to
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").split(".")[0] == "irs_torch"
            ):
                for a in node.names:
                    if a.name.startswith("_") and not (a.name.startswith("__") and a.name.endswith("__")):
                        bad.append(f"{path.relative_to(REPO)}:{node.lineno}: from {node.module} import {a.name}")
                    if is_module(f"{node.module}.{a.name}"):
                        module_aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "irs_torch":
                        if a.name.split(".")[-1].startswith("_") and not a.name.endswith("__"):
                            bad.append(f"{path.relative_to(REPO)}:{node.lineno}: import {a.name}")
                        if a.asname:
                            module_aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in module_aliases
                and node.attr.startswith("_")
                and not (node.attr.startswith("__") and node.attr.endswith("__"))
            ):
                bad.append(
                    f"{path.relative_to(REPO)}:{node.lineno}: {node.value.id}.{node.attr} "
                    f"({module_aliases[node.value.id]})"
                )
    assert not bad, "\n".join(bad)


def test_private_scenario_helpers_are_not_used_across_modules():
    """``Scenario._per_irs`` / ``_budget`` became :meth:`Scenario.budget_broadcast` / :meth:`Scenario.budget`."""
    bad = []
    for path, tree in sources("irs_torch", "scripts", "tests"):
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("_per_irs", "_budget", "_solver_cache"):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}: .{node.attr}")
    assert not bad, "\n".join(bad)


def test_no_importlib_workaround_for_the_packages_own_modules():
    bad = []
    for path, tree in sources("irs_torch", "scripts", "tests"):
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "import_module"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and str(node.args[0].value).split(".")[0] == "irs_torch"
            ):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}: import_module({node.args[0].value!r})")
    assert not bad, "\n".join(bad)


#: Import edges (importer, imported) that may close a cycle, each with its reason. Keep it empty: a cycle is one
#: idea in two places. An entry needs a reason a reviewer accepts (e.g. a plug-in registry).
ALLOWED_IMPORT_EDGES: dict[tuple[str, str], str] = {}

MAX_LINES = 600  # a longer file holds more than one idea unless its top says why
REASON_WITHIN = 20


def import_graph(folder: Path = PKG, allowed=None) -> dict[str, set[str]]:
    """Module -> irs_torch modules it imports anywhere in its source: module level, inside functions and
    classes (including, for ``a.b.c``, the packages ``a.b`` it executes; not the importer's own ancestor
    packages, which are already loading). Edges in ``allowed`` (default :data:`ALLOWED_IMPORT_EDGES`) are left
    out."""
    allowed = ALLOWED_IMPORT_EDGES if allowed is None else allowed
    graph = {}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        me = module_name(path)
        ancestors = {".".join(me.split(".")[:k]) for k in range(1, len(me.split(".")))}
        if path.name == "__init__.py":
            ancestors.add(me)
        deps = set()
        for node in ast.walk(tree):  # function-level imports count: they close the same cycle, later
            for mod in imported_modules(node):
                parts = mod.split(".")
                for k in range(1, len(parts) + 1):
                    m = ".".join(parts[:k])
                    if m not in ancestors and m != me and is_module(m) and (me, m) not in allowed:
                        deps.add(m)
        graph[me] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state:
                c = visit(d)
                if c:
                    return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            c = visit(m)
            if c:
                return c
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle (module- or function-level): " + " -> ".join(cycle)


def test_allowed_import_edges_are_real_and_give_a_reason():
    """An entry of the allow-list that no longer exists, or has no reason, is stale: remove it."""
    full = import_graph(allowed={})
    for (a, b), why in ALLOWED_IMPORT_EDGES.items():
        assert b in full.get(a, set()), f"{a} no longer imports {b}: remove the entry"
        assert len(why.strip()) >= 20, f"({a}, {b}): give the reason"


def test_a_function_level_import_cycle_is_found(tmp_path, monkeypatch):
    """The graph counts imports inside functions: a module pair importing each other only inside
    functions is a cycle."""
    pkg = tmp_path / "irs_torch"
    (pkg / "room").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "room" / "__init__.py").write_text("")
    (pkg / "room" / "a.py").write_text("def f():\n    from irs_torch.room import b\n    return b\n")
    (pkg / "room" / "b.py").write_text("class C:\n    def g(self):\n        from irs_torch.room.a import f\n"
                                       "        return f\n")
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    cycle = find_cycle(import_graph(pkg, allowed={}))
    assert cycle == ["irs_torch.room.a", "irs_torch.room.b", "irs_torch.room.a"]
    assert find_cycle(import_graph(pkg, allowed={("irs_torch.room.b", "irs_torch.room.a"): "x" * 20})) is None


def long_file_reason(path: Path) -> str | None:
    """The reason a long file gives on one of its first lines (``Long file: <reason>``), or None."""
    for line in path.read_text().splitlines()[:REASON_WITHIN]:
        text = line.strip().lstrip("#").strip()
        if text.lower().startswith("long file:") and len(text) > len("long file:") + 10:
            return text
    return None


def test_no_long_file_without_a_reason():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        n = len(path.read_text().splitlines())
        if n > MAX_LINES and long_file_reason(path) is None:
            bad.append(f"{path.relative_to(REPO)}: {n} lines (> {MAX_LINES}) and no 'Long file: <reason>' line "
                       f"among its first {REASON_WITHIN}")
    assert not bad, "\n".join(bad)


def test_the_long_file_check_reads_a_reason(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""A module.\n\nLong file: one table of constants that reads best in one place.\n"""\n')
    assert long_file_reason(f)
    f.write_text('"""A module."""\n' + "x = 1\n" * 5)
    assert long_file_reason(f) is None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", ["irs_torch.crb", "irs_torch.scenario"])
def test_a_module_is_not_shadowed_by_a_function(name):
    """``import irs_torch.crb as m`` gives the module (the package does not re-export a function ``crb``)."""
    import importlib
    import types

    mod = importlib.import_module(name)
    parent, _, attr = name.rpartition(".")
    assert isinstance(getattr(importlib.import_module(parent), attr), types.ModuleType)
    assert getattr(importlib.import_module(parent), attr) is mod
