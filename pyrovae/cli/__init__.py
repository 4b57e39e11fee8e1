"""The ``pyrovae`` command: ``pyrovae fit | evaluate | sample | diagnose | bench``."""

from pyrovae.cli.commands import main

__all__ = ["main"]
