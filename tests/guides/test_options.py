"""Options are declared once: an ``Options`` dataclass per class, extended by subclasses,
read by the registry (no constructor is wrapped), shown by ``pyrovae list``, turned into CLI
flags and saved in run folders in the same ``{"name", "options"}`` form as before."""

import dataclasses
import json
import subprocess
import sys
from typing import Tuple

import pytest

from pyrovae.guides.base import EncoderGuide
from pyrovae.registry import (
    GUIDES, MODELS, build, constructor_options, declared_options, get_guide, get_model, register_model, spec_of,
)

SHARED = [f.name for f in dataclasses.fields(EncoderGuide.Options)]


@pytest.mark.parametrize("name", GUIDES.names())
def test_every_guide_extends_the_shared_encoder_options(name):
    factory = get_guide(name)
    options = list(constructor_options(factory))
    if "vocab_size" in options:  # a text guide reads token ids (guides/sentence.py): no x_dim, no MLP encoder
        pytest.skip("a text guide's options start with vocab_size, not the shared encoder options")
    if not issubclass(factory, EncoderGuide):  # a recurrent guide (guides/draw.py) has no MLP encoder to share
        assert "x_dim" in options and "z_dim" in options
        return
    assert options[:len(SHARED)] == SHARED
    assert issubclass(declared_options(factory), EncoderGuide.Options)
    assert "__init__" not in vars(factory) or not hasattr(factory.__init__, "__wrapped__")


@pytest.mark.parametrize("kind,name", [("model", n) for n in MODELS.names()] + [("guide", n) for n in GUIDES.names()])
def test_a_saved_spec_rebuilds_the_same_object(kind, name):
    get = get_model if kind == "model" else get_guide
    factory = get(name)
    built = build(factory, {"z_dim": 3} if "hidden_dims" not in constructor_options(factory)
                  else {"z_dim": 3, "hidden_dims": (8,)}, fill={"x_dim": 6, "vocab_size": 6})
    spec = json.loads(json.dumps(spec_of(built)))  # as run.json stores it: tuples become lists
    assert spec["name"] == name and spec["options"]["z_dim"] == 3
    assert set(spec["options"]) == set(constructor_options(factory))
    again = build(get(spec["name"]), spec["options"])
    assert spec_of(again) == spec_of(built)
    assert type(again) is type(built)


@pytest.mark.parametrize("kind,name,options", [
    # run.json entries written by the code that recorded options by wrapping __init__
    ("guide", "iaf", {"x_dim": 6, "z_dim": 2, "hidden_dims": [8], "activation": "tanh", "site": "z",
                      "num_flows": 2, "context_dim": None, "flow_hidden_dims": None, "sigmoid_bias": 4.0}),
    ("guide", "denoising", {"x_dim": 6, "z_dim": 2, "hidden_dims": [8], "activation": "tanh", "site": "z",
                            "noise": "gaussian", "noise_level": 0.3, "base": "mixture"}),
    ("guide", "planar", {"x_dim": 6, "z_dim": 2, "hidden_dims": [8], "activation": "relu", "site": "z",
                         "num_flows": 3, "context_dim": 4, "flow_hidden_dims": [5]}),
    ("model", "svae", {"x_dim": 6, "z_dim": 3, "hidden_dims": [8], "likelihood": "gaussian", "scale": None,
                       "activation": "tanh"}),
])
def test_runs_saved_by_older_code_still_build(kind, name, options):
    factory = (get_model if kind == "model" else get_guide)(name)
    built = build(factory, options)
    spec = spec_of(built)
    assert spec["name"] == name
    assert {k: spec["options"][k] for k in options} == options  # what was saved is kept
    declared = constructor_options(factory)  # options added since take their declared defaults
    added = {k: v for k, v in spec["options"].items() if k not in options}
    assert added == {k: declared[k].default for k in added}


def test_planar_and_radial_keep_their_defaults():
    for name in ("planar", "radial"):
        options = constructor_options(get_guide(name))
        assert options["num_flows"].default == 4 and options["flow_hidden_dims"].default == ()
    assert constructor_options(get_guide("iaf"))["num_flows"].default == 2
    assert constructor_options(get_guide("vmf"))["z_dim"].default == 10


def test_cli_flags_take_their_types_from_the_declaration():
    from pyrovae.cli.common import option_flags

    flags = option_flags([get_model("vae"), get_guide("iaf"), get_guide("vmf")])
    assert flags["hidden_dims"]["nargs"] == "*" and flags["hidden_dims"]["type"] is int
    assert flags["flow_hidden_dims"]["nargs"] == "*"
    assert flags["fixed_kappa"]["type"] is float and flags["num_flows"]["type"] is int


def test_options_are_checked_where_they_are_declared():
    with pytest.raises(ValueError, match="hidden_dims must be a positive integer"):
        get_guide("diag")(x_dim=4, hidden_dims=(0,))
    with pytest.raises(ValueError, match="unknown option"):
        build(get_guide("diag"), {"num_flows": 2}, fill={"x_dim": 4})
    with pytest.raises(TypeError, match=r"DiagNormalGuide got an unexpected keyword argument 'num_flows' "
                                        r"\(its options: x_dim, z_dim, hidden_dims, activation, site\)"):
        get_guide("diag")(x_dim=4, num_flows=2)
    with pytest.raises(TypeError, match="IAFGuide missing 1 required positional argument: 'x_dim'"):
        get_guide("iaf")(z_dim=2)


def test_a_class_with_a_plain_constructor_is_still_registered_and_saved():
    """No Options declaration: the constructor's keyword arguments are the options; an
    instance's values are those build() passed, else its attributes of the same names."""

    @register_model("test-plain-init")
    class Plain:
        def __init__(self, x_dim: int, widths: Tuple[int, ...] = (3,)):
            self.x_dim, self.widths = x_dim, widths

    try:
        assert list(constructor_options(Plain)) == ["x_dim", "widths"]
        assert spec_of(build(Plain, {"widths": (5,)}, fill={"x_dim": 2})) == {  # module: the one to --import
            "name": "test-plain-init", "options": {"x_dim": 2, "widths": [5]}, "module": __name__}
        assert spec_of(Plain(x_dim=2))["options"] == {"x_dim": 2, "widths": [3]}
        hidden = Plain(x_dim=2)
        del hidden.widths
        assert spec_of(hidden) is None  # cannot be rebuilt by name: load_run asks for the model
    finally:
        MODELS._factories.pop("test-plain-init")


def test_pyrovae_list_shows_every_option_with_its_default():
    out = subprocess.run([sys.executable, "-m", "pyrovae.cli", "list", "--json"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    table = json.loads(out)
    assert table["guides"]["iaf"]["options"] == {
        "x_dim": "(from the data)", "z_dim": 20, "hidden_dims": [200, 200], "activation": "tanh", "site": "z",
        "num_flows": 2, "context_dim": None, "flow_hidden_dims": None, "step": "gated", "sigmoid_bias": 4.0}
    assert table["guides"]["planar"]["options"]["num_flows"] == 4
    assert table["models"]["svae"]["options"]["z_dim"] == 10
