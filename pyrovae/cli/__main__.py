"""``python -m pyrovae.cli``: the same as the ``pyrovae`` command."""

import sys

from pyrovae.cli import main

status = main()
if status == 130:
    # Ctrl-C: main said so and returns 130. But a KeyboardInterrupt that passed through an exec() of a
    # string on its way up (a dataclass made by a lazy import, where a Ctrl-C right after the fit's
    # "epochs:" line lands) leaves CPython's "unhandled KeyboardInterrupt" flag set, and `python -m`
    # then ends the process by SIGINT (status -2) instead of 130 (the `pyrovae` script is not affected).
    # The next exec() of a string clears the flag (pythonrun.c, run_eval_code_obj, CPython 3.8 on).
    exec("pass")
sys.exit(status)
