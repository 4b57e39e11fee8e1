"""The parts of pyrovae depend one way, and no module imports itself round a cycle.

Every module's imports (module level and inside functions) are parsed with ast. The parts are
the subpackages of ``pyrovae/``, its flat core modules, ``models/`` and ``guides/``, and the
package's own ``__init__`` (the facade that registers the built-ins); :data:`ORDER` lists them
from the bottom up, as docs/architecture.md does. A part imports only parts below it: a
package-level cycle (data <-> evaluation, models <-> guides, ...) fails here even where no two
modules form a cycle."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"pyrovae": ROOT / "pyrovae", "pyrovae.models": ROOT / "models", "pyrovae.guides": ROOT / "guides"}


def _modules() -> dict:
    """Module name -> path for every .py file of the package (subpackages by their __init__)."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package] + parts)] = path
    return found


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


#: the parts from the bottom up; a part may import those of earlier rows only (the parts of one
#: row are independent: neither imports the other)
ORDER = (
    ("errors",),
    ("registry",),
    ("nn", "distributions"),
    ("data",),
    ("infer",),
    ("models",),
    ("guides",),
    ("evaluation",),
    ("training",),
    ("pyrovae",),  # pyrovae/__init__.py: the public names, and the import that registers the built-ins
    ("bench",),
    ("cli",),
)


def import_graph(top: bool = False) -> dict:
    """Module -> the pyrovae modules it imports. ``top``: also the package's own ``__init__``
    (``pyrovae``) as a node and as a target (``from pyrovae import fit``)."""
    modules = _modules()
    graph = {name: set() for name in modules if top or name != "pyrovae"}
    for name in graph:
        path = modules[name]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, node, path.name == "__init__.py")
                submodules = [f"{base}.{alias.name}" for alias in node.names]
                # `from package import submodule` depends on the submodule, as `from package.submodule
                # import name` does; a name defined in the package itself is a dependency on it
                targets = submodules + ([base] if any(m not in graph for m in submodules) else [])
            for target in targets:
                while target and target not in graph:  # a name imported from a module -> that module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def part_of(module: str) -> str:
    """The part a module belongs to: ``pyrovae.data.inputs`` -> ``data``, ``pyrovae.registry`` ->
    ``registry``, ``pyrovae.models.vae`` -> ``models``, ``pyrovae`` -> ``pyrovae``."""
    names = module.split(".")
    return names[1] if len(names) > 1 else names[0]


def order_violations(graph: dict, order=ORDER) -> list:
    """``"a -> b (module -> module, ...)"`` for each part ``a`` that imports a part ``b`` not
    below it in ``order``; a part missing from ``order`` is reported too."""
    rank = {part: i for i, row in enumerate(order) for part in row}
    found = {}
    for module, targets in graph.items():
        for target in targets:
            a, b = part_of(module), part_of(target)
            if a == b:
                continue
            if a not in rank or b not in rank or rank[b] >= rank[a]:
                found.setdefault((a, b), []).append(f"{module} -> {target}")
    return [f"{a} -> {b} ({', '.join(sorted(why))})" for (a, b), why in sorted(found.items())]


def part_graph(graph: dict) -> dict:
    """Part -> the parts it imports."""
    parts = {}
    for module, targets in graph.items():
        parts.setdefault(part_of(module), set()).update(part_of(t) for t in targets)
    return {part: sorted(targets - {part}) for part, targets in sorted(parts.items())}


def find_cycle(graph: dict):
    """A list of modules forming a cycle, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_order_violations_finds_an_import_upwards():
    graph = {"pyrovae.data.features": {"pyrovae.evaluation.monitors"},
             "pyrovae.evaluation.monitors": {"pyrovae.data.inputs"}, "pyrovae.data.inputs": set()}
    assert order_violations(graph) == ["data -> evaluation (pyrovae.data.features -> pyrovae.evaluation.monitors)"]
    assert order_violations({"pyrovae.models.robust": {"pyrovae.guides.base"}}) == [
        "models -> guides (pyrovae.models.robust -> pyrovae.guides.base)"]
    # the parts of one row do not import each other; a part missing from the order is reported
    assert order_violations({"pyrovae.nn.conv": {"pyrovae.distributions.vmf"}}) == [
        "nn -> distributions (pyrovae.nn.conv -> pyrovae.distributions.vmf)"]
    assert order_violations({"pyrovae.newpart.x": {"pyrovae.data.inputs"}}) == [
        "newpart -> data (pyrovae.newpart.x -> pyrovae.data.inputs)"]
    assert order_violations({"pyrovae.guides.m2": {"pyrovae.models.m2"}, "pyrovae.cli.fit": {"pyrovae"}}) == []


def test_the_parts_depend_one_way():
    """The order of docs/architecture.md holds: no part imports its own level or one above it."""
    graph = import_graph(top=True)
    assert {"errors", "registry", "nn", "data", "models", "guides", "training", "cli"} <= set(part_graph(graph))
    assert {part_of(module) for module in graph} <= {part for row in ORDER for part in row}, \
        "a new part: place it in ORDER (and in docs/architecture.md)"
    violations = order_violations(graph)
    assert not violations, "imports against the order of the parts:\n" + "\n".join(violations)


def test_the_order_is_the_documented_one():
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = [" / ".join(f"`{part}`" for part in row) for row in ORDER]
    assert " < ".join(rows) in text, "docs/architecture.md must state the order: " + " < ".join(rows)


def test_no_import_cycle_among_pyrovae_modules():
    graph = import_graph()
    assert "pyrovae.infer.importance" in graph and "pyrovae.evaluation.report" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


if __name__ == "__main__":
    for part, targets in part_graph(import_graph(top=True)).items():
        print(f"{part} -> {', '.join(targets)}")
    print(find_cycle(import_graph()) or "no import cycle")
    print("\n".join(order_violations(import_graph(top=True))) or "the parts depend one way")
