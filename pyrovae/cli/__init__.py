"""The ``pyrovae`` command: ``pyrovae fit | evaluate | compare | sample | diagnose | list | bench``.

One module per subcommand (``pyrovae/cli/fit.py`` ...), each with a ``main(argv) -> int``
and a one-line ``HELP``; :mod:`pyrovae.cli.common` holds what they share. :func:`main`
dispatches, loads the ``pyrovae.plugins`` entry points once, and turns a user's error into
one line on stderr: exit status 2 for a usage error (a wrong flag, name or value), 1 for a
failure (data not found or malformed, a corrupt checkpoint, a diverged run), 130 for Ctrl-C.
``--debug`` shows the traceback instead. See docs/cli.md.

>>> main(["--version"])  # doctest: +ELLIPSIS
pyrovae ...
0
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import List, Optional

COMMANDS = ("fit", "evaluate", "compare", "sample", "diagnose", "list", "bench")

__all__ = ["COMMANDS", "exit_status", "main"]


def usage() -> str:
    """The command list that ``pyrovae`` and ``pyrovae --help`` print."""
    lines = ["usage: pyrovae {" + ",".join(COMMANDS) + "} [options]   (pyrovae COMMAND --help for its options)",
             ""]
    for name in COMMANDS:
        lines.append(f"  {name:10s} {_command(name).HELP}")
    lines += ["", "  --version  print the version", "", "Common options of every command: --import MODULE, "
              "--threads N, --debug. Exit status: 0 done, 1 failure, 2 usage error, 130 interrupted."]
    return "\n".join(lines)


def _command(name: str):
    return importlib.import_module(f"pyrovae.cli.{name}")


def exit_status(error: BaseException) -> Optional[int]:
    """2 for a usage error, 1 for a failure the user can fix, None for a bug (traceback)."""
    from pyrovae.data.datasets import DataFormatError, DataNotFoundError
    from pyrovae.errors import PyrovaeError, UsageError
    from pyrovae.training import NonFiniteLossError

    if isinstance(error, UsageError):
        return 2
    if isinstance(error, (PyrovaeError, DataNotFoundError, DataFormatError, NonFiniteLossError)):
        return 1
    if isinstance(error, (ValueError, FileNotFoundError, FileExistsError)):  # bad names, values, folders
        return 2
    return None


def one_line(error: BaseException) -> str:
    """``error``'s message on one line."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``pyrovae ARGV``; the exit status."""
    argv = [*(sys.argv[1:] if argv is None else argv)]
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        import pyro
        import torch

        from pyrovae import __version__

        print(f"pyrovae {__version__} (pyro-ppl {pyro.__version__}, torch {torch.__version__})")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"pyrovae: error: unknown command {name!r}; choose one of {', '.join(COMMANDS)} "
              "(see pyrovae --help)", file=sys.stderr)
        return 2
    debug = "--debug" in rest
    shown = warnings.showwarning
    if not debug:  # a warning is one line, as errors are (Python adds the file and the source line)
        warnings.showwarning = lambda message, category, *_, **__: print(
            f"pyrovae {name}: warning: {' '.join(str(message).split())}", file=sys.stderr)
    try:
        from pyrovae.cli.common import load_plugins

        load_plugins()
        return _command(name).main(rest) or 0
    except BrokenPipeError:  # the output went to `head` or similar, which has closed it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"pyrovae {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        status = exit_status(error)
        if debug or status is None:
            raise
        print(f"pyrovae {name}: error: {one_line(error)}", file=sys.stderr)
        return status
    finally:
        warnings.showwarning = shown
