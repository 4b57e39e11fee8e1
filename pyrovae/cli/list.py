"""``pyrovae list``: the registered models, guides, objectives and data sets, each with a
one-line description and its options (constructor keyword arguments and their defaults).

    pyrovae list
    pyrovae list --import mymodule --json
"""

from __future__ import annotations

import inspect
import json
import re
from typing import Callable, Dict, List

from pyrovae.cli import common

HELP = "the registered models, guides, objectives and data sets, with their options"


def describe(factory: Callable) -> str:
    """The first paragraph (at most 100 characters) of ``factory``'s docstring, reST roles and backquotes removed."""
    paragraph = " ".join((inspect.getdoc(factory) or "").split("\n\n")[0].split())
    paragraph = re.sub(r":\w+:`([^`]*)`", r"\1", paragraph).replace("``", "")
    return paragraph if len(paragraph) <= 100 else paragraph[:paragraph.rfind(" ", 0, 97)] + " ..."


def options(factory: Callable) -> Dict[str, object]:
    """``{option: default}``; ``"(from the data)"`` for sizes the data set fills, ``"(required)"``
    where there is no default."""
    from pyrovae.registry import constructor_options

    table = {}
    for name, param in constructor_options(factory).items():
        if name in common.DATA_FILLED:
            table[name] = "(from the data)"
        elif param.default is param.empty:
            table[name] = "(required)"
        else:
            table[name] = _plain(param.default)
    return table


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def _declared(factory, attribute: str) -> bool:
    """Whether ``factory`` sets ``attribute`` itself (or a parent of its own does), rather than
    inheriting the default of the :class:`~pyrovae.guides.base.Guide` contract."""
    from pyrovae.guides.base import Guide

    if not inspect.isclass(factory):
        return True
    return any(attribute in vars(cls) for cls in factory.__mro__ if cls is not Guide)


def catalogue() -> Dict[str, Dict[str, dict]]:
    """Everything registered: ``{"models": {name: {"description", "options"}}, ...}``."""
    from pyrovae.data import datasets
    from pyrovae.registry import DATASETS, GUIDES, MODELS, OBJECTIVES

    table = {}
    for kind, registry in (("models", MODELS), ("guides", GUIDES), ("objectives", OBJECTIVES)):
        table[kind] = {}
        for name in registry.names():
            factory = registry.get(name)
            entry = {"description": describe(factory), "options": options(factory)}
            for attribute in ("model_name", "objective_name"):  # what a guide pairs with, where it says
                if isinstance(getattr(factory, attribute, None), str) and _declared(factory, attribute):
                    entry[attribute.replace("_name", "")] = getattr(factory, attribute)
            table[kind][name] = entry
    table["datasets"] = {name: {"description": describe(DATASETS.get(name)),
                                "options": {"binarize": list(datasets.BINARIZE_CHOICES), "data_dir": None}}
                         for name in DATASETS.names()}
    return table


def main(argv: List[str]) -> int:
    p = common.Parser(prog="pyrovae list", description="List what pyrovae fit --model/--guide/--objective/--data "
                      "accept, with each one's options.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    common.add_common_flags(p, device=False)
    args = p.parse_args(argv)
    common.import_modules(args.imports)
    table = catalogue()
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    for kind, entries in table.items():
        print(f"{kind}:")
        for name, entry in entries.items():
            pairs = [f"{k} ({entry[k]})" for k in ("model", "objective") if k in entry]
            print(f"  {name:16s} {entry['description']}" + (f"  [pairs with {', '.join(pairs)}]" if pairs else ""))
            if entry["options"] and kind != "datasets":
                print(" " * 19 + ", ".join(f"{k}={v}" for k, v in entry["options"].items()))
        print()
    print("data set options: --binarize dynamic|static|none, --data-dir DIR; "
          "add your own with --import MODULE (see docs/cli.md)")
    return 0
