"""The errors a user can fix. The CLI prints their message on one line, without a traceback
(``--debug`` shows it): :class:`UsageError` exits with status 2, every other
:class:`PyrovaeError` with status 1.

>>> from pyrovae.errors import UsageError
>>> isinstance(UsageError("--z-dim must be positive"), ValueError)
True
"""


class PyrovaeError(Exception):
    """A failure the user can fix (bad data, a corrupt checkpoint, a diverged run): exit 1."""


class UsageError(PyrovaeError, ValueError):
    """A wrong option or combination of options: exit 2. The message names the option, what
    was given and what would work."""


class CheckpointError(PyrovaeError, RuntimeError):
    """A checkpoint that cannot be read (truncated, corrupt, or carrying code)."""


class RunLockedError(PyrovaeError, RuntimeError):
    """Another process is writing the same run folder."""


def did_you_mean(name: str, choices) -> str:
    """``" did you mean 'vae'?"`` for the choices closest to a mistyped ``name`` (difflib), or ``""``.

    >>> did_you_mean("vea", ["vae", "hvae", "draw"])
    " did you mean 'vae'?"
    >>> did_you_mean("zzz", ["vae"])
    ''
    """
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=3, cutoff=0.6)
    if not close:
        return ""
    return " did you mean " + " or ".join(repr(c) for c in close) + "?"
