"""The pyrovae command: fit / resume / evaluate / sample on the embedded digits."""

import json

import pytest

from pyrovae.cli import main


def test_fit_evaluate_sample_round_trip(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "--epochs", "2", "--z-dim", "4", "--hidden-dims", "32", "--out", str(out),
                 "--eval-samples", "10", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "test log-likelihood (K=10)" in text
    for name in ("run.json", "checkpoint.pt", "metrics.jsonl", "samples.png", "reconstructions.png",
                 "training_curves.png"):
        assert (out / name).is_file(), name
    config = json.loads((out / "run.json").read_text())
    assert config["model"]["options"]["z_dim"] == 4 and config["guide"]["options"]["hidden_dims"] == [32]

    assert main(["fit", "--out", str(out), "--resume", "--epochs", "3", "--eval-samples", "0", "--no-progress"]) == 0
    capsys.readouterr()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3

    assert main(["evaluate", str(out), "--num-samples", "20", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_samples"] == 20 and result["num_datapoints"] == 300
    assert result["log_likelihood"] < 0 and result["stderr"] > 0
    assert result["log_likelihood"] >= result["elbo"]

    assert main(["sample", str(out), "--n", "9"]) == 0
    assert (out / "samples-9-seed0.png").is_file()


def test_iwae_objective_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "iwae"
    assert main(["fit", "--objective", "iwae", "--particles", "3", "--epochs", "1", "--z-dim", "2",
                 "--hidden-dims", "16", "--out", str(out), "--eval-samples", "0", "--no-progress"]) == 0
    config = json.loads((out / "run.json").read_text())
    assert config["objective"] == {"name": "iwae", "beta": 1.0, "warmup_steps": 0, "num_particles": 3,
                                   "gradient": "plain", "particle_chunk": 0}  # every option of the objective


@pytest.mark.parametrize("argv, message", [
    (["fit", "--model", "nope"], "unknown model 'nope'"),
    (["fit", "--data", "nope", "--out", "x"], "unknown data set"),
    (["evaluate", "/nonexistent/run"], "not a run folder"),
    (["frobnicate"], "unknown command"),
])
def test_errors_are_one_clear_line(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exit:
        code, err = exit.code, str(exit.code)
    else:
        err = capsys.readouterr().err
    assert code != 0
    assert message in (err if isinstance(code, int) else str(code))


def test_existing_run_without_resume_is_refused(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["fit", "--epochs", "1", "--z-dim", "2", "--hidden-dims", "8", "--out", str(out), "--eval-samples", "0",
            "--no-progress"]
    assert main(args) == 0
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err


def test_objective_options_become_flags_and_survive_resume(tmp_path, capsys):
    out = tmp_path / "fb"
    base = ["--epochs", "1", "--z-dim", "2", "--hidden-dims", "8", "--out", str(out), "--eval-samples", "0",
            "--no-progress"]
    assert main(["fit", "--objective", "free-bits", "--free-bits", "0.5", *base]) == 0
    config = json.loads((out / "run.json").read_text())
    assert config["objective"]["name"] == "free-bits" and config["objective"]["free_bits"] == 0.5
    assert main(["fit", "--out", str(out), "--resume", "--epochs", "2", "--eval-samples", "0", "--no-progress"]) == 0
    from pyrovae.training.run_folder import load_checkpoint

    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2
