"""No import cycle among pyrovae's modules: every module's imports (module level and inside
functions) parsed with ast; the package's own ``__init__``, which registers the built-ins,
is left out (it imports everything by design)."""

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


def import_graph() -> dict:
    modules = _modules()
    graph = {name: set() for name in modules if name != "pyrovae"}
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


def test_no_import_cycle_among_pyrovae_modules():
    graph = import_graph()
    assert "pyrovae.infer.importance" in graph and "pyrovae.evaluation.report" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


if __name__ == "__main__":
    print(find_cycle(import_graph()) or "no import cycle")
