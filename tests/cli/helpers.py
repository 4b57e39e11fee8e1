"""Run the real ``pyrovae`` command in a fresh process (no autouse seed fixture, no shared
param store), and a user module that registers a guide and a data set."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

#: Flags of a fit that takes a second or two on the embedded digits.
QUICK = ["--epochs", "1", "--z-dim", "2", "--hidden-dims", "16", "--eval-samples", "0", "--no-progress"]

#: mymod.py: a Laplace guide and a tiny data set whose width is set by $TINY_WIDTH.
USER_MODULE = textwrap.dedent('''
    """A user's module: a Laplace guide and a tiny grey data set."""
    import os

    import pyro.distributions as dist
    import torch

    from pyrovae.data.datasets import DataSet, register_dataset
    from pyrovae.guides.diag import DiagNormalGuide
    from pyrovae.registry import register_guide


    @register_guide("laplace")
    class LaplaceGuide(DiagNormalGuide):
        """A diagonal Laplace q(z | x)."""

        def encode(self, x):
            loc, raw = self.encoder(x).split(self.z_dim, dim=-1)
            return dist.Laplace(loc, torch.nn.functional.softplus(raw) + 1e-5).to_event(1)


    @register_dataset("tiny")
    def load_tiny(data_dir, binarize, valid_size):
        """Forty random binary rows of width $TINY_WIDTH."""
        width = int(os.environ.get("TINY_WIDTH", "6"))
        shape = (width,) if os.environ.get("TINY_FLAT", "1") == "1" else (width, 1)
        g = torch.Generator().manual_seed(0)
        split = lambda n: {"x": torch.bernoulli(torch.full((n, *shape), 0.3), generator=g)}
        return DataSet("tiny", split(40), split(10), split(10), (width,), "static")
''')


def write_user_module(folder: Path, name: str = "mymod") -> Path:
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = Path(folder) / f"{name}.py"
    path.write_text(USER_MODULE)
    return path


def pyrovae(*args, cwd, env=None, timeout=120):
    """``python -m pyrovae.cli ARGS`` in ``cwd``: the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "pyrovae.cli", *map(str, args)], cwd=cwd, env=environ(env),
                          capture_output=True, text=True, timeout=timeout)


def environ(extra=None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(extra or {})}
    env.pop("PYTHONPATH", None) if "PYTHONPATH" not in (extra or {}) else None
    return env


def one_line_error(result, status: int, *fragments: str) -> str:
    """Assert ``result`` failed with ``status`` and one line on stderr holding ``fragments``."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == status, (result.returncode, result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
