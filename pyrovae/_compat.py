"""Old module names (pyrovae 0.1's flat layout) as aliases of their new homes.

``import pyrovae.train`` still works and gives ``pyrovae.training.fit``, with a
DeprecationWarning; nothing is imported until an old name is asked for."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "inputs": "data.inputs", "weights": "infer.importance", "objectives": "infer.objectives",
    "objectives_stein": "infer.stein", "lean_elbo": "infer.fast_path", "train": "training.fit",
    "engine": "training.step", "run": "training.run_folder", "cuda_graph": "training.cuda_graph",
    "distributed": "training.distributed", "evaluate": "evaluation.log_likelihood", "ais": "evaluation.ais",
    "hmc": "evaluation.hmc", "bdmc": "evaluation.bdmc", "gap": "evaluation.inference_gap",
    "joint": "evaluation.latent_space", "monitors": "evaluation.monitors",
    "diagnostics": "evaluation.diagnostics", "report": "evaluation.report", "plots": "evaluation.plots",
    "bench_profile": "bench.profile", "bench_plain": "bench.reference",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module):
        return None


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds ``pyrovae.<old>`` for the names in :data:`MOVED` and hands back the new module."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, old = fullname.partition(".")
        if prefix != "pyrovae" or old not in MOVED:
            return None
        new = f"pyrovae.{MOVED[old]}"
        warnings.warn(f"{fullname} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install() -> None:
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
