"""The score ``pyrovae fit`` prints at its end: every test image where the budget allows,
saved as the evaluation ``pyrovae evaluate`` would write (the same datapoints, comparable);
a random subset, or a smaller K, where it does not, with what was scored recorded."""

import json

from pyrovae.cli import fit as fit_command
from pyrovae.cli import main
from tests.cli.helpers import QUICK, pyrovae

FIT = [a for a in QUICK if a not in ("--eval-samples", "0")]


def test_a_short_fit_scores_every_test_image_as_evaluate_would(tmp_path):
    result = pyrovae("fit", *FIT, "--eval-samples", "20", "--out", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test log-likelihood (K=20): " in result.stdout and ") on all 300 test images, " in result.stdout
    assert "pyrovae evaluate run --num-samples 5000" in result.stdout
    saved = json.loads((tmp_path / "run" / "evaluation-test-K20.json").read_text())
    assert (saved["num_samples"], saved["num_datapoints"], saved["of_datapoints"], saved["subset"]) == (20, 300, 300,
                                                                                                         "all")
    assert saved["epoch"] == 1 and saved["source"] == "pyrovae fit" and len(saved["per_datapoint"]) == 300
    again = pyrovae("evaluate", "run", "--num-samples", "20", "--force", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "run" / "evaluation-test-K20.json").read_text())["data_sha1"] == saved["data_sha1"]


def test_the_end_of_fit_score_draws_from_its_own_stream_seeded_by_the_seed(tmp_path, monkeypatch):
    """What ran before it in the process (figures drawn or not, other draws) does not move the
    score: the same run scored after different draws gives the same figure, image by image."""
    import argparse

    import pyrovae
    import torch

    monkeypatch.chdir(tmp_path)
    assert main(["fit", *FIT, "--eval-samples", "0", "--out", "run"]) == 0
    run, dataset = pyrovae.load_run("run"), pyrovae.data.load_dataset("digits")
    args = argparse.Namespace(eval_budget=0, progress=False, eval_samples=20, epochs=1, seed=3)
    scores = []
    for before in (0, 1):
        torch.manual_seed(before)
        torch.rand(7)
        fit_command.score_test(run.model, run.guide, dataset, tmp_path / "run", args, 1.0, "cpu",
                               [{"epoch": 1}])
        scores.append(json.loads((tmp_path / "run" / "evaluation-test-K20.json").read_text())["per_datapoint"])
    assert scores[0] == scores[1]


def test_a_fit_without_the_time_scores_a_random_subset_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fit_command, "EVAL_FLOOR", 0.0)
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *FIT, "--eval-budget", "1e-9", "--out", "run"]) == 0
    out = capsys.readouterr().out
    # out of time after the first chunk (50 images at K = 100): those images, not 100 at a lower K
    assert ") on 50 of 300 test images (a random subset), " in out and "K lowered" not in out, out
    (path,) = (tmp_path / "run").glob("evaluation-test-K100-random50.json")
    saved = json.loads(path.read_text())
    assert (saved["num_datapoints"], saved["of_datapoints"], saved["subset"]) == (50, 300, "random")
    assert saved["requested_num_samples"] == 100 and saved["num_samples"] == 100
    assert saved["budget_seconds"] < 1e-3
    assert main(["fit", *FIT, "--eval-budget", "1e-9", "--eval-samples", "1000", "--out", "run1000"]) == 0
    out = capsys.readouterr().out  # K = 1000: a first chunk of 5 images is too few to keep; 100 at a lower K
    assert ") on 100 of 300 test images (a random subset), K lowered from 1000 to fit the time, " in out, out
