"""The ``>>>`` examples in the docstrings of the installed package run as tests.

The modules are imported by their installed names (``pyrovae.models``, not the top-level
folder ``models``), so each is imported once and the registry sees each class once;
``python -m pytest -q`` runs them with the rest of the suite, one test per module.
"""

import doctest
import importlib
import pkgutil

import pytest

import pyrovae


def _modules():
    names = []
    for info in pkgutil.walk_packages(pyrovae.__path__, prefix="pyrovae."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue  # importing it would run the command line
        names.append(info.name)
    for name in ("pyrovae.models", "pyrovae.guides"):  # installed from models/ and guides/
        package = importlib.import_module(name)
        names += [info.name for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}.")]
    return sorted(set(names))


FINDER = doctest.DocTestFinder(exclude_empty=True)
MODULES = _modules()
EXAMPLES = {name: [t for t in FINDER.find(importlib.import_module(name), name) if t.examples] for name in MODULES}


@pytest.fixture
def registries_kept():
    """What an example registers (pyrovae.registry's ``my-vae``) is taken out again after it, so
    later tests in this process (a parallel worker runs files in any order) see the suite's own."""
    from pyrovae.registry import DATASETS, GUIDES, MODELS, OBJECTIVES

    saved = [(registry, dict(registry._factories)) for registry in (MODELS, GUIDES, OBJECTIVES, DATASETS)]
    yield
    for registry, factories in saved:
        registry._factories.clear()
        registry._factories.update(factories)


@pytest.mark.parametrize("name", [name for name in MODULES if EXAMPLES[name]])
def test_docstring_examples_run(name, registries_kept):
    examples = EXAMPLES[name]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    for test in examples:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_the_examples_are_found():
    """Guards against a discovery that silently finds nothing (e.g. a renamed package)."""
    found = sum(len(tests) for tests in EXAMPLES.values())
    assert {"pyrovae.evaluation.ais", "pyrovae.models.vae", "pyrovae.guides.iaf"} <= set(MODULES)
    assert found >= 39
