"""A registered name is taken once: another class under it is an error naming both, while the
same definition registered again (a module imported twice or reloaded) is not."""

import importlib
import subprocess
import sys
import textwrap

import pytest

from pyrovae.registry import MODELS, Registry, get_model, register_model
from tests.cli.helpers import environ, one_line_error


def test_a_second_class_under_a_taken_name_is_an_error_and_the_first_stays():
    table = Registry("model")

    @table.register("one")
    class First:
        pass

    class Second:
        pass

    with pytest.raises(ValueError, match=r"a model named 'one' is already registered \(.*First\); "
                                         r".*Second cannot take the name too: pick another name"):
        table.register("one")(Second)
    assert table.get("one") is First
    assert table.register("one")(First) is First  # the same class again: nothing to complain about


def test_a_built_in_name_cannot_be_taken_by_a_class_of_the_same_name_elsewhere():
    """The old check compared class names only: a user's ``VAE`` silently replaced the suite's."""
    builtin = get_model("vae")
    with pytest.raises(ValueError, match="a model named 'vae' is already registered"):
        register_model("vae")(type("VAE", (), {"__module__": "users_module"}))
    assert get_model("vae") is builtin


def test_reloading_a_module_that_registers_replaces_its_classes(tmp_path, monkeypatch):
    (tmp_path / "reloaded_pair.py").write_text(textwrap.dedent('''
        from pyrovae.registry import register_model

        @register_model("reloaded-model")
        class Reloaded:
            pass
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = importlib.import_module("reloaded_pair")
        first = get_model("reloaded-model")
        importlib.reload(module)
        assert get_model("reloaded-model") is module.Reloaded is not first
    finally:
        MODELS._factories.pop("reloaded-model", None)
        sys.modules.pop("reloaded_pair", None)


def test_two_user_modules_claiming_one_name_stop_the_command_with_one_line(tmp_path):
    for name in ("pair_a", "pair_b"):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent('''
            from pyrovae.guides.diag import DiagNormalGuide
            from pyrovae.registry import register_guide

            @register_guide("laplace")
            class LaplaceGuide(DiagNormalGuide):
                """Another guide named laplace."""
        '''))
    result = subprocess.run([sys.executable, "-m", "pyrovae.cli", "list", "--import", "pair_a", "--import", "pair_a",
                             "--import", "pair_b"], cwd=tmp_path, env=environ(), capture_output=True, text=True,
                            timeout=120)
    one_line_error(result, 2, "a guide named 'laplace' is already registered (pair_a.LaplaceGuide); "
                              "pair_b.LaplaceGuide cannot take the name too")
