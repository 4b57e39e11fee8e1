"""What a run leaves and prints, from the real command in fresh processes: a line per epoch
only with --log-every, results named by their settings and never silently replaced, files
readable by all (0644), resume refusing a shape change in one line and recording segments."""

import json
import stat

import pytest

from tests.cli.helpers import QUICK, one_line_error, pyrovae, pyrovae_here


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("outputs")
    quick = [a for a in QUICK if a not in ("--epochs", "1")]
    result = pyrovae("fit", *quick, "--epochs", "2", "--log-every", "1", "--out", "run", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder, result


def test_log_every_prints_one_line_per_epoch(run):
    _, result = run
    lines = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert "train loss" in lines[0] and "valid ELBO" in lines[0]


def test_a_new_run_of_the_default_pair_starts_at_the_data_mean_and_run_json_says_so(run):
    folder, _ = run  # vae: its Bernoulli decoder starts at the logits of the mean pixel (--init burda)
    assert json.loads((folder / "run" / "run.json").read_text())["init"] == "burda"


def test_no_epoch_lines_by_default(tmp_path):
    result = pyrovae("fit", *QUICK, "--out", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith("epoch ")]


def test_valid_every_0_skips_the_validation_pass_and_init_is_recorded(tmp_path):
    quick = [a for a in QUICK if a not in ("--epochs", "1")]
    result = pyrovae("fit", *quick, "--epochs", "2", "--valid-every", "0", "--init", "burda", "--out", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and not any("valid_elbo" in row for row in rows)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["init"] == "burda"


def test_results_are_named_by_their_settings_and_never_replaced_silently(run):
    folder, _ = run
    # the first of each command in a fresh process, the repeats in this one (pyrovae_here)
    for limit, command in (("10", pyrovae), ("20", pyrovae_here)):
        assert command("evaluate", "run", "--num-samples", "5", "--limit", limit, cwd=folder).returncode == 0
    names = sorted(p.name for p in (folder / "run").glob("evaluation-*.json"))
    assert names == ["evaluation-test-K5-limit10.json", "evaluation-test-K5-limit20.json"]
    before = (folder / "run" / names[0]).read_text()
    again = pyrovae_here("evaluate", "run", "--num-samples", "5", "--limit", "10", cwd=folder)
    one_line_error(again, 2, names[0], "exists", "--force")
    assert (folder / "run" / names[0]).read_text() == before
    assert pyrovae_here("evaluate", "run", "--num-samples", "5", "--limit", "10", "--force", cwd=folder).returncode == 0
    for seed, command in (("1", pyrovae), ("2", pyrovae_here)):
        assert command("sample", "run", "--n", "4", "--seed", seed, cwd=folder).returncode == 0
    assert {p.name for p in (folder / "run").glob("samples-*.png")} == {"samples-4-seed1.png", "samples-4-seed2.png"}
    one_line_error(pyrovae_here("sample", "run", "--n", "4", "--seed", "1", cwd=folder), 2, "--force", "--out")


def test_outputs_are_readable_by_all(run):
    folder, _ = run
    for path in (folder / "run").iterdir():
        if path.name != ".lock":
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_resume_refuses_a_shape_change_and_records_a_new_lr_as_a_segment(run):
    folder, _ = run
    one_line_error(pyrovae("fit", "--out", "run", "--resume", "--z-dim", "3", "--epochs", "3", "--no-progress",
                           cwd=folder), 2, "z_dim=3", "z_dim=2")
    result = pyrovae("fit", "--out", "run", "--resume", "--lr", "3e-4", "--epochs", "3", "--no-progress",
                     "--eval-samples", "0", cwd=folder)
    assert result.returncode == 0, result.stderr
    segments = json.loads((folder / "run" / "run.json").read_text())["segments"]
    assert [(s["epochs"], s["lr"]) for s in segments] == [([0, 2], 1e-3), ([2, 3], 3e-4)]
    assert segments[-1]["completed_epoch"] == 3


def test_a_model_brings_its_own_guide_when_none_is_named(tmp_path):
    # `pyrovae fit --model hvae` once paired hvae with the diag guide and failed on the site names
    result = pyrovae("fit", "--model", "hvae", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "options of model 'hvae' and guide 'ladder'" in result.stdout
    plain = pyrovae("fit", "--help", cwd=tmp_path)
    assert "options of model 'vae' and guide 'diag'" in plain.stdout
