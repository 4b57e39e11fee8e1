"""Deprecated: the commands now live one per module in :mod:`pyrovae.cli`; ``main`` is
re-exported here for code that imported it from ``pyrovae.cli.commands``."""

from pyrovae.cli import main
from pyrovae.cli.common import cycled_rows, option_flags

__all__ = ["cycled_rows", "main", "option_flags"]
