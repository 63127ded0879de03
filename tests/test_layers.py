"""The layers of the code base (ARCHITECTURE.md), checked over the real import graph.

Every ``import`` and ``from ... import`` in every module of ``bench/``, ``methods/`` and
``run_bench.py``, at any depth (imports inside functions count too), must go to the same layer
or a lower one, and no module may import itself back through others (no cycle between modules,
within a package or across packages). The order is the one the code supports:

    spine (bench/*.py) < metrics < diffusion < the plug-in face (bench/__init__) < methods
    < execution < reporting < cli (run_bench.py)

The plug-in face re-exports names lazily from a table (``bench._FACE``); its table counts as its
imports. Modules found by name at run time (``importlib.import_module`` of a built-in method or
an entry point) are plug-in loading, not imports, and are not edges.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["spine", "metrics", "diffusion", "face", "methods", "execution", "reporting", "cli"]
RANK = {name: i for i, name in enumerate(LAYERS)}


def layer_of(module: str) -> str | None:
    """The layer of a first-party module name; None for third-party and standard modules."""
    parts = module.split(".")
    if parts[0] == "run_bench":
        return "cli"
    if parts[0] == "methods":
        return "methods"
    if parts[0] != "bench":
        return None
    if len(parts) == 1:
        return "face"
    return parts[1] if parts[1] in ("metrics", "diffusion", "execution", "reporting") else "spine"


def source_modules(root: Path = ROOT) -> dict[str, tuple[str, bool]]:
    """module name -> (source, is_package) for every first-party module."""
    found = {}
    for path in [*root.glob("bench/**/*.py"), *root.glob("methods/*.py"), root / "run_bench.py"]:
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path.read_text(), is_package)
    return found


def imports_of(module: str, source: str, is_package: bool, known: set[str]) -> set[str]:
    """First-party modules that ``module`` imports (relative imports resolved; ``from pkg import
    sub`` counts as an import of ``pkg.sub`` when that is a module)."""
    tree = ast.parse(source)
    package = module.split(".") if is_package else module.split(".")[:-1]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] if node.level else [])
            target = ".".join(filter(None, [base, node.module or ""]))
            subs = {f"{target}.{alias.name}" for alias in node.names} & known
            targets |= subs or {target}
    if module == "bench":  # the face: its lazy table is its imports
        table = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "_FACE")
        targets |= {value.value for value in table.values}
    return {t for t in targets if layer_of(t) and t != module}


def violations(modules: dict[str, tuple[str, bool]]) -> list[str]:
    """Every import that goes from a layer to a higher one, as 'a (layer) imports b (layer)'."""
    found = []
    for module, (source, is_package) in sorted(modules.items()):
        for target in sorted(imports_of(module, source, is_package, set(modules))):
            if RANK[layer_of(target)] > RANK[layer_of(module)]:
                found.append(f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})")
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles of a directed graph (node -> nodes it imports), each as a path that ends where it starts."""
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def module_cycles(modules: dict[str, tuple[str, bool]]) -> list[list[str]]:
    """Cycles in the graph of modules (a package counts as its ``__init__``). Only written imports
    are edges: importing ``a.b`` also runs ``a/__init__``, but that never closes a cycle by itself."""
    graph = {module: imports_of(module, source, is_package, set(modules)) & set(modules)
             for module, (source, is_package) in modules.items()}  # fmt: skip
    return cycles(graph)


def package_cycles(modules: dict[str, tuple[str, bool]]) -> list[list[str]]:
    """Cycles in the graph of packages (each module counted in the package that holds it)."""
    def package(name):
        return name if modules.get(name, ("", False))[1] else name.rpartition(".")[0] or name

    graph: dict[str, set[str]] = {}
    for module, (source, is_package) in modules.items():
        for target in imports_of(module, source, is_package, set(modules)):
            if package(target) != package(module) and not package(module).startswith(package(target) + "."):
                graph.setdefault(package(module), set()).add(package(target))
    return cycles(graph)


def test_every_import_goes_to_the_same_layer_or_a_lower_one():
    modules = source_modules()
    assert len(modules) > 60 and {layer_of(m) for m in modules} == set(LAYERS)
    assert violations(modules) == []


def test_no_import_cycle_between_packages():
    assert package_cycles(source_modules()) == []


def test_no_import_cycle_between_modules():
    assert module_cycles(source_modules()) == []


def test_no_metric_module_imports_the_metrics_registry():
    """``bench.metrics`` imports every module of its package by name (an edge the graph does not
    see), so a module there that imported ``bench.metrics`` back would be a hidden cycle."""
    modules = source_modules()
    importers = [m for m, (source, is_package) in modules.items() if m.startswith("bench.metrics.")
                 and "bench.metrics" in imports_of(m, source, is_package, set(modules))]  # fmt: skip
    assert importers == []


@pytest.mark.parametrize(
    "module, source, expected",
    [
        ("bench.sneaky", "from bench.reporting.report import md_table\n", "bench.sneaky (spine) imports bench.reporting.report (reporting)"),
        ("bench.diffusion.sneaky", "def f():\n    from bench.execution import plan\n", "bench.diffusion.sneaky (diffusion) imports bench.execution.plan (execution)"),
        ("bench.metrics.sneaky", "from ..diffusion.sampling import denoise\n", "bench.metrics.sneaky (metrics) imports bench.diffusion.sampling (diffusion)"),
        ("bench.diffusion.sneaky", "from bench import Method\n", "bench.diffusion.sneaky (diffusion) imports bench (face)"),
        ("methods.sneaky", "import run_bench\n", "methods.sneaky (methods) imports run_bench (cli)"),
    ],
)
def test_a_reverse_import_is_caught(module, source, expected):
    modules = source_modules()
    modules[module] = (source, False)
    assert violations(modules) == [expected]


def test_a_cycle_between_packages_is_caught():
    modules = source_modules()
    modules["bench.diffusion.attention.sneaky"] = ("from bench.diffusion.inversion import ddim\n", False)
    modules["bench.diffusion.inversion.sneaky"] = ("from bench.diffusion.attention import hooks\n", False)
    # the cycle in whichever rotation the search meets it first (the face reaches inversion/ first)
    both = {"bench.diffusion.attention", "bench.diffusion.inversion"}
    assert any(len(cycle) == 3 and cycle[0] == cycle[-1] and set(cycle) == both for cycle in package_cycles(modules))


@pytest.mark.parametrize("second", ["from bench.metrics import sneaky_a\n",  # a module of a package, by name
                                    "def f():\n    from .sneaky_a import x\n"])  # relative, inside a function
def test_a_cycle_between_modules_of_one_package_is_caught(second):
    modules = source_modules()
    modules["bench.metrics.sneaky_a"] = ("from bench.metrics.sneaky_b import y\n", False)
    modules["bench.metrics.sneaky_b"] = (second, False)
    assert module_cycles(modules) == [["bench.metrics.sneaky_a", "bench.metrics.sneaky_b", "bench.metrics.sneaky_a"]]
    assert package_cycles(modules) == []  # one package: only the module graph sees it


def test_a_package_init_and_its_module_importing_each_other_is_a_cycle():
    modules = source_modules()
    modules["bench.metrics.sneaky"] = ("from bench.metrics import METRICS\n", False)
    modules["bench.metrics"] = (modules["bench.metrics"][0] + "\nfrom bench.metrics import sneaky\n", True)
    assert module_cycles(modules) == [["bench.metrics", "bench.metrics.sneaky", "bench.metrics"]]


def test_the_spine_is_all_that_bench_holds_at_its_top_level():
    top = sorted(p.stem for p in (ROOT / "bench").glob("*.py"))
    spine = ["__init__", "cache", "data", "devices", "errors", "fields", "hub_data", "method", "params", "paths", "preferences", "registry",
             "samples", "settings", "store", "timing", "tokenizer", "weights", "yaml_file"]
    assert top == spine, "a module at bench/'s top level is spine; layer modules belong in their package"
    for path in (ROOT / "bench").rglob("*.py"):
        first = ast.get_docstring(ast.parse(path.read_text()))
        assert first and path.read_text().lstrip().startswith('"""'), f"{path} must open with its docstring"
