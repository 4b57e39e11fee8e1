"""--import and the pyrovae.plugins entry points, end to end in fresh processes: a guide of
the user's module fits, and the run is evaluated, sampled and checked without repeating
--import (run.json records it)."""

import json

import pytest

from tests.cli.helpers import QUICK, one_line_error, pyrovae, write_user_module


@pytest.fixture(scope="module")
def laplace_run(tmp_path_factory):
    """A run of the user's 'laplace' guide on the user's 'tiny' data set."""
    folder = tmp_path_factory.mktemp("user")
    write_user_module(folder)
    result = pyrovae("fit", "--import", "mymod", "--guide", "laplace", "--data", "tiny", "--batch-size", "10",
                     *QUICK, "--out", "run", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder


def test_fit_records_the_imports_and_the_threads(laplace_run):
    config = json.loads((laplace_run / "run" / "run.json").read_text())
    assert config["imports"] == ["mymod"] and config["guide"]["name"] == "laplace"
    assert config["threads"] == 1  # a model this small gets one thread


def test_evaluate_reimports_the_module_from_run_json(laplace_run):
    result = pyrovae("evaluate", "run", "--num-samples", "5", "--json", cwd=laplace_run)
    assert result.returncode == 0, result.stderr
    estimate = json.loads(result.stdout)
    assert estimate["num_datapoints"] == 10 and estimate["log_likelihood"] >= estimate["elbo"]
    assert (laplace_run / "run" / "evaluation-test-K5.json").is_file()


def test_data_narrower_than_the_run_is_one_line(laplace_run):
    result = pyrovae("sample", "run", "--n", "4", cwd=laplace_run, env={"TINY_WIDTH": "5"})
    one_line_error(result, 1, "x_dim=6", "rows of 5", "flattened to (N, 6)")


def test_unknown_module_is_a_usage_error(tmp_path):
    one_line_error(pyrovae("list", "--import", "no_such_module_xyz", cwd=tmp_path), 2,
                   "--import no_such_module_xyz", "cannot be imported")


def test_plugin_entry_point_registers_before_any_command(tmp_path):
    write_user_module(tmp_path / "site", name="myplugin")
    info = tmp_path / "site" / "myplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pyrovae.plugins]\nmyplugin = myplugin\n")
    result = pyrovae("list", "--json", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site")})
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    assert table["guides"]["laplace"]["description"] == "A diagonal Laplace q(z | x)."
    assert table["guides"]["laplace"]["options"]["z_dim"] == 20
    assert table["guides"]["laplace"]["options"]["x_dim"] == "(from the data)"
    assert table["datasets"]["tiny"]["description"].startswith("Forty random binary rows")
    assert {"models", "guides", "objectives", "datasets"} <= set(table) and "vae" in table["models"]
