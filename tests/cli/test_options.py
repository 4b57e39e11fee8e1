"""Options are declared once (an ``Options`` dataclass, its class's ``:param`` lines, ``Literal``
choices) and become ``pyrovae fit`` flags with that help and those choices: models, guides,
objectives and ``FitOptions`` alike."""

import argparse
import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

from pyrovae.cli import common
from pyrovae.cli.fit import build_parser
from pyrovae.infer.objectives import Objective
from pyrovae.nn import INITS
from pyrovae.registry import (
    DATASETS, GUIDES, MODELS, OBJECTIVES, constructor_options, docstring_params, option_choices, option_help,
)
from pyrovae.training.setup import FitOptions
from tests.cli.helpers import QUICK, one_line_error, pyrovae


class Tempered(Objective):
    """A test objective.

    :param float temperature: divides the log-weights
        (a continued line).
    :param str mode: how the particles are combined.
    """

    name = "tempered"

    @dataclass
    class Options(Objective.Options):
        temperature: float = 2.0
        mode: Literal["mean", "max"] = "mean"
        num_particles: int = field(default=3, metadata={"flag": "particles"})


def test_an_objectives_options_become_flags_with_their_help_choices_and_names():
    flags = common.option_flags([Tempered])
    assert set(flags) == {"temperature", "mode", "num_particles", "beta", "warmup_steps"}
    assert flags["temperature"]["help"] == "divides the log-weights (a continued line) (default: 2.0)"
    assert flags["mode"]["choices"] == ("mean", "max") and flags["mode"]["default"] == "mean"
    assert flags["num_particles"]["flag"] == "--particles" and flags["warmup_steps"]["flag"] == "--kl-warmup"
    assert flags["beta"]["help"].startswith("weight of the KL term")  # the base class's :param line

    parser = argparse.ArgumentParser()
    common.add_option_flags(parser, [Tempered], dest_prefix="obj_")
    args = parser.parse_args(["--temperature", "0.5", "--mode", "max", "--particles", "7", "--kl-warmup", "10"])
    assert (args.obj_temperature, args.obj_mode, args.obj_num_particles, args.obj_warmup_steps) == (0.5, "max", 7, 10)
    objective = Tempered(**{k[4:]: v for k, v in vars(args).items()})
    assert (objective.options.temperature, objective.beta, objective.warmup_steps) == (0.5, 1.0, 10)
    with pytest.raises(ValueError, match=r"unknown mode 'min'; choose one of \('mean', 'max'\)"):
        Tempered(mode="min")


def test_every_registered_option_has_help_from_its_declaration():
    """No option shows the bare 'vae option (default: 20)': each has a ``:param`` line."""
    missing = []
    for registry in (MODELS, GUIDES, OBJECTIVES):
        for name in registry.names():
            factory = registry.get(name)
            documented = option_help(factory)
            missing += [f"{registry.kind} {name}: {option}" for option in constructor_options(factory)
                        if option not in documented and option not in common.DATA_FILLED]
    assert missing == []
    assert set(option_help(FitOptions)) >= set(common.option_flags([FitOptions]))


def test_docstring_params_reads_types_and_continuations():
    doc = """Title.

    :param int x_dim: size of one datapoint.
    :param hidden_dims: widths,
        from z to x.
    :returns: nothing.
    """
    assert docstring_params(doc) == {"x_dim": "size of one datapoint.", "hidden_dims": "widths, from z to x."}


def test_fit_flags_and_init_choices_come_from_the_code():
    flags = common.option_flags([FitOptions])
    assert set(flags) == {"progress", "log_every", "precision", "valid_every", "checkpoint_seconds", "resume", "init",
                          "num_workers", "compile", "replay", "keep_best", "patience"}
    assert flags["init"]["choices"] == INITS and option_choices(FitOptions)["precision"] == ("fp32", "bf16")
    parser = build_parser("vae", "diag", "iwae")
    args = parser.parse_args(["--particles", "4", "--gradient", "dreg", "--likelihood", "gaussian", "--init", "burda"])
    assert (args.obj_num_particles, args.obj_gradient, args.opt_likelihood, args.init) == (4, "dreg", "gaussian",
                                                                                          "burda")


def test_options_with_a_fixed_set_of_values_declare_it():
    """Every option checked against a list of names is a ``Literal`` (its choices in --help)."""
    assert option_choices(MODELS.get("vae"))["likelihood"] == ("bernoulli", "gaussian", "continuous_bernoulli",
                                                               "logistic-mixture")
    assert option_choices(MODELS.get("acn")) == {"prior": ("knn", "standard"), "decoder": ("mlp", "pixelcnn")}
    assert set(option_choices(MODELS.get("pixelcnn-vae"))) == {"conditioning", "likelihood"}
    assert option_choices(GUIDES.get("denoising"))["noise"] == ("gaussian", "salt_and_pepper", "salt_and_pepper_im")
    assert option_choices(GUIDES.get("spline"))["order"] == ("linear", "quadratic")
    for objective, choices in (("elbo", ("plain", "stl")), ("meanfield", ("plain",)), ("iwae", ("plain", "stl", "dreg"))):
        assert option_choices(OBJECTIVES.get(objective))["gradient"] == choices


def test_data_sets_are_in_the_same_registry_class():
    assert type(DATASETS) is type(MODELS) and "digits" in DATASETS and "DIGITS" in DATASETS
    assert DATASETS.get("digits").registry_name == "digits"


def test_fit_help_shows_each_options_help_and_choices(tmp_path):
    result = pyrovae("fit", "--objective", "iwae", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "vae option (default" not in text
    assert "--likelihood {bernoulli,gaussian,continuous_bernoulli,logistic-mixture}" in text
    assert "--z-dim Z_DIM latent dimension (default: 20)" in text
    assert "options of objective 'iwae'" in text and "--gradient {plain,stl,dreg}" in text
    assert "--particles PARTICLES K, importance samples per datapoint (default: 5)" in text
    assert "--init {torch,glorot,burda,data}" in text and "--precision {fp32,bf16}" in text
    assert "--kl-warmup" in text and "--beta" in text


def test_a_bad_choice_is_a_one_line_error(tmp_path):
    result = pyrovae("fit", "--objective", "iwae", "--particles", "0", *QUICK, "--out", tmp_path / "bad", cwd=tmp_path)
    one_line_error(result, 2, "--particles >= 1")  # an objective's check names its flag
    result = pyrovae("fit", "--likelihood", "poisson", *QUICK, "--out", tmp_path / "bad", cwd=tmp_path)
    one_line_error(result, 2, "argument --likelihood: invalid choice: 'poisson'", "bernoulli")
    result = pyrovae("fit", "--init", "xavier", *QUICK, "--out", tmp_path / "bad", cwd=tmp_path)
    one_line_error(result, 2, "argument --init: invalid choice: 'xavier'", "burda")
    assert not (tmp_path / "bad").exists()


def test_objective_flags_are_recorded_and_resume_keeps_them(tmp_path):
    out = tmp_path / "run"
    result = pyrovae("fit", "--objective", "iwae", "--particles", "3", "--kl-warmup", "5", "--beta", "0.5", *QUICK,
                     "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    objective = json.loads((out / "run.json").read_text())["objective"]
    assert objective == {"name": "iwae", "beta": 0.5, "warmup_steps": 5, "num_particles": 3, "particle_chunk": 0,
                         "gradient": "plain"}
    result = pyrovae("fit", "--out", out, "--resume", "--epochs", "2", "--eval-samples", "0", "--no-progress",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["objective"] == objective and len(run["segments"]) == 2
    result = pyrovae("fit", "--out", out, "--resume", "--epochs", "3", "--objective", "elbo", "--eval-samples", "0",
                     "--no-progress", cwd=tmp_path)  # another objective: its own defaults, not iwae's options
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "run.json").read_text())["objective"]["num_particles"] == 1
