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
    if known.threads is None:  # the policy of fit for the benchmark's pair (784-200-200-50: one thread)
        from pyrovae.bench.command import HIDDEN, X_DIM, Z_DIM

        widths = (X_DIM, *HIDDEN)
        encoder = sum(a * b for a, b in zip(widths, widths[1:])) + HIDDEN[-1] * 2 * Z_DIM
        rest += ["--threads", str(common.default_threads(2 * encoder))]
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
