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


def pyrovae_here(*args, cwd, env=None):
    """``pyrovae ARGS`` in this process (``pyrovae.cli.main``) in ``cwd``: a CompletedProcess
    (text) as :func:`pyrovae` gives. For what a command writes, names and refuses, where a fresh
    process adds nothing but its imports (about 2 CPU s each, torch's and Pyro's); fits and
    anything a fresh process could change (seeds, reloading, plug-ins) go through
    :func:`pyrovae`. The process's state the command changes is put back: the working folder,
    the environment, torch's threads and random state, Pyro's param store."""
    import contextlib
    import io

    import pyro
    import torch

    from pyrovae.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd, threads = dict(os.environ), os.getcwd(), torch.get_num_threads()
    rng = pyro.util.get_rng_state()
    os.environ.update({k: str(v) for k, v in (env or {}).items()})
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main([str(a) for a in args])
            except SystemExit as exit:  # argparse's usage errors
                status = exit.code if isinstance(exit.code, int) else 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(threads)
        pyro.util.set_rng_state(rng)
        pyro.clear_param_store()
    return subprocess.CompletedProcess(["pyrovae", *map(str, args)], status, out.getvalue(), err.getvalue())


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
