"""docs/writing-a-pair.md cannot rot: its opening pair is at most 30 lines and states the
three rules; every Python block of the page runs, in order, in a fresh process; the pair
meets the contract; and the ``pyrovae`` command lists and fits it from the user's module."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pyro
import pytest

from pyrovae import registry
from tests.cli.helpers import QUICK, environ, pyrovae
from tests.contract import binary_data, check_contract

PAGE = Path(__file__).resolve().parents[1] / "docs" / "writing-a-pair.md"


def blocks():
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)


def test_the_page_opens_with_a_pair_in_30_lines_and_the_three_rules():
    text = PAGE.read_text()
    first = blocks()[0]
    assert text.index("```python") < text.index("## The contract: three rules")
    assert len(first.splitlines()) <= 30, len(first.splitlines())
    assert "@register_model(" in first and "@register_guide(" in first
    rules = text.split("## The contract: three rules")[1].split("##")[0]
    assert re.findall(r"(?m)^(\d)\. \*\*", rules) == ["1", "2", "3"]
    for words in ("sites match", "keyword arguments", "outermost plate"):
        assert words in rules


def test_every_block_of_the_page_runs(tmp_path):
    """All Python blocks, in order, in one fresh process: the pair registers, fits for one
    epoch on tiny data, a subclass extends its options, the plain-function pair fits."""
    script = tmp_path / "page.py"
    script.write_text("\n\n".join(blocks()) + "\nprint('PAGE OK')\n")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=environ(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("PAGE OK")
    log_likelihood = float(result.stdout.split()[0])  # the fit block prints the estimate
    assert log_likelihood < 0


@pytest.fixture
def page_pair():
    """The page's first block run in this process; the registry is left as it was."""
    saved = {table: dict(table._factories) for table in (registry.MODELS, registry.GUIDES)}
    namespace = {}
    try:
        exec(compile(blocks()[0], str(PAGE), "exec"), namespace)
        yield namespace
    finally:
        for table, factories in saved.items():
            table._factories.clear()
            table._factories.update(factories)


def test_the_page_pair_meets_the_contract_and_saves_its_options(page_pair):
    pyro.set_rng_seed(0)
    model = registry.build(registry.get_model("laplace-vae"), {"z_dim": 2, "hidden_dims": (8,)}, fill={"x_dim": 12})
    guide = registry.build(registry.get_guide("laplace-encoder"), {"z_dim": 2, "hidden_dims": (8,)},
                           fill={"x_dim": 12})
    check_contract(model, guide, {"x": binary_data(8)})
    assert registry.spec_of(model) == {"name": "laplace-vae",
                                       "options": {"x_dim": 12, "z_dim": 2, "hidden_dims": [8]}}
    assert registry.spec_of(guide)["options"]["activation"] == "tanh"  # from EncoderGuide


def test_pyrovae_list_shows_the_page_pair_with_its_options(page_pair):
    from pyrovae.cli.list import catalogue

    table = catalogue()
    assert table["models"]["laplace-vae"]["options"] == {"x_dim": "(from the data)", "z_dim": 20,
                                                          "hidden_dims": [200, 200]}
    assert table["guides"]["laplace-encoder"]["options"]["site"] == "z"


def test_the_command_fits_the_page_pair_from_the_users_module(tmp_path):
    (tmp_path / "mypair.py").write_text(blocks()[0])
    fitted = pyrovae("fit", "--import", "mypair", "--model", "laplace-vae", "--guide", "laplace-encoder", *QUICK,
                     "--out", "run", cwd=tmp_path)
    assert fitted.returncode == 0, fitted.stderr
    config = json.loads((tmp_path / "run" / "run.json").read_text())
    assert config["model"] == {"name": "laplace-vae", "options": {"x_dim": 64, "z_dim": 2, "hidden_dims": [16]},
                               "module": "mypair"}  # the module to --import when the run is loaded
    assert config["guide"]["name"] == "laplace-encoder" and config["guide"]["options"]["hidden_dims"] == [16]
