"""``pyrovae bench``: the suite's training step against hand-written PyTorch (timings, not
a test). The flags are those of :mod:`pyrovae.bench.command`, plus the common ones."""

from __future__ import annotations

from typing import List

from pyrovae.cli import common

HELP = "time the training step against hand-written PyTorch (not a test)"


def main(argv: List[str]) -> int:
    from pyrovae.bench.command import main as bench_main

    known = common.pre_parse(argv)
    rest = [a for a in argv if a not in ("--debug",)]
    rest = _without_imports(rest)
    common.import_modules(known.imports)
    if known.threads is None:  # the reference VAE (784-200-200-50) is big enough for the default policy
        rest += ["--threads", str(common.default_threads())]
    return bench_main(rest)


def _without_imports(argv: List[str]) -> List[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--import":
            skip = True
        elif not arg.startswith("--import="):
            out.append(arg)
    return out
