"""One line for every user error, exit status 2 for usage and 1 for failures, no traceback
(``--debug`` shows it); Ctrl-C prints the resume command and exits 130."""

import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from pyrovae.cli import main
from pyrovae.data.datasets import DataSet, list_datasets, register_dataset
from tests.cli.helpers import QUICK, environ


def run_main(capsys, *argv):
    """``(status, the one stderr line)`` of ``pyrovae ARGV`` run in this process."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exit:  # argparse
        status = exit.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return status, err[0]


def register_once(name, loader):
    if name not in list_datasets():
        register_dataset(name)(loader)


def test_bare_command_prints_the_usage_and_version(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pyrovae {fit,evaluate,compare,sample,diagnose,list,bench}")
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("pyrovae 0.")


@pytest.mark.parametrize("argv, status, fragments", [
    (["fit", "--bogus"], 2, ["unrecognized arguments: --bogus", "pyrovae fit --help"]),
    (["fit", "--model", "nope"], 2, ["unknown model 'nope'"]),
    (["fit", "--objective", "nope"], 2, ["unknown objective 'nope'"]),
    (["fit", "--data", "nope", "--out", "x"], 2, ["unknown data set 'nope'"]),
    (["fit", "--data", "mnist", "--data-dir", "/nonexistent/folder"], 2, ["--data-dir /nonexistent/folder",
                                                                          "no such folder"]),
    (["evaluate", "/nonexistent/run"], 2, ["not a run folder"]),
    (["sample", "/nonexistent/run", "--n", "0"], 2, ["--n must be >= 1"]),
    (["frobnicate"], 2, ["unknown command 'frobnicate'"]),
    (["fit", "--num-bins", "1", "--out", "x"], 2, ["--num-bins must be at least 2, got 1"]),  # an option's check,
    # a Literal option's choices: argparse refuses another value, naming the flag and the choices
    (["fit", "--likelihood", "foo", "--out", "x"], 2, ["argument --likelihood: invalid choice: 'foo'", "logistic-mixture"]),
    (["fit", "--model", "m2", "--likelihood", "logistic-mixture", "--out", "x"], 2,
     ["argument --likelihood: invalid choice: 'logistic-mixture'", "'gaussian'"]),
    (["fit", "--scale", "-1", "--out", "x"], 2, ["--scale must be positive"]),  # said with the flags
    (["fit", "--data", "synthetic-sets", "--binarize", "static", "--out", "x"], 2, ["--binarize static cannot apply"]),
])
def test_usage_errors(argv, status, fragments, capsys):
    code, line = run_main(capsys, *argv)
    assert code == status
    for fragment in fragments:
        assert fragment in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(capsys):
    code, line = run_main(capsys, "fit", "--device", "cuda", *QUICK)
    assert code == 2 and "CUDA is not available" in line and "--device cpu" in line


def test_guide_with_a_score_function_term_and_meanfield_names_the_working_objective(tmp_path, capsys):
    """TraceMeanField_ELBO needs a fully reparameterized guide; the CLI says so before
    anything is built on disk."""
    import pyro.distributions as dist

    from pyrovae.guides.diag import DiagNormalGuide
    from pyrovae.registry import register_guide

    class UnreparameterizedNormal(dist.Normal):
        has_rsample = False

    @register_guide("scored-normal")
    class ScoredNormalGuide(DiagNormalGuide):
        """A diagonal Normal sampled without rsample (a score-function gradient)."""

        def encode(self, x):
            q = super().encode(x).base_dist
            return UnreparameterizedNormal(q.loc, q.scale).to_event(1)

    code, line = run_main(capsys, "fit", "--guide", "scored-normal", "--objective", "meanfield", *QUICK,
                          "--out", tmp_path / "r")
    assert code == 2 and "guide 'scored-normal' samples site 'z'" in line and "use --objective elbo" in line
    assert not (tmp_path / "r").exists()
    assert main(["fit", "--guide", "scored-normal", "--objective", "elbo", *QUICK, "--out", str(tmp_path / "r")]) == 0


def test_data_dir_without_the_files_names_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PYROVAE_DATA", str(tmp_path / "elsewhere"))
    code, line = run_main(capsys, "fit", "--data", "mnist", "--data-dir", tmp_path, *QUICK)
    assert code == 1 and "train-images-idx3-ubyte.gz" in line and str(tmp_path / "mnist") in line
    assert "elsewhere" not in line.split("Pass")[0]  # searched only where told


def test_idx_files_with_garbage_name_the_file(tmp_path, capsys):
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(b"this is not an IDX file")
    code, line = run_main(capsys, "fit", "--data", "mnist", "--data-dir", tmp_path, *QUICK)
    assert code == 1 and "ubyte" in line and "expected an IDX file" in line


def test_unflattened_images_say_flatten(capsys):
    def load(data_dir, binarize, valid_size):
        split = {"x": torch.zeros(20, 2, 3)}
        return DataSet("images-2d", split, split, split, (2, 3), "static")

    register_once("images-2d", load)
    code, line = run_main(capsys, "fit", "--data", "images-2d", *QUICK)
    assert code == 2 and "x has shape (20, 2, 3)" in line and "flatten to (N, D)" in line


def test_nan_in_the_data_is_refused_before_training(tmp_path, capsys):
    def load(data_dir, binarize, valid_size):
        train = {"x": torch.zeros(40, 4)}
        train["x"][30:] = float("nan")
        clean = {"x": torch.zeros(10, 4)}
        return DataSet("nan-rows", train, clean, clean, (4,), "static")

    register_once("nan-rows", load)
    code, line = run_main(capsys, "fit", "--data", "nan-rows", "--batch-size", "10", *QUICK, "--out", tmp_path / "r")
    assert code == 2 and "data['x'] contains NaN" in line
    assert not (tmp_path / "r").exists()


def test_nan_loss_is_one_line_naming_the_step(tmp_path, capsys):
    def load(data_dir, binarize, valid_size):  # clean binary rows of width 4 (not an image)
        train = {"x": torch.bernoulli(torch.full((40, 4), 0.5), generator=torch.Generator().manual_seed(0))}
        return DataSet("binary-rows", train, {"x": train["x"][:10]}, {"x": train["x"][:10]}, (4,), "static")

    register_once("binary-rows", load)
    code, line = run_main(capsys, "fit", "--data", "binary-rows", "--batch-size", "10", "--lr", "1e30", *QUICK,
                          "--out", tmp_path / "r")
    # nan or inf: the loss is summed in float32 (the surrogate), which overflows to inf first
    assert code == 1 and re.search(r"the loss became (nan|-?inf) at epoch 1", line) and "smaller lr" in line
    # the same data with a sane lr trains, and no image figure is attempted for rows of width 4
    assert main(["fit", "--data", "binary-rows", "--batch-size", "10", *QUICK, "--out", str(tmp_path / "ok")]) == 0
    assert sorted(p.name for p in (tmp_path / "ok").glob("*.png")) == ["training_curves.png"]


def test_corrupt_checkpoint_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["fit", *QUICK, "--out", str(out)]) == 0
    capsys.readouterr()
    checkpoint = out / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    code, line = run_main(capsys, "evaluate", out, "--num-samples", "2")
    assert code == 1 and "checkpoint.pt" in line
    with pytest.raises(Exception, match="checkpoint"):
        main(["evaluate", str(out), "--num-samples", "2", "--debug"])


def test_ctrl_c_prints_the_resume_command(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "pyrovae.cli", "fit", *QUICK[2:], "--epochs", "1000",
                                "--out", str(out)], env=environ(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               # a Ctrl-C as at a terminal, even where pytest runs with SIGINT ignored
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 90
    while not (out / "checkpoint.pt").is_file() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert f"pyrovae fit --out {out} --resume" in err and str(out / "checkpoint.pt") in err
    assert "Traceback" not in err
